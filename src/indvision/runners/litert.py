"""The LiteRT runner for ``.tflite`` files, float or int8 ((de)quantisation handled here)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from indvision.errors import IndvisionError
from indvision.runners import Runner, as_batch


def load(path: Path, threads: int | None = None, spin_wait: bool = True) -> Runner:
    """A LiteRT interpreter for ``path``, guarded by a lock (one set of tensors: a call at a
    time); ``spin_wait`` is onnxruntime's setting and has no effect here."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise IndvisionError(f"{path}: running .tflite files needs ai-edge-litert; "
                             "pip install 'indvision[litert]' (or use model.onnx)") from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise IndvisionError(f"{path}: LiteRT cannot load it ({exc})") from None
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    in_dtype = np.dtype(input_detail["dtype"])
    in_scale, in_zero = input_detail["quantization"]
    out_scale, out_zero = output_detail["quantization"]
    lock = threading.Lock()

    def quantize(image: np.ndarray) -> np.ndarray:
        if in_dtype == np.float32:
            return image.astype(np.float32, copy=False)
        if in_scale == 1.0 and in_zero == 0 and in_dtype == np.uint8 and image.dtype == np.uint8:
            return image  # uint8 pixels are already the quantised input
        info = np.iinfo(in_dtype)
        q = np.round(image.astype(np.float32) / in_scale + in_zero)
        return np.clip(q, info.min, info.max).astype(in_dtype)

    def dequantize(values: np.ndarray) -> np.ndarray:
        if out_scale == 0.0:  # a float output
            return values.astype(np.float32, copy=False)
        return ((values.astype(np.float32) - out_zero) * out_scale).astype(np.float32)

    def run(batch: np.ndarray) -> np.ndarray:
        batch = as_batch(batch)
        outputs = []
        with lock:  # one interpreter, one set of tensors: a call at a time
            # one image per invoke: works for files exported with a fixed batch of 1 too
            for image in batch:
                interpreter.set_tensor(input_detail["index"], quantize(image[None]))
                interpreter.invoke()
                outputs.append(dequantize(interpreter.get_tensor(output_detail["index"])[0]))
        if not outputs:
            return np.zeros((0, int(output_detail["shape"][-1])), dtype=np.float32)
        return np.stack(outputs)

    return run
