"""Good-only anomaly models on a good/defect set (issue 18): accuracy, fitting time, size, speed.

    python bench/anomaly.py --data ../shared/data/casting --seeds 1 2 3
    python bench/anomaly.py --data ../shared/data/casting --seeds 1 --budgets 1000 4000
    python bench/anomaly.py --data ../shared/data/casting --seeds 1 --speed exports/defect
    python bench/anomaly.py --data ../shared/data/casting --seeds 1 --supervised

For each seed, two runs of ``pipelines/anomaly.yaml`` (only ``--data`` and the seed set):

- **good only**: ``--data`` is the good folder alone (``ok_front``: no defect image anywhere in
  fitting or validation), so the threshold comes from the good validation images (the good
  quantile rule). It is then scored by the edge runtime, as deployed, on the run's own held-out
  good images and on **every** defective image of the set.
- **with defects**: ``--data`` is the whole set; defect images go to validation and test only
  and the threshold follows the escape-rate rule. Scored on its own test split.

Both share the good split (ingest orders each class by the seed and its name alone). Columns:
image AUROC, defect recall and false-reject rate at the bundle's threshold (errors in
brackets), fit seconds (patches + coreset), the ONNX file's size. ``--budgets`` adds good-only
runs with other bank sizes (``fit.bank_size``). ``--speed CLASSIFIER_BUNDLE`` times the first
anomaly bundle against that classifier bundle in the same process (p50 of one image,
onnxruntime, in alternating blocks of calls), and the anomaly bundle with and without its map.
``--supervised`` also trains the supervised ``defect`` pipeline (first seed) and scores every
model on *its* test split: its good and defect test images, which the anomaly runs never fitted
on (ingest puts the first ranks of each class's seeded order in test, in both pipelines; the
anomaly runs' test defects include these), beside its linear probe (frozen features).

Runs go to ``--out`` (default ``exports/bench_anomaly``); ``<out>/runs.json`` records them, so
the same command again re-prints the table without fitting again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402
from benchlib import link_tree, load_avg, read_json  # noqa: E402


def run_anomaly(out: Path, data: Path, seed: int, *extra: str) -> Path:
    """Run the anomaly pipeline; return its run folder (whatever its exit status)."""
    return benchlib.run_pipeline("anomaly", out, data, seed, *extra)


def good_folder(data: Path) -> str:
    from indvision import metrics

    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    good = metrics.resolve_good_class(metrics.AUTO, classes, key="good class")
    if good is None:
        raise SystemExit(f"{data}: no folder is named like a good class")
    return good


def scored_tree(run: Path, data: Path, good: str, out: Path, every_defect: bool) -> Path:
    """The run's test split as a folder tree; with ``every_defect``, all defect images too."""
    from indvision.dataset import read_splits

    folders: dict[str, list[Path]] = {}
    for row in read_splits(run / "ingest" / "splits.csv"):
        if row["split"] == "test":
            folders.setdefault(row["label"], []).append(Path(row["path"]))
    if every_defect:
        for folder in data.iterdir():
            if folder.is_dir() and folder.name != good:
                folders[folder.name] = sorted(folder.iterdir())
    return link_tree(out, folders)


def row_numbers(run: Path, tree: Path) -> dict[str, Any]:
    from indvision.edge import EdgeClassifier
    from indvision.edge.evaluate import evaluate_tree

    report = evaluate_tree(EdgeClassifier(run / "bundle"), tree)
    fit = read_json(run / "fit" / "fit_report.json") or {}
    return {"auroc": report["auroc"], "recall": report["defect_recall"],
            "escapes": report.get("escapes"), "frr": report["false_reject_rate"],
            "false_rejects": report.get("false_rejects"),
            "n_good": report["per_folder"].get(good_folder(tree), {}).get("n"),
            "n_defect": sum(v["n"] for k, v in report["per_folder"].items()
                            if k != good_folder(tree)),
            "rule": fit["threshold"]["rule"], "fit_s": sum(fit["seconds"].values()),
            "bank": fit["bank_size"],
            "onnx_mb": (run / "bundle" / "model.onnx").stat().st_size / 1e6}


def bundle_numbers(bundle: Path, tree: Path) -> dict[str, Any]:
    """AUROC of 1 − P(good), and recall / false rejects at the bundle's own threshold."""
    from indvision import metrics
    from indvision.edge import EdgeClassifier
    from indvision.edge.evaluate import evaluate_tree, predict_tree

    classifier = EdgeClassifier(bundle)
    found = predict_tree(classifier, tree) if classifier.model_kind == "classifier" else None
    report = evaluate_tree(classifier, tree, predictions=found)
    if found is not None:
        report["auroc"] = metrics.auroc(1 - found.scores[:, classifier.good_index],
                                        found.labels != classifier.good_index)
    return report


def probe_numbers(run: Path, tree: Path, good: str) -> dict[str, Any]:
    """The supervised run's linear probe: AUROC of its scores on ``tree``, and recall / false
    rejects at its own calibrated threshold (evaluate's ``metrics.json`` ``probe``)."""
    from indvision import images, metrics, models

    spec = images.InputSpec.from_dict(read_json(run / "train" / "input_spec.json"))
    classes = read_json(run / "ingest" / "classes.json")
    probe = models.load_model(run / "train" / "probe.keras")
    paths = sorted(p for p in tree.rglob("*") if p.is_file())
    scores = probe.predict(np.stack([images.load(p, spec) for p in paths]).astype(np.float32),
                           verbose=0)
    is_defect = np.array([p.parent.name != good for p in paths])
    test = (read_json(run / "evaluate" / "metrics.json") or {})["probe"]["test"]
    n_good = int((~is_defect).sum())
    return {"auroc": metrics.auroc(1 - scores[:, classes.index(good)], is_defect),
            "defect_recall": test["defect_recall"], "escapes": test["escapes"],
            "false_reject_rate": test["false_rejects"] / n_good if n_good else None,
            "false_rejects": test["false_rejects"]}


def side_by_side(runs: dict[str, str], seed: int, supervised: Path,
                 tree: Path) -> list[list[str]]:
    """One row per model on the supervised run's test split (its good and defect images)."""
    good = good_folder(tree)
    n_good = len(list((tree / good).iterdir()))
    n_defect = sum(len(list(d.iterdir())) for d in tree.iterdir() if d.name != good)
    models_ = [(f"anomaly, good only (seed {seed})", Path(runs[f"s{seed} good only"]) / "bundle"),
               (f"anomaly, with defects (seed {seed})",
                Path(runs[f"s{seed} with defects"]) / "bundle"),
               ("supervised defect pipeline", supervised / "bundle")]
    rows = []
    for name, bundle in models_:
        n = bundle_numbers(bundle, tree)
        rows.append([name, f"{n['auroc']:.4f}",
                     cell(n["defect_recall"], n_defect - n["escapes"], n_defect),
                     cell(n["false_reject_rate"], n["false_rejects"], n_good)])
    n = probe_numbers(supervised, tree, good)
    rows.append(["linear probe (frozen features), its own threshold", f"{n['auroc']:.4f}",
                 cell(n["defect_recall"], n_defect - n["escapes"], n_defect),
                 cell(n["false_reject_rate"], n["false_rejects"], n_good)])
    return rows


def cell(rate: float | None, count: int | None, n: int | None) -> str:
    return "—" if rate is None else f"{100 * rate:.1f} % ({count}/{n})"


def speed(anomaly_bundle: Path, classifier_bundle: Path, rounds: int = 4,
          calls_per_round: int = 50) -> list[list[str]]:
    """p50 / p95 of one image: the classifier, the anomaly bundle, the anomaly bundle with its
    map — timed in blocks of ``calls_per_round`` calls, the three in turn for ``rounds``
    rounds (interleaving single calls makes onnxruntime's spinning threads of one session
    steal the cores from the next)."""
    from indvision.edge import EdgeClassifier

    classifier, anomaly = EdgeClassifier(classifier_bundle), EdgeClassifier(anomaly_bundle)
    rng = np.random.default_rng(0)
    inputs = {"classifier": rng.integers(0, 255, (1, classifier.spec.height,
                                                  classifier.spec.width, 3), dtype=np.uint8),
              "anomaly": rng.integers(0, 255, (1, anomaly.spec.height, anomaly.spec.width, 3),
                                      dtype=np.uint8)}
    calls = {"classifier bundle (model.onnx)": lambda: classifier.scores(inputs["classifier"]),
             "anomaly bundle, score only": lambda: anomaly.scores(inputs["anomaly"]),
             "anomaly bundle, score and map": lambda: anomaly.scores_and_maps(inputs["anomaly"])}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(10):
                call()  # warm up, and let the previous session's threads go quiet
            for _ in range(calls_per_round):
                started = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - started)
    base = float(np.median(times["classifier bundle (model.onnx)"]))
    return [[name, f"{1000 * np.median(t):.2f}", f"{1000 * np.percentile(t, 95):.2f}",
             f"{np.median(t) / base:.1f}×"] for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--budgets", type=int, nargs="*", default=[])
    parser.add_argument("--speed", type=Path, metavar="CLASSIFIER_BUNDLE")
    parser.add_argument("--supervised", action="store_true",
                        help="also train the supervised defect pipeline (first seed) and "
                             "compare every model on its test split")
    parser.add_argument("--out", type=Path, default=ROOT / "exports" / "bench_anomaly")
    args = parser.parse_args()
    out, data = args.out.resolve(), args.data.resolve()
    good = good_folder(data)
    good_only = link_tree(out / "trees" / "good_only", {good: sorted((data / good).iterdir())})
    record = out / "runs.json"
    runs: dict[str, str] = read_json(record) or {}
    jobs = {}
    for seed in args.seeds:
        jobs[f"s{seed} good only"] = (good_only, seed, ())
        jobs[f"s{seed} with defects"] = (data, seed, ())
    for budget in args.budgets:
        jobs[f"s{args.seeds[0]} good only, bank {budget}"] = (
            good_only, args.seeds[0], ("--set", f"fit.bank_size={budget}"))
    for key, (source, seed, extra) in jobs.items():
        if key not in runs:
            runs[key] = str(run_anomaly(out, source, seed, *extra))
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(runs, indent=2), encoding="utf-8")
    rows = []
    for key in jobs:
        run = Path(runs[key])
        every_defect = "good only" in key
        tree = scored_tree(run, data, good, out / "trees" / key.replace(" ", "_").replace(
            ",", ""), every_defect)
        n = row_numbers(run, tree)
        rows.append([key, n["rule"], str(n["bank"]), f"{n['auroc']:.4f}",
                     cell(n["recall"], n["n_defect"] - (n["escapes"] or 0), n["n_defect"]),
                     cell(n["frr"], n["false_rejects"], n["n_good"]), f"{n['fit_s']:.0f}",
                     f"{n['onnx_mb']:.1f}"])
    print(f"\nanomaly on {data} ({load_avg()})")
    print_table(["run", "threshold rule", "bank", "image AUROC", "defect recall (caught/n)",
                 "false rejects (n)", "fit s", "ONNX MB"], rows)
    if args.supervised:
        seed = args.seeds[0]
        key = f"s{seed} supervised defect"
        if key not in runs:
            runs[key] = str(benchlib.run_pipeline("defect", out, data, seed))
            record.write_text(json.dumps(runs, indent=2), encoding="utf-8")
        supervised = Path(runs[key])
        tree = scored_tree(supervised, data, good, out / "trees" / f"s{seed}_supervised", False)
        print(f"\nside by side on the supervised run's test split, seed {seed} ({load_avg()})")
        print_table(["model", "image AUROC", "defect recall (caught/n)", "false rejects (n)"],
                    side_by_side(runs, seed, supervised, tree))
    if args.speed:
        first = Path(runs[next(iter(jobs))]) / "bundle"
        print(f"\nspeed: one image, onnxruntime, 200 calls each in blocks of 50 ({load_avg()})")
        print_table(["bundle", "p50 ms", "p95 ms", "× classifier"], speed(first, args.speed))


def print_table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
