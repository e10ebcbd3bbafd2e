"""Per-layer histograms of pre-activations, post-activations and gradients at initialization.

Bins are fixed, so runs, seeds and layers add up. Unbounded values use signed log bins
("symlog"): four per decade from 1e-8 to 1e8 on each side, one bin for |x| < 1e-38 (exact
zeros: dead ReLUs), one each for 1e-38 <= |x| < 1e-8 (vanished) and |x| > 1e8 (exploded).
Post-activations of bounded activations (tanh, sigmoid) use 100 linear bins across the
output range, so the two end bins are exactly the saturated values (within 1% of the
range of a bound).

Histograms are taken at up to ``LAYERS`` hidden layers, evenly spread from the first to
the last (:func:`layers`), the ones the report draws. A layer holds up to batch x units x
positions values per run; the counts are of a fixed subsample of ``SAMPLE`` of them (the
same positions for every run, seed and layer; every value when there are fewer), binned
by two table lookups on each value's bits (:func:`bin_index`), so that histograms cost
little beside the statistics.
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
SAMPLE = 1024  # values per run and layer: a share's standard error is at most 1.6%
LAYERS = 5  # hidden layers with histograms, first to last


def layers(depth: int) -> list[int]:
    """The hidden layers (from 1) of a depth-``depth`` network that get histograms: up to
    :data:`LAYERS`, first to last, evenly spread."""
    return sorted({round(x) for x in np.linspace(1, depth, min(LAYERS, depth))})


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


CELL_BITS = 16  # a float32 key's low bits within one table cell: 2^16 cells of the key space


def _keys(values: np.ndarray | torch.Tensor):
    """float32 values as int32 keys in the same order: the sign-and-magnitude bits turned
    into two's complement (``-0.0`` just below ``+0.0``, NaN beyond the infinities)."""
    if isinstance(values, np.ndarray):
        bits = values.view(np.int32)
    else:
        import torch

        bits = values.view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@functools.lru_cache(maxsize=16)
def tables(bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables that bin a float32 value from its key's high bits, no search.

    For each of the 2^16 cells of the key space (a value's sign, exponent and top 7
    mantissa bits), the bin of the cell's lowest value, and the key of the one edge inside
    the cell (the largest int32 if none): a value lands one bin up when its key is above
    it. The edges are at least a cell apart, so no cell holds two. Negative NaNs (keys
    below ``-inf``'s) go to the last bin, as :func:`torch.bucketize` puts every NaN;
    ``-inf`` shares its cell with them and lands one past the last bin, which
    :func:`counts` folds into bin 0.
    """
    keys = _keys(edges(bounds).astype(np.float32)).astype(np.int64)
    low = np.arange(-(2**31), 2**31, 2**CELL_BITS, dtype=np.int64)
    first = np.searchsorted(keys, low, side="left")
    past = np.searchsorted(keys, low + 2**CELL_BITS - 1, side="left")
    if (past - first > 1).any():
        raise ValueError("two histogram edges within one table cell")
    inside = np.where(past > first, keys[np.minimum(first, len(keys) - 1)], 2**31 - 1)
    minus_inf = int(_keys(np.array([-np.inf], np.float32))[0])
    nan = low <= minus_inf
    first[nan] = len(keys)
    inside[nan & (low + 2**CELL_BITS > minus_inf)] = minus_inf - 1
    return first.astype(np.int32), inside.astype(np.int32)


def bin_index(values: torch.Tensor, bounds: tuple[float, float] | None = None) -> torch.Tensor:
    """Each float32 value's bin, as ``torch.bucketize(values, edges(bounds))`` counts it
    (NaN in the last bin), by two table lookups on its bits; ``-inf`` one past the last
    bin (see :func:`tables`)."""
    first, inside = _device_tables(bounds, values.device)
    keys = _keys(values.contiguous()).flatten()
    cell = (keys >> CELL_BITS).add_(2 ** (31 - CELL_BITS))
    index = first.index_select(0, cell)
    index += (keys > inside.index_select(0, cell)).to(index.dtype)
    return index.view(values.shape)


@functools.lru_cache(maxsize=32)
def _device_tables(bounds: tuple[float, float] | None, device: torch.device):
    import torch

    return tuple(torch.from_numpy(t).to(device) for t in tables(bounds))


@functools.lru_cache(maxsize=64)
def _sample(values: int, device: torch.device) -> torch.Tensor:
    """``SAMPLE`` of ``values`` positions, ascending, drawn once with a fixed seed."""
    import torch

    generator = torch.Generator().manual_seed(0)
    chosen = torch.randperm(values, generator=generator)[:SAMPLE].sort().values
    return chosen.to(device)


def sample(view: torch.Tensor, axes: Axes, runs: int) -> torch.Tensor:
    """``(runs, values)``: each run's values of one stacked tensor, or its fixed subsample
    of ``SAMPLE`` of them (the same positions in every run)."""
    values = view.movedim(axes.run, 0).reshape(runs, -1)
    if values.shape[1] > SAMPLE:
        values = values.index_select(1, _sample(values.shape[1], view.device))
    return values


def counts(values: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Counts ``(..., bins)``: the values along the last axis binned together, for each
    index of the leading ones."""
    import torch

    rows = values.reshape(-1, values.shape[-1])
    if rows.dtype == torch.float32:
        index = bin_index(rows, bounds)
    else:
        boundaries = torch.tensor(edges(bounds), dtype=rows.dtype, device=rows.device)
        index = torch.bucketize(rows, boundaries)
    bins, n = len(edges(bounds)) + 1, len(rows)
    # each row's bins in a range of their own; added in the index's own integer type (a
    # mixed-type add takes torch's slow path)
    index += torch.arange(0, n * (bins + 1), bins + 1, dtype=index.dtype, device=rows.device).view(
        n, 1
    )
    found = torch.bincount(index.flatten(), minlength=n * (bins + 1)).view(n, bins + 1)
    found[:, 0] += found[:, bins]  # -inf (see tables)
    return found[:, :bins].reshape(*values.shape[:-1], bins)


def layer_counts(
    samples: dict[str, list[torch.Tensor]], activation: Activation
) -> dict[str, torch.Tensor]:
    """Counts ``(runs, layers, bins)`` of each quantity (``pre``, ``post``, ``grad_h``) from
    every layer's :func:`sample`: binned in one pass where the layers' samples have one
    length."""
    import torch

    out = {}
    for quantity, layers in samples.items():
        bounds = activation.bounds if quantity == "post" else None
        if len({layer.shape[1] for layer in layers}) == 1:
            out[quantity] = counts(torch.stack(layers, dim=1), bounds)
        else:
            out[quantity] = torch.stack([counts(layer, bounds) for layer in layers], dim=1)
    return out
