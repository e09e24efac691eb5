"""The model a service answers with, and replacing it while requests keep coming.

:class:`ModelSlot` holds one fully loaded :class:`~indvision.edge.EdgeClassifier`. A request
takes the slot's classifier once, at its start, and uses that object to the end, so it is
answered by one model from start to finish. A new bundle is loaded and checked (hashes, the
signature where keys are trusted, verify's shippable mark) *beside* the old one, and only a
classifier that loaded completely replaces it — one reference assignment. A bundle that
fails any check is refused and the old one keeps serving.

:class:`Follower` watches ``exports/<pipeline>/latest.json`` (what a new run that passed every
gate rewrites) and asks the slot to reload when its content changes.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indvision.errors import IndvisionError

LATEST = "latest.json"


class ModelSlot:
    """One loaded classifier, swapped whole (see the module docstring)."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self._lock = threading.Lock()  # one reload at a time; readers never wait
        self.current = load()
        self.swaps = 0
        self.refusals = 0
        self.last_refusal: str | None = None

    def get(self) -> Any:
        """The classifier to answer one request with (take it once, use it throughout)."""
        return self.current

    def reload(self) -> tuple[bool, str]:
        """Load the bundle again; swap it in only when it loaded and passed every check.
        Returns (swapped, what happened)."""
        with self._lock:
            try:
                fresh = self._load()
            except IndvisionError as exc:
                self.refusals += 1
                self.last_refusal = str(exc)
                return False, f"new bundle refused, the old one keeps serving: {exc}"
            self.current = fresh
            self.swaps += 1
            run_id = (fresh.meta.get("provenance") or {}).get("run_id")
            return True, f"now serving {fresh.bundle} (run {run_id})"


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Follower(threading.Thread):
    """Polls ``folder/latest.json`` every ``interval`` seconds and reloads ``slot`` when its
    content changes; each outcome is one line on stderr."""

    def __init__(self, slot: ModelSlot, folder: str | Path, interval: float = 2.0) -> None:
        super().__init__(name="indvision-follow", daemon=True)
        self.slot = slot
        self.latest = Path(folder) / LATEST
        if not self.latest.is_file():
            raise IndvisionError(f"--follow {folder}: no {LATEST} there (follow an "
                                 "exports/<pipeline> folder)")
        self.interval = interval
        self.seen = _fingerprint(self.latest)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.check()

    def check(self) -> bool | None:
        """One poll: None when nothing changed, else whether the new bundle was swapped in."""
        now = _fingerprint(self.latest)
        if now is None or now == self.seen:
            return None
        self.seen = now
        swapped, message = self.slot.reload()
        print(f"serve: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)
        return swapped

    def stop(self) -> None:
        self._stop_event.set()
