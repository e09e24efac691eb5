"""One converter module per export format: Keras model → the file the format's row names.

Each module here has one ``convert(model, target, job) -> dict`` (TensorFlow, tf2onnx… imported
inside it, so importing a converter is cheap): it writes ``target`` atomically and returns the
extra fields for the file's ``model.json`` entry (e.g. int8's ``float_layers``). Export imports
the module a row names (:attr:`indvision.formats.ExportFormat.converter`) and calls it; a
converter reads only the export options its row declares (``ExportFormat.options``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from indvision.errors import IndvisionError
from indvision.images import InputSpec

INPUT_NAME = "image"  # the exported files' input name
#: The version of the bundle layout ``model.json`` declares (``bundle_format``).
BUNDLE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ConvertJob:
    """What every converter gets besides the model and the target path."""

    spec: InputSpec  # the model's input (height, width)
    config: Any  # the export stage's Config: read the options the row declares
    meta: dict[str, Any]  # model.json's content without files (ONNX carries it inside)
    calibration: np.ndarray | None  # train images (uint8 N x H x W x 3), for int8 rows


@contextlib.contextmanager
def converter_errors(what: str, format_key: str) -> Iterator[None]:
    """Turn a converter's failure (it raises many types: ConverterError, ValueError…) into one
    line that says which conversion failed and how to go on without it."""
    try:
        yield
    except IndvisionError:
        raise
    except Exception as exc:
        raise IndvisionError(f"{what} conversion failed: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300] if str(exc) else ''}; drop "
                             f"{format_key} from export.formats if this model cannot be "
                             "converted") from None
