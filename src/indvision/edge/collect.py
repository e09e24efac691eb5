"""Collect on the device: keep the images worth a person's look (``--collect DIR``), for the
next training run.

:func:`reasons_for` weighs each prediction: ``uncertain`` (small top-1 minus top-2 margin, or
P(good) near the threshold), ``rejected`` (every defect call, off by default) and ``sample`` (a
random fraction of confident calls: a confident mistake is the dangerous one, and only a sample
shows it). A kept image goes to ``DIR/<predicted label>/`` with a row in ``DIR/collected.csv``,
so that, sorted by a person, ``DIR`` is a valid ``--data``. The folder is bounded (images,
bytes, free disk, queue length) and only this collector's own files are ever unlinked, through
the folder opened at the start, so a folder swapped for a link is not followed. Writes are
atomic and run on a background thread, off the prediction path; the CSV is rewritten at least
every second, and a row always names a file that exists.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import queue
import random
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from indvision import atomic
from indvision.errors import IndvisionError

CSV_NAME = "collected.csv"
CSV_COLUMNS = ("file", "source", "time", "bundle_run", "label", "score", "margin", "reason")
WHEN_FULL = ("drop-oldest", "stop")
CSV_EVERY = 1.0  # seconds: collected.csv is rewritten when the queue runs dry, or this often
QUEUE_BOUND = 32  # images waiting for the writer; more are dropped (counted, said once)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
MIN_FREE_BYTES = 200_000_000  # collecting stops before the disk has less free than this


@dataclass(frozen=True)
class CollectConfig:
    """What is worth keeping and how much may be kept (see the module doc)."""

    margin: float = 0.2  # uncertain: top-1 minus top-2 probability below this
    band: float = 0.1  # uncertain: |P(good) - threshold| below this
    rejected: bool = False  # keep every defect call too
    sample: float = 0.01  # fraction of the confident calls kept at random
    max_images: int = 1000
    max_bytes: int = 500_000_000
    when_full: str = "drop-oldest"
    seed: int | None = None  # of the random sample (None: a fresh one each run)

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 1 or not 0 <= self.band <= 1 or not 0 <= self.sample <= 1:
            raise IndvisionError("--collect-margin, --collect-band and --collect-sample must be "
                                 "between 0 and 1")
        if self.max_images < 1 or self.max_bytes < 1:
            raise IndvisionError("--collect-max-images and --collect-max-mb must be positive")
        if self.when_full not in WHEN_FULL:
            raise IndvisionError(f"--collect-when-full must be one of {', '.join(WHEN_FULL)}, "
                                 f"not {self.when_full!r}")


def margin_of(scores: dict[str, float]) -> float:
    """Top-1 minus top-2 probability (1.0 with one class)."""
    ranked = sorted(scores.values(), reverse=True)
    return ranked[0] - ranked[1] if len(ranked) > 1 else 1.0


def reasons_for(result: dict[str, Any], config: CollectConfig, good_class: str | None,
                threshold: float | None, draw: float) -> list[str]:
    """Why ``result`` (a prediction: label, scores) is worth keeping, in the order
    uncertain, rejected, sample; ``draw`` is a uniform [0, 1) number for the sample."""
    scores = result["scores"]
    reasons = []
    near_threshold = (good_class is not None and threshold is not None
                      and abs(scores[good_class] - threshold) < config.band)
    if margin_of(scores) < config.margin or near_threshold:
        reasons.append("uncertain")
    if config.rejected and good_class is not None and result["label"] != good_class:
        reasons.append("rejected")
    if not reasons and draw < config.sample:
        reasons.append("sample")
    return reasons


def _safe_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "image"


class Collector:
    """Keeps the images :func:`reasons_for` picks, in a bounded folder (see the module doc).

    :meth:`offer` decides at once and hands the copying to a background thread; :meth:`close`
    waits for it. A folder that cannot be written is an error before any prediction.
    """

    def __init__(self, folder: str | os.PathLike, config: CollectConfig,
                 good_class: str | None, threshold: float | None, bundle_run: str | None,
                 stream: Any = None) -> None:
        self.folder, self.config = Path(folder), config
        self.good_class, self.threshold, self.bundle_run = good_class, threshold, bundle_run
        self.stream = stream if stream is not None else sys.stderr
        self.random = random.Random(config.seed)
        self._check_writable()
        self._root_fd = self._open_root()  # the folder as it is now, for drop-oldest unlinks
        self.rows: deque[dict[str, str]] = deque(self._read_rows())
        self.bytes = sum(self._size(row["file"]) for row in self.rows)
        self.others, self.others_bytes = self._untracked()
        self.full_said = False
        self.stopped = False
        self.dirty = False  # rows not yet in collected.csv
        self.failure: str | None = None
        self.dropped = 0  # offers not queued: the writer was behind
        self.queue: queue.Queue[tuple | None] = queue.Queue(maxsize=QUEUE_BOUND)
        self.worker = threading.Thread(target=self._work, daemon=True)
        self.worker.start()

    def _check_writable(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            descriptor, probe = tempfile.mkstemp(dir=self.folder, prefix=".write-test-")
            os.close(descriptor)  # a fresh name, O_EXCL: a planted link is never written
            os.unlink(probe)
        except OSError as exc:
            raise IndvisionError(f"--collect {self.folder}: cannot write there "
                                 f"({exc.strerror or exc})") from None

    def _open_root(self) -> int | None:
        """The collect folder, opened once (``O_DIRECTORY|O_NOFOLLOW``): drop-oldest unlinks
        relative to it, so a folder swapped for a link mid-run is never followed. None where
        the platform cannot unlink relative to a folder descriptor."""
        if os.unlink not in os.supports_dir_fd or not hasattr(os, "O_DIRECTORY"):
            return None
        try:
            return os.open(self.folder.resolve(), _DIR_FLAGS)
        except OSError as exc:
            raise IndvisionError(f"--collect {self.folder}: cannot open it as a folder "
                                 f"({exc.strerror or exc})") from None

    def _unlink_own(self, relative: str) -> None:
        """Remove the row's file ``relative`` through the folder opened at the start, each
        folder on the way opened without following links; only a regular file is removed (a
        link or a vanished file is let be)."""
        own = self._own_file(relative)  # no absolute path, no .., no link (checked again)
        if own is None:
            return
        if self._root_fd is None:
            own.unlink(missing_ok=True)
            return
        *folders, name = PurePosixPath(relative).parts
        opened: list[int] = []
        try:
            descriptor = self._root_fd
            for folder in folders:
                descriptor = os.open(folder, _DIR_FLAGS, dir_fd=descriptor)
                opened.append(descriptor)
            info = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                os.unlink(name, dir_fd=descriptor)
        except OSError:  # gone, or a link on the way (ELOOP, ENOTDIR): nothing is removed
            pass
        finally:
            for descriptor in opened:
                os.close(descriptor)

    def _read_rows(self) -> list[dict[str, str]]:
        path = self.folder / CSV_NAME
        if not path.is_file():
            return []
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise IndvisionError(f"{path}: cannot read it ({exc}); move it away to start a "
                                 "new collection") from None
        kept = [row for row in rows if self._own_file(row.get("file") or "") is not None]
        outside = [row.get("file") for row in rows if row not in kept
                   and (self.folder / (row.get("file") or "")).exists()]
        if outside:
            print(f"collect: {path}: {len(outside)} rows name files outside {self.folder} or "
                  f"through a link (e.g. {outside[0]!r}); ignored, never deleted",
                  file=self.stream, flush=True)
        return kept

    def _untracked(self) -> tuple[int, int]:
        """Files in the folder that no row names (left by a crash before ``collected.csv``
        caught up, or put there by a person): counted against the limits, never deleted."""
        root = self.folder.resolve()
        tracked = {root / row["file"] for row in self.rows} | {root / CSV_NAME}
        count = size = 0
        for dirpath, _, names in os.walk(root):  # links to folders: not entered
            for name in names:
                path = Path(dirpath) / name
                if path in tracked:
                    continue
                info = path.lstat()
                if stat.S_ISREG(info.st_mode):
                    count, size = count + 1, size + info.st_size
        if count:
            print(f"collect: {self.folder}: {count} files not in {CSV_NAME} ({size / 1e6:.1f} "
                  "MB) count against the limits; they are never deleted", file=self.stream,
                  flush=True)
        return count, size

    def _own_file(self, relative: str) -> Path | None:
        """``relative`` as a regular file inside the folder with no link on the way, or None
        (empty, absolute, ``..``, a link, or resolving outside): only such files are counted
        or deleted, so a crafted row cannot aim the drop-oldest unlink elsewhere."""
        rel = Path(relative)
        if not relative or rel.is_absolute() or ".." in rel.parts or rel.drive:
            return None
        root = self.folder.resolve()
        path = root / rel
        try:
            if path.resolve(strict=True) != path or not path.is_file():
                return None
        except (OSError, RuntimeError):
            return None
        return path

    def _size(self, relative: str) -> int:
        path = self._own_file(relative)
        try:
            return path.stat().st_size if path is not None else 0
        except OSError:
            return 0

    def offer(self, result: dict[str, Any], source: str | os.PathLike | None = None,
              image: np.ndarray | None = None) -> list[str]:
        """Weigh one prediction; queue a copy of ``source`` (a file) or ``image`` (an RGB
        frame) when it is worth keeping. Returns the reasons (empty: not kept)."""
        if self.stopped or (source is None and image is None):
            return []
        reasons = reasons_for(result, self.config, self.good_class, self.threshold,
                              self.random.random())
        if reasons:
            try:
                self.queue.put_nowait((result, source, image, "+".join(reasons)))
            except queue.Full:  # a slow disk must not hold up predictions nor fill memory
                self.dropped += 1
                if self.dropped == 1:
                    print(f"collect: the writer is behind ({QUEUE_BOUND} images waiting): "
                          "images are dropped, not kept, until it catches up",
                          file=self.stream, flush=True)
        return reasons

    def close(self) -> None:
        """Finish the queued copies; raise when one could not be written (it was said on the
        stream when it happened; predicting went on)."""
        self.queue.put(None)
        self.worker.join()
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None
        if self.failure:
            raise IndvisionError(self.failure)

    # --------------------------------------------------------------- the background side

    def _work(self) -> None:
        written = time.monotonic()
        while (item := self.queue.get()) is not None:
            if self.failure or self.stopped:
                continue
            try:
                self._keep(*item)
                if self.queue.empty() or time.monotonic() - written >= CSV_EVERY:
                    self._write_csv()
                    written = time.monotonic()
            except OSError as exc:
                self._fail(f"--collect {self.folder}: cannot write ({exc.strerror or exc}); "
                           "collection stopped, predictions go on")
            except IndvisionError as exc:
                self._fail(f"--collect: {exc}; collection stopped, predictions go on")
        if self.dirty and not self.failure:
            try:
                self._write_csv()
            except OSError as exc:
                self.failure = f"--collect {self.folder / CSV_NAME}: cannot write ({exc})"

    def _fail(self, message: str) -> None:
        """Stop collecting and say why at once (a long watch must not wait for its end)."""
        self.failure = message
        print(f"collect: error: {message}", file=self.stream, flush=True)

    def _keep(self, result: dict[str, Any], source: Any, image: np.ndarray | None,
              reason: str) -> None:
        data, name, origin = self._content(result, source, image)
        if not self._room_for(len(data)) or not self._disk_allows(len(data)):
            return
        label = _safe_name(result["label"])
        target = self.folder / label / name
        stem, suffix, n = target.stem, target.suffix, 1
        while target.exists():
            target, n = target.with_name(f"{stem}-{n}{suffix}"), n + 1
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.resolve() != self.folder.resolve() / label:
            raise IndvisionError(f"{target.parent} is a link, not a folder of {self.folder}; "
                                 "nothing is written through it")
        atomic.write_bytes(target, data)
        self.bytes += len(data)
        self.rows.append({
            "file": target.relative_to(self.folder).as_posix(), "source": origin,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "bundle_run": self.bundle_run or "", "label": result["label"],
            "score": f"{result['score']:.6f}", "margin": f"{margin_of(result['scores']):.6f}",
            "reason": reason})
        self.dirty = True

    def _content(self, result: dict[str, Any], source: Any,
                 image: np.ndarray | None) -> tuple[bytes, str, str]:
        if source is not None:
            path = Path(source)
            return path.read_bytes(), _safe_name(path.name), str(path)
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise IndvisionError("--collect: OpenCV could not encode a frame as PNG")
        frame = result.get("frame", len(self.rows))
        return encoded.tobytes(), f"frame_{frame:08d}.png", f"frame {frame}"

    def _room_for(self, size: int) -> bool:
        """Make room for ``size`` more bytes and one more file, or say why not (once)."""
        limits = self.config
        if size > limits.max_bytes:
            return False
        while (len(self.rows) + self.others + 1 > limits.max_images
               or self.bytes + self.others_bytes + size > limits.max_bytes):
            if not self.rows:  # only untracked files left: nothing this collector may delete
                self._say_full("collection stopped (move away the files not in "
                               f"{CSV_NAME})")
                self.stopped = True
                return False
            if limits.when_full == "stop":
                self._say_full("collection stopped")
                self.stopped = True
                return False
            oldest = self.rows.popleft()
            self.bytes -= self._size(oldest["file"])
            self._unlink_own(oldest["file"])
            self._say_full("the oldest collected images make room")
        return True

    def _disk_allows(self, size: int) -> bool:
        """Stop collecting (said once) before the disk's free space falls under the floor:
        the device's own logs and bundles need it more than one more image."""
        free = shutil.disk_usage(self.folder).free
        if free - size >= MIN_FREE_BYTES:
            return True
        print(f"collect: {self.folder}: only {free / 1e6:.0f} MB free on its disk (the floor "
              f"is {MIN_FREE_BYTES / 1e6:.0f} MB): collection stopped, predictions go on",
              file=self.stream, flush=True)
        self.stopped = True
        return False

    def _say_full(self, what: str) -> None:
        if not self.full_said:
            print(f"collect: {self.folder} is full ({self.config.max_images} images or "
                  f"{self.config.max_bytes / 1e6:.0f} MB): {what}", file=self.stream, flush=True)
            self.full_said = True

    def _write_csv(self) -> None:
        self.dirty = False
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.folder / CSV_NAME, buffer.getvalue())
