import math

import pytest
from scipy import stats

from volslice.comparison import DOES_NOT_HOLD, HOLDS, UNDECIDED, paired_comparison


def test_a_consistent_gain_holds_and_its_interval_is_the_paired_t_interval():
    a, b = [0.50, 0.52, 0.49], [0.60, 0.63, 0.58]  # losses: A lower on every seed
    result = paired_comparison(a, b)
    gains = [0.10, 0.11, 0.09]
    half = stats.t.ppf(0.975, 2) * stats.tstd(gains) / math.sqrt(3)
    assert result.mean == pytest.approx(0.10) and result.sd == pytest.approx(0.01)
    assert (result.low, result.high) == pytest.approx((0.10 - half, 0.10 + half))
    assert result.verdict == HOLDS and result.seeds_to_decide is None


def test_a_higher_is_better_score_and_a_reversed_gain_does_not_hold():
    result = paired_comparison([0.70, 0.71, 0.69], [0.80, 0.82, 0.79], lower_is_better=False)  # AP: A worse
    assert result.mean < 0 and result.verdict == DOES_NOT_HOLD


def test_an_overlapping_gain_is_undecided_with_the_seeds_that_would_decide_it():
    a, b = [0.50, 0.60, 0.45], [0.52, 0.55, 0.53]
    result = paired_comparison(a, b)
    assert result.verdict == UNDECIDED and result.low < 0 < result.high
    n = result.seeds_to_decide
    assert n > 3
    # at n seeds the measured spread's interval excludes 0, at n - 1 it does not
    assert stats.t.ppf(0.975, n - 1) * result.sd / math.sqrt(n) < abs(result.mean)
    assert stats.t.ppf(0.975, n - 2) * result.sd / math.sqrt(n - 1) >= abs(result.mean)
    assert "seeds would decide it" in result.describe()


def test_unpaired_or_single_seed_arms_are_refused():
    with pytest.raises(ValueError, match="same seeds"):
        paired_comparison([0.5, 0.6], [0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_comparison([0.5], [0.6])
