"""Progress of long edge work on stderr, so stdout stays clean JSON.

On a terminal: one bar redrawn in place (``[#####.....] 1200/5000 images  48.0/s  ETA 79 s``).
Elsewhere (a log file, a pipe into a supervisor): one plain line every ``interval`` seconds
(``progress: 1200/5000 images (24 %), 48.0/s, about 79 s left``), none at all for work that
finishes sooner, so short calls stay silent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from indvision.console import duration

BAR_WIDTH = 24


def status(done: int, total: int, elapsed: float, unit: str = "images",
           bar: bool = False) -> str:
    """The progress text after ``done`` of ``total`` items in ``elapsed`` seconds."""
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else None
    eta = duration(left) if left is not None else "?"
    if bar:
        filled = round(BAR_WIDTH * done / total) if total else BAR_WIDTH
        return (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} {unit}  "
                f"{rate:.1f}/s  ETA {eta}")
    percent = 100 * done / total if total else 100.0
    return f"progress: {done}/{total} {unit} ({percent:.0f} %), {rate:.1f}/s, about {eta} left"


class Progress:
    """Count items done out of ``total`` and show it on ``stream`` (see the module doc)."""

    def __init__(self, total: int, stream: TextIO | None = None, unit: str = "images",
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.unit, self.interval, self.clock = total, unit, interval, clock
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.bar = self.stream.isatty()
        except (AttributeError, ValueError):
            self.bar = False
        self.done = 0
        self.started = clock()
        self.shown_at = self.started
        self.shown = False

    def update(self, count: int = 1) -> None:
        self.done += count
        now = self.clock()
        due = (now - self.shown_at >= 0.1) if self.bar else (now - self.shown_at >= self.interval)
        if due or (self.bar and self.done >= self.total):
            self._show(now)

    def _show(self, now: float) -> None:
        text = status(self.done, self.total, now - self.started, self.unit, self.bar)
        if self.bar:
            self.stream.write("\r" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown_at, self.shown = now, True

    def close(self) -> None:
        """End the bar's line; after periodic lines, a last one with the total."""
        if self.bar and self.shown:
            self._show(self.clock())
            self.stream.write("\n")
        elif self.shown:
            elapsed = self.clock() - self.started
            self.stream.write(f"progress: {self.done}/{self.total} {self.unit} in "
                              f"{duration(elapsed)}\n")
        self.stream.flush()
