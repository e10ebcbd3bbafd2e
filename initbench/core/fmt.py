"""One number format for every table, caption and verdict.

Changes are factors (``×0.53``, ``×2.1``, ``×2^-40`` beyond a thousandfold), accuracies
percentages with one decimal (``96.1%``, intervals in points: ``96.1% ± 0.4``), counts and
steps integers, everything else three significant digits. Nothing prints ``nan`` or
``inf``: a missing value is ``—``, a signal of exactly zero ``vanished``, an overflow
``exploded``, a target never reached ``never``, an infinite depth scale ``∞``.
"""

from __future__ import annotations

import math

MISSING = "—"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def factor(log2_change: float) -> str:
    """A change given as log2 of its factor: ``×0.53``, ``×2^-40``, ``vanished``."""
    if log2_change == -math.inf:
        return "vanished"
    if log2_change == math.inf:
        return "exploded"
    if not _finite(log2_change):
        return MISSING
    if abs(log2_change) >= 10:
        return f"×2^{log2_change:.0f}"
    value = 2**log2_change
    return f"×{value:.0f}" if value >= 100 else f"×{value:.2g}"


def factor_interval(log2_change: float, half: float) -> str:
    """``×0.53 (×0.31–×0.9)``: the factor with its 95% interval."""
    text = factor(log2_change)
    if not (_finite(log2_change) and _finite(half)):
        return text
    return f"{text} ({factor(log2_change - half)}–{factor(log2_change + half)})"


def percent(value: float, half: float = math.nan) -> str:
    """``96.1%`` or ``96.1% ± 0.4`` (the interval in percentage points)."""
    if not _finite(value):
        return MISSING
    text = f"{100 * value:.1f}%"
    return f"{text} ± {100 * half:.1f}" if _finite(half) else text


def steps(value: float) -> str:
    """Steps to a target: an integer, or ``never``."""
    return f"{value:.0f}" if _finite(value) else "never"


def number(value: float, half: float = math.nan) -> str:
    """Three significant digits, with ``± half`` when given; ``∞`` for infinity."""
    if value == math.inf:
        return "∞"
    if value == -math.inf:
        return "-∞"
    if not _finite(value):
        return MISSING
    text = f"{value:.3g}"
    return f"{text} ± {half:.2g}" if _finite(half) else text


def duration(seconds: float) -> str:
    """A time span: ``40 s``, ``12 minutes``, ``3 hours``, ``2 days`` (whole units)."""
    if not _finite(seconds):
        return MISSING
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.0f} {unit}"
    return f"{max(seconds, 1):.0f} s"
