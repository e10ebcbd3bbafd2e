"""95% t-intervals: of a mean, of a least-squares slope, of per-group means. Every interval
initbench prints or draws comes from here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

QUANTILE = 0.975  # two-sided 95%


def t_quantile(dof: float | np.ndarray | pd.DataFrame) -> float | np.ndarray | pd.DataFrame:
    """The two-sided 95% quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy import stats  # here: commands that fail fast never load scipy

    return stats.t.ppf(QUANTILE, dof)


def mean_interval(values: np.ndarray) -> tuple[float, float, int]:
    """The mean of the finite values, its 95% half-width and their count.

    Returns:
        ``(mean, half, n)``; the half-width is NaN for one value, both are NaN for none.
    """
    mean, half, n = mean_intervals(np.asarray(values, dtype=float).reshape(-1, 1))
    return float(mean[0]), float(half[0]), int(n[0])


def mean_intervals(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`mean_interval` of every column at once: ``values`` is ``(samples, ...)``.

    Returns:
        ``(mean, half, n)``, each of ``values``' shape less its first axis.
    """
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    n = finite.sum(0)
    kept = np.where(finite, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = kept.sum(0) / n
        square = np.where(finite, values - mean, 0.0) ** 2
        std = np.sqrt(square.sum(0) / (n - 1))
        half = np.where(n > 1, t_quantile(np.maximum(n - 1, 1)) * std / np.sqrt(n), np.nan)
    return np.where(n > 0, mean, np.nan), half, n


def slope_interval(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """The least-squares slope of ``y`` on ``x`` over the finite pairs.

    Returns:
        ``(slope, half, points)``: the slope (NaN with fewer than 2 distinct ``x``), the
        half-width of its 95% interval (``points - 2`` degrees of freedom; NaN with 2
        points) and the pairs fitted.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    points = int(keep.sum())
    if np.unique(x).size < 2:
        return math.nan, math.nan, points
    dx = x - x.mean()
    sxx = float(dx @ dx)
    slope = float(dx @ (y - y.mean())) / sxx
    if points < 3:
        return slope, math.nan, points
    residual = y - y.mean() - slope * dx
    se = math.sqrt(float(residual @ residual) / (points - 2) / sxx)
    return slope, float(t_quantile(points - 2)) * se, points


def group_intervals(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Per group of ``keys``: each column's mean and its 95% interval's ends
    (``<column>_mean``, ``_lo``, ``_hi``), as float32. Missing values are left out; an
    infinite one makes the mean infinite and the interval missing; one row gives no
    interval."""
    grouped = frame.groupby(keys, sort=True, dropna=False)[columns]
    mean, std, count = grouped.mean(), grouped.std(), grouped.count()
    with np.errstate(invalid="ignore", divide="ignore"):
        half = std * t_quantile((count - 1).where(count > 1)) / np.sqrt(count)
    out = {}
    for column in columns:
        out[f"{column}_mean"] = mean[column]
        out[f"{column}_lo"] = mean[column] - half[column]
        out[f"{column}_hi"] = mean[column] + half[column]
    return pd.DataFrame(out).astype("float32").reset_index()
