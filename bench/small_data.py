"""Small data: the shipped defaults against the frozen-feature baseline, on the same splits.

Every run with a linear probe (``train.probe``, the default) measures, in ``evaluate/metrics.json``,
the probe it started from — frozen backbone features + logistic regression, fitted on the run's own
training split — beside the final model. This table puts the two side by side per dataset,
training-set size (``ingest.max_train_per_class``: training objects per class, validation cut in
the same proportion, the test split unchanged) and seed, with the training and run times:

    python bench/small_data.py exports/defect exports/parcel        # every finished run there
    python bench/small_data.py --run defect:../shared/data/neu:40 --seeds 1 2 3
    python bench/small_data.py --run parcel:../shared/data/packages:30 --seeds 1 2 3

``--run PIPELINE:DATA:CAP`` trains first (``python -m indvision.pipeline PIPELINE --data DATA
--set ingest.max_train_per_class=CAP --set seed=S``; ``all`` for the whole set), minutes per run
on a CPU. Columns: the unit decided (per object when views are grouped), test macro-F1 and errors
of the final model and of the probe, what fine-tuning gained (errors fewer, validation and test),
whether fine-tuning ended on its start (the probe), training seconds and the whole run's.
Reading runs needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # benchlib, also when imported from elsewhere

from benchlib import finished_runs, read_json  # noqa: E402

COLUMNS = ("dataset", "train/class", "seed", "unit", "n test", "macro-F1", "errors",
           "probe macro-F1", "probe errors", "gained val", "gained test", "ended on probe",
           "train s", "run s")


def row_of(run: Path) -> dict[str, Any] | None:
    """One table row, or None when the run has no probe numbers (``train.probe`` off)."""
    manifest = read_json(run / "manifest.json") or {}
    metrics = read_json(run / "evaluate" / "metrics.json") or {}
    info = read_json(run / "train" / "train_info.json") or {}
    probe = metrics.get("probe")
    if not probe:
        return None
    ingest = (manifest.get("config") or {}).get("stages", {}).get("ingest", {})
    unit = probe["test_unit"]
    final, baseline = metrics[unit], probe[unit]
    phases = info.get("phases") or {}
    stages = manifest.get("stages", {})
    return {
        "dataset": Path(ingest.get("source") or "synthetic").name,
        "train/class": ingest.get("max_train_per_class") or "all",
        "seed": manifest.get("seed"),
        "unit": "object" if unit == "test_groups" else "image",
        "n test": final["n"],
        "macro-F1": final["macro_f1"], "errors": final["errors"],
        "probe macro-F1": baseline["macro_f1"], "probe errors": baseline["errors"],
        "gained val": probe["gained_errors"]["val"], "gained test": probe["gained_errors"]["test"],
        "ended on probe": sum(1 for p in phases.values()  # runs before "probe" kept it
                              if p.get("kept_start") and (p.get("start") or {}).get("probe", True)),
        "train s": info.get("seconds"),
        "run s": round(sum(s.get("seconds") or 0 for s in stages.values()), 1),
    }


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1 else f"{value:.0f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows, then per dataset and size: seeds where the model is at least the probe,
    the mean macro-F1 of each and the slowest run."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    rows = sorted(rows, key=lambda r: (r["dataset"], str(r["train/class"]), r["seed"] or 0))
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    lines += ["", "| dataset | train/class | seeds | model ≥ probe | mean macro-F1 | "
              "mean probe macro-F1 | ratio | slowest run s |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["dataset"], str(r["train/class"])) for r in rows})
    for dataset, size in keys:
        group = [r for r in rows if (r["dataset"], str(r["train/class"])) == (dataset, size)]
        model, probe = mean(r["macro-F1"] for r in group), mean(r["probe macro-F1"] for r in group)
        at_least = sum(r["macro-F1"] >= r["probe macro-F1"] for r in group)
        lines.append(f"| {dataset} | {size} | {len(group)} | {at_least} of {len(group)} | "
                     f"{model:.4f} | {probe:.4f} | {model / probe:.4f} | "
                     f"{max(r['run s'] for r in group):.0f} |")
    return "\n".join(lines)


def train_runs(spec: str, seeds: list[int], out: Path) -> list[Path]:
    """Train ``PIPELINE:DATA:CAP`` once per seed; the pipeline folders written to."""
    try:
        pipeline, data, cap = spec.rsplit(":", 2)
    except ValueError:
        sys.exit(f"--run {spec!r}: expected PIPELINE:DATA:CAP (CAP a number or 'all')")
    for seed in seeds:
        command = [sys.executable, "-m", "indvision.pipeline", pipeline, "--data", data,
                   "--set", f"seed={seed}", "--out", str(out)]
        if cap != "all":
            command += ["--set", f"ingest.max_train_per_class={cap}"]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=False)  # a failed gate still leaves metrics
    return [out / Path(pipeline).stem]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run or pipeline folders")
    parser.add_argument("--run", action="append", default=[], metavar="PIPELINE:DATA:CAP")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=ROOT / "exports")
    args = parser.parse_args()
    folders = list(args.runs)
    for spec in args.run:
        folders += train_runs(spec, args.seeds, args.out)
    if not folders:
        parser.error("give run folders or --run")
    runs = [run for folder in folders for run in finished_runs(folder, "evaluate/metrics.json")]
    rows = [row for run in runs if (row := row_of(run))]
    if not rows:
        sys.exit("no finished run with probe numbers (evaluate/metrics.json 'probe') found")
    print(table(rows))


if __name__ == "__main__":
    main()
