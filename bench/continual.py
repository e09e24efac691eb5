"""Continual learning: a child started from its parent (``--from``) against the alternatives.

Two experiments on a folder-per-class set, each over seeds, same seeds and splits side by side:

``add-class`` (NEU, one class held back)::

    python bench/continual.py add-class --data ../shared/data/neu --held-out scratches --seeds 1 2 3

- (a) from scratch on all classes;
- parent: trained on every class but the held-out one;
- (b) naive fine-tuning: ``--from parent`` on the held-out class alone, replay off
  (``ingest.replay=false``) — shows the forgetting;
- (c) ``--from parent`` on the held-out class with replay (the default).

``--parent-set KEY=VALUE`` trains another parent with those settings (e.g. a larger replay,
``export.keep_per_class=100``) and its (c) child, recorded beside the default ones.

Ingest splits each class by ``rng(seed, class name)``, independently of the other classes, so
with one seed (a)'s test split is exactly the parent's test split plus the held-out class's,
which is the child's own test split: every row compares the same images. Columns: old classes'
accuracy (errors) on the parent's test split, the new class's recall, overall accuracy on all
classes, the optimiser steps through the backbone and their ratio to (a)'s (the schedule's
share, the same on any machine), the train stage's seconds and their ratio to (a)'s (the
schedule plus fixed costs, on this machine at that time), the promotion verdict.

``more-data`` (casting, the same classes, more images)::

    python bench/continual.py more-data --data ../shared/data/casting --seeds 1 2 3

The files of every class are dealt into two halves (alternately in name order): the parent
trains on half A, the child ``--from`` it on half B. Both are scored on both test splits (the
parent's, half A's, from the promotion gate; the child's own, half B's, by the parent's bundle
on the edge runtime): the goal is a child at least as good as its parent on both.

Runs go to ``--out`` (default ``exports/bench_continual``), minutes each on a CPU; only the
export format ONNX is built (``export.formats=[onnx]``): export and verify cost time and are
not what is compared. The table is printed when the runs are done; each seed's runs are
recorded in ``<out>/<experiment>_s<seed>/runs.json``, so the same command again resumes an
interrupted bench and re-prints the table without training again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402
from benchlib import link_tree, load_avg, read_json  # noqa: E402

PIPELINE = "defect"
FAST = ["--set", "export.formats=[onnx]"]


def run_pipeline(out: Path, data: Path, seed: int, *extra: str) -> Path:
    """Run the defect pipeline (ONNX export only) and return the new run folder (exit 1, not
    promoted, is an answer too: the run folder is returned either way)."""
    return benchlib.run_pipeline(PIPELINE, out, data, seed, *FAST, *extra)


def class_files(data: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(p for p in d.iterdir() if p.is_file())
            for d in sorted(data.iterdir()) if d.is_dir()}


# ----------------------------------------------------------------------------- reading runs


def train_seconds(run: Path) -> float:
    return float((read_json(run / "manifest.json") or {})["stages"]["train"]["seconds"])


def backbone_steps(run: Path) -> int:
    """Optimiser steps of the phases that run images through the backbone (every phase but
    ``head``, fitted on pooled features computed once): epochs run × whole batches per
    epoch (the last partial batch is dropped). Unlike seconds, the same on every machine."""
    manifest = read_json(run / "manifest.json") or {}
    info = read_json(run / "train" / "train_info.json") or {}
    batches = info["images"]["train"] // manifest["config"]["stages"]["train"]["batch_size"]
    return sum(phase["epochs_run"] * batches for key, phase in info["phases"].items()
               if not key.startswith("head"))


def test_predictions(run: Path) -> list[dict[str, str]]:
    import csv

    path = run / "evaluate" / "predictions.csv"
    if not path.is_file():
        stopped = (read_json(run / "manifest.json") or {}).get("status", "unknown")
        raise SystemExit(f"{path} is missing: run {run.name} ended '{stopped}' before evaluate "
                         f"wrote its predictions (see {run / 'logs'})")
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def counts(rows: list[dict[str, str]], keep: Any = lambda label: True) -> tuple[int, int]:
    """(errors, n) over the prediction rows whose true label ``keep`` accepts."""
    chosen = [r for r in rows if keep(r["true"])]
    return sum(r["correct"] != "1" for r in chosen), len(chosen)


def child_numbers(run: Path) -> dict[str, Any]:
    """A child's errors on the parent's test split (the promotion gate's) and on its own."""
    gate = read_json(run / "evaluate" / "promotion.json") or {}
    own_errors, own_n = counts(test_predictions(run))
    dropped = [f"{name} −{100 * c['drop']:.1f}" for name, c in (gate.get("classes") or {}).items()
               if c["drop"] > gate.get("max_recall_drop", 0) + 1e-12]
    rise = (gate.get("escape_rate") or {}).get("rise") or 0
    if rise > gate.get("max_recall_drop", 0) + 1e-12:
        dropped.append(f"escapes +{100 * rise:.1f}")
    verdict = "promoted" if gate.get("passed") else (
        f"refused ({', '.join(dropped[:2])}{', …' if len(dropped) > 2 else ''} points)")
    return {"old": (gate.get("child_errors"), gate.get("n")), "own": (own_errors, own_n),
            "verdict": verdict, "train_s": train_seconds(run), "steps": backbone_steps(run)}


def cell(errors_n: tuple[int | None, int | None]) -> str:
    errors, n = errors_n
    if errors is None or not n:
        return "—"
    return f"{100 * (1 - errors / n):.1f} % ({errors}/{n})"


# ----------------------------------------------------------------------------- add-class


def add_class(args: argparse.Namespace) -> list[list[str]]:
    files = class_files(args.data)
    held = args.held_out or sorted(files)[-1]
    trees = args.out / "trees"
    old = link_tree(trees / "old", {k: v for k, v in files.items() if k != held})
    new = link_tree(trees / f"only_{held}", {held: files[held]})
    suffix = variant_suffix(args.parent_set)
    parent_settings = set_args(args.parent_set)
    rows = []
    for seed in args.seeds:
        out = args.out / f"add_class_s{seed}"
        runs = load_or_run(out / "runs.json", {
            "a": lambda o=out, s=seed: run_pipeline(o / "scratch", args.data, s),
            "parent" + suffix: lambda o=out, s=seed: run_pipeline(o / "lineage", old, s,
                                                                  *parent_settings),
        })
        parent = Path(runs["parent" + suffix])
        jobs = {
            "b": lambda o=out, s=seed, p=parent: run_pipeline(
                o / "lineage", new, s, "--from", str(p), "--set", "ingest.replay=false"),
            "c" + suffix: lambda o=out, s=seed, p=parent: run_pipeline(o / "lineage", new, s,
                                                                       "--from", str(p)),
        }
        if suffix or args.skip_naive:  # (b) replays nothing: one seed's (b) shows it
            del jobs["b"]
        if args.child_set:
            jobs = {child_key(args.child_set) + suffix: lambda o=out, s=seed, p=parent:
                    run_pipeline(o / "lineage", new, s, "--from", str(p),
                                 *set_args(args.child_set))}
        runs.update(load_or_run(out / "runs.json", jobs))
        rows += add_class_rows(seed, held, {k: Path(v) for k, v in runs.items()},
                               list(jobs), parent_key="parent" + suffix)
    return rows


def set_args(settings: list[str]) -> list[str]:
    """``--set`` arguments for the pipeline, one per ``KEY=VALUE``."""
    return [arg for setting in settings for arg in ("--set", setting)]


def variant_suffix(parent_settings: list[str]) -> str:
    """The runs.json key suffix of a parent trained with ``--parent-set`` (and its children):
    the default parent's runs stay under their plain keys, so one seed folder holds both."""
    return f" [parent {' '.join(parent_settings)}]" if parent_settings else ""


def child_key(settings: list[str]) -> str:
    """The runs.json key (and row name) of a (c) child run with extra settings."""
    return "(c) --from, replay, " + " ".join(settings)


def add_class_rows(seed: int, held: str, runs: dict[str, Path],
                   children: tuple[str, ...] | list[str] = ("b", "c"),
                   parent_key: str = "parent") -> list[list[str]]:
    scratch = test_predictions(runs["a"])
    a_seconds, a_steps = train_seconds(runs["a"]), backbone_steps(runs["a"])
    parent_errors, parent_n = counts(test_predictions(runs[parent_key]))
    table = [[str(seed), "(a) scratch, all classes", cell(counts(scratch, lambda t: t != held)),
              cell(counts(scratch, lambda t: t == held)), cell(counts(scratch)),
              f"{a_steps}", f"{a_seconds:.0f}", "1.00", ""],
             [str(seed), "parent (without the new class)" + parent_key[len("parent"):],
              cell((parent_errors, parent_n)), "—", "—", f"{backbone_steps(runs[parent_key])}",
              f"{train_seconds(runs[parent_key]):.0f}", "", ""]]
    names = {"b": "(b) --from, new class only, no replay", "c": "(c) --from, replay"}
    for key in children:
        name = names.get(key.split(" [parent ")[0], key)
        child = child_numbers(runs[key])
        old, own = child["old"], child["own"]
        overall = ((old[0] or 0) + own[0], (old[1] or 0) + own[1])
        table.append([str(seed), name, cell(old), cell(own), cell(overall),
                      f"{child['steps']} ({child['steps'] / a_steps:.2f})",
                      f"{child['train_s']:.0f}", f"{child['train_s'] / a_seconds:.2f}",
                      child["verdict"]])
    return table


# ----------------------------------------------------------------------------- more-data


def more_data(args: argparse.Namespace) -> list[list[str]]:
    files = class_files(args.data)
    trees = args.out / "trees"
    half_a = link_tree(trees / "half_a", {k: v[0::2] for k, v in files.items()})
    half_b = link_tree(trees / "half_b", {k: v[1::2] for k, v in files.items()})
    rows = []
    for seed in args.seeds:
        out = args.out / f"more_data_s{seed}"
        runs = load_or_run(out / "runs.json", {
            "parent": lambda o=out, s=seed: run_pipeline(o / "lineage", half_a, s)})
        parent = Path(runs["parent"])
        runs.update(load_or_run(out / "runs.json", {
            "child": lambda o=out, s=seed, p=parent: run_pipeline(o / "lineage", half_b, s,
                                                                  "--from", str(p))}))
        child = child_numbers(Path(runs["child"]))
        parent_old = counts(test_predictions(parent))
        parent_own = parent_on_child_test(parent, Path(runs["child"]), out / "child_test")
        rows.append([str(seed), "parent (half A)", cell(parent_old), cell(parent_own),
                     f"{train_seconds(parent):.0f}", ""])
        rows.append([str(seed), "child --from parent (+ half B)", cell(child["old"]),
                     cell(child["own"]), f"{child['train_s']:.0f}", child["verdict"]])
    return rows


def parent_on_child_test(parent: Path, child: Path, tree: Path) -> tuple[int, int]:
    """The parent's bundle (edge runtime, as deployed) on the child's own test split."""
    from indvision.dataset import read_splits
    from indvision.edge import EdgeClassifier
    from indvision.edge.evaluate import evaluate_tree

    by_class: dict[str, list[Path]] = {}
    for row in read_splits(child / "ingest" / "splits.csv"):
        if row["split"] == "test":
            by_class.setdefault(row["label"], []).append(Path(row["path"]))
    report = evaluate_tree(EdgeClassifier(parent / "bundle"), link_tree(tree, by_class))
    return report["errors"], report["n"]


# ----------------------------------------------------------------------------- main


def load_or_run(record: Path, jobs: dict[str, Any]) -> dict[str, str]:
    """Run each job not yet recorded in ``record`` (so an interrupted bench resumes)."""
    done = read_json(record) or {}
    for key, job in jobs.items():
        if key not in done:
            done[key] = str(job())
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(done, indent=2), encoding="utf-8")
    return done


HEADERS = {
    "add-class": ["seed", "model", "old classes, parent test", "new class recall",
                  "overall", "steps (× (a))", "train s", "× (a)", "promotion"],
    "more-data": ["seed", "model", "parent's test (half A)", "child's test (half B)",
                  "train s", "promotion"],
}


def print_table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=sorted(HEADERS))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--held-out", help="add-class: the class the parent does not see "
                        "(default: the last in name order)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=ROOT / "exports" / "bench_continual")
    parser.add_argument("--child-set", action="append", default=[], metavar="KEY=VALUE",
                        help="add-class: run (c) with these settings instead of (b) and (c), "
                        "a row of its own beside (a) and the parent (repeatable)")
    parser.add_argument("--skip-naive", action="store_true",
                        help="add-class: leave out (b), which forgets every old class in every "
                        "seed measured; saves one child run per seed")
    parser.add_argument("--parent-set", action="append", default=[], metavar="KEY=VALUE",
                        help="add-class: train the parent with these settings (e.g. "
                        "export.keep_per_class=100); it and its children are recorded under "
                        "keys of their own, beside the default parent's (repeatable)")
    args = parser.parse_args()
    args.out = args.out.resolve()
    rows = add_class(args) if args.experiment == "add-class" else more_data(args)
    print(f"\n{args.experiment} on {args.data} ({load_avg()})")
    print_table(HEADERS[args.experiment], rows)


if __name__ == "__main__":
    main()
