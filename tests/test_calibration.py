"""The good-class threshold: the escape-rate rule, per object when views are grouped, and the
false-reject cap that keeps one good-looking defect from rejecting every good part."""

from __future__ import annotations

import numpy as np
import pytest

from indvision import metrics
from indvision.calibration import calibrate
from indvision.stages import evaluate


def test_grouped_views_calibrate_the_threshold_on_objects_not_images():
    # object "d" is defective (label 1) but only its first view shows it; object "g" is good.
    scores = np.array([[0.10, 0.90], [0.98, 0.02], [0.97, 0.03], [0.96, 0.04]])
    labels = np.array([1, 1, 0, 0])
    groups = ["d", "d", "g", "g"]
    image_calibration = calibrate(scores, labels, None, 0, 0.0)
    per_image = image_calibration.threshold
    assert image_calibration.on == "images" and per_image > 0.98  # above the clean-looking view
    object_calibration = calibrate(scores, labels, groups, 0, 0.0)
    per_object = object_calibration.threshold
    assert object_calibration.on == "groups"
    assert 0.10 < per_object <= 0.5 + 1e-9  # the fused object escapes no more
    _, _, fused = metrics.fuse_groups(scores, groups, 0)
    assert metrics.decide(fused, 0, per_object).tolist() == [1, 0]  # d rejected, g passes
    assert metrics.decide(fused, 0, per_image).tolist() == [1, 1]  # per-image: g rejected too


def one_good_looking_defect() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """20 good images (P(good) 0.80..0.99), 20 defective ones at 0.05 but one at 0.999 (the
    known case: a label mistake the model rightly calls good)."""
    good = np.linspace(0.80, 0.99, 20)
    bad = np.full(20, 0.05)
    bad[7] = 0.999
    p_good = np.concatenate([good, bad])
    names = [f"ok/{i}.jpg" for i in range(20)] + [f"dent/{i}.jpg" for i in range(20)]
    return np.stack([p_good, 1 - p_good], axis=1), np.array([0] * 20 + [1] * 20), names


def test_one_good_looking_defect_cannot_set_the_threshold_above_every_good_part():
    scores, labels, names = one_good_looking_defect()
    free = calibrate(scores, labels, None, 0, 0.0, 1.0, names)
    assert not free.capped and free.threshold > 0.999
    assert free.false_rejects_at_escape_threshold == 20  # every good part rejected
    capped = calibrate(scores, labels, None, 0, 0.0, 0.1, names)
    assert capped.false_reject_cap == pytest.approx(0.80 + 2 * 0.01)  # rejects 2 of 20 good
    # every threshold from the next defect (0.05) up to the cap catches the same 19 defects:
    # the lowest of them (the 0.5 floor) rejects no good part at all
    assert capped.capped and capped.threshold == 0.5
    assert metrics.decide(scores, 0, capped.threshold)[:20].tolist() == [0] * 20
    assert capped.escaping == ("dent/7.jpg",) and capped.n_good == 20
    assert capped.to_dict()["capped"] is True


def test_a_capped_threshold_still_catches_every_defect_the_cap_catches():
    scores, labels, names = one_good_looking_defect()
    scores[25] = [0.805, 0.195]  # a defect below the cap (0.82), above the lowest good part
    capped = calibrate(scores, labels, None, 0, 0.0, 0.1, names)
    assert capped.capped and 0.805 < capped.threshold < 0.81
    decided = metrics.decide(scores, 0, capped.threshold)
    assert decided[25] == 1 and decided[27] == 0  # caught; the good-looking one still passes
    assert decided[:20].tolist() == [1] + [0] * 19  # one false reject, not the cap's two
    assert capped.escaping == ("dent/7.jpg",)


def test_the_cap_leaves_a_threshold_it_does_not_bind_alone():
    scores, labels, names = one_good_looking_defect()
    scores[27] = [0.3, 0.7]  # the good-looking defect now looks like one: nothing to cap
    found = calibrate(scores, labels, None, 0, 0.0, 0.1, names)
    assert not found.capped and found.escaping == ()
    assert found.threshold == found.escape_threshold == 0.5  # the floor


def test_a_capped_threshold_is_one_warning_line_naming_the_images() -> None:
    scores, labels, names = one_good_looking_defect()
    line = calibrate(scores, labels, None, 0, 0.01, 0.1, names).warning(0.01, 0.1)
    assert line.startswith("evaluate: warning: meeting the escape-rate target 1.0 %")
    assert "would reject 20 of 20 good images" in line and "check their labels: 7.jpg" in line
    with pytest.raises(ValueError, match="max_false_reject_rate"):
        evaluate.Config(max_false_reject_rate=1.5)
