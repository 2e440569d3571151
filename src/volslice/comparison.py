"""Deciding a claim "A beats B" from paired runs (the same seed, data and folds for both arms).

A claim is decided by the paired differences d_i (A's gain over B on seed i; positive: A is
better): its 95 % t interval mean(d) +/- t(n-1) sd(d) / sqrt(n). It **holds** where the interval
lies above 0, **does not hold** where it lies below (B is better), and is **undecided** where it
holds 0; then ``seeds_to_decide`` is the number of seeds at which an interval of the measured
spread around the measured mean would exclude 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

HOLDS, DOES_NOT_HOLD, UNDECIDED = "holds", "does not hold", "undecided"


@dataclass(frozen=True)
class PairedComparison:
    """A's paired gain over B: mean, spread, interval and what it decides."""

    mean: float  # mean gain of A over B (positive: A better)
    sd: float  # standard deviation of the paired gains
    n: int  # seeds
    low: float  # the interval's ends
    high: float
    verdict: str  # holds | does not hold | undecided
    seeds_to_decide: int | None  # undecided: the seeds that would decide it (None: a zero mean never does)

    def describe(self) -> str:
        """One line: the gain with its interval, the verdict and, where undecided, the seeds needed."""
        text = (f"gain {self.mean:+.3f} (95% CI {self.low:+.3f} to {self.high:+.3f}, sd {self.sd:.3f}, "
                f"{self.n} seeds): {self.verdict}")
        if self.verdict == UNDECIDED:
            text += f"; about {self.seeds_to_decide} seeds would decide it" if self.seeds_to_decide else "; no mean gain"
        return text


def paired_comparison(a, b, lower_is_better: bool = True, confidence: float = 0.95,
                      max_seeds: int = 1000) -> PairedComparison:
    """Compare arm A with arm B from their scores on the same seeds (same order). ``lower_is_better``:
    the scores are losses (the competition's weighted log loss), else higher is better (AP, Dice)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need the same seeds in both arms, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired comparison needs at least 2 seeds, got {len(a)}")
    gains = (b - a) if lower_is_better else (a - b)
    n, mean, sd = len(gains), float(gains.mean()), float(gains.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = HOLDS if low > 0 else DOES_NOT_HOLD if high < 0 else UNDECIDED
    needed = None
    if verdict == UNDECIDED and mean != 0:
        needed = next((k for k in range(2, max_seeds + 1)
                       if stats.t.ppf(0.5 + confidence / 2, k - 1) * sd / math.sqrt(k) < abs(mean)), max_seeds)
    return PairedComparison(mean, sd, n, low, high, verdict, needed)
