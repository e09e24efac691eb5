"""The anchor without indvision: frozen pretrained features + logistic regression, one table.

What a user gets without fine-tuning — the bar issue 5 sets ("frozen ImageNet features plus
logistic regression") — measured on any folder-per-class dataset with the input and backbone
weights a pipeline's defaults use (its ``train`` stage: size, crop or colour window, backbone,
weights, offline mirror included). Grouped, stratified k-fold cross-validation over the whole
set, repeated with shuffled folds: every image is tested once per repeat, and with a
``group_regex`` (a parcel's side and top photos) an object's views never straddle train and
test. Exact duplicate files are counted once (the casting set has some), as ingest does.

Two further questions it answers, for the README's "what limits" notes:

- ``--train-share 0.25 0.5 1``: the learning curve — each training fold cut to that share of its
  objects per class. Still rising steeply at 1.0: more data would help.
- ``--degrade 1 2 4``: the frames shrunk to 1/k per side (and back) before the pipeline's own
  preprocessing. Little change at 2: resolution is not what limits.

Where objects have several views, accuracy is also reported per object (defective when any
view is called defective, as evaluate decides) and per view type.

    python bench/anchor.py ../shared/data/neu
    python bench/anchor.py ../shared/data/casting
    python bench/anchor.py ../shared/data/packages --pipeline parcel --layer block_13_expand_relu \\
        --train-share 0.25 0.5 0.75 1 --degrade 1 2 4

Needs the ``[train]`` and ``[dev]`` extras (scikit-learn).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a clean clone works without an install too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchlib import load_avg  # noqa: E402
from indvision import config, dataset, decision, images, metrics  # noqa: E402
from indvision.errors import IndvisionError  # noqa: E402


@dataclass(frozen=True)
class Dataset:
    """A folder-per-class set, exact duplicates counted once, decoded."""

    name: str
    paths: list[Path]
    frames: list[np.ndarray]  # decoded RGB uint8, as read
    labels: np.ndarray  # class index per image
    classes: list[str]
    groups: np.ndarray  # object per image (the image itself without a group regex)
    views: np.ndarray  # view type per image ("" without a group regex)


def view_of(path: Path, group_regex: str | None) -> str:
    """The view type in a grouped file name: the stem without the group's match
    (``0101_side.jpg`` with ``^(\\d+)_`` → ``side``); "" without a regex or a match."""
    if not group_regex or not re.search(group_regex, path.name):
        return ""
    return re.sub(group_regex, "", path.stem, count=1).strip("_-. ") or "?"


def read_dataset(root: Path, group_regex: str | None) -> Dataset:
    """Every image below ``root/<class>/``, listed and deduplicated as ingest does (one copy of
    byte-identical files; all copies dropped when their labels disagree), each read once."""
    if not root.is_dir():
        raise IndvisionError(f"{root}: not a folder (anchor.py reads folder-per-class sets)")
    listed, _ = dataset.list_class_tree(root)
    contents = {}
    for item in listed:
        contents[item.path] = images.read_bytes(item.path)
        item.sha256 = hashlib.sha256(contents[item.path]).hexdigest()
    kept, _, _ = dataset.dedupe(listed)
    if not kept:
        raise IndvisionError(f"{root}: no images in its class folders")
    classes = sorted({item.label for item in kept})
    paths = [Path(item.path) for item in kept]
    return Dataset(
        name=root.name,
        paths=paths,
        frames=[images.decode(contents[item.path], item.path) for item in kept],
        labels=np.array([classes.index(item.label) for item in kept], dtype=int),
        classes=classes,
        groups=np.array([decision.group_key(item.path, group_regex, item.label,
                                            fallback=item.path) for item in kept]),
        views=np.array([view_of(p, group_regex) for p in paths]),
    )


def degraded(image: np.ndarray, factor: int) -> np.ndarray:
    """The frame shrunk to 1/factor per side and back: what a camera with fewer pixels sees."""
    import cv2

    if factor == 1:
        return image
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // factor), max(1, h // factor)),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def feature_extractor(train: Any, layer: str | None) -> Any:
    """The pipeline's backbone with its weights (as train builds it) → pooled features of
    ``layer`` (default: the backbone's own output), on RGB 0..255 input."""
    import keras

    from indvision import models

    base, source = models.build_backbone(train.backbone, train.height, train.width,
                                         train.resolved_weights(), train.alpha)
    print(f"anchor: {train.backbone} at {train.height}x{train.width}, weights "
          f"{source.describe()}", flush=True)
    inputs = keras.Input((train.height, train.width, 3), dtype="float32")
    row = models.get_backbone(train.backbone)
    x = inputs
    if row.rescale is not None:
        x = keras.layers.Rescaling(row.rescale[0], offset=row.rescale[1])(x)
    if layer:
        try:
            inner = base.get_layer(layer).output
        except ValueError:
            raise IndvisionError(f"--layer {layer}: no such layer in {train.backbone}") from None
        base = keras.Model(base.input, keras.layers.GlobalAveragePooling2D()(inner))
    return keras.Model(inputs, base(x, training=False))


def cross_validate(features: np.ndarray, data: Dataset, good_index: int | None,
                   train_share: float, folds: int, repeats: int, c: float) -> dict[str, Any]:
    """Out-of-fold predictions for every image, per repeat → accuracy per image, object, view
    and defect recall on the unit decided (each the mean over repeats), and the error counts of
    the median repeat."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    per_repeat = []
    for repeat in range(repeats):
        rng = np.random.default_rng(repeat)
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=repeat)
        scores = np.zeros((len(data.labels), len(data.classes)))
        for train_rows, test_rows in splitter.split(features, data.labels, data.groups):
            if train_share < 1:
                train_rows = _share_of_objects(train_rows, data, train_share, rng)
            model = make_pipeline(StandardScaler(),
                                  LogisticRegression(C=c, max_iter=5000))
            model.fit(features[train_rows], data.labels[train_rows])
            scores[np.ix_(test_rows, model.classes_)] = model.predict_proba(
                features[test_rows])
        predicted = scores.argmax(axis=1)
        correct = predicted == data.labels
        result = {"image": correct.mean(), "image_errors": int((~correct).sum()),
                  "views": {v: correct[data.views == v].mean()
                            for v in sorted(set(data.views)) if v}}
        truth, decided = data.labels, predicted
        if good_index is not None and len(set(data.groups)) < len(data.groups):
            truth, decided = metrics.decide_groups(scores, data.labels, data.groups, good_index)
            result["object"] = (truth == decided).mean()
            result["object_errors"] = int((truth != decided).sum())
            result["objects"] = len(truth)
        if good_index is not None:  # on the unit decided: objects where views are grouped
            defective = truth != good_index
            result["escapes"] = int((decided[defective] == good_index).sum())
            result["defective"] = int(defective.sum())
            result["recall"] = 1 - result["escapes"] / max(1, result["defective"])
        per_repeat.append(result)
    median = sorted(per_repeat, key=lambda r: r["image"])[len(per_repeat) // 2]
    summary = dict(median)
    summary["image"] = float(np.mean([r["image"] for r in per_repeat]))
    summary["image_sd"] = float(np.std([r["image"] for r in per_repeat]))
    for key in ("object", "recall"):
        if key in median:
            summary[key] = float(np.mean([r[key] for r in per_repeat]))
    summary["views"] = {v: float(np.mean([r["views"][v] for r in per_repeat]))
                        for v in median["views"]}
    return summary


def _share_of_objects(rows: np.ndarray, data: Dataset, share: float,
                      rng: np.random.Generator) -> np.ndarray:
    """The rows of a random ``share`` of the training objects of each class (at least 2)."""
    keep = []
    for label in np.unique(data.labels[rows]):
        objects = np.unique(data.groups[rows][data.labels[rows] == label])
        chosen = rng.choice(objects, max(2, round(share * len(objects))), replace=False)
        keep.append(rows[np.isin(data.groups[rows], chosen)])
    return np.concatenate(keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="folder-per-class dataset")
    parser.add_argument("--pipeline", default="defect",
                        help="pipeline whose train/ingest/evaluate defaults to use (default "
                             "defect)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="STAGE.KEY=VALUE", help="override the pipeline, as the CLI does")
    parser.add_argument("--layer", help="pool this backbone layer instead of its output "
                                        "(e.g. block_13_expand_relu)")
    parser.add_argument("--train-share", type=float, nargs="+", default=[1.0],
                        help="shares of each training fold's objects to train on (default 1)")
    parser.add_argument("--degrade", type=int, nargs="+", default=[1],
                        help="shrink frames to 1/k per side and back first (default 1: as is)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--c", type=float, default=0.05,
                        help="inverse L2 strength of the logistic regression (default 0.05)")
    args = parser.parse_args(argv)
    try:
        spec = config.load_pipeline(args.pipeline, args.overrides, str(args.data))
        train = spec.config("train")
        group_regex = spec.config("ingest").group_regex
        data = read_dataset(args.data, group_regex)
        good = metrics.resolve_good_class(spec.config("ingest").good_class, data.classes)
        good_index = data.classes.index(good) if good is not None else None
        if any(not 0 < s <= 1 for s in args.train_share) or any(k < 1 for k in args.degrade):
            raise IndvisionError("--train-share must be in (0, 1] and --degrade at least 1")
    except IndvisionError as exc:
        print(f"anchor: {exc}", file=sys.stderr)
        return 2
    print(f"anchor: {data.name}: {len(data.paths)} images, {len(set(data.groups))} objects, "
          f"classes {', '.join(data.classes)}; {load_avg()}", flush=True)
    extractor = feature_extractor(train, args.layer)
    rows = []
    for factor in args.degrade:
        started = time.perf_counter()
        x = np.stack([images.prepare(degraded(f, factor), train.input_spec)
                      for f in data.frames])
        features = extractor.predict(x.astype("float32"), batch_size=16, verbose=0)
        seconds = time.perf_counter() - started
        for share in args.train_share:
            result = cross_validate(features, data, good_index, share, args.folds,
                                    args.repeats, args.c)
            rows.append((factor, share, result, seconds))
    h, w = data.frames[0].shape[:2]
    print(f"\n{args.folds}-fold grouped CV × {args.repeats} repeats, logistic regression "
          f"(C {args.c}) on {args.layer or 'pooled backbone output'} features, input "
          f"{train.height}x{train.width}"
          + (f", colour window {train.colour_window}" if train.colour_window else "") + "\n")
    print("| dataset | frames | train share | per image (errors) | per object (errors) "
          "| defect recall (escapes) | per view | features s |")
    print("|---|---|---|---|---|---|---|---|")
    for factor, share, r, seconds in rows:
        frame = "as given" if factor == 1 else f"1/{factor} per side ({w // factor}x{h // factor})"
        image = f"{r['image']:.1%} ± {r['image_sd']:.1%} ({r['image_errors']}/{len(data.paths)})"
        obj = (f"{r['object']:.1%} ({r['object_errors']}/{r['objects']})" if "object" in r
               else "–")
        recall = (f"{r['recall']:.1%} ({r['escapes']}/{r['defective']})" if "recall" in r
                  else "–")
        views = " · ".join(f"{v} {a:.1%}" for v, a in r["views"].items()) or "–"
        print(f"| {data.name} | {frame} | {share:g} | {image} | {obj} | {recall} | {views} "
              f"| {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
