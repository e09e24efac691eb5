"""The model a service answers with, and replacing it while requests keep coming.

:class:`ModelSlot` holds one fully loaded :class:`~indvision.edge.EdgeClassifier`; a request
takes it once, at its start, so one model answers it from start to finish. A new bundle is
loaded and checked beside the old one and swapped in as one reference assignment; a bundle
that fails any check is refused and the old one keeps serving. :class:`Follower` polls
``exports/<pipeline>/latest.json`` and reloads when its content changes; whatever a load
raises is a refusal, retried after a doubling back-off (a bundle still being copied is good a
little later), never the end of the follower. A ``latest.json`` over ``MAX_LATEST_BYTES`` is
refused after reading only that much of it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indvision.errors import IndvisionError
from indvision.layout import LATEST, MAX_LATEST_BYTES

_OVERSIZE = "+"  # marks the fingerprint of a latest.json over the bound


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _reason(exc: BaseException) -> str:
    """One line for a failed load: the message of a user-fixable problem, else its type too."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, IndvisionError) else f"{type(exc).__name__}: {text}"


class ModelSlot:
    """One loaded classifier, swapped whole (see the module docstring)."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self._lock = threading.Lock()  # one reload at a time; readers never wait
        self.current = load()
        self.swaps = 0
        self.refusals = 0
        self.last_swap: dict[str, Any] | None = None  # {time, run}
        self.last_refusal: dict[str, Any] | None = None  # {time, reason}

    def get(self) -> Any:
        """The classifier to answer one request with (take it once, use it throughout)."""
        return self.current

    def reload(self) -> tuple[bool, str]:
        """Load the bundle again; swap it in only when it loaded and passed every check.
        Any failure of the load is a refusal. Returns (swapped, what happened)."""
        with self._lock:
            try:
                fresh = self._load()
            except Exception as exc:  # a broken bundle of any kind must not stop serving
                return False, self.refuse(_reason(exc))
            self.current = fresh
            self.swaps += 1
            run_id = (fresh.meta.get("provenance") or {}).get("run_id")
            self.last_swap = {"time": _stamp(), "run": run_id}
            return True, f"now serving {fresh.bundle} (run {run_id})"

    def refuse(self, reason: str) -> str:
        """Count a new bundle refused for ``reason``; the line that says so."""
        self.refusals += 1
        self.last_refusal = {"time": _stamp(), "reason": reason}
        return f"new bundle refused, the old one keeps serving: {reason}"


def _fingerprint(path: Path) -> str | None:
    """sha256 of ``path``'s first ``MAX_LATEST_BYTES`` + 1 bytes, marked when there are more
    (a huge file, a link to a device, is never read whole); None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_LATEST_BYTES + 1)
    except OSError:
        return None
    oversize = _OVERSIZE if len(data) > MAX_LATEST_BYTES else ""
    return hashlib.sha256(data).hexdigest() + oversize


def _say(message: str) -> None:
    print(f"serve: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class Follower(threading.Thread):
    """Polls ``folder/latest.json`` every ``interval`` seconds and reloads ``slot`` when its
    content changes, or when a refused content's back-off has passed; each outcome is one
    line on stderr."""

    def __init__(self, slot: ModelSlot, folder: str | Path, interval: float = 2.0,
                 backoff_min: float = 1.0, backoff_max: float = 60.0) -> None:
        super().__init__(name="indvision-follow", daemon=True)
        self.slot = slot
        self.folder = Path(folder)
        self.latest = self.folder / LATEST
        if not self.latest.is_file():
            raise IndvisionError(f"--follow {folder}: no {LATEST} there (follow an "
                                 "exports/<pipeline> folder)")
        self.interval = interval
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.seen = _fingerprint(self.latest)  # the content now served
        self._refused: str | None = None  # a content refused, to be tried again
        self._delay = 0.0
        self._retry_at = 0.0
        self._stop_event = threading.Event()
        self.clock: Callable[[], float] = time.monotonic  # a test steps its own

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # the follower outlives anything a poll meets
                self._back_off(self._refused)
                _say(f"follow: {_reason(exc)}; trying again in {self._delay:.1f} s")

    def check(self) -> bool | None:
        """One poll: None when there is nothing to try, else whether the bundle was swapped
        in."""
        now = _fingerprint(self.latest)
        if now is None or now == self.seen:
            return None
        if now == self._refused and self.clock() < self._retry_at:
            return None
        if now.endswith(_OVERSIZE):  # refused unread: the loader never sees it
            swapped, message = False, self.slot.refuse(
                f"{LATEST} is larger than {MAX_LATEST_BYTES} bytes: not a pointer to a bundle")
        else:
            swapped, message = self.slot.reload()
        if swapped:
            self.seen, self._refused, self._delay = now, None, 0.0
        else:
            self._back_off(now)
            message += f"; trying again in {self._delay:.1f} s"
        _say(message)
        return swapped

    def _back_off(self, fingerprint: str | None) -> None:
        """Wait longer before trying ``fingerprint`` again: doubled each time, capped."""
        same = fingerprint is not None and fingerprint == self._refused and self._delay > 0
        self._delay = min(self._delay * 2, self.backoff_max) if same else self.backoff_min
        self._refused = fingerprint
        self._retry_at = self.clock() + self._delay

    def state(self) -> dict[str, Any]:
        """How the follower stands: alive, swaps, refusals, the last of each, and the seconds
        until a refused bundle is tried again (None: nothing waiting). Paths inside the
        followed folder are named relative to it."""
        retry_in = (round(max(0.0, self._retry_at - self.clock()), 3)
                    if self._refused is not None else None)
        refusal = self.slot.last_refusal
        if refusal is not None:
            reason = refusal["reason"]
            for prefix in {str(self.folder), str(self.folder.resolve())}:
                reason = reason.replace(prefix + os.sep, "")
            refusal = {**refusal, "reason": reason}
        return {"alive": self.is_alive(), "swaps": self.slot.swaps,
                "refusals": self.slot.refusals, "last_swap": self.slot.last_swap,
                "last_refusal": refusal, "retry_in": retry_in}

    def stop(self) -> None:
        self._stop_event.set()
