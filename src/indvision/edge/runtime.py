"""The edge runtime: an exported bundle, checked and ready, run with numpy, OpenCV and
onnxruntime only.

:class:`EdgeClassifier` opens a bundle (a bundle folder, a run folder or
``exports/<pipeline>``, :func:`indvision.layout.bundle_of`), refuses a tampered ``model.json``
(:func:`check_model_json`) or model file, and predicts images and objects. Labels are decided
exactly as evaluate decided them (:func:`indvision.metrics.decide` with the bundle's good class
and threshold); views of one object are fused with :func:`indvision.metrics.fuse_groups`
(:mod:`indvision.edge.objects`). :func:`predict_files` and :func:`predict_objects` are what
``python -m indvision.edge predict`` prints. Never imports TensorFlow or Keras (a test checks
the whole package in a fresh interpreter).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indvision import atomic, formats, images, layout, metrics, signing
from indvision import heatmaps as heatmaps_mod
from indvision.decision import Decision
from indvision.edge import accepted
from indvision.edge.objects import fuse_objects
from indvision.edge.progress import Progress
from indvision.errors import IndvisionError, did_you_mean
from indvision.layout import LATEST, MANIFEST, MODEL_JSON

ImageInput = str | os.PathLike | np.ndarray
Emit = Callable[[dict[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class Options:
    """How :class:`EdgeClassifier` opens and runs a bundle (each field is also a keyword of
    :class:`EdgeClassifier`; see its docstring)."""

    allow_unshippable: bool = False
    group_regex: str | None = None
    threads: int | None = None
    spin_wait: bool = True
    runtime: str | None = None
    trusted_keys: Sequence[str | os.PathLike] | None = None
    allow_rollback: bool = False


class EdgeClassifier:
    """An exported model, checked and ready: ``predict`` images, ``predict_groups`` objects.

    Refuses a ``model.json`` whose sha256 differs from its records (:func:`check_model_json`),
    a model file whose sha256 differs from ``model.json`` and, unless
    ``allow_unshippable``, one that verify marked not shippable. Safe to share between threads.
    Its group rule: ``group_regex`` (argument, else ``model.json``'s ``decision.group_regex``)
    and ``views_per_object`` (``decision.views_per_object``: views that make one object).
    ``runtime`` runs the file in another of its format's runtimes (``"opencv"`` for
    ``model.onnx``); ``None`` is the format's default. ``trusted_keys`` (public key files;
    default: ``INDVISION_TRUSTED_KEYS``) makes it refuse a bundle that a trusted key did not
    sign as it is (:func:`indvision.signing.check_signature`); without any, signatures are
    not checked. Under trusted keys, a bundle reached through ``latest.json`` that is older
    than the one accepted before for its pipeline is refused unless ``allow_rollback``
    (:mod:`indvision.edge.accepted`); the bundle that loads becomes the record. The options
    come as keywords (``allow_unshippable=True``), as an :class:`Options`, or both (keywords
    win).

    Each file is read once: ``latest.json`` (its hash of ``model.json`` and pipeline are
    checked from that one read), ``model.json``'s bytes are checked against its records and
    its signature and then parsed, the model file's bytes are hashed and then loaded (the map
    runner too, from the same bytes kept in memory), so a file swapped on disk after a check
    never runs.
    """

    def __init__(self, bundle: str | os.PathLike, model: str | None = None,
                 options: Options | None = None, **keywords: Any) -> None:
        opts = dataclasses.replace(options or Options(), **keywords)
        self.options = opts
        newest = self._open_checked(Path(bundle), opts)  # recorded once everything has loaded
        files = self.meta["files"]
        model = model or self.meta.get("default_model") or formats.DEFAULT_MODEL
        if model not in files:
            raise IndvisionError(f"{self.bundle}: no model '{model}' in this bundle"
                                 f"{did_you_mean(model, files)}")
        self.model_file = model
        self.entry = files[model]
        self.format = formats.get_format(str(self.entry.get("format")))
        data = formats.read_model_file(self.bundle / model, self.entry)  # hashed: load these
        if self.entry.get("shippable") is False and not opts.allow_unshippable:
            raise IndvisionError(f"{self.bundle / model}: marked not shippable by verify "
                                 f"({self.entry.get('reason', 'no reason recorded')}); use "
                                 f"another --model, or allow_unshippable=True to run it anyway")
        signing.require_verified(self.bundle, model, self.entry, self.signed_by)
        self._read_rules(opts.group_regex)
        self.runtime = opts.runtime or self.format.runtime  # one of the format row's runners
        self._run = formats.load_runner(self.bundle / model, opts.threads, opts.spin_wait,
                                        self.runtime, data=data)
        self._runner_args = (opts.threads, opts.spin_wait)
        self._run_maps: formats.MapRunner | None = None  # made when a map is first asked for
        # ... from the checked bytes, kept for it (the file on disk is never opened again)
        self._model_bytes: bytes | None = data if self.has_maps else None
        self._maps_lock = threading.Lock()
        accepted.remember(newest, opts.allow_rollback)

    def _open_checked(self, given: Path, opts: Options) -> Any:
        """Find the bundle, read its ``model.json`` once, check it against its records, its
        signature, ``latest.json``'s pipeline and the rollback record; returns what
        :func:`indvision.edge.accepted.remember` records once the model has loaded."""
        self.bundle, followed = layout.bundle_of(given)
        # model.json is read once: these bytes are checked, signature-checked and parsed
        model_json = check_model_json(self.bundle, given, followed=followed)
        trusted = signing.trusted_key_paths(opts.trusted_keys)
        #: the trusted key that signed this bundle (None: signatures were not checked)
        self.signed_by: str | None = (signing.check_signature(self.bundle, trusted, model_json)
                                      if trusted else None)
        self.meta = formats.read_model_json(self.bundle, model_json)
        if followed is None:
            return None
        layout.check_pipeline(followed, self.meta)
        return accepted.check(followed.path, self.meta, self.signed_by, opts.allow_rollback)

    def _read_rules(self, group_regex: str | None) -> None:
        """Classes, input spec, decision rule and group rule from ``model.json``."""
        self.classes: list[str] = list(self.meta["classes"])
        try:
            self.spec = images.InputSpec.from_dict(self.meta["input_spec"])
        except (ValueError, TypeError) as exc:
            raise IndvisionError(f"{self.bundle / MODEL_JSON}: bad 'input_spec' record "
                                 f"({exc}); re-export the bundle") from None
        raw = self.meta.get("decision") or {}
        try:
            self.decision = Decision.from_dict(raw, self.classes)
        except (ValueError, TypeError) as exc:
            raise IndvisionError(f"{self.bundle / MODEL_JSON}: bad 'decision' record "
                                 f"({exc}); re-export the bundle") from None
        self.good_class: str | None = self.decision.good_class
        self.good_index = self.decision.good_index
        self.threshold: float | None = self.decision.threshold
        self.group_regex: str | None = group_regex or self.decision.group_regex
        self.views_per_object = _views_per_object(self.bundle, raw)
        #: ``classifier`` or ``anomaly`` (classes [good, anomaly], fitted on good images)
        self.model_kind: str = str(self.meta.get("model_kind", "classifier"))

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

    @property
    def has_maps(self) -> bool:
        """Whether the bundle's model has a map output (bundles exported with heatmaps)."""
        return bool(self.meta.get("map"))

    def scores_and_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and the decided class's map (``N x h x w``, values 0–1) for a
        prepared batch, in one pass: an anomaly model's anomaly map (0.5 at the threshold),
        a classifier's class-activation map of the class it decided. The map runner is built
        when first needed from the model bytes checked at load, never from the file again."""
        probs, maps = self._map_runner()(batch)
        if maps.ndim == 4:  # class-activation maps, one per class: the decided class's
            decided = metrics.decide(probs, self.good_index, self.threshold)
            maps = maps[np.arange(len(maps)), :, :, decided]
        return probs, maps

    def _map_runner(self) -> formats.MapRunner:
        with self._maps_lock:
            if self._run_maps is None:
                if not self.has_maps or self._model_bytes is None:
                    raise IndvisionError(f"{self.bundle}: this bundle's model has no map "
                                         "output; export it again with this version for "
                                         "heatmaps")
                self._run_maps = formats.load_map_runner(
                    self.bundle / self.model_file, *self._runner_args, runtime=self.runtime,
                    data=self._model_bytes)
                self._model_bytes = None  # built: the copy is no longer needed
            return self._run_maps

    def predict(self, x: ImageInput | Sequence[ImageInput],
                heatmap: bool = False) -> dict[str, Any] | list[dict]:
        """Predict one image (path or RGB uint8 array) → a dict; a list or N x H x W x 3
        batch → a list of dicts ``{"label", "score", "scores": {class: prob}}``. With
        ``heatmap`` each also has ``"map"`` (``h x w`` float32, 0–1; see
        :meth:`scores_and_maps`; :func:`indvision.heatmaps.overlay` draws it on the image)."""
        single = isinstance(x, (str, os.PathLike)) or (isinstance(x, np.ndarray) and x.ndim <= 3)
        items = [x] if single else list(x)
        if not items:
            return []
        batch = np.stack([self.load(item) for item in items])
        if heatmap:
            probs, maps = self.scores_and_maps(batch)
            results = [dict(r, map=m) for r, m in zip(self.results(probs), maps, strict=True)]
        else:
            results = self.results(self.scores(batch))
        return results[0] if single else results

    def results(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """Decide labels for rows of probabilities (bundle's good class and threshold)."""
        return decided_rows(probs, self.classes, self.good_index, self.threshold)

    def predict_groups(self, paths: Sequence[str | os.PathLike],
                       group_regex: str | None = None) -> list[dict[str, Any]]:
        """One result per object: views grouped by ``group_regex`` on the file name (default:
        the bundle's), each group taking its least-good view's scores
        (:func:`indvision.edge.objects.fuse_objects`; its ``views`` are ``members`` here)."""
        paths = [str(p) for p in paths]
        if not paths:
            return []
        probs = self.scores(np.stack([self.load(p) for p in paths]))
        objects = fuse_objects(paths, probs, group_regex or self.group_regex, self.good_index,
                               self.results)
        return [{"group": o["group"], "label": o["label"], "score": o["score"],
                 "scores": o["scores"], "members": o["views"], "decided_by": o["decided_by"]}
                for o in objects]


def decided_rows(probs: np.ndarray, classes: Sequence[str], good_index: int | None,
                 threshold: float | None) -> list[dict[str, Any]]:
    """``{"label", "score", "scores"}`` per row of probabilities, decided by the bundle's rule
    (:func:`indvision.metrics.decide`): what every prediction path returns."""
    decided = metrics.decide(probs, good_index, threshold)
    return [{"label": classes[index], "score": float(row[index]),
             "scores": {name: float(p) for name, p in zip(classes, row, strict=True)}}
            for index, row in zip(decided, probs, strict=True)]


def _views_per_object(bundle: Path, decision: dict[str, Any]) -> int | None:
    """``decision.views_per_object`` of ``model.json`` (views that make one object), if set."""
    views = decision.get("views_per_object")
    if views is not None and (isinstance(views, bool) or not isinstance(views, int) or views < 1):
        raise IndvisionError(f"{bundle / MODEL_JSON}: decision.views_per_object must be "
                             f"a positive integer, got {views!r}")
    return views


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
    """A bundle folder; a run folder → its ``bundle/``; ``exports/<pipeline>`` → latest's
    (inside its folder and of latest.json's pipeline, :func:`indvision.layout.bundle_of`)."""
    bundle, followed = layout.bundle_of(path)
    if followed is not None:
        layout.check_pipeline(followed, _read_meta(bundle))
    return bundle


def locate_bundle(path: str | os.PathLike) -> tuple[Path, layout.Followed | None]:
    """:func:`indvision.layout.bundle_of`: the bundle folder, and the one read of
    ``latest.json`` when it came through one."""
    return layout.bundle_of(path)


def _read_meta(bundle: Path) -> Any:
    """``bundle/model.json`` parsed (bounded), whatever its shape, with one clear line."""
    try:
        return json.loads(formats.model_json_bytes(bundle))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndvisionError(f"cannot read {bundle / MODEL_JSON}: {exc}") from None


def check_model_json(bundle: Path, given: Path, data: bytes | None = None,
                     followed: layout.Followed | None = None) -> bytes:
    """Refuse a ``model.json`` whose sha256 differs from a record of it: the sidecar
    ``model.json.sha256`` verify leaves in the bundle, ``latest.json`` when opened through
    ``exports/<pipeline>`` (``followed``: the one read of it; else read here), and the run's
    ``manifest.json`` when the bundle is in a run folder. Every record is compared with one
    read of the file (``data``, else read here), and those bytes are returned: parse and
    signature-check them, not the file again."""
    path = bundle / MODEL_JSON
    if data is None:
        data = formats.model_json_bytes(bundle)
    actual = hashlib.sha256(data).hexdigest()
    sidecar = atomic.sidecar_path(path)
    if sidecar.is_file():
        try:
            expected = sidecar.read_text(encoding="utf-8").split()[0]
        except (OSError, UnicodeDecodeError, IndexError):
            raise IndvisionError(f"{sidecar}: unreadable sha256 record; restore the original "
                                 "bundle or re-run verify") from None
        _refuse_mismatch(path, actual, expected, sidecar)
    if followed is None and (Path(given).expanduser() / LATEST).is_file():
        followed = layout.bundle_of(given)[1]  # None when given is a bundle or a run folder
    if followed is not None:
        expected = followed.record.get("model_json_sha256")
        if expected:
            _refuse_mismatch(path, actual, str(expected), followed.path)
    expected = layout.recorded_bundle_files(bundle.parent).get(f"{bundle.name}/{MODEL_JSON}")
    if expected:
        _refuse_mismatch(path, actual, expected, bundle.parent / MANIFEST)
    return data


def _refuse_mismatch(path: Path, actual: str, expected: str, recorded_in: Path) -> None:
    """:func:`indvision.atomic.check_sha256`'s refusal, for a hash of bytes already read."""
    if actual != expected:
        raise IndvisionError(f"{path}: sha256 {actual} differs from {expected} recorded in "
                             f"{recorded_in}; the file changed after it was recorded — restore "
                             "the original bundle or re-run export and verify")


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


def score_files(classifier: EdgeClassifier, paths: Sequence[str | os.PathLike],
                batch_size: int = 32, maps: bool = False
                ) -> Iterator[tuple[Any, np.ndarray | str]]:
    """``(path, scores row)`` per file in the given order (paths as given), or
    ``(path, error text)`` for a file that cannot be read; ``batch_size`` files at a time.
    With ``maps``, ``(path, (scores row, map, model input))`` for the files that load."""
    if maps:
        yield from _score_files_with_maps(classifier, paths, batch_size)
        return
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        loaded: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for index, path in enumerate(chunk):
            try:
                loaded[index] = classifier.load(path)
            except IndvisionError as exc:
                errors[index] = getattr(exc, "reason", str(exc))
        rows = (dict(zip(loaded, classifier.scores(np.stack(list(loaded.values()))),
                         strict=True)) if loaded else {})
        for index, path in enumerate(chunk):
            yield path, (rows[index] if index in rows else errors[index])


def _score_files_with_maps(classifier: EdgeClassifier, paths: Sequence[str | os.PathLike],
                           batch_size: int) -> Iterator[tuple[Any, Any]]:
    for start in range(0, len(paths), batch_size):
        chunk, loaded, errors = paths[start:start + batch_size], {}, {}
        for index, path in enumerate(chunk):
            try:
                loaded[index] = classifier.load(path)
            except IndvisionError as exc:
                errors[index] = getattr(exc, "reason", str(exc))
        found = {}
        if loaded:
            probs, grids = classifier.scores_and_maps(np.stack(list(loaded.values())))
            found = {index: (probs[k], grids[k], loaded[index])
                     for k, index in enumerate(loaded)}
        for index, path in enumerate(chunk):
            yield path, (found[index] if index in found else errors[index])


def predict_files(classifier: EdgeClassifier, paths: Sequence[Path], emit: Emit,
                  batch_size: int = 32, progress: Progress | None = None,
                  heatmaps: Path | None = None) -> int:
    """Predict files in batches, emitting one result (or error) per file in the given order;
    returns the number of files that could not be read. ``progress`` counts each file. With
    ``heatmaps`` (a folder), each image's map overlay is written there as a PNG, named in its
    result's ``heatmap``."""
    failures = 0
    names: set[str] = set()
    for path, row in score_files(classifier, paths, batch_size, maps=heatmaps is not None):
        if progress is not None:
            progress.update()
        if isinstance(row, str):
            failures += 1
            emit({"path": str(path), "error": row})
        elif heatmaps is not None:
            probs, grid, image = row
            target = heatmaps / unique_heatmap_name(Path(path).stem, names)
            heatmaps_mod.write_overlay(target, image, grid)
            emit({"path": str(path), **classifier.results(probs[None])[0],
                  "heatmap": str(target)})
        else:
            emit({"path": str(path), **classifier.results(row[None])[0]})
    return failures


def unique_heatmap_name(stem: str, taken: set[str]) -> str:
    """``<stem>.heatmap.png``, numbered when two images share a stem."""
    name, n = f"{stem}.heatmap.png", 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}.heatmap.png"
    taken.add(name)
    return name


def predict_objects(classifier: EdgeClassifier, paths: Sequence[Path], emit: Emit,
                    group_regex: str | None = None, batch_size: int = 32,
                    progress: Progress | None = None) -> int:
    """One result per object, decided as :meth:`EdgeClassifier.predict_groups` decides:
    ``{"group", "label", "score", "scores", "views", "decided_by"}``, objects in first-seen
    order, views grouped by ``group_regex`` (default: the bundle's) on the file name.

    An unreadable view gets its own ``{"path", "error"}`` line (emitted as it is met, before
    the object lines) and its object is decided on its readable views; an object with no
    readable view gets no line. Returns the number of files that could not be read.
    """
    regex = group_regex or classifier.group_regex
    views: list[str] = []
    rows: list[np.ndarray] = []
    failures = 0
    for path, row in score_files(classifier, paths, batch_size):
        if progress is not None:
            progress.update()
        if isinstance(row, str):
            failures += 1
            emit({"path": str(path), "error": row})
        else:
            views.append(str(path))
            rows.append(row)
    if views:
        for result in fuse_objects(views, np.stack(rows), regex, classifier.good_index,
                                   classifier.results):
            emit(result)
    return failures
