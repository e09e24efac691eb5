"""Watching: predict what arrives in a folder being filled, or the frames of a video or camera
(``python -m indvision.edge watch``).

A folder's new images are predicted once each (those already there first, then a poll every
``interval`` seconds); a file that does not decode may still be being written, so it is retried
on later polls before its error line. With an :class:`~indvision.edge.objects.ObjectRule` the
arriving views are gathered per object and one line is emitted when the object is complete
(enough views, a timeout with no new view, or the end of the watch), decided as
:meth:`EdgeClassifier.predict_groups` decides. Video and camera frames have no file names, so
they are always one line per frame. With ``heatmaps`` each prediction's map is written beside,
named in the line's ``heatmap``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from indvision import heatmaps as heatmap_files
from indvision import images
from indvision.edge.objects import ObjectRule, PendingObjects, View, decide_object
from indvision.edge.runtime import EdgeClassifier, Emit, image_files, unique_heatmap_name
from indvision.errors import IndvisionError

TIMEOUT_POLLS = 3  # an object's default timeout, in poll intervals


def watch(classifier: EdgeClassifier, source: str, emit: Emit, interval: float | None = None,
          max_frames: int | None = None, objects: ObjectRule | None = None,
          keep_frame: Callable[[dict[str, Any], np.ndarray], Any] | None = None,
          heatmaps: Path | None = None) -> int:
    """Predict what arrives at ``source`` (folder, video file or camera index) until
    ``max_frames`` predictions (images or frames), the end of a video, or Ctrl-C; returns
    that count. ``objects``: emit one line per object for a folder (see the module docstring;
    :func:`indvision.edge.objects.object_rule` makes one from the bundle's group rule).
    ``keep_frame(result, rgb)``: called after each stream frame's line (``--collect``).
    ``heatmaps``: a folder for each prediction's map overlay (not with ``objects``)."""
    if heatmaps is not None and objects is not None:
        raise IndvisionError("--heatmaps works per image: add --per-image")
    if source.isdigit():
        return _watch_stream(classifier, int(source), emit, interval or 0.0, max_frames, True,
                             keep_frame, heatmaps)
    path = Path(source)
    if path.is_dir():
        interval = 1.0 if interval is None else interval
        if objects is not None:
            return _watch_objects(classifier, path, emit, interval, max_frames, objects)
        return _watch_folder(classifier, path, emit, interval, max_frames, heatmaps=heatmaps)
    if path.is_file():
        return _watch_stream(classifier, str(path), emit, interval or 0.0, max_frames, False,
                             keep_frame, heatmaps)
    raise IndvisionError(f"{source}: not a folder, video file or camera index")


def _with_heatmap(result: dict[str, Any], image: np.ndarray, grid: np.ndarray,
                  heatmaps: Path, name: str, taken: set[str]) -> dict[str, Any]:
    """``result`` with ``heatmap``: the overlay written under ``heatmaps``."""
    target = heatmaps / unique_heatmap_name(name, taken)
    heatmap_files.write_overlay(target, image, grid)
    return {**result, "heatmap": str(target)}


def _arrivals(classifier: EdgeClassifier, folder: Path, interval: float,
              retries: int = 3, maps: bool = False) -> Iterator[tuple[Path, Any] | None]:
    """Poll ``folder`` for ever: ``(path, scores row)`` once per new image (with ``maps``:
    ``(path, (scores row, map, model input))``), ``(path, error)`` for one that still does not
    decode after ``retries`` polls with the same size and time, and None at the end of each
    poll (before sleeping ``interval``). A link resolving outside ``folder`` is skipped. What
    was seen is pruned to the files present at each poll, so memory stays bounded by the
    folder's contents however many files come and go (a file that comes back is new)."""
    done: set[Path] = set()
    attempts: dict[Path, tuple[int, tuple[int, int]]] = {}
    root = folder.resolve()
    while True:
        present = [p for p in image_files([folder]) if _inside(p, root)]
        done.intersection_update(present)  # bounded by the folder: gone files are forgotten
        for gone in attempts.keys() - set(present):
            del attempts[gone]
        for path in present:
            if path in done:
                continue
            try:
                row: Any = _score(classifier, classifier.load(path), maps)
            except images.ImageError as exc:
                stat = path.stat() if path.exists() else None
                signature = (stat.st_size, stat.st_mtime_ns) if stat else (0, 0)
                tries, last = attempts.get(path, (0, signature))
                tries = tries + 1 if signature == last else 1  # changed: still being written
                attempts[path] = (tries, signature)
                if tries < retries:
                    continue
                row = exc.reason
            done.add(path)
            yield path, row
        yield None
        time.sleep(interval)


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves inside the watched folder: a link out of it is not read."""
    try:
        path.resolve(strict=True).relative_to(root)
    except (OSError, RuntimeError, ValueError):
        return False
    return True


def _score(classifier: EdgeClassifier, image: np.ndarray, maps: bool) -> Any:
    """One prepared image's scores row, or (scores row, map, image) with ``maps``."""
    if not maps:
        return classifier.scores(image[None])[0]
    probs, grids = classifier.scores_and_maps(image[None])
    return probs[0], grids[0], image


def _watch_folder(classifier: EdgeClassifier, folder: Path, emit: Emit, interval: float,
                  max_frames: int | None, retries: int = 3,
                  heatmaps: Path | None = None) -> int:
    """Poll ``folder``; predict each image file once: one line per image."""
    count, taken = 0, set()
    for arrival in _arrivals(classifier, folder, interval, retries, heatmaps is not None):
        if arrival is None:
            continue
        path, row = arrival
        if isinstance(row, str):
            emit({"path": str(path), "error": row})
        elif heatmaps is not None:
            probs, grid, image = row
            emit(_with_heatmap({"path": str(path), **classifier.results(probs[None])[0]},
                               image, grid, heatmaps, path.stem, taken))
        else:
            emit({"path": str(path), **classifier.results(row[None])[0]})
        count += 1
        if max_frames is not None and count >= max_frames:
            return count
    return count  # pragma: no cover - the poll never ends by itself


def _watch_objects(classifier: EdgeClassifier, folder: Path, emit: Emit, interval: float,
                   max_frames: int | None, rule: ObjectRule) -> int:
    """Poll ``folder``; one line per object when complete, an error line per unreadable view.
    ``max_frames`` counts views; at the end (it, or Ctrl-C) pending objects are flushed."""
    timeout = TIMEOUT_POLLS * interval if rule.timeout is None else rule.timeout
    pending = PendingObjects(rule.regex, rule.views, timeout)

    def emit_objects(complete: list[list[View]]) -> None:
        for views in complete:
            line = decide_object(views, rule.regex, classifier.good_index, classifier.results)
            if line is not None:
                emit(line)

    count = 0
    try:
        for arrival in _arrivals(classifier, folder, interval):
            if arrival is None:
                emit_objects(pending.expired(time.monotonic()))
                continue
            path, row = arrival
            if isinstance(row, str):
                emit({"path": str(path), "error": row})
            emit_objects(pending.add(str(path), None if isinstance(row, str) else row,
                                     time.monotonic()))
            count += 1
            if max_frames is not None and count >= max_frames:
                break
    except KeyboardInterrupt:
        emit_objects(pending.flush())
        raise
    emit_objects(pending.flush())
    return count


def _watch_stream(classifier: EdgeClassifier, source: int | str, emit: Emit, interval: float,
                  max_frames: int | None, is_camera: bool,
                  keep_frame: Callable[[dict[str, Any], np.ndarray], Any] | None = None,
                  heatmaps: Path | None = None) -> int:
    """One prediction per frame (or per ``interval`` seconds; frames between are dropped)."""
    taken: set[str] = set()
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
            if heatmaps is None:
                result = {"frame": frame_index, "time_s": round(clock, 3),
                          **classifier.predict(rgb)}
            else:
                probs, grid, image = _score(classifier, classifier.load(rgb), True)
                result = _with_heatmap({"frame": frame_index, "time_s": round(clock, 3),
                                        **classifier.results(probs[None])[0]}, image, grid,
                                       heatmaps, f"frame_{frame_index:06d}", taken)
            emit(result)
            if keep_frame is not None:
                keep_frame(result, rgb)
            count += 1
    finally:
        capture.release()
    return count
