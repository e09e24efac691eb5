"""The onnxruntime runner for ``.onnx`` files (the default runtime of ``model.onnx``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from indvision.errors import IndvisionError
from indvision.runners import MapRunner, Runner, as_batch, split_outputs


def _session(model: bytes, threads: int | None, spin_wait: bool, name: str | Path) -> Any:
    """An onnxruntime CPU session from the model's bytes (``name``: its file, for messages);
    ``spin_wait=False`` makes idle worker threads sleep instead
    of busy-waiting (see :func:`indvision.formats.load_runner`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spin_wait:  # for CPUs shared with other work
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(bytes(model), sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise IndvisionError(f"{name}: onnxruntime cannot load it ({exc})") from None


def _probability_output(session: Any) -> str:
    """The name of the ``N x C`` output (a model may also have a map output)."""
    outputs = session.get_outputs()
    return next((o.name for o in outputs if len(o.shape) == 2), outputs[0].name)


def load(model: bytes, threads: int | None = None, spin_wait: bool = True,
         name: str | Path = "model") -> Runner:
    """Probabilities (the ``N x C`` output) from a session; sessions are safe to call from
    several threads. Only what the probabilities need is asked for: a map output costs
    nothing unless :func:`load_maps` asks for it too."""
    session = _session(model, threads, spin_wait, name)
    input_name = session.get_inputs()[0].name
    first = [_probability_output(session)]

    def run(batch: np.ndarray) -> np.ndarray:
        batch = as_batch(batch).astype(np.float32, copy=False)
        return session.run(first, {input_name: batch})[0].astype(np.float32, copy=False)

    return run


def load_maps(model: bytes, threads: int | None = None, spin_wait: bool = True,
              name: str | Path = "model") -> MapRunner:
    """Probabilities and the map (the model's second output) in one pass."""
    session = _session(model, threads, spin_wait, name)
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    if len(names) < 2:
        raise IndvisionError(f"{name}: the model has no map output (only {names})")

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = as_batch(batch).astype(np.float32, copy=False)
        probs, maps = split_outputs(session.run(names, {input_name: batch}))
        return probs.astype(np.float32, copy=False), maps.astype(np.float32, copy=False)

    return run
