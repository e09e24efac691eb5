"""The anomaly threshold on raw distances: a good quantile without defects, the classifiers'
escape-rate rule with them, mapped back to a raw distance exactly."""

from __future__ import annotations

import numpy as np
import pytest

from indvision.anomaly import threshold
from indvision.anomaly.bank import normalise
from indvision.errors import IndvisionError


def test_without_defects_the_threshold_promises_the_target_on_new_parts() -> None:
    good = np.arange(1.0, 201.0)  # 200 good validation scores
    chosen = threshold.choose(good, np.zeros(200, bool), [str(i) for i in range(200)],
                              false_reject_target=0.01, escape_rate_target=0.01,
                              max_false_reject_rate=0.1)
    assert chosen.rule == threshold.GOOD_QUANTILE and chosen.escape_rate is None
    # the 2nd highest of 200: a new good part lands above it 2/201 = 0.995 % of the time
    assert chosen.threshold == 199.0 and chosen.warning is None
    assert threshold.good_quantile(good, 0.02) == 197.0  # 4/201 = 1.99 %
    too_few = threshold.choose(good[:50], np.zeros(50, bool), [""] * 50, 0.01, 0.01, 0.1)
    assert too_few.threshold == 50.0  # the highest promises 1/51 = 2 %, not 1 %
    assert "50 good validation images cannot promise 1 %" in too_few.warning
    assert "99 good validation images would do" in too_few.warning


def test_the_promised_false_reject_rate_holds_on_new_parts() -> None:
    """Draw validation and new good parts from one distribution many times: the share of new
    parts above the threshold averages at most the target (the rule before: 1.9 %)."""
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(4000):
        scores = rng.gamma(4.0, size=105 + 1000)
        cut = threshold.good_quantile(scores[:105], 0.01)
        rates.append((scores[105:] > cut).mean())
    assert np.mean(rates) == pytest.approx(1 / 106, abs=0.001)


def test_with_defects_the_escape_rate_rule_decides_in_raw_distances() -> None:
    good = np.linspace(1.0, 2.0, 100)
    defects = np.linspace(2.5, 9.0, 100)
    raw = np.concatenate([good, defects])
    is_defect = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    chosen = threshold.choose(raw, is_defect, [str(i) for i in range(200)], 0.01, 0.01, 0.1)
    assert chosen.rule == threshold.ESCAPE_RATE
    # 1 % of 100 defects may pass: the lowest defect (2.5) does, the second (~2.566) must not
    assert 2.5 <= chosen.threshold < defects[1]
    assert (raw[is_defect] <= chosen.threshold).sum() == 1
    assert (raw[~is_defect] > chosen.threshold).sum() == 0
    assert chosen.good_quantile == pytest.approx(good[-1])  # the other rule's answer, kept


def test_a_good_looking_defect_is_capped_and_named() -> None:
    good = np.linspace(1.0, 2.0, 100)
    raw = np.r_[good, 0.5, np.linspace(3.0, 4.0, 50)]  # one defect closer than every good part
    is_defect = np.r_[np.zeros(100, bool), np.ones(51, bool)]
    names = [f"g{i}" for i in range(100)] + ["odd.png"] + [f"d{i}" for i in range(50)]
    chosen = threshold.choose(raw, is_defect, names, 0.01, 0.01, 0.1)
    assert chosen.warning is not None and "odd.png" in chosen.warning
    assert 2.0 <= chosen.threshold < 3.0  # no good part rejected, every other defect caught


def test_the_raw_threshold_becomes_one_half_after_normalising() -> None:
    for raw_threshold in (0.3, 7.0, 1234.5):
        assert float(normalise(raw_threshold, raw_threshold)) == 0.5
    probability = threshold.as_good_probability(np.array([0.0, 3.0, 1e6]))
    assert probability[0] == 1.0 and probability[-1] > 0.5
    assert threshold.from_good_probability(float(probability[1])) == pytest.approx(3.0)
    with pytest.raises(IndvisionError, match="no good validation image"):
        threshold.good_quantile(np.array([]), 0.01)


def test_the_fit_input_is_never_larger_than_the_images() -> None:
    from indvision.stages.fit import Config, input_size

    config = Config(height=224, width=224)
    assert input_size(config, [(300, 300)] * 5) == (224, 224)  # casting: shrunk to 224
    assert input_size(config, [(128, 128)] * 4 + [(400, 400)]) == (128, 128)  # the median
    assert input_size(config, [(130, 97)]) == (128, 96)  # whole patches: multiples of 8
    assert input_size(config, [(10, 10)]) == (32, 32)  # a floor for the backbone
    assert input_size(config, []) == (224, 224)
