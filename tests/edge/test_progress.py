"""Progress on stderr: periodic count lines off a terminal, a bar on one, silence when quick."""

from __future__ import annotations

import io

from indvision.edge.progress import Progress, status


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_count_line_every_interval_and_a_last_one() -> None:
    clock, stream = Clock(), io.StringIO()
    progress = Progress(100, stream, interval=10.0, clock=clock)
    for _ in range(100):
        clock.now += 0.25  # 4 images a second: 25 s of work
        progress.update()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines == ["progress: 40/100 images (40 %), 4.0/s, about 15 s left",
                     "progress: 80/100 images (80 %), 4.0/s, about 5 s left",
                     "progress: 100/100 images in 25 s"]


def test_quick_work_prints_nothing() -> None:
    clock, stream = Clock(), io.StringIO()
    progress = Progress(5, stream, clock=clock)
    for _ in range(5):
        clock.now += 0.1
        progress.update()
    progress.close()
    assert stream.getvalue() == ""


def test_on_a_terminal_one_bar_redrawn_in_place() -> None:
    clock, stream = Clock(), Terminal()
    progress = Progress(10, stream, clock=clock)
    for _ in range(10):
        clock.now += 1.0
        progress.update()
    progress.close()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.rstrip().split("\r")[-1] == status(10, 10, 10.0, bar=True)
    assert "[" + "#" * 24 + "] 10/10 images  1.0/s  ETA 0 s" in text
