"""A finished child's test decisions at other head-mix shares, without retraining.

    python bench/head_mix.py CHILD_RUN [--shares 0 0.25 0.5 0.75]

A child with new classes saves its old classes' head columns mixed with its parent's
(``train.child_head_mix`` s): ``saved = (1 − s)·trained + s·parent``. With the parent's head
(its run is in the child's ``ingest/parent.json``) the trained columns are recovered exactly,
``trained = (saved − s·parent) / (1 − s)``, and any other share can be applied to the same
backbone. Each share's errors are counted on the child's own test split and on the parent's
(the promotion gate's), with the images each gets wrong: which errors the mix causes and
which it prevents. Decisions are arg-max, as evaluate decides a model without a good class.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]

from continual import test_predictions  # noqa: E402
from indvision import images, models  # noqa: E402
from indvision.training import warmstart  # noqa: E402


def head_layer(model: Any) -> Any:
    return models.classifier_of(model).get_layer(models.HEAD_LAYER)


def unmixed(saved: np.ndarray, parent: np.ndarray, share: float) -> np.ndarray:
    """The child's trained old columns (the first ``parent.shape[-1]``) from the saved, mixed
    ones; the new columns as they are."""
    if share >= 1.0:
        raise SystemExit("a share of 1 keeps nothing of the child's old columns to recover")
    old = parent.shape[-1]
    trained = saved.copy()
    trained[..., :old] = (saved[..., :old] - share * parent) / (1.0 - share)
    return trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("child", type=Path)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    args = parser.parse_args()
    child = args.child.resolve()
    parent = Path(json.loads((child / "ingest" / "parent.json").read_text())["run_dir"])
    info = json.loads((child / "train" / "train_info.json").read_text())
    share = json.loads((child / "manifest.json").read_text())[
        "config"]["stages"]["train"]["child_head_mix"]
    spec = images.InputSpec.from_dict(json.loads((child / "train" / "input_spec.json")
                                                 .read_text()))
    model = models.load_model(child / "train" / "model.keras")
    head = head_layer(model)
    parent_kernel, parent_bias = head_layer(
        models.load_model(parent / "train" / "model.keras")).get_weights()
    kernel, bias = head.get_weights()
    kernel, bias = unmixed(kernel, parent_kernel, share), unmixed(bias, parent_bias, share)
    own, gate = test_predictions(child), test_predictions(parent)
    paths = [r["path"] for r in own + gate]
    truth = np.array([info["classes"].index(r["true"]) for r in own + gate])
    pixels = np.stack([images.load(p, spec) for p in paths]).astype(np.float32)
    print(f"{child.name} (saved with share {share:g}); parent {parent.name}")
    for s in args.shares:
        head.set_weights(list(warmstart.mix_old_columns(kernel, bias, parent_kernel,
                                                        parent_bias, s)))
        scores = np.concatenate([model.predict_on_batch(pixels[i:i + 32])
                                 for i in range(0, len(pixels), 32)])
        wrong = np.flatnonzero(np.argmax(scores, axis=1) != truth)
        listed = ", ".join(f"{Path(paths[i]).name} → {info['classes'][int(np.argmax(scores[i]))]}"
                           f" ({float(scores[i].max()):.2f})" for i in wrong)
        print(f"share {s:g}: own test {int(np.sum(wrong < len(own)))}/{len(own)} errors, "
              f"parent's test {int(np.sum(wrong >= len(own)))}/{len(gate)}"
              + (f": {listed}" if listed else ""))


if __name__ == "__main__":
    main()
