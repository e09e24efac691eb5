"""--collect on the prediction path: per-image latency with and without it, in the same run.

For one bundle and a folder of images, each image is predicted one at a time as
``python -m indvision.edge predict`` does (load, score, decide, one JSON line), alternating
rounds without collection, with a :class:`indvision.edge.collect.Collector` at its defaults
(uncertain calls and a 1 % sample) and with one that keeps *every* image (``sample=1``: the
worst case — each prediction queues a file copy). The time
measured is the caller's, from the image path to its result: the copy runs on the collector's
thread, so it should not show. Medians of interleaved rounds; compare the ratio, not absolute
numbers across machines.

    python bench/collect_overhead.py exports/defect data/synthetic/defect --rounds 5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import load_avg  # noqa: E402


def one_round(classifier, paths: list[Path], collector) -> list[float]:
    """Per-image seconds, from path to decided result (and, with a collector, its offer)."""
    times = []
    for path in paths:
        started = time.perf_counter()
        result = {"path": str(path), **classifier.predict(str(path))}
        json.dumps(result)
        if collector is not None:
            collector.offer(result, source=path)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle folder, run folder or exports/<pipeline>")
    parser.add_argument("images", type=Path, help="a folder of images (searched recursively)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limit", type=int, default=200, help="images per round")
    args = parser.parse_args()

    from indvision.edge import EdgeClassifier
    from indvision.edge.collect import CollectConfig, Collector
    from indvision.edge.runtime import image_files

    classifier = EdgeClassifier(args.bundle, threads=1)
    paths = list(image_files([args.images]))[:args.limit]
    if not paths:
        sys.exit(f"no images in {args.images}")
    one_round(classifier, paths[:10], None)  # warm-up
    settings = {"with --collect (defaults)": CollectConfig(),
                "with --collect (every image kept)": CollectConfig(sample=1.0,
                                                                   max_images=len(paths) + 1)}
    timings: dict[str, list[float]] = {"without --collect": [], **{k: [] for k in settings}}
    kept = dict.fromkeys(settings, 0)
    with tempfile.TemporaryDirectory() as folder:
        for round_number in range(args.rounds):
            timings["without --collect"] += one_round(classifier, paths, None)
            for index, (name, config) in enumerate(settings.items()):
                keep = Collector(Path(folder) / f"{round_number}-{index}", config,
                                 classifier.good_class, classifier.threshold, "bench")
                timings[name] += one_round(classifier, paths, keep)
                keep.close()
                kept[name] += len(keep.rows)
    print(f"{len(paths)} images x {args.rounds} rounds, one image per call; {load_avg()}")
    print("| | p50 ms | p95 ms |")
    print("|---|---|---|")
    p50 = {}
    for name, values in timings.items():
        p50[name] = float(np.percentile(values, 50)) * 1e3
        print(f"| {name} | {p50[name]:.2f} | {float(np.percentile(values, 95)) * 1e3:.2f} |")
    for name in settings:
        print(f"{name}: {kept[name] / args.rounds:.0f} of {len(paths)} images kept a round; "
              f"p50 ratio with / without {p50[name] / p50['without --collect']:.3f}")


if __name__ == "__main__":
    main()
