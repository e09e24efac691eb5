"""Atomic writes (:mod:`indvision.atomic`) under attack: a link planted where the temporary
file will be is never followed, temporary names cannot be guessed, modes are the usual ones
(a private key's stays 0600), and the folder is synced after the rename."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from indvision import atomic
from indvision.errors import IndvisionError

posix_only = pytest.mark.skipif(os.name != "posix", reason="links and modes are POSIX here")


def victim_beside(tmp_path: Path) -> Path:
    victim = tmp_path / "elsewhere" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    return victim


@posix_only
def test_a_link_planted_at_the_old_predictable_temp_name_is_not_followed(tmp_path: Path) -> None:
    victim = victim_beside(tmp_path)
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    # what the writer used to use: .<name>.tmp-<pid><suffix>
    (target.parent / f".{target.name}.tmp-{os.getpid()}{target.suffix}").symlink_to(victim)
    atomic.write_text(target, "{}")
    assert victim.read_text() == "precious"
    assert target.read_text() == "{}" and not target.is_symlink()


@posix_only
def test_a_link_at_the_drawn_temp_name_is_skipped_never_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = victim_beside(tmp_path)
    target = tmp_path / "model.onnx"
    planted = tmp_path / ".model.onnx.tmp-guessed.onnx"
    planted.symlink_to(victim)
    names = iter([planted, tmp_path / ".model.onnx.tmp-fresh.onnx"])
    monkeypatch.setattr(atomic, "_temp_name", lambda _target: next(names))
    atomic.write_bytes(target, b"model")
    assert victim.read_text() == "precious" and planted.is_symlink()
    assert target.read_bytes() == b"model"


def test_two_writes_use_different_unguessable_temp_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []
    real = os.replace

    def replace(src: str, dst: str) -> None:
        used.append(Path(src).name)
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic.write_text(tmp_path / "a.txt", "1")
    atomic.write_text(tmp_path / "a.txt", "2")
    assert len(set(used)) == 2 and str(os.getpid()) not in "".join(used)
    assert all(name.startswith(".a.txt.tmp-") and name.endswith(".txt") for name in used)


@posix_only
def test_a_link_swapped_in_for_the_temp_file_is_refused_not_renamed_into_place(
        tmp_path: Path) -> None:
    victim = victim_beside(tmp_path)
    target = tmp_path / "curves.png"
    with (pytest.raises(IndvisionError, match=f"cannot write {target}"),
          atomic.atomic_path(target) as tmp):
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(victim)
    assert not target.exists() and victim.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["elsewhere"]


@posix_only
def test_modes_are_the_umasks_and_a_private_one_stays_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        public = atomic.write_text(tmp_path / "report.md", "# ok")
        private = atomic.write_bytes(tmp_path / "key", b"secret", mode=0o600)
        with atomic.atomic_path(tmp_path / "lib.bin") as tmp:  # a library writing by name
            Path(tmp).write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "lib.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


@posix_only
def test_the_folder_is_synced_after_the_rename(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    def fsync(descriptor: int) -> None:
        kind = "folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file"
        events.append(f"fsync {kind}")
        real_fsync(descriptor)

    monkeypatch.setattr(atomic.os, "replace", replace)
    monkeypatch.setattr(atomic.os, "fsync", fsync)
    atomic.write_text(tmp_path / "a.json", "{}")
    assert events == ["fsync file", "replace", "fsync folder"]
