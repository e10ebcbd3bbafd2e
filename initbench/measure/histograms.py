"""Per-layer histograms of pre-activations, post-activations and gradients at initialization.

Bins are fixed, so runs, seeds and layers add up. Unbounded values use signed log bins
("symlog"): four per decade from 1e-8 to 1e8 on each side, one bin for |x| < 1e-38 (exact
zeros: dead ReLUs), one each for 1e-38 <= |x| < 1e-8 (vanished) and |x| > 1e8 (exploded).
Post-activations of bounded activations (tanh, sigmoid) use 100 linear bins across the
output range, so the two end bins are exactly the saturated values (within 1% of the
range of a bound).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported when counting: the report reads the bins without it
    import torch

    from initbench.archs.base import Axes
    from initbench.core.activations import Activation

QUANTITIES = ("pre", "post", "grad_h")
DECADES = (-8, 8)
PER_DECADE = 4
ZERO = 1e-38  # float32's smallest normal number: |x| below it counts as zero
LINEAR_BINS = 100


@functools.lru_cache(maxsize=16)
def edges(bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Bin boundaries, ascending. ``bounds``: linear bins over an output range; else symlog.

    Bin i holds ``edges[i-1] < x <= edges[i]`` (bin 0: ``x <= edges[0]``; the last bin:
    ``x > edges[-1]``), as :func:`torch.bucketize` counts.
    """
    if bounds is not None:
        return np.linspace(bounds[0], bounds[1], LINEAR_BINS + 1)[1:-1]
    mags = 10.0 ** (np.arange(DECADES[0] * PER_DECADE, DECADES[1] * PER_DECADE + 1) / PER_DECADE)
    return np.concatenate([-mags[::-1], [-ZERO, ZERO], mags])


def bin_ranges(bounds: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Each bin's ``(lo, hi)``; the open ends of the outer bins are the range's ends or inf."""
    inner = edges(bounds)
    outer = bounds if bounds is not None else (-np.inf, np.inf)
    return np.concatenate([[outer[0]], inner]), np.concatenate([inner, [outer[1]]])


def counts(view: torch.Tensor, axes: Axes, runs: int, boundaries: torch.Tensor) -> torch.Tensor:
    """Counts ``(runs, bins)`` of one stacked tensor, each run's values binned together."""
    import torch

    bins = len(boundaries) + 1
    index = torch.bucketize(view, boundaries)
    shape = [1] * view.dim()
    shape[axes.run] = runs
    offset = torch.arange(runs, device=view.device).view(shape) * bins
    flat = (index + offset).flatten()
    return torch.bincount(flat, minlength=runs * bins).view(runs, bins)


def layer_counts(
    views: dict[str, torch.Tensor], axes: Axes, runs: int, activation: Activation
) -> dict[str, torch.Tensor]:
    """Counts of each quantity (``pre``, ``post``, ``grad_h``) of one layer."""
    import torch

    out = {}
    for quantity, view in views.items():
        bounds = activation.bounds if quantity == "post" else None
        boundaries = torch.tensor(edges(bounds), dtype=view.dtype, device=view.device)
        out[quantity] = counts(view, axes, runs, boundaries)
    return out
