"""The augment stage: transforms checked with suggestions, albumentations' own serialisation
round-trips exactly, and the stage writes what it declares."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision import config
from indvision.errors import ConfigError, IndvisionError
from indvision.rundir import Run
from indvision.stages import augment, ingest
from tests.conftest import TINY_CLASSES, draw_tiny

A = pytest.importorskip("albumentations")

TRANSFORMS = [
    {"HorizontalFlip": {"p": 0.5}},
    {"Affine": {"rotate": [-15, 15], "scale": [0.9, 1.1], "p": 0.7}},
    {"OneOf": {"transforms": [{"GaussianBlur": {"blur_limit": [3, 5]}},
                              {"GaussNoise": {"std_range": [0.02, 0.08]}}], "p": 0.5}},
    "RandomBrightnessContrast",
]


def _image(seed: int = 0) -> np.ndarray:
    return draw_tiny("scratch", np.random.default_rng(seed), 48)


def test_serialisation_round_trip_gives_identical_output(tmp_path: Path) -> None:
    original = augment.build_compose(TRANSFORMS, seed=7)
    path = tmp_path / "augmentation.json"
    path.write_text(json.dumps(A.to_dict(original)), encoding="utf-8")
    restored = augment.load_augmentation(path, seed=7)
    assert [type(t).__name__ for t in restored.transforms] == \
        ["HorizontalFlip", "Affine", "OneOf", "RandomBrightnessContrast"]
    outputs = []
    for compose in (original, restored):
        outputs.append([compose(image=_image(i))["image"] for i in range(6)])
    changed = 0
    for a, b, i in zip(outputs[0], outputs[1], range(6), strict=True):
        np.testing.assert_array_equal(a, b)
        changed += int(not np.array_equal(a, _image(i)))
    assert changed > 0  # the augmentation did something, so equality is not trivial
    other_seed = augment.load_augmentation(path, seed=8)
    assert any(not np.array_equal(other_seed(image=_image(i))["image"], outputs[0][i])
               for i in range(6))


@pytest.mark.parametrize(("transforms", "expected"), [
    ([{"HorizontalFlp": {"p": 0.5}}], r"transforms\[0\]: unknown .*'HorizontalFlp'.*"
                                      r"did you mean 'HorizontalFlip'"),
    ([{"HorizontalFlip": {}}, {"Affine": {"rotat": [-5, 5]}}],
     r"transforms\[1\]: Affine has no parameter 'rotat' \(did you mean 'rotate'\?\)"),
    ([{"OneOf": {"transforms": [{"GaussNoise": {"std_rang": [0.1, 0.2]}}]}}],
     r"OneOf\.transforms\[0\]: GaussNoise has no parameter 'std_rang'.*'std_range'"),
    ([{"Affine": {"rotate": "a lot"}}], r"transforms\[0\]: invalid Affine settings: rotate"),
    ([{"CenterCrop": {}}], r"invalid CenterCrop settings: height"),
])
def test_bad_transforms_fail_with_one_clear_line(transforms: list, expected: str) -> None:
    with pytest.raises(IndvisionError, match=expected) as caught:
        augment.build_compose(transforms)
    assert "\n" not in str(caught.value)


def test_accepted_parameters_come_from_the_signature() -> None:
    params = augment.accepted_parameters(A.Affine)
    assert {"rotate", "scale", "translate_percent", "p"} <= set(params)
    assert "self" not in params and "strict" not in params


def test_config_shape_is_checked_when_the_pipeline_loads() -> None:
    assert augment.Config().transforms  # a useful default list
    augment.build_compose(augment.Config().transforms)  # and a valid one
    with pytest.raises(ConfigError, match=r"transforms\[0\]"):
        config.build_config("augment", augment.Config,
                            {"transforms": [{"HorizontalFlip": {"p": 0.5}, "VerticalFlip": {}}]})
    with pytest.raises(ConfigError, match="expected a list"):
        config.build_config("augment", augment.Config, {"transforms": {"HorizontalFlip": {}}})


def test_stage_writes_serialisation_and_preview(tmp_path: Path) -> None:
    tree = tmp_path / "data"
    for c, label in enumerate(TINY_CLASSES):  # 40x60 images: the preview keeps the aspect
        (tree / label).mkdir(parents=True)
        for i in range(8):
            image = cv2.resize(draw_tiny(label, np.random.default_rng([c, i]), 48), (60, 40))
            cv2.imwrite(str(tree / label / f"{i}.png"), image)
    run = Run.create(tmp_path / "exports", "aug", seed=3, config={}, config_hash="x")
    run.start_stage("ingest")
    run.finish_stage("ingest", ingest.run(ingest.Config(source=str(tree)), run), 0.0)

    cfg = augment.Config(transforms=TRANSFORMS, preview_per_class=4)
    outputs = augment.run(cfg, run)

    assert set(outputs) == {"augmentation", "preview"}
    assert all(p.parent == run.root / "augment" and p.is_file() for p in outputs.values())
    restored = A.from_dict(json.loads(outputs["augmentation"].read_text()))
    assert [type(t).__name__ for t in restored.transforms][:2] == ["HorizontalFlip", "Affine"]
    preview = cv2.imread(str(outputs["preview"]))
    rows, width = len(TINY_CLASSES), round(augment.PREVIEW_HEIGHT * 60 / 40)
    assert preview.shape[0] == rows * (augment.PREVIEW_HEIGHT + 4) + 4
    assert preview.shape[1] > 5 * width  # label column + original + 4 augmented
    # Seeded: the same run seed draws the same preview.
    again = augment.run(cfg, run)
    assert again["preview"].read_bytes() == outputs["preview"].read_bytes()
