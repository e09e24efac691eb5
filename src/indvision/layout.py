"""The names of the files and folders a run and a bundle are made of, in one place.

A run lives in ``exports/<pipeline>/<run_id>/`` with its ``manifest.json``; export publishes
the run's bundle in ``<run>/bundle/`` (``model.json``, its signature ``model.json.sig`` and
the model files) and points ``exports/<pipeline>/latest.json`` at it. Pipeline, lineage, the
edge, Ray and the service all find runs and bundles through these names. TF-free, no imports
from indvision, so every layer can use it.
"""

from __future__ import annotations

EXPORTS = "exports"  # the default folder that holds exports/<pipeline>/<run_id>/
MANIFEST = "manifest.json"  # a run's list of artifacts and their sha256
LATEST = "latest.json"  # exports/<pipeline>/latest.json: the newest shipped run and bundle
BUNDLE = "bundle"  # <run>/bundle/: what goes to a device
MODEL_JSON = "model.json"  # a bundle's description: classes, input spec, files, decision
SIGNATURE = "model.json.sig"  # the signatures over model.json's bytes
