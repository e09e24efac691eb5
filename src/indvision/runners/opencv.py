"""The OpenCV (``cv2.dnn``) runner for ``.onnx`` files: no runtime beyond OpenCV itself.

The exported graph takes ``N x H x W x 3`` float32 (its first op transposes to NCHW), and
``cv2.dnn`` (opencv-python-headless 5.0) feeds a 4-D numpy array to the graph's input with the
shape it has — so the batch goes in as it is, NHWC; ``cv2.dnn.blobFromImages`` would make it
NCHW and must not be used. Measured on the default defect bundle (mirror-averaged MobileNetV2
at 160x160, 132 test images): the same top-1 as onnxruntime on every image, max |Δprob| 2.2e-6.
A ``cv2.dnn.Net`` holds its input and outputs between ``setInput`` and ``forward`` and is not
thread-safe: one lock per runner, one call at a time.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from indvision.errors import IndvisionError
from indvision.runners import Runner, as_batch, split_outputs


def load(model: bytes, threads: int | None = None, spin_wait: bool = True,
         name: str | Path = "model") -> Runner:
    """A ``cv2.dnn`` network from the model's bytes (an in-memory buffer: the file ``name`` is
    not opened again); ``threads`` sets OpenCV's thread count (process-wide,
    OpenCV has no per-network setting); ``spin_wait`` has no OpenCV equivalent and is ignored."""
    import cv2

    if threads:
        cv2.setNumThreads(threads)
    try:
        net = cv2.dnn.readNetFromONNX(np.frombuffer(model, dtype=np.uint8))
    except Exception as exc:  # cv2.error, with OpenCV's multi-line message
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise IndvisionError(f"{name}: OpenCV (cv2.dnn {cv2.__version__}) cannot load it "
                             f"({first[:300]}); run it with onnxruntime instead") from None
    if net.empty():
        raise IndvisionError(f"{name}: OpenCV (cv2.dnn {cv2.__version__}) read an empty network")
    lock = threading.Lock()
    names = list(net.getUnconnectedOutLayersNames())

    def run(batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(as_batch(batch), dtype=np.float32)
        empty = len(batch) == 0
        if empty:  # cv2.dnn cannot run a batch of 0: run one frame for the output width
            batch = np.zeros((1, *batch.shape[1:]), np.float32)
        with lock:  # setInput and forward share the net's state
            net.setInput(batch)
            outputs = [np.asarray(o) for o in net.forward(names)]
        out = np.array(split_outputs(outputs)[0], dtype=np.float32)  # a map output is skipped
        out = out.reshape(len(batch), -1)
        return out[:0] if empty else out

    return run
