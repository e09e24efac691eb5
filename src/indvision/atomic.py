"""Write files so that a crash or power loss never leaves a half-written one behind.

Every file is written to a temporary name in the same folder, flushed to disk, then renamed
over the target (``os.replace`` is atomic on POSIX and Windows) and the folder flushed too. The
temporary name is random and created exclusively without following links, so a link planted
beside the target cannot redirect the write.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indvision.errors import IndvisionError

TEMP_MARK = ".tmp-"  # in every temporary name: ``.<name>.tmp-<random><suffix>``
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_NOFOLLOW_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)


def _default_mode() -> int:
    """What ``open()`` would give a new file: 0o666 less the umask (read from /proc where it
    can be, so no other thread ever sees a changed umask)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o22)
    os.umask(umask)
    return 0o666 & ~umask


def _temp_name(target: Path) -> Path:
    """A fresh, unguessable name beside ``target`` (it keeps the suffix: Keras, OpenCV and
    matplotlib pick the format from it)."""
    return target.with_name(f".{target.name}{TEMP_MARK}{secrets.token_hex(8)}{target.suffix}")


def _create_temp(target: Path) -> tuple[int, Path]:
    """Create a new temporary file beside ``target``, ``O_EXCL|O_NOFOLLOW``, mode 0600: a
    name planted in advance (a file or a link) is never opened, another one is drawn."""
    for _ in range(100):
        tmp = _temp_name(target)
        try:
            return os.open(tmp, _FLAGS, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a folder should be, a read-only or full disk
        raise IndvisionError(f"cannot write {target}: cannot create its folder "
                             f"{target.parent} ({exc.strerror or exc})") from None


def _seal(tmp: Path, mode: int | None) -> None:
    """Give the written temporary file its mode and flush it to disk, through a descriptor
    opened without following links (a link put in its place is refused, never followed)."""
    if tmp.is_dir() and not tmp.is_symlink():
        return
    descriptor = os.open(tmp, _NOFOLLOW_READ)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(f"{tmp} is not a regular file")
        if hasattr(os, "fchmod"):
            os.fchmod(descriptor, _default_mode() if mode is None else mode)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    """fsync ``folder`` so the rename itself survives a power loss (POSIX; a file system that
    cannot sync a folder is let be)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(target: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` if the block succeeds.

    The temporary file already exists (empty, made with ``O_EXCL|O_NOFOLLOW`` under a random
    name, so nobody can plant a link there first); the caller writes it by any means (a
    library's ``save``, ``cv2.imwrite``). Before the rename it gets ``mode`` (default: what the
    umask gives a new file; a private key passes 0o600) and is fsynced; after it, the folder
    is fsynced. On an exception the temporary file is removed and the target stays as it was.
    """
    target = Path(target)
    _make_parent(target)
    try:
        descriptor, tmp = _create_temp(target)
    except OSError as exc:
        raise IndvisionError(f"cannot write {target}: {exc.strerror or exc}") from None
    os.close(descriptor)
    try:
        yield tmp
        _seal(tmp, mode)
        os.replace(tmp, target)
        _sync_folder(target.parent)
    except OSError as exc:
        _remove(tmp)
        raise IndvisionError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_bytes(target: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Atomically write ``data`` to ``target`` (``mode``: see :func:`atomic_path`)."""
    with atomic_path(target, mode) as tmp:
        descriptor = os.open(tmp, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
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
