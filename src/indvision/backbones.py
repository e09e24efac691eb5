"""The backbone table: every backbone indvision trains, and where its weights are found.

One table (:data:`BACKBONES`) drives the code, the config validation and the tests: which
``keras.applications`` constructor builds a backbone, what scaling it needs as Keras layers,
which layers are its "top" for fine-tuning, and which file names hold its ImageNet weights in
an offline mirror (``$INDVISION_WEIGHTS_DIR``, then ``<project>/../shared/weights``).

No Keras here: config validation reads the table. :mod:`indvision.models` builds the models.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indvision.errors import IndvisionError, did_you_mean

WEIGHTS_DIR_ENV = "INDVISION_WEIGHTS_DIR"
#: Input sizes Keras publishes ImageNet weights for (MobileNet families); used to match files.
_KERAS_WEIGHT_SIZES = (224, 192, 160, 128, 96)
#: EfficientNet's ImageNet stem divides by these after its Normalization layer (see
#: keras/src/applications/efficientnet.py); only built when Keras itself loads "imagenet".
_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    """One row of the backbone table.

    ``rescale`` is the ``(scale, offset)`` of a ``Rescaling`` layer put in front of the
    backbone, or None when the backbone scales its input itself (MobileNetV3 and EfficientNet
    include their preprocessing). ``top_from`` names the first layer of the blocks that
    fine-tuning unfreezes by default. ``imagenet_files`` are file-name patterns (``{alpha}``,
    ``{size}`` placeholders) that hold ImageNet weights for it in a local mirror.
    """

    name: str
    constructor: str | None  # attribute of keras.applications; None: built here (small_cnn)
    rescale: tuple[float, float] | None
    top_from: str | None
    imagenet_files: tuple[str, ...] = ()
    alphas: tuple[float, ...] = (1.0,)
    constructor_kwargs: tuple[tuple[str, Any], ...] = ()
    pretrainable: bool = True  # False: no ImageNet weights exist (trained from scratch)
    #: EfficientNet: the extra 1/sqrt(stddev) scaling Keras adds only for weights="imagenet";
    #: folded into the Normalization variance when ImageNet weights come from a local file.
    imagenet_variance_scale: tuple[float, ...] | None = None


BACKBONES: dict[str, Backbone] = {
    "small_cnn": Backbone(
        name="small_cnn",
        constructor=None,
        rescale=(1.0 / 255.0, 0.0),
        top_from=None,
        alphas=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
        pretrainable=False,
    ),
    "mobilenet_v2": Backbone(
        name="mobilenet_v2",
        constructor="MobileNetV2",
        rescale=(1.0 / 127.5, -1.0),
        top_from="block_13_expand",
        imagenet_files=(
            "mobilenetv2_{alpha:.2f}_{size}_notop.weights.h5",
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}_no_top.h5",
        ),
        alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    ),
    "mobilenet_v3_small": Backbone(
        name="mobilenet_v3_small",
        constructor="MobileNetV3Small",
        rescale=None,  # include_preprocessing=True: Rescaling(1/127.5, offset=-1) inside
        top_from="expanded_conv_8_expand",
        imagenet_files=(
            "mobilenet_v3_small_{alpha:.2f}_notop.weights.h5",
            "weights_mobilenet_v3_small_224_{alpha}_float_no_top_v2.h5",
        ),
        alphas=(0.75, 1.0),
        constructor_kwargs=(("include_preprocessing", True),),
    ),
    "efficientnet_b0": Backbone(
        name="efficientnet_b0",
        constructor="EfficientNetB0",
        rescale=None,  # Rescaling(1/255) + Normalization(ImageNet mean/var) inside
        top_from="block6a_expand_conv",
        imagenet_files=("efficientnetb0_notop.weights.h5", "efficientnetb0_notop.h5"),
        imagenet_variance_scale=_IMAGENET_STDDEV_RGB,
    ),
}


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's initial weights came from (written to train_info.json)."""

    kind: str  # "none", "file", "imagenet-local", "imagenet-keras"
    path: str | None = None
    sha256: str | None = None

    def describe(self) -> str:
        return self.kind if self.path is None else f"{self.kind} ({self.path})"


def get_backbone(name: str) -> Backbone:
    """The table row for ``name``, or an error with a suggestion."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise IndvisionError(f"unknown backbone '{name}'{did_you_mean(name, BACKBONES)}") from None


def check_choice(backbone: str, alpha: float, weights: str) -> None:
    """Cheap validation for configs (no Keras): raises ValueError naming the bad setting."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone '{backbone}' is unknown{did_you_mean(backbone, BACKBONES)}")
    row = BACKBONES[backbone]
    if not any(math.isclose(alpha, a) for a in row.alphas):
        raise ValueError(f"alpha {alpha} is not available for {backbone} "
                         f"(choose one of {', '.join(map(str, row.alphas))})")
    if weights == "imagenet" and not row.pretrainable:
        raise ValueError(f"{backbone} has no ImageNet weights; use weights: none or a file")


def default_weights(backbone: str) -> str:
    """``imagenet`` for a pretrainable backbone, ``none`` for one trained from scratch."""
    return "imagenet" if get_backbone(backbone).pretrainable else "none"


def weight_dirs() -> list[Path]:
    """The local mirror folders searched for ``imagenet`` weights, in order."""
    from indvision.config import PROJECT_ROOT

    dirs = [Path(p).expanduser() for p in os.environ.get(WEIGHTS_DIR_ENV, "").split(os.pathsep)
            if p.strip()]
    dirs.append(PROJECT_ROOT.parent / "shared" / "weights")
    return dirs


def imagenet_file_names(backbone: str, alpha: float = 1.0, size: int = 224) -> list[str]:
    """Candidate file names for ImageNet weights, the closest input size first."""
    row = get_backbone(backbone)
    sizes = sorted(_KERAS_WEIGHT_SIZES, key=lambda s: (abs(s - size), -s))
    names: list[str] = []
    for pattern in row.imagenet_files:
        for candidate in sizes:
            name = pattern.format(alpha=float(alpha), size=candidate)
            if name not in names:
                names.append(name)
    return names


def find_local_imagenet(backbone: str, alpha: float = 1.0, size: int = 224,
                        dirs: Iterable[Path] | None = None) -> Path | None:
    """The first mirror file holding ImageNet weights for this backbone, or None."""
    names = imagenet_file_names(backbone, alpha, size)
    for folder in (weight_dirs() if dirs is None else dirs):
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                return path
    return None


def offline_message(backbone: str, alpha: float, size: int, reason: str,
                    setting: str = "train.weights") -> str:
    """The fix for a missing ImageNet download (an air-gapped machine is a normal user)."""
    names = imagenet_file_names(backbone, alpha, size)[:2]
    searched = ", ".join(str(d) for d in weight_dirs())
    return (f"weights: imagenet for {backbone} needs a download and this machine looks offline "
            f"({reason}); fix: give a local weights file with `--set {setting}=PATH` "
            f"(or `weights: PATH` under {setting.split('.')[0]}: in the pipeline YAML), or put "
            f"{' or '.join(names)} in a folder listed in ${WEIGHTS_DIR_ENV} "
            f"(searched: {searched})")
