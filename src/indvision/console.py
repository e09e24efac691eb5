"""What a person sees: indvision's own lines on the console, library chatter in a log file.

A stage runs inside :func:`stage_log`. Everything written to the process's stdout and stderr
during it — TensorFlow's C++ banners, the SavedModel ``Captures:`` dump, the TFLite converter,
Python warnings, any print of a library — goes to ``<run>/logs/<stage>.log`` only (also to the
console with ``verbose``). indvision's own lines go through :func:`say`: to the console *and*
into that log, in order, so the log alone tells the whole stage.

The redirection is at the file-descriptor level (``os.dup2``), because most of the chatter
comes from C++ that never sees ``sys.stdout``; a reader thread drains the pipe into the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TextIO

_PIPE_BYTES = 1 << 20  # a large pipe: a burst of C++ logging never waits for the reader


class _Capture:
    """One stage's capture: the console streams saved at entry and the open log file."""

    def __init__(self, log: IO[bytes], out: TextIO, err: TextIO, verbose: bool) -> None:
        self.log, self.out, self.err, self.verbose = log, out, err, verbose
        self.lock = threading.Lock()

    def write_log(self, data: bytes) -> None:
        with self.lock:
            self.log.write(data)
            self.log.flush()

    def say(self, message: str, stream: TextIO) -> None:
        self.write_log((message + "\n").encode("utf-8", "replace"))
        print(message, file=stream, flush=True)

    def drain(self, read_fd: int) -> None:
        """Copy the pipe into the log (and, verbose, onto the console) until it closes."""
        pending = b""
        while chunk := os.read(read_fd, 65536):
            self.write_log(chunk)
            if self.verbose:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    print(line.decode("utf-8", "replace"), file=self.err, flush=True)
        if self.verbose and pending:
            print(pending.decode("utf-8", "replace"), file=self.err, flush=True)


class _Forward(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr`` while a stage runs: writes go into the pipe; once the
    stage ends, to whatever ``sys.stdout`` / ``sys.stderr`` is then (the next stage's capture,
    or the console). A logging handler a library made during one stage (TensorFlow's, holding
    this object) so keeps landing in the log of the stage it speaks in, instead of writing to
    a closed pipe."""

    def __init__(self, pipe: TextIO, after: TextIO, fd: int) -> None:
        super().__init__()
        self._pipe: TextIO | None = pipe
        self._after, self._fd = after, fd
        self._name = "stdout" if fd == 1 else "stderr"
        self._lock = threading.Lock()

    def _target(self) -> TextIO:
        if self._pipe is not None:
            return self._pipe
        now = getattr(sys, self._name)
        return self._after if now is self or now is None else now

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def write(self, text: str) -> int:
        with self._lock:
            return self._target().write(text)

    def flush(self) -> None:
        with self._lock:
            self._target().flush()

    def fileno(self) -> int:
        return self._fd if self._pipe is not None else self._target().fileno()

    def isatty(self) -> bool:
        return False if self._pipe is not None else self._target().isatty()

    def end(self) -> None:
        with self._lock:
            if self._pipe is not None:
                self._pipe.flush()
            self._pipe = None


_active: _Capture | None = None


def duration(seconds: float) -> str:
    """A span for a person: ``45 s``, ``3.5 min``, ``1.2 h`` (epoch times, ETAs)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def say(message: str, *, err: bool = False) -> None:
    """One of indvision's own lines: on the console (stdout, or stderr with ``err``) and, while
    a stage runs under :func:`stage_log`, in its log too."""
    if _active is None:
        print(message, file=sys.stderr if err else sys.stdout, flush=True)
    else:
        _active.say(message, _active.err if err else _active.out)


def _console_stream(stream: TextIO, fd: int) -> tuple[TextIO, bool]:
    """Where the console is for ``stream`` once fd ``fd`` points at the pipe: a new stream on
    a copy of the real descriptor, or ``stream`` itself when something (a test's capture)
    already replaced it. The flag says whether the returned stream is ours to close."""
    try:
        own = stream.fileno() == fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        own = False
    if not own:
        return stream, False
    return open(os.dup(fd), "w", encoding="utf-8", errors="replace", buffering=1), True


@contextlib.contextmanager
def stage_log(path: Path, verbose: bool = False) -> Iterator[Path]:
    """Send the process's stdout and stderr to ``path`` (appended) while the block runs;
    :func:`say` still reaches the console. Restores everything, also on an exception."""
    global _active
    if _active is not None:  # nested: the outer capture already has everything
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    log = open(path, "ab")  # noqa: SIM115 - closed in the finally below (or by the reader)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    log.write(f"--- {path.stem} started {stamp}\n".encode())
    out, close_out = _console_stream(sys.stdout, 1)
    err, close_err = _console_stream(sys.stderr, 2)
    capture = _Capture(log, out, err, verbose)
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(AttributeError, OSError):
        import fcntl
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    saved = (os.dup(1), os.dup(2))
    reader = threading.Thread(target=capture.drain, args=(read_fd,), daemon=True)
    reader.start()
    python_streams = (sys.stdout, sys.stderr)
    piped = open(os.dup(write_fd), "w", encoding="utf-8",  # noqa: SIM115 - closed below
                 errors="replace", buffering=1)
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    python_out = _Forward(piped, python_streams[0], 1)
    python_err = _Forward(piped, python_streams[1], 2)
    sys.stdout, sys.stderr = python_out, python_err  # Python-level prints too
    _active = capture
    try:
        yield path
    except BaseException as exc:  # the log ends with why the stage ended, traceback included
        capture.write_log(f"--- {path.stem} ended: {type(exc).__name__}: {exc}\n"
                          f"{traceback.format_exc()}".encode("utf-8", "replace"))
        raise
    finally:
        _active = None
        python_out.end()
        python_err.end()
        sys.stdout, sys.stderr = python_streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        piped.close()
        reader.join(timeout=10)  # a child still holding the pipe must not hang the run
        if not reader.is_alive():  # else the reader keeps both until that child exits
            os.close(read_fd)
            log.close()
        for stream, ours in ((out, close_out), (err, close_err)):
            stream.flush()
            if ours:
                stream.close()
