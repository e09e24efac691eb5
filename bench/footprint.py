"""Footprint of the edge runtime against the training install: disk, cold start, memory.

- **Installed size** of the base install (the edge runtime: ``pip install indvision``) and of
  ``indvision[train]``. Default method: two throwaway venvs under /tmp, ``pip install`` of this
  checkout without and with ``[train]`` (pip's configured index: offline here), size of
  site-packages minus that of an empty venv (pip itself). ``--from-venv`` instead sums the
  files listed in each distribution's RECORD over the dependency closure, from the venv
  running this script (fast, no install; the number a device would get up to packaging
  differences).
- **Cold start**: a new process until its first prediction, for the edge runtime
  (``EdgeClassifier(bundle).predict(image)``, ONNX and TFLite int8) and for loading the Keras
  model and predicting; wall time (median of ``--repeat``, interleaved) and peak RSS of the
  child (``os.wait4``). The edge child also reports where its time went (import, bundle
  load, first prediction) and the slowest imports (``python -X importtime``).

    python bench/footprint.py                        # exports/defect, throwaway venvs
    python bench/footprint.py --from-venv --repeat 7

Goals: edge install <= 150 MB, edge cold start <= 0.5 s. Misses are reported; exit code 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from benchlib import load_avg

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6

EDGE_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from indvision.edge import EdgeClassifier
t1 = time.perf_counter()
classifier = EdgeClassifier(sys.argv[1], sys.argv[3] if len(sys.argv) > 3 else None,
                            allow_unshippable=True)  # timing only: int8 may be unshippable
t2 = time.perf_counter()
result = classifier.predict(sys.argv[2])
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "predict": t3 - t2,
                  "label": result["label"]}))
"""

FLOOR_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import cv2, numpy as np, onnxruntime as ort
t1 = time.perf_counter()
session = ort.InferenceSession(sys.argv[1] + "/model.onnx", providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
image = cv2.resize(cv2.cvtColor(cv2.imread(sys.argv[2]), cv2.COLOR_BGR2RGB),
                   (int(sys.argv[3]), int(sys.argv[4])),
                   interpolation=cv2.INTER_AREA)
probs = session.run(None, {session.get_inputs()[0].name: image[None].astype(np.float32)})[0]
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "predict": t3 - t2,
                  "label": int(probs.argmax())}))
"""

KERAS_CHILD = """
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
t0 = time.perf_counter()
import keras
from indvision import images, models
t1 = time.perf_counter()
model = models.load_model(sys.argv[1])  # keras load_model with indvision's layers registered
t2 = time.perf_counter()
spec = images.InputSpec(model.input_shape[1], model.input_shape[2])
probs = model.predict(images.load(sys.argv[2], spec)[None].astype("float32"), verbose=0)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "predict": t3 - t2,
                  "label": int(probs.argmax())}))
"""


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def run_child(args: list[str]) -> tuple[float, float, dict]:
    """Wall seconds, peak RSS (MB) and the JSON line printed by a new Python process."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env=child_env(), text=True)
    stdout = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed with exit code {process.returncode}")
    last = [line for line in stdout.splitlines() if line.startswith("{")][-1]
    return wall, usage.ru_maxrss * 1024 / MB, json.loads(last)  # ru_maxrss: KiB on Linux


# ----------------------------------------------------------------------------- sizes


def requirement_names(dist: metadata.Distribution, extras: set[str]) -> list[str]:
    """Names of ``dist``'s requirements that apply without extras (or with ``extras``)."""
    names = []
    for requirement in dist.requires or []:
        name, _, marker = requirement.partition(";")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if extra and extra.group(1) not in extras:
            continue
        if marker.strip() and not extra and "sys_platform" in marker and "linux" not in marker:
            continue
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)", name)
        if match:
            names.append(match.group(1))
    return names


def closure_size(extras: set[str]) -> tuple[float, int, list[tuple[str, float]]]:
    """Bytes of every file in the RECORD of indvision and its dependency closure (this venv)."""
    seen: dict[str, float] = {}
    pending = [("indvision", extras)]
    while pending:
        name, wanted = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            seen[key] = 0.0
            continue
        size = 0
        for file in dist.files or []:
            path = Path(str(file.locate()))
            if path.is_file() and "__pycache__" not in path.parts:
                size += path.stat().st_size
        seen[key] = size
        pending += [(n, set()) for n in requirement_names(dist, wanted)]
    biggest = sorted(seen.items(), key=lambda kv: -kv[1])[:6]
    return sum(seen.values()), len(seen), [(k, v / MB) for k, v in biggest]


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*")
               if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts)


def venv_sizes(timeout: float) -> dict[str, tuple[float, int]]:
    """MB added to an empty venv's site-packages by ``pip install`` (base, [train])."""
    results: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="indvision-footprint-") as tmp:
        for label, target in (("edge (base)", str(ROOT)), ("with [train]", f"{ROOT}[train]")):
            venv = Path(tmp) / label.split()[0].strip("[]")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            site = next((venv / "lib").glob("python*/site-packages"))
            empty = folder_size(site)
            print(f"  pip install {target} into a fresh venv ...", flush=True)
            started = time.perf_counter()
            pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                  "--no-compile", target], timeout=timeout, text=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if pip.returncode:
                print("\n".join(pip.stderr.splitlines()[-5:]), flush=True)
                raise OSError(f"pip install {target} failed (exit code {pip.returncode})")
            count = len(list(site.glob("*.dist-info"))) - 2  # minus pip, setuptools
            results[label] = ((folder_size(site) - empty) / MB, count)
            print(f"    {results[label][0]:.0f} MB in {time.perf_counter() - started:.0f} s",
                  flush=True)
    return results


# ----------------------------------------------------------------------------- main


def slowest_imports(bundle: str, image: str, top: int = 8) -> list[tuple[str, float]]:
    """Cumulative import time (ms) of the slowest top-level imports of the edge child."""
    found = subprocess.run([sys.executable, "-X", "importtime", "-c", EDGE_CHILD, bundle, image],
                           capture_output=True, text=True, env=child_env())
    rows = []
    for line in found.stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if len(name) - len(name.lstrip()) <= 1:  # imported by the script itself
                rows.append((name.strip(), int(parts[1]) / 1e3))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", nargs="?", default=str(ROOT / "exports" / "defect"),
                        help="bundle folder, run folder or exports/<pipeline> "
                             "(default: exports/defect)")
    parser.add_argument("--from-venv", action="store_true",
                        help="sizes from this venv's RECORD files instead of fresh venvs")
    parser.add_argument("--repeat", type=int, default=5, help="cold starts per contender (5)")
    parser.add_argument("--install-timeout", type=float, default=900,
                        help="seconds allowed per pip install (900)")
    args = parser.parse_args(argv)
    print(f"start: {load_avg()}", flush=True)

    # -------------------------------------------------------------------- sizes
    if args.from_venv:
        method = f"RECORD files of the dependency closure in {sys.prefix}"
        sizes = {}
        for label, extras in (("edge (base)", set()), ("with [train]", {"train"})):
            total, count, biggest = closure_size(extras)
            sizes[label] = (total / MB, count)
            print(f"  {label}: largest {', '.join(f'{n} {s:.0f}' for n, s in biggest)} MB")
    else:
        method = "fresh venvs under /tmp, pip install (site-packages minus an empty venv)"
        try:
            sizes = venv_sizes(args.install_timeout)
        except (subprocess.SubprocessError, OSError, StopIteration) as exc:
            print(f"  venv method failed ({exc}); falling back to --from-venv", flush=True)
            return main([*(argv or sys.argv[1:]), "--from-venv"])

    print(f"\ninstalled size (method: {method})")
    print(f"{'install':16s} {'MB':>8s} {'packages':>9s}")
    for label, (size, count) in sizes.items():
        print(f"{label:16s} {size:8.0f} {count:9d}")
    edge_size = sizes["edge (base)"][0]
    install_goal = ("  edge install <= 150 MB: "
                    + (f"MET ({edge_size:.0f} MB)" if edge_size <= 150
                       else f"MISSED by {edge_size - 150:.0f} MB ({edge_size:.0f} MB)"))

    # -------------------------------------------------------------------- cold start
    sys.path.insert(0, str(ROOT / "src"))
    from indvision import edge

    try:
        bundle = edge.resolve_bundle(args.bundle)
    except Exception as exc:
        print(f"no cold start without a bundle: {exc}\n(make one: python -m indvision.pipeline "
              f"defect)\n\ngoals:\n{install_goal}")
        return 0
    splits = bundle.parent / "ingest" / "splits.csv"
    with open(splits, encoding="utf-8", newline="") as handle:
        image = next(r["path"] for r in csv.DictReader(handle) if r["split"] == "test")
    keras_model = bundle.parent / "train" / "model.keras"
    spec = json.loads((bundle / "model.json").read_text(encoding="utf-8"))["input_spec"]
    contenders = {
        "edge, model.onnx": ["-c", EDGE_CHILD, str(bundle), image],
        "edge, model_int8.tflite": ["-c", EDGE_CHILD, str(bundle), image, "model_int8.tflite"],
        "floor: numpy+cv2+onnxruntime, no indvision": ["-c", FLOOR_CHILD, str(bundle), image,
                                                        str(spec["width"]), str(spec["height"])],
        "keras load_model + predict": ["-c", KERAS_CHILD, str(keras_model), image],
    }
    runs: dict[str, list[tuple[float, float, dict]]] = {name: [] for name in contenders}
    for name, child in contenders.items():  # warm the file cache: cold process, warm disk
        try:
            run_child(child)
        except RuntimeError as exc:
            print(f"  {name}: {exc}; left out", flush=True)
            runs.pop(name)
    for round_index in range(args.repeat):
        for name in runs:
            if name.startswith("keras") and round_index >= max(3, args.repeat // 2):
                continue  # ~10 s each: fewer repeats
            runs[name].append(run_child(contenders[name]))
        print(f"  cold-start round {round_index + 1}/{args.repeat} ({load_avg()})", flush=True)

    # -------------------------------------------------------------------- report
    print(f"\nmachine: {load_avg()}")
    header = (f"{'cold start (new process -> 1st prediction)':44s} {'wall s':>7s} {'min s':>6s} "
              f"{'import':>7s} {'load':>6s} {'predict':>7s} {'peak RSS MB':>11s}")
    print("\n" + header + "\n" + "-" * len(header))
    for name, results in runs.items():
        walls = [r[0] for r in results]
        parts = {key: median([r[2][key] for r in results]) for key in ("import", "load",
                                                                       "predict")}
        print(f"{name:44s} {median(walls):7.2f} {min(walls):6.2f} {parts['import']:7.2f} "
              f"{parts['load']:6.2f} {parts['predict']:7.2f} "
              f"{median([r[1] for r in results]):11.0f}")
    print("(wall: median over repeats, interleaved; import/load/predict: seconds measured "
          "inside the child; the rest of wall is interpreter start-up and exit; floor: the "
          "same work with the libraries called directly, no checks, no indvision)")
    print("\nslowest imports of the edge child (cumulative ms, python -X importtime):")
    print("  " + ", ".join(f"{n} {ms:.0f}" for n, ms in slowest_imports(str(bundle), image)))

    edge_start = median([r[0] for r in runs.get("edge, model.onnx", [(float("nan"),)])])
    print("\ngoals:")
    print(install_goal)
    print("  edge cold start <= 0.5 s: "
          + (f"MET ({edge_start:.2f} s)" if edge_start <= 0.5
             else f"MISSED by {edge_start - 0.5:.2f} s ({edge_start:.2f} s)"))
    print(f"\n{load_avg()} (at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
