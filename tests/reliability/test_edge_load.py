"""The edge runtime under load: one ``EdgeClassifier`` shared by threads, and a soak of
10 000 predictions without memory growth.

Bounds (tiny 40 px small_cnn bundle, CPU): after a 500-prediction warm-up, resident memory
(VmRSS) may grow by at most ``SOAK_RSS_BOUND_MB`` = 20 MB over 10 000 more predictions. A leak
of one prepared input per call (40 x 40 x 3 bytes = 4.8 kB) would add 48 MB and fail; allocator
and onnxruntime arena noise stays within a few MB.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from indvision.edge import EdgeClassifier
from tests.conftest import draw_tiny
from tests.stages.conftest import exported_run, trained_run, verified_run  # noqa: F401

THREADS = 4
PER_THREAD = 60
SOAK_PREDICTIONS = 10_000
SOAK_RSS_BOUND_MB = 20.0


def rss_mb() -> float:
    """This process's resident memory in MB, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status VmRSS on this system")


def sample_images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(4)
    return [draw_tiny(("ok", "scratch", "spot")[i % 3], rng, 48) for i in range(n)]


@pytest.mark.parametrize("model", ["model.onnx", "model.tflite", "model_int8.tflite"])
def test_threads_give_the_same_results_as_one_caller(verified_run: Path,  # noqa: F811
                                                     model: str) -> None:
    classifier = EdgeClassifier(verified_run / "bundle", model, allow_unshippable=True)
    pictures = sample_images(PER_THREAD)
    expected = [classifier.predict(p) for p in pictures]
    start = threading.Barrier(THREADS)
    results: dict[int, list] = {}
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()  # all threads hit the model at the same moment
            order = np.random.default_rng(worker).permutation(PER_THREAD)  # different orders
            got = {int(i): classifier.predict(pictures[i]) for i in order}
            results[worker] = [got[i] for i in range(PER_THREAD)]
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert sorted(results) == list(range(THREADS))
    for worker in range(THREADS):
        assert results[worker] == expected, f"thread {worker} got other results"


def test_soak_10000_predictions_without_memory_growth(verified_run: Path) -> None:  # noqa: F811
    classifier = EdgeClassifier(verified_run / "bundle")
    pictures = sample_images(50)
    labels = set(classifier.classes)
    for i in range(500):  # warm-up: onnxruntime arenas, numpy and OpenCV buffers
        classifier.predict(pictures[i % 50])
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    for i in range(SOAK_PREDICTIONS):
        assert classifier.predict(pictures[i % 50])["label"] in labels
    seconds = time.perf_counter() - started
    gc.collect()
    growth = rss_mb() - before
    print(f"soak: {SOAK_PREDICTIONS} predictions in {seconds:.1f} s "
          f"({1000 * seconds / SOAK_PREDICTIONS:.2f} ms each); RSS {before:.1f} MB → "
          f"{before + growth:.1f} MB (growth {growth:+.1f} MB, bound {SOAK_RSS_BOUND_MB} MB)")
    assert growth <= SOAK_RSS_BOUND_MB
    assert seconds < 60
