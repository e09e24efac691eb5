"""Is the train loader ever the bottleneck? Loader images/s against training-step images/s.

For the default defect config (``pipelines/defect.yaml``'s train settings) and a finished run
(its ingest split, augment stage's ``augmentation.json`` and ``model.keras``), it measures:

- **loader**: the train stage's own ``PyDataset`` (:mod:`indvision.training.batches`), with the
  pipeline's augmentation, on the cached uint8 images exactly as training holds them — one
  thread calling ``__getitem__`` and Keras' own iterator with the config's ``workers``
  threads — batches built, no training;
- **training step**: ``model.train_on_batch`` on batches prepared beforehand (no loader), for
  the head phase (backbone frozen) and the fine-tuning phase (top layers unfrozen), compiled
  as the train stage compiles;
- **fit**: ``model.fit`` a few steps fed by the PyDataset against fed by cached batches, the
  end-to-end answer (equal when the loader keeps up).

Blocks are interleaved and repeated, medians reported, machine load printed: the cores are
shared, so compare the ratios. Exit code 0 either way.

    python bench/train_speed.py                      # exports/defect (latest passing run)
    python bench/train_speed.py exports/defect/<run_id> --steps 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a clean clone without an install works too

from benchlib import load_avg  # noqa: E402
from indvision import config as pipeline_config  # noqa: E402
from indvision import edge, models  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def run_folder(path: str) -> Path:
    """The run folder of a bundle / run / exports/<pipeline> argument."""
    folder = Path(path)
    if (folder / "train" / "model.keras").is_file():
        return folder
    return edge.resolve_bundle(folder).parent


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", default=str(ROOT / "exports" / "defect"),
                        help="run folder, its bundle, or exports/<pipeline> "
                             "(default: exports/defect)")
    parser.add_argument("--pipeline", default="defect", help="pipeline whose train config "
                                                             "is measured (defect)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--steps", type=int, default=4, help="batches per block (4)")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader threads (default: the train config's workers)")
    args = parser.parse_args(argv)

    try:
        run = run_folder(args.run)
    except Exception as exc:
        print(f"error: {exc}\n(make one: python -m indvision.pipeline defect)", file=sys.stderr)
        return 0
    import keras

    from indvision.dataset import read_splits
    from indvision.training import batches

    cfg = pipeline_config.load_pipeline(args.pipeline).config("train")
    workers = args.workers or cfg.workers
    spec = cfg.input_spec
    classes = json.loads((run / "ingest" / "classes.json").read_text(encoding="utf-8"))
    rows = [r for r in read_splits(run / "ingest" / "splits.csv") if r["split"] == "train"]
    labels = np.array([classes.index(r["label"]) for r in rows])
    augmentation_file = run / "augment" / "augmentation.json"
    augmentation = (json.loads(augmentation_file.read_text(encoding="utf-8"))
                    if augmentation_file.is_file() else None)
    print(f"run {run}\n{cfg.backbone} alpha {cfg.alpha} at {cfg.width}x{cfg.height}, batch "
          f"{cfg.batch_size}, {workers} loader threads, {len(rows)} train images, "
          f"augmentation {'on' if augmentation else 'off'}; {load_avg()}", flush=True)
    started = time.perf_counter()
    pixels = batches.load_images([r["path"] for r in rows], spec, workers)
    decode_s = time.perf_counter() - started
    print(f"decoded into the cache in {decode_s:.1f} s ({len(rows) / decode_s:.0f} images/s)",
          flush=True)

    split = batches.Split(rows, labels, pixels)

    def dataset(threads: int) -> object:
        return batches.ImageBatches(split, len(classes), spec, cfg.batch_size, shuffle=True,
                                    augmentation=augmentation, seed=42, workers=threads)

    loader = dataset(workers)
    n_batches = len(loader)

    def loader_single(first: int) -> None:
        for index in range(first, first + args.steps):
            loader[index % n_batches]

    def loader_keras(epoch: int) -> None:
        """Keras' own PyDataset iteration (its thread pool of ``workers``), as fit uses it."""
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

        threaded = dataset(workers)
        threaded.set_epoch(epoch)
        iterator = PyDatasetAdapter(threaded, shuffle=False).get_numpy_iterator()
        for count, _ in enumerate(iterator, start=1):
            if count >= args.steps:
                break
        threaded.on_epoch_end()

    cached = [loader[i] for i in range(min(args.steps, n_batches))]
    model = models.classifier_of(models.load_model(run / "train" / "model.keras"))

    def compile_for(phase: str) -> None:
        if phase == "head":
            models.freeze_backbone(model)
            rate = cfg.head_learning_rate
        else:
            models.unfreeze_top(model, cfg.backbone, cfg.unfreeze_top_layers)
            rate = cfg.finetune_learning_rate
        model.compile(optimizer=keras.optimizers.Adam(rate),
                      loss=keras.losses.CategoricalCrossentropy(
                          label_smoothing=cfg.label_smoothing), metrics=["accuracy"])
        model.train_on_batch(*cached[0])  # traces and compiles the step

    def train_steps() -> None:
        for x, y in cached:
            model.train_on_batch(x, y)

    def fit_loader() -> None:
        model.fit(dataset(workers), epochs=1, steps_per_epoch=args.steps, verbose=0)

    def fit_cached() -> None:
        x = np.concatenate([b[0] for b in cached])
        y = np.concatenate([b[1] for b in cached])
        model.fit(x, y, batch_size=cfg.batch_size, epochs=1, shuffle=False, verbose=0)

    per_batch = cfg.batch_size
    results: dict[str, list[float]] = {}
    loader_single(0)  # warm-up (albumentations built per thread)
    for phase in ("head", "finetune"):
        compile_for(phase)
        fit_loader()  # warm-up: fit's own tf.function
        fit_cached()
        for round_index in range(args.rounds):
            blocks = {
                "loader, 1 thread (__getitem__)": lambda r=round_index: loader_single(
                    r * args.steps),
                f"loader, Keras iterator, {workers} threads": lambda r=round_index:
                    loader_keras(r + 1),
                f"train_on_batch ({phase})": train_steps,
                f"fit fed by the PyDataset ({phase})": fit_loader,
                f"fit on cached batches ({phase})": fit_cached,
            }
            if phase == "finetune" or round_index % 2:  # loader rows: every other round
                blocks = dict(reversed(blocks.items()))
            for name, block in blocks.items():
                if name.startswith("loader") and phase == "finetune":
                    continue  # the loader does not depend on the phase
                seconds = timed(block)
                results.setdefault(name, []).append(args.steps * per_batch / seconds)
            print(f"  {phase} round {round_index + 1}/{args.rounds} ({load_avg()})", flush=True)

    print(f"\nmachine: {load_avg()}")
    header = f"{'what (images/s, median of rounds)':46s} {'img/s':>8s} {'min':>7s} {'max':>7s}"
    print(header + "\n" + "-" * len(header))
    median = {name: float(np.median(v)) for name, v in results.items()}
    for name, values in results.items():
        print(f"{name:46s} {median[name]:8.1f} {min(values):7.1f} {max(values):7.1f}")

    loader_rate = median[f"loader, Keras iterator, {workers} threads"]
    print("\nloader vs training step (> 1: the loader keeps up):")
    for phase in ("head", "finetune"):
        step = median[f"train_on_batch ({phase})"]
        fit_ratio = median[f"fit fed by the PyDataset ({phase})"] / median[
            f"fit on cached batches ({phase})"]
        print(f"  {phase:9s} loader/step {loader_rate / step:5.1f}x   "
              f"fit(PyDataset)/fit(cached) {fit_ratio:4.2f}  "
              f"-> {'loader is NOT the bottleneck' if loader_rate > step else 'LOADER BOUND'}")
    print(f"\n{load_avg()} (at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
