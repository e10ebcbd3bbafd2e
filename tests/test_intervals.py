"""The intervals module against scipy's own intervals and regressions."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from initbench.core.intervals import group_intervals, mean_interval, mean_intervals, slope_interval


def test_mean_interval_is_scipys_t_interval():
    values = np.array([1.0, 2.5, np.nan, 3.25, 0.5, np.inf])
    finite = values[np.isfinite(values)]
    lo, hi = stats.t.interval(0.95, len(finite) - 1, finite.mean(), stats.sem(finite))
    mean, half, n = mean_interval(values)
    assert n == 4 and mean == pytest.approx(finite.mean())
    assert (mean - half, mean + half) == pytest.approx((lo, hi), rel=1e-12)


def test_mean_interval_of_one_and_of_none():
    assert mean_interval(np.array([2.0]))[:1] == (2.0,) and math.isnan(mean_interval([2.0])[1])
    mean, half, n = mean_interval(np.array([np.nan]))
    assert n == 0 and math.isnan(mean) and math.isnan(half)


def test_mean_intervals_is_scipys_t_interval_of_each_column():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(6, 3, 4))
    values[0, 0, 0], values[1, 2, 3], values[2:, 1, 1] = np.nan, -np.inf, np.nan
    mean, half, n = mean_intervals(values)
    assert mean.shape == half.shape == n.shape == (3, 4)
    for i, j in np.ndindex(3, 4):
        column = values[:, i, j]
        finite = column[np.isfinite(column)]
        assert n[i, j] == len(finite) and mean[i, j] == pytest.approx(finite.mean())
        if len(finite) > 1:
            lo, hi = stats.t.interval(0.95, len(finite) - 1, finite.mean(), stats.sem(finite))
            assert (mean[i, j] - half[i, j], mean[i, j] + half[i, j]) == pytest.approx((lo, hi))
        else:
            assert math.isnan(half[i, j])


def test_slope_interval_is_linregress_with_its_t_interval():
    rng = np.random.default_rng(0)
    x = np.arange(8.0)
    y = 0.7 * x + rng.normal(size=8)
    y[3] = np.nan
    keep = np.isfinite(y)
    fit = stats.linregress(x[keep], y[keep])
    slope, half, points = slope_interval(x, y)
    assert points == 7 and slope == pytest.approx(fit.slope, rel=1e-12)
    assert half == pytest.approx(stats.t.ppf(0.975, 5) * fit.stderr, rel=1e-9)


def test_slope_interval_needs_two_distinct_x_and_three_points_for_a_half_width():
    assert math.isnan(slope_interval([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])[0])
    slope, half, points = slope_interval([1.0, 2.0], [1.0, 3.0])
    assert (slope, points) == (2.0, 2) and math.isnan(half)


def test_group_intervals_per_group():
    frame = pd.DataFrame({"g": ["a", "a", "a", "b"], "v": [1.0, 2.0, 4.0, 5.0]})
    out = group_intervals(frame, ["g"], ["v"]).set_index("g")
    lo, hi = stats.t.interval(0.95, 2, 7 / 3, stats.sem([1.0, 2.0, 4.0]))
    assert out.loc["a", ["v_lo", "v_hi"]].tolist() == pytest.approx([lo, hi], rel=1e-6)
    assert out.loc["b", "v_mean"] == 5.0 and math.isnan(out.loc["b", "v_lo"])
