"""The few-seed statistics of dashboards/stats.py, on values whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from dashboards import stats


def test_iqm_weights_count_the_middle_half_of_the_seeds():
    assert stats.iqm_weights(3) == pytest.approx([1 / 6, 2 / 3, 1 / 6])
    assert stats.iqm_weights(4) == pytest.approx([0, 0.5, 0.5, 0])
    assert stats.iqm_weights(5) == pytest.approx([0, 0.3, 0.4, 0.3, 0])
    assert stats.iqm_weights(1) == pytest.approx([1.0]) and stats.iqm_weights(2) == pytest.approx([0.5, 0.5])
    for n in range(1, 12):
        assert stats.iqm_weights(n).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        stats.iqm_weights(0)


def test_iqm_is_scipys_trimmed_mean_for_multiples_of_four_and_robust_to_one_seed():
    values = np.random.default_rng(3).normal(size=12)
    assert stats.iqm(values) == pytest.approx(scipy.stats.trim_mean(values, 0.25))
    assert stats.iqm([0.69, 0.71, 0.70]) == pytest.approx((0.69 + 4 * 0.70 + 0.71) / 6)
    # One seed 20 points off moves the mean by 6.7 points, the IQM by 1/6 of the way to the next seed.
    assert stats.iqm([0.70, 0.71, 0.50]) == pytest.approx((0.50 + 4 * 0.70 + 0.71) / 6)
    # Vectorized along an axis, as the bootstrap and the curves call it.
    stack = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 60.0]])
    assert stats.iqm(stack, axis=0) == pytest.approx([2.0, (10 + 80 + 60) / 6])
    assert math.isnan(stats.iqm([]))


def test_bootstrap_interval_is_seeded_bounded_and_narrows_with_more_seeds():
    three = [0.6906, 0.7066, 0.6872]
    lo, hi = stats.bootstrap_ci(three)
    assert min(three) <= lo < stats.iqm(three) < hi <= max(three)
    assert stats.bootstrap_ci(three) == (lo, hi)  # its own seed: the same data, the same interval
    # Two values: a resample is both low (1/4), both high (1/4) or one of each, so the
    # 2.5th and 97.5th percentiles of its mean are the two values.
    assert stats.bootstrap_ci([0.5, 0.7]) == pytest.approx((0.5, 0.7))
    many = np.random.default_rng(0).normal(0.69, 0.01, size=40)
    lo40, hi40 = stats.bootstrap_ci(many)
    assert hi40 - lo40 < 0.5 * (hi - lo)
    assert all(math.isnan(v) for v in stats.bootstrap_ci([0.7]))  # one seed: no interval
    assert all(math.isnan(v) for v in stats.bootstrap_ci([0.7, math.nan]))  # NaN dropped, then one
    assert stats.bootstrap_ci([0.7, 0.7, 0.7]) == (0.7, 0.7)


def test_probability_of_improvement_is_mann_whitney_u_over_nm():
    # 1>0; 2>0, 2=2 (half); 3>0, 3>2: 4.5 of 9 pairs.
    assert stats.prob_improvement([1, 2, 3], [0, 2, 5]) == pytest.approx(0.5)
    assert stats.prob_improvement([3, 4], [1, 2]) == 1.0 and stats.prob_improvement([1, 2], [3, 4]) == 0.0
    x, y = [0.70, 0.71, 0.69, 0.72], [0.68, 0.70, 0.66]
    u = scipy.stats.mannwhitneyu(x, y).statistic
    assert stats.prob_improvement(x, y) == pytest.approx(u / 12)
    assert stats.prob_improvement(x, y) + stats.prob_improvement(y, x) == pytest.approx(1.0)
    assert math.isnan(stats.prob_improvement([], y))
    # Fully separated seeds stay separated in every resample: the interval is [1, 1].
    assert stats.prob_improvement_ci([3, 4, 5], [0, 1, 2]) == (1.0, 1.0)
    lo, hi = stats.prob_improvement_ci(x, y)
    assert 0.0 <= lo < stats.prob_improvement(x, y) < hi <= 1.0
    assert stats.prob_improvement_ci([0.7, 0.7], [0.7]) == (0.5, 0.5)


def test_column_intervals_skip_columns_a_seed_has_not_reached():
    stack = np.array([[0.5, 0.6, np.nan, 0.1], [0.5, 0.7, 0.8, 0.3], [0.5, 0.65, 0.8, 0.2]])
    lo, hi = stats.column_intervals(stack)
    assert (lo[0], hi[0]) == (0.5, 0.5)
    assert math.isnan(lo[2]) and math.isnan(hi[2])
    for j in (1, 3):
        assert (lo[j], hi[j]) == pytest.approx(stats.bootstrap_ci(stack[:, j]), abs=0.02)
        assert stack[:, j].min() <= lo[j] < hi[j] <= stack[:, j].max()


def test_average_ranks_rank_within_each_shared_seed():
    rows = []
    def curve(strategy, seed, points):
        for x, y in points:
            rows.append({"strategy": strategy, "seed": seed, "trial_epochs": x, "best_complete": y})
    # Seed 0: A leads from 2 on; B only has a value from 3. Seed 1: B leads from 1, A ties it at 4.
    curve("A", 0, [(2, 0.6), (4, 0.7)])
    curve("B", 0, [(3, 0.5)])
    curve("A", 1, [(2, 0.4), (4, 0.8)])
    curve("B", 1, [(1, 0.8)])
    curve("B", 2, [(1, 0.9)])  # a seed only B ran: left out
    ranks = stats.average_ranks(pd.DataFrame(rows), "trial_epochs")
    a = ranks[ranks["strategy"] == "A"].set_index("x")["rank"]
    b = ranks[ranks["strategy"] == "B"].set_index("x")["rank"]
    assert (ranks["seeds"] == 2).all()
    assert a[0] == b[0] == 1.5  # nobody has a value: a tie
    assert (a[1], b[1]) == (1.75, 1.25)  # seed 0: tie; seed 1: B first
    assert (a[2], b[2]) == (1.5, 1.5)  # seed 0: A first; seed 1: B first
    assert (a[4], b[4]) == (1.25, 1.75)  # seed 0: A first; seed 1: a tie at 0.8
    assert stats.average_ranks(pd.DataFrame(rows[:2]), "trial_epochs").empty  # one strategy: no ranking
