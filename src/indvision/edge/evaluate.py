"""Folder evaluation on the edge: a folder-per-class tree through a bundle, scored like the
evaluate stage scored the Keras model (``python -m indvision.edge evaluate``).

:func:`predict_tree` scores every readable image below ``DATA_DIR/<class>/`` (unreadable ones
are listed, not fatal; a folder that is not a class of the bundle is an error);
:func:`evaluate_tree` turns that into accuracy, macro F1, per-class precision/recall/F1, the
confusion matrix and, with a group regex, the same on fused views. For an anomaly bundle the
good-class folder is good and every other folder a defect type (class ``anomaly``); the report
adds the image ``auroc`` and ``per_folder`` recall. numpy + OpenCV + onnxruntime only, like the
rest of :mod:`indvision.edge`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import decision, metrics
from indvision.edge.progress import Progress
from indvision.edge.runtime import EdgeClassifier, image_files, predict_files
from indvision.errors import IndvisionError, did_you_mean


@dataclass
class TreePredictions:
    """Scores for every readable image of a folder-per-class tree, in a stable order."""

    data_dir: Path
    paths: list[str]
    labels: np.ndarray  # true class index per image (its folder)
    scores: np.ndarray  # N x C probabilities
    skipped: list[dict[str, str]]  # unreadable images: path, error
    folders: list[str] | None = None  # each image's folder (anomaly bundles: the defect type)


def predict_tree(classifier: EdgeClassifier, data_dir: Path,
                 progress: Callable[[int], Progress] | None = None) -> TreePredictions:
    """Predict every image below ``data_dir/<class>/``; a folder that is not a class fails.
    ``progress(total)`` makes the :class:`Progress` that counts the images."""
    if not data_dir.is_dir():
        raise IndvisionError(f"{data_dir}: no such folder (expected DATA_DIR/<class>/<images>)")
    class_dirs = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise IndvisionError(f"{data_dir}: no class folders (expected DATA_DIR/<class>/<images>)")
    anomaly = classifier.model_kind == "anomaly"
    if anomaly and classifier.good_class not in {d.name for d in class_dirs}:
        raise IndvisionError(f"{data_dir}: no '{classifier.good_class}' folder: an anomaly "
                             "bundle needs its good class beside the defect folders")
    for folder in class_dirs:
        if not anomaly and folder.name not in classifier.classes:
            raise IndvisionError(f"{folder}: class folder '{folder.name}' is not a class of this "
                                 f"bundle{did_you_mean(folder.name, classifier.classes)}; "
                                 "rename or move that folder")
    paths: list[str] = []
    labels: list[int] = []
    folders: list[str] = []
    probs: list[list[float]] = []
    skipped: list[dict[str, str]] = []

    def collect(result: dict[str, Any]) -> None:
        if "error" in result:
            skipped.append({"path": result["path"], "error": result["error"]})
        else:
            paths.append(result["path"])
            probs.append([result["scores"][c] for c in classifier.classes])

    files = {folder: list(image_files([folder])) for folder in class_dirs}
    counter = progress(sum(map(len, files.values()))) if progress else None
    for folder in class_dirs:
        before = len(paths)
        predict_files(classifier, files[folder], collect, progress=counter)
        index = (int(folder.name != classifier.good_class) if anomaly
                 else classifier.classes.index(folder.name))
        labels += [index] * (len(paths) - before)
        folders += [folder.name] * (len(paths) - before)
    if counter is not None:
        counter.close()
    if not paths:
        raise IndvisionError(f"{data_dir}: no readable images in its class folders")
    return TreePredictions(data_dir, paths, np.array(labels, dtype=int),
                           np.array(probs, dtype=np.float64), skipped, folders)


def evaluate_tree(classifier: EdgeClassifier, data_dir: Path, group_regex: str | None = None,
                  predictions: TreePredictions | None = None) -> dict[str, Any]:
    """Accuracy, per-class numbers and confusion on a folder-per-class tree (+ fused groups)."""
    found = predictions or predict_tree(classifier, data_dir)
    decided = metrics.decide(found.scores, classifier.good_index, classifier.threshold)
    report: dict[str, Any] = {
        "bundle": str(classifier.bundle), "model": classifier.model_file,
        "good_class": classifier.good_class, "threshold": classifier.threshold,
        **metrics.classification_metrics(found.labels, decided, classifier.classes,
                                         classifier.good_class),
    }
    if classifier.model_kind == "anomaly":
        report.update(anomaly_numbers(found, decided, classifier.good_index))
    regex = group_regex or classifier.group_regex
    if regex:
        keys = [decision.group_key(p, regex, classifier.classes[y], fallback=p)
                for p, y in zip(found.paths, found.labels, strict=True)]
        _, chosen, fused = metrics.fuse_groups(found.scores, keys, classifier.good_index)
        group_decided = metrics.decide(fused, classifier.good_index, classifier.threshold)
        report["group_regex"] = regex
        report["groups"] = metrics.classification_metrics(
            found.labels[chosen], group_decided, classifier.classes, classifier.good_class)
    report["skipped"] = found.skipped
    return report


def anomaly_numbers(found: TreePredictions, decided: np.ndarray,
                    good_index: int | None) -> dict[str, Any]:
    """An anomaly bundle's extra numbers: image AUROC of P(anomaly), and per folder the share
    decided right (defect folders: caught; the good folder: accepted)."""
    folders = np.array(found.folders or [])
    per_folder = {}
    for name in sorted(set(folders.tolist())):
        mine = folders == name
        right = int((decided[mine] == found.labels[mine]).sum())
        per_folder[name] = {"n": int(mine.sum()), "right": right,
                            "recall": right / int(mine.sum())}
    return {"auroc": metrics.auroc(found.scores[:, 1 - (good_index or 0)], found.labels == 1),
            "per_folder": per_folder}
