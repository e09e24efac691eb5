"""Write files so that a crash or power loss never leaves a half-written one behind.

Every file is written to a temporary name in the same folder, flushed to disk, then renamed
over the target (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indvision.errors import IndvisionError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` if the block succeeds.

    The caller writes the temporary path by any means (a library's ``save``, ``cv2.imwrite``).
    On an exception the temporary file is removed and the target stays as it was.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a folder should be, a read-only or full disk
        raise IndvisionError(f"cannot write {target}: cannot create its folder "
                             f"{target.parent} ({exc.strerror or exc})") from None
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}{target.suffix}")
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        _remove(tmp)
        raise IndvisionError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_bytes(target: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | Path, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``target``."""
    return write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; an unreadable or malformed one is an error naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndvisionError(f"cannot read {path}: {exc}") from None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    """``model.json`` → ``model.json.sha256``: a file's recorded sha256 that travels beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_sha256_sidecar(path: str | Path) -> Path:
    """Record ``path``'s sha256 in its sidecar (``sha256sum`` format, so ``sha256sum -c`` works)."""
    path = Path(path)
    return write_text(sidecar_path(path), f"{sha256_file(path)}  {path.name}\n")


def check_sha256(path: str | Path, expected: str, recorded_in: str | Path) -> None:
    """Refuse ``path`` when its sha256 is not ``expected`` (as recorded in ``recorded_in``).

    The message names the file, both hashes and where the expected one came from, so the user
    can tell a tampered or hand-edited file from a stale record.
    """
    path = Path(path)
    if not path.is_file():
        raise IndvisionError(f"{path}: missing (its sha256 is recorded in {recorded_in})")
    actual = sha256_file(path)
    if actual != expected:
        raise IndvisionError(f"{path}: sha256 {actual} differs from {expected} recorded in "
                             f"{recorded_in}; the file changed after it was recorded — restore "
                             "the original bundle or re-run export and verify")


def check_sha256_sidecar(path: str | Path) -> bool:
    """Check ``path`` against its sidecar when there is one; returns whether one was checked."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return False
    try:
        expected = sidecar.read_text(encoding="utf-8").split()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        raise IndvisionError(f"{sidecar}: unreadable sha256 record; restore the original "
                             "bundle or re-run verify") from None
    check_sha256(path, expected, sidecar)
    return True
