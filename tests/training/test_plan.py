"""The schedule rule: step budgets become epochs, so small and large sets get the same updates."""

from __future__ import annotations

import math

import pytest

from indvision import config
from indvision.stages import train
from indvision.training.plan import epochs_for, phases_for
from tests.conftest import PROJECT_ROOT


def _batches(n_images: int, batch_size: int) -> int:
    """Training batches per epoch: the shuffled feed drops the last partial batch."""
    return n_images // batch_size


@pytest.mark.parametrize("n_images", [120, 240, 840, 1400, 2000])
def test_a_step_budget_gives_every_set_size_the_same_updates(n_images: int) -> None:
    spec = config.load_pipeline(str(PROJECT_ROOT / "pipelines" / "defect.yaml"))
    cfg = dict(spec.stages)["train"]
    batches = _batches(n_images, cfg.batch_size)
    [finetune] = phases_for(cfg, image_batches=batches)  # the probe replaces the head phase
    assert finetune.name == "finetune"
    steps = finetune.epochs * batches
    # at least the budget, less than one epoch over it
    assert cfg.finetune_steps <= steps < cfg.finetune_steps + batches
    assert finetune.patience == math.ceil(cfg.patience_steps / batches)


def test_the_yaml_comments_state_the_rule_right() -> None:
    """defect.yaml: 240 images get up to 86 epochs, 1400 up to 14 (both about 600 updates)."""
    spec = config.load_pipeline(str(PROJECT_ROOT / "pipelines" / "defect.yaml"))
    cfg = dict(spec.stages)["train"]
    small = phases_for(cfg, image_batches=_batches(240, 32))[0]
    large = phases_for(cfg, image_batches=_batches(1400, 32))[0]
    assert (small.epochs, large.epochs) == (86, 14)
    assert (small.epochs * 7, large.epochs * 43) == (602, 602)
    text = (PROJECT_ROOT / "pipelines" / "defect.yaml").read_text(encoding="utf-8")
    assert "up to 86 epochs" in text and "up to 14" in text


def test_epochs_for() -> None:
    assert epochs_for(900, 7) == 129 and epochs_for(600, 43) == 14
    assert epochs_for(5, 100) == 1  # a budget smaller than an epoch still trains one
    assert epochs_for(0, 10) == 0


def test_a_probe_only_model_has_no_phases_and_small_cnn_keeps_its_one_phase() -> None:
    assert phases_for(train.Config(finetune_steps=0)) == []
    [full] = phases_for(train.Config(backbone="small_cnn", head_steps=30), image_batches=4)
    assert (full.name, full.epochs) == ("full", 8)
    head, finetune = phases_for(train.Config(probe=False, head_steps=10, finetune_steps=20),
                                image_batches=5)
    assert (head.name, head.epochs, finetune.epochs) == ("head", 2, 4)


def test_only_a_members_last_phase_may_end_on_its_start() -> None:
    finetune, objects = phases_for(train.Config(finetune_steps=20, object_steps=10),
                                   objects=True, member=2, image_batches=5, object_batches=5)
    assert (finetune.key, finetune.last, objects.key, objects.last) == (
        "finetune_m2", False, "objects_m2", True)
    [alone] = phases_for(train.Config(finetune_steps=20), objects=False)
    assert alone.last


def test_a_child_validates_every_few_epochs_and_always_on_its_last() -> None:
    cfg = train.Config(child_head_steps=100, child_finetune_steps=300, child_validation_steps=60)
    head, finetune = phases_for(cfg, image_batches=12, child="grown")
    assert (finetune.epochs, finetune.validate_every) == (25, 5)  # 60 steps ≈ 5 epochs of 12
    assert finetune.validation_epochs() == [5, 10, 15, 20, 25]
    assert head.validation_epochs() == [5, 9]  # 9 epochs: the last one is measured too
    [large] = phases_for(cfg, image_batches=200, child="same")  # an epoch longer than 60 steps
    assert large.validation_epochs() == [1, 2]
    [parent] = phases_for(train.Config(finetune_steps=300), image_batches=12)  # not a child
    assert parent.validation_epochs() == list(range(1, 26))


def test_validation_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="child_validation_steps must be at least 1"):
        train.Config(child_validation_steps=0)
