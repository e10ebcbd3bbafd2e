"""Input-output Jacobian spectra of the hidden stack at initialization (Pennington et al. 2017).

For each run, the exact Jacobian ``J = d h / d x`` of the hidden stack (everything before
the readout: an mlp's or cnn's last post-activation, a residual stream) at a few probe
samples, flattened (an image's channels and pixels are one vector),
computed by forward-mode differentiation along every input direction at once
(``torch.func.jvp`` under ``vmap``), then its singular values. Cost per run and sample:
about ``d_in`` forward passes of one sample (``2 d_in N^2 depth`` FLOPs for an mlp of width
N) plus an SVD, ``O(N^3)``; memory ``O(d_in N)`` per run and sample. Hence a width limit
(``initbench.sweeps.grid.JACOBIAN_MAX_WIDTH``) and the flag that turns it on.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from initbench.archs.base import Stacked

SAMPLES = 4  # probe samples per run whose Jacobians are taken
DECADES = (-6, 6)
PER_DECADE = 8


def edges() -> np.ndarray:
    """Bin boundaries of singular values: 8 per decade from 1e-6 to 1e6."""
    return 10.0 ** (np.arange(DECADES[0] * PER_DECADE, DECADES[1] * PER_DECADE + 1) / PER_DECADE)


def singular_values(net: Stacked, x: torch.Tensor, samples: int = SAMPLES) -> torch.Tensor:
    """Singular values ``(R, samples, min(features, d_in))`` of each run's hidden-stack
    Jacobian at its first ``samples`` probe samples; ``x`` is the stacked probe batch
    ``(R, B, *sample)``."""
    stages = net.stage_list[:-1]  # the last stage is the readout

    def hidden(inputs: torch.Tensor) -> torch.Tensor:
        state = net.enter(inputs)
        for stage in stages:
            state = stage.run(state, None)
        return net.features(state)  # (R, S, features)

    point = x[:, :samples].detach()
    sample = point.shape[2:]
    d_in = math.prod(sample)
    basis = torch.eye(d_in, device=point.device, dtype=point.dtype).view(d_in, 1, 1, *sample)
    directions = basis.expand(d_in, *point.shape)

    def column(direction: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(hidden, (point,), (direction,))[1]

    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        columns = torch.func.vmap(column)(directions)  # (d_in, R, S, features)
        jacobian = columns.permute(1, 2, 3, 0)  # (R, S, features, d_in)
        return torch.linalg.svdvals(jacobian)


def summaries(values: torch.Tensor) -> dict[str, np.ndarray]:
    """Per run: the mean and variance of the squared singular values, the largest and the
    smallest singular value."""
    flat = values.flatten(1).double()
    squares = flat.square()
    return {
        "jac_s2_mean": squares.mean(1).cpu().numpy(),
        "jac_s2_var": squares.var(1, correction=0).cpu().numpy(),
        "jac_s_max": flat.amax(1).cpu().numpy(),
        "jac_s_min": flat.amin(1).cpu().numpy(),
    }


def histograms(values: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run: counts of singular values in the bins of :func:`edges` (with one bin below
    1e-6 and one above 1e6). Returns ``(counts (R, bins), lo (bins,), hi (bins,))``."""
    boundaries = edges()
    flat = values.flatten(1).double().cpu().numpy()
    index = np.searchsorted(boundaries, flat, side="left")  # lo < s <= hi
    bins = len(boundaries) + 1
    counts = np.stack([np.bincount(row, minlength=bins) for row in index])
    lo = np.concatenate([[0.0], boundaries])
    hi = np.concatenate([boundaries, [np.inf]])
    return counts, lo, hi
