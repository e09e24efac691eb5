"""ONNX float32 with a dynamic batch (tf2onnx ``from_keras``); metadata in ``metadata_props``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from indvision import atomic
from indvision.converters import INPUT_NAME, ConvertJob
from indvision.errors import IndvisionError


def convert(model: Any, target: Path, job: ConvertJob) -> dict[str, Any]:
    """Write ``target``; reads ``job.config.opset``. No extra ``model.json`` fields."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    from indvision.stages.export import onnx_metadata_props

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
    onnx.helper.set_model_props(proto, onnx_metadata_props(job.meta))
    onnx.checker.check_model(proto)
    atomic.write_bytes(target, proto.SerializeToString())
    return {}
