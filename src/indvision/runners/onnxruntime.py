"""The onnxruntime runner for ``.onnx`` files (the default runtime of ``model.onnx``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indvision.errors import IndvisionError
from indvision.runners import Runner, as_batch


def load(path: Path, threads: int | None = None, spin_wait: bool = True) -> Runner:
    """An onnxruntime CPU session for ``path``; sessions are safe to call from several threads.

    ``spin_wait=False`` makes idle worker threads sleep instead of busy-waiting (see
    :func:`indvision.formats.load_runner`).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spin_wait:  # for CPUs shared with other work
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), sess_options=options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise IndvisionError(f"{path}: onnxruntime cannot load it ({exc})") from None
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        batch = as_batch(batch).astype(np.float32, copy=False)
        return session.run(None, {input_name: batch})[0].astype(np.float32, copy=False)

    return run
