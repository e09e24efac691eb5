"""The LiteRT runner for ``.tflite`` files, float or int8 ((de)quantisation handled here)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from indvision.errors import IndvisionError
from indvision.runners import MapRunner, Runner, as_batch


def _interpreter(model: bytes, threads: int | None, name: str | Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise IndvisionError(f"{name}: running .tflite files needs ai-edge-litert; "
                             "pip install 'indvision[litert]' (or use model.onnx)") from None
    try:
        interpreter = Interpreter(model_content=bytes(model), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise IndvisionError(f"{name}: LiteRT cannot load it ({exc})") from None
    return interpreter


def _quantizer(detail: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    in_dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]

    def quantize(image: np.ndarray) -> np.ndarray:
        if in_dtype == np.float32:
            return image.astype(np.float32, copy=False)
        if scale == 1.0 and zero == 0 and in_dtype == np.uint8 and image.dtype == np.uint8:
            return image  # uint8 pixels are already the quantised input
        info = np.iinfo(in_dtype)
        q = np.round(image.astype(np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(in_dtype)

    return quantize


def _dequantizer(detail: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    scale, zero = detail["quantization"]

    def dequantize(values: np.ndarray) -> np.ndarray:
        if scale == 0.0:  # a float output
            return values.astype(np.float32, copy=False)
        return ((values.astype(np.float32) - zero) * scale).astype(np.float32)

    return dequantize


def _invoker(model: bytes, threads: int | None, with_map: bool,
             name: str | Path) -> Callable[[np.ndarray], Any]:
    """Batch → per-output stacked results, one image per invoke (works for files exported
    with a fixed batch of 1 too), under a lock: one interpreter, one set of tensors."""
    interpreter = _interpreter(model, threads, name)
    input_detail = interpreter.get_input_details()[0]
    details = interpreter.get_output_details()
    # the N x C output is the probabilities; any other is a map (see runners.split_outputs)
    details = sorted(details, key=lambda d: len(d["shape"]) != 2)
    if with_map and len(details) < 2:
        raise IndvisionError(f"{name}: the model has no map output")
    details = details[:2] if with_map else details[:1]
    quantize = _quantizer(input_detail)
    dequantizers = [_dequantizer(d) for d in details]
    lock = threading.Lock()

    def run(batch: np.ndarray) -> list[np.ndarray]:
        batch = as_batch(batch)
        outputs: list[list[np.ndarray]] = [[] for _ in details]
        with lock:
            for image in batch:
                interpreter.set_tensor(input_detail["index"], quantize(image[None]))
                interpreter.invoke()
                for k, (detail, dequantize) in enumerate(zip(details, dequantizers,
                                                             strict=True)):
                    outputs[k].append(dequantize(interpreter.get_tensor(detail["index"])[0]))
        return [np.stack(o) if o else np.zeros((0, *[int(n) for n in d["shape"][1:]]),
                                               dtype=np.float32)
                for o, d in zip(outputs, details, strict=True)]

    return run


def load(model: bytes, threads: int | None = None, spin_wait: bool = True,
         name: str | Path = "model") -> Runner:
    """A LiteRT interpreter from the model's bytes (``model_content``: the file ``name`` is not
    opened again), guarded by a lock (one set of tensors: a call at a
    time); ``spin_wait`` is onnxruntime's setting and has no effect here."""
    invoke = _invoker(model, threads, with_map=False, name=name)
    return lambda batch: invoke(batch)[0]


def load_maps(model: bytes, threads: int | None = None, spin_wait: bool = True,
              name: str | Path = "model") -> MapRunner:
    """Probabilities and the map (the model's other output) in one invoke per image."""
    invoke = _invoker(model, threads, with_map=True, name=name)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, maps = invoke(batch)
        return probs, maps

    return run
