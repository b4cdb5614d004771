"""Statistics for few seeds that a reviewer accepts: IQM, bootstrap intervals, P(X > Y), ranks.

Three seeds of a study are three numbers. Their mean ± std hides how wide the
uncertainty is, so the benchmark pages report, following Agarwal et al.,
"Deep RL at the Edge of the Statistical Precipice" (NeurIPS 2021, the
``rliable`` library):

- the interquartile mean (IQM), robust to one lucky or unlucky seed;
- a percentile bootstrap 95% confidence interval around it (scipy.stats.bootstrap);
- the probability of improvement P(X > Y), the chance that a seed of one
  strategy beats a seed of another (Mann-Whitney's U / (n m)), with its own
  bootstrap interval;
- average ranks over time: at each point of the budget, strategies ranked per
  seed and the ranks averaged over seeds.

With 3 seeds an interval is wide and coarse (a resample of 3 values has 10
distinct multisets): that is the honest answer, not a defect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.stats

__all__ = ["LEVEL", "average_ranks", "bootstrap_ci", "column_intervals", "iqm", "iqm_weights", "prob_improvement",
           "prob_improvement_ci"]

LEVEL = 0.95  # the confidence level of every interval the pages show
RESAMPLES = 4000  # bootstrap resamples: percentiles of 95% intervals stable to about 0.1 point
SEED = 0  # the bootstrap's own seed: the same data always gives the same interval


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def iqm_weights(n: int) -> np.ndarray:
    """The weight of each of ``n`` sorted values in the interquartile mean.

    Each value holds 1/n of the empirical distribution; the IQM is the mean of
    its middle half, the 25th to the 75th percentile, so a value straddling a
    quartile counts by the share of it inside. 4 values: the middle two, each
    1/2; 3 values: 1/6, 2/3, 1/6; 1 or 2 values: the plain mean. For n a
    multiple of 4 this is scipy.stats.trim_mean(values, 0.25).
    """
    if n < 1:
        raise ValueError("iqm of no values")
    edges = np.arange(n + 1) / n
    inside = np.clip(np.minimum(edges[1:], 0.75) - np.maximum(edges[:-1], 0.25), 0.0, None)
    return inside / 0.5


def iqm(values: Sequence[float] | np.ndarray, axis: int = -1) -> float | np.ndarray:
    """Interquartile mean along ``axis`` (:func:`iqm_weights`); NaN for no values.

    Vectorized, so that scipy's bootstrap can call it on a stack of resamples.
    Non-finite values are not dropped here: pass finite ones (the callers do).
    """
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return math.nan
    ordered = np.sort(array, axis=axis)
    weights = iqm_weights(ordered.shape[axis])
    result = np.tensordot(np.moveaxis(ordered, axis, -1), weights, axes=([-1], [0]))
    return float(result) if np.ndim(result) == 0 else result


def bootstrap_ci(values: Sequence[float] | np.ndarray, statistic=iqm, *, level: float = LEVEL,
                 resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over the finite ``values``.

    Percentile rather than BCa: BCa's jackknife is undefined for 2-3 equal
    values, which a benchmark of few seeds meets. (NaN, NaN) for fewer than 2
    values; (v, v) when all values are equal.
    """
    data = _finite(values)
    if len(data) < 2:
        return math.nan, math.nan
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    result = scipy.stats.bootstrap((data,), statistic, n_resamples=resamples, confidence_level=level,
                                   method="percentile", vectorized=True, axis=-1,
                                   rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _prob_improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    greater = (x[..., :, None] > y[..., None, :]).mean(axis=(-2, -1))
    ties = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return greater + 0.5 * ties


def prob_improvement(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 for a seed X of one strategy and a seed Y of another.

    Mann-Whitney's U1 / (n m): 1 when every x beats every y, 0.5 for no
    difference. NaN when either side has no finite value.
    """
    xs, ys = _finite(x), _finite(y)
    if not len(xs) or not len(ys):
        return math.nan
    return float(_prob_improvement(xs, ys))


def prob_improvement_ci(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
                        level: float = LEVEL, resamples: int = RESAMPLES,
                        seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`prob_improvement`, each side resampled on its own.

    A side with one value is held fixed (it has nothing to resample); NaN when
    neither side has two.
    """
    xs, ys = _finite(x), _finite(y)
    if not len(xs) or not len(ys) or (len(xs) < 2 and len(ys) < 2):
        return math.nan, math.nan
    both = np.concatenate([xs, ys])
    if np.all(both == both[0]):
        return 0.5, 0.5
    if len(ys) < 2:
        data, statistic = (xs,), lambda a, axis=-1: _prob_improvement(a, ys, axis)
    elif len(xs) < 2:
        data, statistic = (ys,), lambda b, axis=-1: _prob_improvement(xs, b, axis)
    else:
        data, statistic = (xs, ys), _prob_improvement
    result = scipy.stats.bootstrap(data, statistic, n_resamples=resamples, confidence_level=level,
                                   method="percentile", vectorized=True, paired=False, axis=-1,
                                   rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def average_ranks(curves: pd.DataFrame, x: str, y: str = "best_complete") -> pd.DataFrame:
    """Each strategy's rank (1 = best) at each point of ``x``, averaged over seeds.

    For every seed that every strategy ran, the strategies' best-so-far values
    at a point are ranked, ties sharing the mean rank, and a strategy with no
    value yet ranked behind the others. A study holds its last value after it
    ended, as in the curves. Seeds only some strategies ran are left out, so
    each rank compares the same seeds.

    Args:
        curves: ``dashboards.strategy_frames.curves_frame`` (``strategy``,
            ``seed``, ``x`` and ``y`` columns).
        x: ``trial_epochs`` or ``wall_seconds``.
        y: The best-so-far column ranked (higher is better).

    Returns:
        Columns ``strategy``, ``x``, ``rank`` (mean over seeds) and ``seeds``.
    """
    from dashboards.strategy_frames import step_values  # its curves' own step rule

    columns = ["strategy", "x", "rank", "seeds"]
    if curves.empty:
        return pd.DataFrame(columns=columns)
    strategies = list(dict.fromkeys(curves["strategy"]))
    per_strategy = [set(curves.loc[curves["strategy"] == s, "seed"]) for s in strategies]
    seeds = sorted(set.intersection(*per_strategy))
    if len(strategies) < 2 or not seeds:
        return pd.DataFrame(columns=columns)
    grid = np.unique(np.concatenate([[0.0], curves[x].to_numpy(dtype=float)]))
    ranks = np.zeros((len(seeds), len(strategies), len(grid)))
    for i, seed in enumerate(seeds):
        values = np.vstack([step_values(g[x], g[y], grid) for s in strategies
                            for g in [curves[(curves["strategy"] == s) & (curves["seed"] == seed)]
                                      .sort_values(x)]])
        # Rank 1 = highest value; no value yet ranks behind every value.
        ranks[i] = scipy.stats.rankdata(-np.nan_to_num(values, nan=-np.inf), axis=0)
    mean = ranks.mean(axis=0)
    return pd.DataFrame([{"strategy": s, "x": float(grid[j]), "rank": float(mean[k, j]), "seeds": len(seeds)}
                         for k, s in enumerate(strategies) for j in range(len(grid))], columns=columns)


def column_intervals(stack: np.ndarray, statistic=iqm, *, level: float = LEVEL, resamples: int = RESAMPLES,
                     seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bootstrap_ci` of each column of ``stack`` (rows: seeds), in one vectorized call.

    A column with a non-finite value, or with fewer than 2 rows, gets NaN; an
    all-equal column gets its value at both ends.
    """
    stack = np.asarray(stack, dtype=float)
    low, high = np.full(stack.shape[1], np.nan), np.full(stack.shape[1], np.nan)
    if stack.shape[0] < 2:
        return low, high
    ok = np.isfinite(stack).all(axis=0)
    flat = ok & (stack == stack[:1]).all(axis=0)
    low[flat] = high[flat] = stack[0, flat]
    vary = ok & ~flat
    if vary.any():
        result = scipy.stats.bootstrap((stack[:, vary],), statistic, n_resamples=resamples,
                                       confidence_level=level, method="percentile", vectorized=True, axis=0,
                                       rng=np.random.default_rng(seed))
        low[vary], high[vary] = result.confidence_interval.low, result.confidence_interval.high
    return low, high
