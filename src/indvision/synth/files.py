"""Write synthetic sets to disk: folder-per-class PNGs, a preview grid and ``synth.json``.

A set is written into a temporary sibling folder and renamed into place, so an interrupted
run never leaves a half-written tree; ``synth.json`` (written last) records the parameters
so :func:`ensure` can reuse a matching set without regenerating it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from indvision import atomic
from indvision.synth import images
from indvision.synth.images import classes_of
from indvision.synth.kinds import GENERATOR_VERSION, IMAGE_SIZES, KINDS

META_NAME = "synth.json"
_SAMPLES_NAME = "samples.png"
_SAMPLES_PER_CLASS = 6


def _file_name(kind: str, uid: int) -> str:
    # parcel names carry a view suffix so "^(\d+)_" groups views of one parcel
    return f"{uid:05d}_top.png" if kind == "parcel" else f"{uid:05d}.png"


def _metadata(kind: str, seed: int, per_class: int) -> dict[str, object]:
    w, h = IMAGE_SIZES[kind]
    return {
        "kind": kind,
        "seed": int(seed),
        "per_class": int(per_class),
        "classes": list(KINDS[kind]),
        "image_size": [w, h],
        "version": GENERATOR_VERSION,
    }


def _encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - cv2 failure
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()


def _sample_grid(kind: str, rows: dict[str, list[np.ndarray]]) -> np.ndarray:
    """Class-labelled grid: one row per class, a few images each."""
    w, h = IMAGE_SIZES[kind]
    label_w, pad = 120, 4
    ncol = max(len(v) for v in rows.values())
    grid = np.full((len(rows) * (h + pad) + pad, label_w + ncol * (w + pad) + pad, 3), 40, np.uint8)
    for r, (name, imgs) in enumerate(rows.items()):
        y = pad + r * (h + pad)
        cv2.putText(
            grid,
            name,
            (8, y + h // 2 + 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        for c, im in enumerate(imgs):
            x = label_w + pad + c * (w + pad)
            grid[y : y + h, x : x + w] = im
    return grid


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing ``out_dir`` is moved aside first, onto a
    fresh randomly named empty folder (nothing planted beside it is renamed over or removed)."""
    for _ in range(3):
        old = _aside(out_dir)
        try:
            tmp.rename(out_dir)
            break
        except OSError:
            # another process put a tree there meanwhile: move it aside and retry
            if not out_dir.exists():
                raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    else:  # pragma: no cover - pathological races only
        raise OSError(f"could not move {tmp} into place at {out_dir}")


def _folder_mode() -> int:
    """What ``mkdir`` would give a new folder: 0o777 less the umask."""
    files = atomic._default_mode()  # 0o666 less the umask, read without changing it
    return files | (files & 0o444) >> 2


def _aside(out_dir: Path) -> Path | None:
    """Move an existing ``out_dir`` out of the way (a link there is removed, not followed)."""
    if out_dir.is_symlink() or out_dir.is_file():
        out_dir.unlink()
        return None
    if not out_dir.exists():
        return None
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
    os.replace(out_dir, old)  # a folder renamed over an empty folder
    return old


def generate(kind: str, out_dir: Path, *, seed: int = 0, per_class: int = 150) -> Path:
    """Write a synthetic set ``out_dir/<class>/<uid>.png`` and return ``out_dir``.

    Also writes ``samples.png`` (a class-labelled preview grid) and ``synth.json`` (kind,
    seed, per_class, classes, image_size, generator version). File names use an id that
    is unique across classes: defect ``{uid:05d}.png``, parcel ``{uid:05d}_top.png``. The
    tree is built in ``out_dir.parent/.<name>.tmp-<random>`` (``mkdtemp``) and renamed into
    place, so an interrupted run never leaves a half-written ``out_dir``; an existing ``out_dir`` is
    replaced. Same arguments -> byte-identical files.

    Raises IndvisionError (did-you-mean) for an unknown kind, ``ValueError`` for
    ``per_class < 1``.
    """
    classes = classes_of(kind)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        os.chmod(tmp, _folder_mode())  # mkdtemp's 0700 would hide the set
        samples: dict[str, list[np.ndarray]] = {}
        for ci, name in enumerate(classes):
            cdir = tmp / name
            cdir.mkdir()
            samples[name] = []
            for i in range(per_class):
                img = images.render(kind, name, i, seed=seed)
                (cdir / _file_name(kind, ci * per_class + i)).write_bytes(_encode_png(img))
                if i < _SAMPLES_PER_CLASS:
                    samples[name].append(img)
        (tmp / _SAMPLES_NAME).write_bytes(_encode_png(_sample_grid(kind, samples)))
        # written last: its presence marks a complete tree
        (tmp / META_NAME).write_text(
            json.dumps(_metadata(kind, seed, per_class), indent=2, sort_keys=True) + "\n"
        )
        _swap_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _matches(out_dir: Path, kind: str, seed: int, per_class: int) -> bool:
    """True when ``out_dir`` holds a complete set generated with these parameters."""
    try:
        meta = json.loads((out_dir / META_NAME).read_text())
    except (OSError, ValueError):
        return False
    if meta != _metadata(kind, seed, per_class):
        return False
    for name in KINDS[kind]:
        cdir = out_dir / name
        if not cdir.is_dir():
            return False
        with os.scandir(cdir) as it:
            if sum(1 for e in it if e.name.endswith(".png")) != per_class:
                return False
    return True


def ensure(kind: str, root: Path, *, seed: int = 0, per_class: int = 150) -> Path:
    """Return ``root/kind``, generating it only if missing or made with other parameters.

    A set whose ``synth.json`` matches (kind, seed, per_class, classes, image size,
    generator version) and whose class folders hold ``per_class`` PNGs each is reused
    untouched; otherwise it is regenerated and swapped in atomically.
    """
    classes_of(kind)
    out_dir = Path(root) / kind
    if _matches(out_dir, kind, seed, per_class):
        return out_dir
    return generate(kind, out_dir, seed=seed, per_class=per_class)

