"""The edge runtime: run an exported bundle with numpy, OpenCV and onnxruntime only.

Copy a bundle folder (``model.json`` + model files) to the device, ``pip install indvision``
(no extras; ``indvision[litert]`` to run the ``.tflite`` files) and::

    python -m indvision.edge predict  BUNDLE PATH...            # files or folders (recursive)
    python -m indvision.edge evaluate BUNDLE DATA_DIR [--group-regex RE]
                             [--write-golden FILE | --golden FILE]
    python -m indvision.edge watch    BUNDLE SOURCE [--interval S] [--max-frames N]

``BUNDLE`` is a bundle folder, a run folder (its ``bundle/``), or ``exports/<pipeline>`` (the
bundle its ``latest.json`` points at: the newest run that passed every gate). ``--model FILE``
picks a file of the bundle (default: ``model.json``'s ``default_model``, ``model.onnx``).

- ``predict`` prints one JSON line per image: ``{"path", "label", "score", "scores"}``. An
  image that cannot be read gets ``{"path", "error"}`` instead and the others carry on; the exit
  code is then 1 (so a script notices), after every image was tried.
- ``evaluate`` takes a folder-per-class tree and prints one JSON object: ``n``, ``accuracy``,
  ``macro_f1``, ``per_class`` precision/recall/F1, ``confusion`` (rows = true class), and
  ``groups`` (the same on fused views) when a group regex applies. A class folder the bundle
  does not know is an error (exit 1); unreadable images are listed in ``skipped`` and make the
  exit code 1 after the report is printed.

Regression guard (golden files) — record a model's behaviour on held-out images once, then
check every later model (a retrained one, another format, another device, a library upgrade)
against it before it ships::

    python -m indvision.edge evaluate BUNDLE HELDOUT --write-golden golden.json [--floor-margin M]
    python -m indvision.edge evaluate NEW_BUNDLE HELDOUT --golden golden.json [--max-changed N]

- ``--write-golden FILE`` saves every image's true class (its folder), predicted label and
  scores, and the **metric floors**: accuracy and each class's recall as measured now, minus
  ``--floor-margin`` (a fraction, default 0.0: the new model must do at least as well).
- ``--golden FILE`` checks the bundle against it and exits 1 when accuracy or any class's
  recall is below its floor, when more than ``--max-changed`` images (default 0) predict
  another label than the golden record, or when a golden image is missing or unreadable.
  Scores are checked too when the golden was recorded from this very model file (same
  sha256: another device, a library upgrade must reproduce them within 1e-4); for another
  model (retrained, another format) only labels and floors count, unless
  ``--golden-tolerance DIFF`` asks for scores within DIFF. The report's ``golden`` part holds
  ``passed``, ``failures`` (one sentence each), ``floors`` (floor, measured, passed per
  metric) and ``changed`` (every image whose label changed: ``image``, ``path``, ``true``,
  ``golden``, ``now``); stderr lists them too.
- ``watch`` follows a folder being filled (each new image predicted once, one JSON line each;
  images already there are predicted first) or a video file / camera index (one JSON line per
  frame). It ends after ``--max-frames`` predictions, at the end of a video, or on Ctrl-C
  (exit 0).
- Every other error (missing bundle, tampered model file, unshippable model, bad arguments) is
  one line ``error: ...`` on stderr and exit code 1, never a traceback.

Labels are decided exactly as evaluate decided them (:func:`indvision.metrics.decide` with the
bundle's good class and threshold); views of one object are fused with
:func:`indvision.metrics.fuse_groups`. This module never imports TensorFlow or Keras (a test
checks it in a fresh interpreter): only :mod:`indvision.images`, :mod:`indvision.metrics`,
:mod:`indvision.formats` (numpy + onnxruntime; ai_edge_litert only for ``.tflite``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from indvision import atomic, decision, formats, images, metrics
from indvision.errors import IndvisionError, did_you_mean

LATEST = "latest.json"
ImageInput = str | os.PathLike | np.ndarray


class EdgeClassifier:
    """An exported model, checked and ready: ``predict`` images, ``predict_groups`` objects.

    Refuses a ``model.json`` whose sha256 differs from its records (:func:`check_model_json`),
    a model file whose sha256 differs from ``model.json`` and, unless
    ``allow_unshippable``, one that verify marked not shippable. Safe to share between threads.
    """

    def __init__(self, bundle: str | os.PathLike, model: str | None = None, *,
                 allow_unshippable: bool = False, group_regex: str | None = None,
                 threads: int | None = None, spin_wait: bool = True) -> None:
        self.bundle = resolve_bundle(bundle)
        check_model_json(self.bundle, Path(bundle))  # before trusting its hashes
        self.meta = formats.read_model_json(self.bundle)
        files = self.meta["files"]
        model = model or self.meta.get("default_model") or formats.DEFAULT_MODEL
        if model not in files:
            raise IndvisionError(f"{self.bundle}: no model '{model}' in this bundle"
                                 f"{did_you_mean(model, files)}")
        self.model_file = model
        self.entry = files[model]
        self.format = formats.get_format(str(self.entry.get("format")))
        formats.check_file_hash(self.bundle / model, self.entry)
        if self.entry.get("shippable") is False and not allow_unshippable:
            raise IndvisionError(f"{self.bundle / model}: marked not shippable by verify "
                                 f"({self.entry.get('reason', 'no reason recorded')}); use "
                                 f"another --model, or allow_unshippable=True to run it anyway")
        self.classes: list[str] = list(self.meta["classes"])
        self.spec = images.InputSpec.from_dict(self.meta["input_spec"])
        decision = self.meta.get("decision") or {}
        self.good_class: str | None = decision.get("good_class")
        self.good_index = (self.classes.index(self.good_class)
                           if self.good_class in self.classes else None)
        self.threshold: float | None = decision.get("threshold")
        self.group_regex: str | None = group_regex or decision.get("group_regex")
        self._run = formats.load_runner(self.bundle / model, threads, spin_wait)

    @property
    def verified(self) -> bool:
        """Whether verify has checked this file against the Keras model."""
        return bool(self.entry.get("verified"))

    # -- images in, results out

    def load(self, item: ImageInput) -> np.ndarray:
        """One path or RGB image array → model input (``H x W x 3`` uint8, the bundle's spec)."""
        if isinstance(item, np.ndarray):
            return images.prepare(as_rgb_uint8(item), self.spec)
        return images.load(item, self.spec)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (``N x C``) for a batch already prepared with :meth:`load`."""
        return self._run(batch)

    def predict(self, x: ImageInput | Sequence[ImageInput]) -> dict[str, Any] | list[dict]:
        """Predict one image (path or RGB uint8 array) → a dict; a list or N x H x W x 3
        batch → a list of dicts ``{"label", "score", "scores": {class: prob}}``."""
        single = isinstance(x, (str, os.PathLike)) or (isinstance(x, np.ndarray) and x.ndim <= 3)
        items = [x] if single else list(x)
        if not items:
            return []
        probs = self.scores(np.stack([self.load(item) for item in items]))
        results = self.results(probs)
        return results[0] if single else results

    def results(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """Decide labels for rows of probabilities (bundle's good class and threshold)."""
        decided = metrics.decide(probs, self.good_index, self.threshold)
        return [{"label": self.classes[index], "score": float(row[index]),
                 "scores": {name: float(p) for name, p in zip(self.classes, row, strict=True)}}
                for index, row in zip(decided, probs, strict=True)]

    def predict_groups(self, paths: Sequence[str | os.PathLike],
                       group_regex: str | None = None) -> list[dict[str, Any]]:
        """One result per object: views grouped by ``group_regex`` on the file name (default:
        the bundle's), each group taking its least-good view's scores."""
        regex = group_regex or self.group_regex
        paths = [str(p) for p in paths]
        if not paths:
            return []
        probs = self.scores(np.stack([self.load(p) for p in paths]))
        keys = [decision.group_key(p, regex, fallback=p) for p in paths]
        names, chosen, fused = metrics.fuse_groups(probs, keys, self.good_index)
        results = []
        for name, pick, result in zip(names, chosen, self.results(fused), strict=True):
            members = [p for p, k in zip(paths, keys, strict=True) if k == name]
            results.append({"group": name, **result, "members": members,
                            "decided_by": paths[pick]})
        return results


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 ``H x W x 3`` view of a grey (H x W / H x W x 1) or RGBA image array."""
    if image.dtype != np.uint8:
        raise IndvisionError(f"image arrays must be uint8 RGB (0..255), got dtype {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]
    raise IndvisionError(f"expected an H x W x 3 RGB image array, got shape {image.shape}")


def resolve_bundle(path: str | os.PathLike) -> Path:
    """A bundle folder; a run folder → its ``bundle/``; ``exports/<pipeline>`` → latest's."""
    folder = Path(path).expanduser()
    if (folder / formats.MODEL_JSON).is_file():
        return folder
    if (folder / "bundle" / formats.MODEL_JSON).is_file():
        return folder / "bundle"
    latest_path = folder / LATEST
    if latest_path.is_file():
        try:
            latest = json.loads(latest_path.read_text(encoding="utf-8"))
            bundle = folder / latest["bundle"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndvisionError(f"cannot read {latest_path}: {exc}") from None
        if not (bundle / formats.MODEL_JSON).is_file():
            raise IndvisionError(f"{latest_path} points at {bundle}, which holds no "
                                 f"{formats.MODEL_JSON}: was the run folder moved or deleted?")
        return bundle
    if not folder.exists():
        raise IndvisionError(f"{folder}: no such bundle folder")
    raise IndvisionError(f"{folder}: not a bundle (no {formats.MODEL_JSON}), run folder or "
                         f"exports/<pipeline> folder (no {LATEST}: no run has passed verify)")


def check_model_json(bundle: Path, given: Path) -> None:
    """Refuse a ``model.json`` whose sha256 differs from a record of it: the sidecar
    ``model.json.sha256`` verify leaves in the bundle, ``latest.json`` when opened through
    ``exports/<pipeline>``, and the run's ``manifest.json`` when the bundle is in a run folder."""
    path = bundle / formats.MODEL_JSON
    atomic.check_sha256_sidecar(path)
    latest_path = Path(given).expanduser() / LATEST
    if not (Path(given) / formats.MODEL_JSON).is_file() and latest_path.is_file():
        expected = json.loads(latest_path.read_text(encoding="utf-8")).get("model_json_sha256")
        if expected:
            atomic.check_sha256(path, expected, latest_path)
    manifest_path = bundle.parent / "manifest.json"
    if manifest_path.is_file():
        try:
            stages = json.loads(manifest_path.read_text(encoding="utf-8"))["stages"]
            files = stages["export"]["outputs"]["bundle"]["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return  # no usable record of this bundle there
        expected = files.get(f"{bundle.name}/{formats.MODEL_JSON}")
        if expected:
            atomic.check_sha256(path, expected, manifest_path)


def image_files(paths: Sequence[str | os.PathLike]) -> Iterator[Path]:
    """Files as given; folders → their image files, recursively, sorted, hidden ones skipped."""
    for item in paths:
        path = Path(item)
        if not path.is_dir():
            yield path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                suffix = Path(name).suffix.lower()
                if not name.startswith(".") and suffix in images.IMAGE_EXTENSIONS:
                    yield Path(dirpath) / name


# ----------------------------------------------------------------------------- commands

Emit = Callable[[dict[str, Any]], None]


def predict_files(classifier: EdgeClassifier, paths: Sequence[Path], emit: Emit,
                  batch_size: int = 32) -> int:
    """Predict files in batches, emitting one result (or error) per file in the given order;
    returns the number of files that could not be read."""
    failures = 0
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        loaded: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for index, path in enumerate(chunk):
            try:
                loaded[index] = classifier.load(path)
            except IndvisionError as exc:
                errors[index] = getattr(exc, "reason", str(exc))
        failures += len(errors)
        results = (dict(zip(loaded, classifier.results(classifier.scores(
            np.stack(list(loaded.values())))), strict=True)) if loaded else {})
        for index, path in enumerate(chunk):
            emit({"path": str(path), **results[index]} if index in results
                 else {"path": str(path), "error": errors[index]})
    return failures


@dataclass
class TreePredictions:
    """Scores for every readable image of a folder-per-class tree, in a stable order."""

    data_dir: Path
    paths: list[str]
    labels: np.ndarray  # true class index per image (its folder)
    scores: np.ndarray  # N x C probabilities
    skipped: list[dict[str, str]]  # unreadable images: path, error


def predict_tree(classifier: EdgeClassifier, data_dir: Path) -> TreePredictions:
    """Predict every image below ``data_dir/<class>/``; a folder that is not a class fails."""
    if not data_dir.is_dir():
        raise IndvisionError(f"{data_dir}: no such folder (expected DATA_DIR/<class>/<images>)")
    class_dirs = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise IndvisionError(f"{data_dir}: no class folders (expected DATA_DIR/<class>/<images>)")
    for folder in class_dirs:
        if folder.name not in classifier.classes:
            raise IndvisionError(f"{folder}: class folder '{folder.name}' is not a class of this "
                                 f"bundle{did_you_mean(folder.name, classifier.classes)}; "
                                 "rename or move that folder")
    paths: list[str] = []
    labels: list[int] = []
    probs: list[list[float]] = []
    skipped: list[dict[str, str]] = []

    def collect(result: dict[str, Any]) -> None:
        if "error" in result:
            skipped.append({"path": result["path"], "error": result["error"]})
        else:
            paths.append(result["path"])
            probs.append([result["scores"][c] for c in classifier.classes])

    for folder in class_dirs:
        before = len(paths)
        predict_files(classifier, list(image_files([folder])), collect)
        labels += [classifier.classes.index(folder.name)] * (len(paths) - before)
    if not paths:
        raise IndvisionError(f"{data_dir}: no readable images in its class folders")
    return TreePredictions(data_dir, paths, np.array(labels, dtype=int),
                           np.array(probs, dtype=np.float64), skipped)


def evaluate_tree(classifier: EdgeClassifier, data_dir: Path, group_regex: str | None = None,
                  predictions: TreePredictions | None = None) -> dict[str, Any]:
    """Accuracy, per-class numbers and confusion on a folder-per-class tree (+ fused groups)."""
    found = predictions or predict_tree(classifier, data_dir)
    decided = metrics.decide(found.scores, classifier.good_index, classifier.threshold)
    report: dict[str, Any] = {
        "bundle": str(classifier.bundle), "model": classifier.model_file,
        "good_class": classifier.good_class, "threshold": classifier.threshold,
        **metrics.classification_metrics(found.labels, decided, classifier.classes,
                                         classifier.good_class),
    }
    regex = group_regex or classifier.group_regex
    if regex:
        keys = [decision.group_key(p, regex, classifier.classes[y], fallback=p)
                for p, y in zip(found.paths, found.labels, strict=True)]
        _, chosen, fused = metrics.fuse_groups(found.scores, keys, classifier.good_index)
        group_decided = metrics.decide(fused, classifier.good_index, classifier.threshold)
        report["group_regex"] = regex
        report["groups"] = metrics.classification_metrics(
            found.labels[chosen], group_decided, classifier.classes, classifier.good_class)
    report["skipped"] = found.skipped
    return report


GOLDEN_FORMAT = 2
MAX_LISTED = 500  # changed images listed in the JSON report (the count is always exact)
SAME_MODEL_TOLERANCE = 1e-4  # score drift allowed when the golden was made by this very file


def golden_record(classifier: EdgeClassifier, found: TreePredictions,
                  floor_margin: float = 0.0) -> dict[str, Any]:
    """Per-image true class, label and scores, plus the metric floors later models must meet.

    Images are keyed by their path relative to the data folder. Floors: accuracy and the
    recall of every class present in the folder, as measured, minus ``floor_margin`` (0..1).
    """
    if not 0.0 <= floor_margin < 1.0:
        raise IndvisionError(f"--floor-margin must be a fraction in [0, 1), got {floor_margin}")
    decided = metrics.decide(found.scores, classifier.good_index, classifier.threshold)
    measured = metrics.classification_metrics(found.labels, decided, classifier.classes,
                                               classifier.good_class)
    present = [c for c in classifier.classes if measured["per_class"][c]["support"]]

    def floor(value: float) -> float:
        return max(0.0, value - floor_margin)

    return {
        "golden_format": GOLDEN_FORMAT,
        "model": classifier.model_file,
        "model_sha256": classifier.entry.get("sha256"),
        "run_id": (classifier.meta.get("provenance") or {}).get("run_id"),
        "classes": classifier.classes,
        "threshold": classifier.threshold,
        "floors": {
            "margin": floor_margin,
            "accuracy": floor(measured["accuracy"]),
            "recall": {c: floor(measured["per_class"][c]["recall"]) for c in present},
            "measured": {"n": measured["n"], "accuracy": measured["accuracy"],
                         "recall": {c: measured["per_class"][c]["recall"] for c in present}},
        },
        "images": {
            Path(path).relative_to(found.data_dir).as_posix(): {
                "true": classifier.classes[truth], "label": classifier.classes[index],
                "scores": [float(p) for p in row]}
            for path, truth, index, row in zip(found.paths, found.labels, decided, found.scores,
                                               strict=True)
        },
    }


def check_floors(report: dict[str, Any], floors: dict[str, Any]) -> dict[str, Any]:
    """Each floor of a golden record against an evaluate report: floor, measured, passed."""
    result: dict[str, Any] = {}
    if "accuracy" in floors:
        result["accuracy"] = {"floor": floors["accuracy"], "now": report["accuracy"],
                              "passed": report["accuracy"] >= floors["accuracy"] - 1e-9}
    recalls = {}
    for name, limit in (floors.get("recall") or {}).items():
        entry = report["per_class"].get(name)
        now = entry["recall"] if entry and entry["support"] else None
        recalls[name] = {"floor": limit, "now": now,
                         "passed": now is not None and now >= limit - 1e-9}
    result["recall"] = recalls
    return result


def compare_golden(classifier: EdgeClassifier, found: TreePredictions, golden: dict[str, Any],
                   report: dict[str, Any] | None = None, max_changed: int = 0,
                   tolerance: float | None = None) -> dict[str, Any]:
    """Check predictions on a folder against a golden record (see the module docstring).

    ``passed`` is False when accuracy or a class's recall (from ``report``, the evaluate
    report of the same predictions) is below its floor, when more than ``max_changed`` images
    changed label, when a golden image is missing, or when a score moved by more than
    ``tolerance`` (default: :data:`SAME_MODEL_TOLERANCE` when the golden was recorded from this
    very model file, else scores are reported, not checked).
    """
    if golden.get("classes") != classifier.classes:
        raise IndvisionError(f"golden file classes {golden.get('classes')} differ from the "
                             f"bundle's {classifier.classes}")
    report = report or evaluate_tree(classifier, found.data_dir, predictions=found)
    now = golden_record(classifier, found)["images"]
    before = golden.get("images") or {}
    common = sorted(set(now) & set(before))
    full_path = {Path(p).relative_to(found.data_dir).as_posix(): p for p in found.paths}
    changed = [{"image": k, "path": full_path[k], "true": now[k]["true"],
                "golden": before[k]["label"], "now": now[k]["label"]}
               for k in common if before[k]["label"] != now[k]["label"]]
    max_diff = max((float(np.max(np.abs(np.subtract(now[k]["scores"], before[k]["scores"]))))
                    for k in common), default=0.0)
    missing = sorted(set(before) - set(now))
    floors = check_floors(report, golden.get("floors") or {})
    model_changed = golden.get("model_sha256") != classifier.entry.get("sha256")
    if tolerance is None and not model_changed:  # the very same file must reproduce its scores
        tolerance = SAME_MODEL_TOLERANCE

    failures = []
    if "accuracy" in floors and not floors["accuracy"]["passed"]:
        failures.append(f"accuracy {floors['accuracy']['now']:.4f} is below its floor "
                        f"{floors['accuracy']['floor']:.4f}")
    for name, entry in floors["recall"].items():
        if not entry["passed"]:
            now_text = "no images" if entry["now"] is None else f"{entry['now']:.4f}"
            failures.append(f"recall of '{name}' {now_text} is below its floor "
                            f"{entry['floor']:.4f}")
    if len(changed) > max_changed:
        failures.append(f"{len(changed)} of {len(common)} images changed label "
                        f"(allowed {max_changed})")
    if missing:
        failures.append(f"{len(missing)} golden images are missing or unreadable")
    if tolerance is not None and max_diff > tolerance:
        failures.append(f"max |Δscore| {max_diff:.3g} > tolerance {tolerance:g}")
    return {
        "passed": not failures,
        "failures": failures,
        "floors": floors,
        "compared": len(common),
        "label_changes": len(changed),
        "max_changed": max_changed,
        "changed": changed[:MAX_LISTED],
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "missing": missing[:MAX_LISTED],
        "new": len(set(now) - set(before)),
        "model_changed": model_changed,
        "golden_model": golden.get("model"),
        "golden_run_id": golden.get("run_id"),
    }


def golden_summary(golden_path: str, result: dict[str, Any]) -> str:
    """The stderr text for a failed golden check: the failures, then each changed image."""
    lines = [f"error: golden regression against {golden_path}: " + "; ".join(result["failures"])]
    lines += [f"  changed: {c['path']}: golden {c['golden']} -> now {c['now']} (true {c['true']})"
              for c in result["changed"]]
    if result["label_changes"] > len(result["changed"]):
        lines.append(f"  ... and {result['label_changes'] - len(result['changed'])} more")
    lines += [f"  missing: {m}" for m in result["missing"]]
    return "\n".join(lines)


def watch(classifier: EdgeClassifier, source: str, emit: Emit, interval: float | None = None,
          max_frames: int | None = None) -> int:
    """Predict what arrives at ``source`` (folder, video file or camera index) until
    ``max_frames`` predictions, the end of a video, or Ctrl-C; returns the count."""
    if source.isdigit():
        return _watch_stream(classifier, int(source), emit, interval or 0.0, max_frames, True)
    path = Path(source)
    if path.is_dir():
        return _watch_folder(classifier, path, emit, 1.0 if interval is None else interval,
                             max_frames)
    if path.is_file():
        return _watch_stream(classifier, str(path), emit, interval or 0.0, max_frames, False)
    raise IndvisionError(f"{source}: not a folder, video file or camera index")


def _watch_folder(classifier: EdgeClassifier, folder: Path, emit: Emit, interval: float,
                  max_frames: int | None, retries: int = 3) -> int:
    """Poll ``folder``; predict each image file once. A file that does not decode may still
    be being written: it is retried on the next polls before an error line is emitted."""
    done: set[Path] = set()
    attempts: dict[Path, tuple[int, tuple[int, int]]] = {}
    count = 0
    while True:
        for path in image_files([folder]):
            if path in done:
                continue
            try:
                result = {"path": str(path), **classifier.predict(path)}
            except images.ImageError as exc:
                stat = path.stat() if path.exists() else None
                signature = (stat.st_size, stat.st_mtime_ns) if stat else (0, 0)
                tries, last = attempts.get(path, (0, signature))
                tries = tries + 1 if signature == last else 1  # changed: still being written
                attempts[path] = (tries, signature)
                if tries < retries:
                    continue
                result = {"path": str(path), "error": exc.reason}
            done.add(path)
            emit(result)
            count += 1
            if max_frames is not None and count >= max_frames:
                return count
        time.sleep(interval)


def _watch_stream(classifier: EdgeClassifier, source: int | str, emit: Emit, interval: float,
                  max_frames: int | None, is_camera: bool) -> int:
    """One prediction per frame (or per ``interval`` seconds; frames between are dropped)."""
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise IndvisionError(f"{source}: OpenCV cannot open this "
                             f"{'camera' if is_camera else 'video file'}")
    count, frame_index, last = 0, -1, None
    started = time.monotonic()
    try:
        while max_frames is None or count < max_frames:
            if not capture.grab():
                if is_camera:
                    raise IndvisionError(f"camera {source}: no frame (disconnected?)")
                return count
            frame_index += 1
            clock = (time.monotonic() - started if is_camera
                     else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
            if interval > 0 and last is not None and clock - last < interval:
                continue  # dropped without decoding
            ok, bgr = capture.retrieve()
            if not ok or bgr is None:
                continue
            last = clock
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # OpenCV frames are BGR; the model: RGB
            emit({"frame": frame_index, "time_s": round(clock, 3), **classifier.predict(rgb)})
            count += 1
    finally:
        capture.release()
    return count


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m indvision.edge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("bundle", help="bundle folder, run folder, or exports/<pipeline>")
        sub.add_argument("--model", help="model file in the bundle (default: model.json's)")
        sub.add_argument("--no-spin-wait", action="store_true",
                         help="idle onnxruntime threads sleep: faster where other work "
                              "shares the CPU, slower on a dedicated one")
        sub.add_argument("--allow-unshippable", action="store_true",
                         help="run a file verify marked not shippable")
        return sub

    predict = add("predict", "one JSON line per image")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    evaluate = add("evaluate", "metrics on a folder-per-class tree")
    evaluate.add_argument("data_dir", metavar="DATA_DIR")
    evaluate.add_argument("--group-regex", help="fuse views per group (default: the bundle's)")
    evaluate.add_argument("--write-golden", metavar="FILE",
                          help="save per-image labels and scores and the metric floors "
                               "(accuracy, each class's recall) as a golden record")
    evaluate.add_argument("--floor-margin", type=float, default=0.0, metavar="FRACTION",
                          help="with --write-golden: floors = measured minus this (default 0.0; "
                               "0.02 = 2 points)")
    evaluate.add_argument("--golden", metavar="FILE",
                          help="check against a golden record; exit 1 on a floor not met or "
                               "too many changed labels")
    evaluate.add_argument("--max-changed", type=int, default=0, metavar="N",
                          help="images allowed to change label against --golden (default 0)")
    evaluate.add_argument("--golden-tolerance", type=float, default=None, metavar="DIFF",
                          help="also fail when a score moved by more than DIFF against --golden "
                               "(default: 1e-4 for the golden's own model file, else unchecked)")
    watch_cmd = add("watch", "predict images arriving in a folder, or video / camera frames")
    watch_cmd.add_argument("source", metavar="SOURCE", help="folder, video file or camera index")
    watch_cmd.add_argument("--interval", type=float, default=None,
                           help="seconds between folder polls (default 1) or between predicted "
                                "frames of a stream (default 0: every frame)")
    watch_cmd.add_argument("--max-frames", type=int, default=None,
                           help="stop after this many predictions")
    return parser


def _emit_line(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def _read_golden(path: str) -> dict[str, Any]:
    try:
        golden = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndvisionError(f"cannot read golden file {path}: {exc}") from None
    if not isinstance(golden, dict) or "images" not in golden:
        raise IndvisionError(f"{path}: not a golden file (write one with --write-golden)")
    return golden


def _evaluate_command(classifier: EdgeClassifier, args: argparse.Namespace) -> int:
    if args.max_changed < 0:
        raise IndvisionError(f"--max-changed must be >= 0, got {args.max_changed}")
    if not 0.0 <= args.floor_margin < 1.0:
        raise IndvisionError(f"--floor-margin must be a fraction in [0, 1), got "
                             f"{args.floor_margin}")
    golden = _read_golden(args.golden) if args.golden else None  # fail before the work
    found = predict_tree(classifier, Path(args.data_dir))
    report = evaluate_tree(classifier, Path(args.data_dir), args.group_regex, found)
    if golden is not None:
        report["golden"] = {"file": str(args.golden),
                            **compare_golden(classifier, found, golden, report,
                                             args.max_changed, args.golden_tolerance)}
    if args.write_golden:
        atomic.write_json(args.write_golden,
                          golden_record(classifier, found, args.floor_margin))
    print(json.dumps(report, indent=2), flush=True)
    status = 0
    if report["skipped"]:
        print(f"error: {len(report['skipped'])} images could not be read and were left out "
              "(see 'skipped')", file=sys.stderr)
        status = 1
    if golden is not None and not report["golden"]["passed"]:
        print(golden_summary(args.golden, report["golden"]), file=sys.stderr, flush=True)
        status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        classifier = EdgeClassifier(args.bundle, args.model,
                                    allow_unshippable=args.allow_unshippable,
                                    spin_wait=not args.no_spin_wait)
        if not classifier.verified:
            print(f"warning: {classifier.model_file} has not been verified against the Keras "
                  "model (run the verify stage)", file=sys.stderr)
        if args.command == "predict":
            paths = list(image_files(args.paths))
            if not paths:
                raise IndvisionError(f"no image files in {' '.join(args.paths)}")
            failures = predict_files(classifier, paths, _emit_line)
            if failures:
                print(f"error: {failures} of {len(paths)} images could not be read "
                      "(see their 'error' lines)", file=sys.stderr)
                return 1
        elif args.command == "evaluate":
            return _evaluate_command(classifier, args)
        elif args.command == "watch":
            if args.max_frames is not None and args.max_frames < 1:
                raise IndvisionError("--max-frames must be at least 1")
            try:
                watch(classifier, args.source, _emit_line, args.interval, args.max_frames)
            except KeyboardInterrupt:
                return 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, like grep
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except IndvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
