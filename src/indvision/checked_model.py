"""A Keras model loaded from the bytes that were checked, and checked to fit its input spec.

A model's hash is recorded long before it is loaded (evaluate, export, verify, ``--from``,
the promotion gate). Hashing the file and then handing Keras its *path* lets a file swapped in
between be the one that runs. Here the file is read once (bounded), those bytes are hashed and
compared, and Keras loads a private temporary copy of the same bytes (``mkdtemp``: 0700).
With trusted keys (``INDVISION_TRUSTED_KEYS``) a parent's bundle must also be signed, and the
``provenance.keras_model_sha256`` it signs must be the sha256 of the bytes loaded. A loaded
model is then checked against its input spec and class list (:func:`fitting`). Every refusal
is one :class:`~indvision.errors.IndvisionError` line naming the file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from indvision import formats, images, models, signing
from indvision.errors import IndvisionError
from indvision.layout import MANIFEST
from indvision.rundir import Run

#: A Keras model file larger than this is refused before it is read (an ensemble of large
#: backbones is hundreds of megabytes; the bytes are held in memory once).
MAX_KERAS_BYTES = formats.MAX_MODEL_BYTES


def read_checked(path: str | os.PathLike, expected_sha256: str | None,
                 recorded_in: str | os.PathLike | None) -> bytes:
    """``path``'s bytes, read once and bounded, refused unless their sha256 is
    ``expected_sha256`` (recorded in ``recorded_in``; None: nothing recorded to compare)."""
    data = formats.read_bounded(path, MAX_KERAS_BYTES, "Keras model")
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise IndvisionError(f"{path}: sha256 {actual} differs from {expected_sha256} recorded "
                             f"in {recorded_in}; the file changed after it was recorded — "
                             "restore it or re-run the stage that wrote it")
    return data


def load_bytes(data: bytes, path: str | os.PathLike) -> Any:
    """The Keras model in ``data`` (the bytes of ``path``, already checked), loaded through a
    private temporary copy — never through ``path``, which may have changed since."""
    folder = tempfile.mkdtemp(prefix="indvision-model-")  # mode 0700: only this user
    try:
        handle, temp = tempfile.mkstemp(suffix=".keras", dir=folder)  # O_EXCL, mode 0600
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            return models.load_model(temp)  # inference only: no optimizer
        except (ValueError, OSError, TypeError, KeyError) as exc:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise IndvisionError(f"{path}: cannot load the Keras model ({why}); re-run "
                                 "train") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def signed_keras_sha256(run: Run, trusted: Sequence[str | os.PathLike]) -> str:
    """The ``provenance.keras_model_sha256`` of ``run``'s exported bundle, from one read of its
    ``model.json`` whose signature a key in ``trusted`` made (else one line why not)."""
    bundle = (run.root / run.output("export", "bundle")["path"]).resolve()
    if not bundle.is_relative_to(run.root.resolve()):
        raise IndvisionError(f"{run.root / MANIFEST}: its bundle {bundle} lies outside the run "
                             "folder; refused")
    data = formats.model_json_bytes(bundle)
    signing.check_signature(bundle, trusted, message=data)
    meta = formats.read_model_json(bundle, data)
    signed = (meta.get("provenance") or {}).get("keras_model_sha256")
    if not isinstance(signed, str):
        raise IndvisionError(f"{bundle / formats.MODEL_JSON}: signs no "
                             "provenance.keras_model_sha256, so it vouches for no Keras model; "
                             "re-export the parent run")
    return signed


def _run_of(model_path: Path) -> tuple[Run, dict[str, Any]] | None:
    """The run whose model ``model_path`` is (``<run>/<stage>/model.keras``) and its manifest
    entry for it, or None."""
    root = model_path.parent.parent
    if not (root / MANIFEST).is_file():
        return None
    run = Run.open(root)
    try:
        entry = run.output(run.model_stage, "model")
    except IndvisionError:
        return None
    return (run, entry) if (root / entry["path"]).resolve() == model_path.resolve() else None


def parent_bytes(model_path: str | os.PathLike, expected_sha256: str | None = None,
                 recorded_in: str | os.PathLike | None = None,
                 trusted: Sequence[str | os.PathLike] | None = None) -> bytes:
    """A parent run's ``model.keras`` bytes, read once: their sha256 is ``expected_sha256``
    (default: the parent's manifest record) and, with trusted keys (default:
    ``INDVISION_TRUSTED_KEYS``), the one the parent's signed ``model.json`` names."""
    model_path = Path(model_path)
    keys = signing.trusted_key_paths(trusted)
    found = _run_of(model_path)
    if found is None and keys:
        raise IndvisionError(f"{model_path}: not the model of a run folder, so no signed bundle "
                             "vouches for it, and trusted keys are set; give the parent run")
    if expected_sha256 is None and found is not None:
        expected_sha256, recorded_in = found[1].get("sha256"), found[0].root / MANIFEST
    data = read_checked(model_path, expected_sha256, recorded_in)
    if found is not None and keys:
        signed = signed_keras_sha256(found[0], keys)
        actual = hashlib.sha256(data).hexdigest()
        if actual != signed:
            raise IndvisionError(f"{model_path}: sha256 {actual} is not the "
                                 f"provenance.keras_model_sha256 {signed} its signed bundle "
                                 "names; this is not the model that was signed — do not train "
                                 "from it")
    return data


def load_parent(model_path: str | os.PathLike, expected_sha256: str | None = None,
                recorded_in: str | os.PathLike | None = None,
                trusted: Sequence[str | os.PathLike] | None = None) -> Any:
    """The parent's Keras model from the bytes :func:`parent_bytes` checked."""
    data = parent_bytes(model_path, expected_sha256, recorded_in, trusted)
    return load_bytes(data, model_path)


def fitting(model: Any, path: str | os.PathLike, spec: images.InputSpec, n_classes: int) -> Any:
    """``model`` (loaded from ``path``), checked to follow the convention: input
    ``(None, H, W, 3)`` of the input spec, one probability per class."""
    input_shape = tuple(model.inputs[0].shape[1:])
    if input_shape != (spec.height, spec.width, 3):
        raise IndvisionError(f"{path}: model input {input_shape} does not match input_spec.json "
                             f"({spec.height}, {spec.width}, 3); re-run train")
    outputs = model.outputs[0].shape[-1]
    if outputs != n_classes:
        raise IndvisionError(f"{path}: the model has {outputs} outputs but classes.json lists "
                             f"{n_classes} classes: model and dataset do not belong together")
    return model


def load_fitting(path: str | os.PathLike, spec: images.InputSpec, n_classes: int,
                 expected_sha256: str | None = None,
                 recorded_in: str | os.PathLike | None = None) -> Any:
    """The Keras model at ``path`` from one read whose sha256 is ``expected_sha256`` when
    given, checked to fit the input spec and the class list (:func:`fitting`)."""
    data = read_checked(path, expected_sha256, recorded_in)
    return fitting(load_bytes(data, path), path, spec, n_classes)


def load_recorded(run: Run, stage: str, name: str, spec: images.InputSpec,
                  n_classes: int) -> Any:
    """The model ``stage`` wrote as ``name``, from one read checked against the manifest's
    sha256 (the hash the caller records as the model's is that one: ``run.output``)."""
    entry = run.output(stage, name)
    return load_fitting(run.root / entry["path"], spec, n_classes, entry.get("sha256"),
                        run.root / MANIFEST)
