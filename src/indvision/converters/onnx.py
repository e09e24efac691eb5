"""ONNX float32 with a dynamic batch (tf2onnx ``from_keras``); metadata in ``metadata_props``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from indvision import atomic
from indvision.converters import BUNDLE_FORMAT_VERSION, INPUT_NAME, ConvertJob
from indvision.errors import IndvisionError


def convert(model: Any, target: Path, job: ConvertJob) -> dict[str, Any]:
    """Write ``target``; reads ``job.config.opset``. No extra ``model.json`` fields."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    opset = job.config.opset
    spec = job.spec
    signature = (tf.TensorSpec((None, spec.height, spec.width, 3), tf.float32, name=INPUT_NAME),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as exc:  # tf2onnx raises many types; the user needs the gist and a fix
        raise IndvisionError(f"ONNX conversion (tf2onnx, opset {opset}) failed: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}; try "
                             "another export.opset or drop 'onnx' from export.formats") from None
    for value in (*proto.graph.input, *proto.graph.output):
        batch_dim = value.type.tensor_type.shape.dim[0]
        if batch_dim.HasField("dim_value"):
            raise IndvisionError(f"ONNX export has a fixed batch of {batch_dim.dim_value} on "
                                 f"'{value.name}'; expected a dynamic batch")
        batch_dim.dim_param = "batch"
    onnx.helper.set_model_props(proto, metadata_props(job.meta))
    onnx.checker.check_model(proto)
    atomic.write_bytes(target, proto.SerializeToString())
    return {}


def metadata_props(meta: dict[str, Any]) -> dict[str, str]:
    """``model.json``'s content as ONNX ``metadata_props``: one JSON string per key, so a lone
    ``model.onnx`` still describes itself (without ``files``: a file cannot hold its hash)."""
    props = {key: json.dumps(value, sort_keys=True) for key, value in meta.items()
             if key not in ("files", "default_model")}
    props["indvision"] = json.dumps({"bundle_format": BUNDLE_FORMAT_VERSION})
    return props
