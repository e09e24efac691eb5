"""Signed means verified: under trusted keys a model file that verify never judged is refused
(export signs before verify runs). A stand-in entry is enough: the check reads model.json's
verdict for the chosen file; tests/edge/test_signing.py runs verified bundles through."""

from __future__ import annotations

from pathlib import Path

import pytest

from indvision import signing
from indvision.errors import IndvisionError


def test_an_exported_never_verified_file_is_refused_under_a_trusted_key(tmp_path: Path) -> None:
    entry = {"format": "onnx", "sha256": "ab", "verified": False}  # as export writes it
    with pytest.raises(IndvisionError, match=r"never verified.*run the verify stage"):
        signing.require_verified(tmp_path, "model.onnx", entry, signed_by="0123456789abcdef")
    with pytest.raises(IndvisionError, match="never verified"):  # no verdict at all
        signing.require_verified(tmp_path, "model.onnx", {}, signed_by="0123456789abcdef")
    signing.require_verified(tmp_path, "model.onnx", entry, signed_by=None)  # no keys: as before
    signing.require_verified(tmp_path, "model.onnx", {**entry, "verified": True},
                             signed_by="0123456789abcdef")
