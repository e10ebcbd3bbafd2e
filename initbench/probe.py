"""Signal propagation at initialization: forward and backward statistics of every hidden layer.

All runs of one shape are computed as one :class:`~initbench.models.StackedNet`; statistics
stay on the device until one transfer at the end, so no layer waits on the host.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from initbench import theory
from initbench.device import run_generator
from initbench.grid import Cell, Run
from initbench.lsuv import unit_variance_scale
from initbench.models import StackedNet
from initbench.schemes import fans

LAYER_STATS = (
    "pre_mean",
    "pre_var",
    "post_mean",
    "post_var",
    "dead_frac",
    "sat_frac",
    "grad_w_norm",
    "grad_h_var",
)


@dataclass
class ProbeResult:
    """Per-layer statistics of R runs: ``stats[name]`` is an ``(R, depth)`` array."""

    stats: dict[str, np.ndarray]
    finite: np.ndarray  # (R,) no NaN or inf anywhere
    input_second_moment: np.ndarray  # (R,) E[x^2] of each run's probe batch


@torch.no_grad()
def init_stack(
    net: StackedNet,
    runs: Sequence[Run],
    probe_shape: Sequence[int] | None,
    data: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initializes each run's weights and draws its probe batch and output cotangent.

    Each run's CPU generator, seeded with its seed, draws in a fixed order: the weights
    (model order, readout last), then the probe batch (unless ``data`` is given), then the
    cotangent. Data-dependent schemes then rescale on the probe batch.

    Args:
        net: the stacked network, its runs in the order of ``runs``.
        runs: one per stacked run.
        probe_shape: shape of one run's standard-normal probe batch, e.g. ``(B, N)``.
        data: a batch of real data ``(B, ...)`` to probe with instead.

    Returns:
        The stacked probe batch ``(R, B, ...)`` and cotangent ``(R, B, d_out)``.
    """
    device = net.weights[0].device
    batch = data.shape[0] if data is not None else probe_shape[0]
    out_features = net.weights[-1].shape[1]
    xs, cotangents = [], []
    buffers = [torch.empty(w.shape) if device.type != "cpu" else w.data for w in net.weights]
    for r, run in enumerate(runs):
        generator = run_generator(run.seed)
        for buffer in buffers:
            run.cell.scheme.fill(buffer[r], run.cell.activation, generator)
        if data is None:
            xs.append(torch.randn(*probe_shape, generator=generator))
        cotangents.append(torch.randn(batch, out_features, generator=generator))
    for w, buffer in zip(net.weights, buffers, strict=True):
        if buffer is not w.data:
            w.copy_(buffer)
    x = torch.stack(xs) if data is None else data.unsqueeze(0).expand(len(runs), *data.shape)
    x = x.to(device)
    lsuv = [r for r, run in enumerate(runs) if run.cell.scheme.data_dependent]
    if lsuv:
        _lsuv_stack(net, x, torch.tensor(lsuv, device=device))
    return x, torch.stack(cotangents).to(device)


def _lsuv_stack(net: StackedNet, x: torch.Tensor, rows: torch.Tensor) -> None:
    """LSUV for the stacked runs ``rows``: each layer rescaled to unit output variance."""
    a = net.to_stacked_input(x)
    for index in range(net.depth + 1):
        inputs = a if index < net.depth else net.readout_input(a)
        h = net.layer(index, inputs)
        h = net.per_run(h) if index < net.depth else h
        scale = unit_variance_scale(h[rows], dims=tuple(range(1, h.dim())))
        weight = net.weights[index]
        weight[rows] *= scale.view(-1, *[1] * (weight.dim() - 1))
        if index < net.depth:
            a = net.activation.fn(net.layer(index, inputs))


def probe(net: StackedNet, x: torch.Tensor, cotangent: torch.Tensor) -> ProbeResult:
    """Forward statistics of every hidden layer, and the backward pass of ``cotangent``.

    The cotangent enters at the network output (a vector-Jacobian product), so gradients
    show signal propagation rather than a loss's scale.
    """
    act, depth = net.activation, net.depth
    pre: list[torch.Tensor] = []
    post: list[torch.Tensor] = []
    with torch.enable_grad():
        out = net(x, pre, post)
        weights = list(net.weights)[:depth]
        grads = torch.autograd.grad(out, pre + weights, grad_outputs=cotangent)
    grad_h, grad_w = grads[:depth], grads[depth:]
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in LAYER_STATS}
    nan = torch.full((net.runs,), math.nan, device=out.device)
    for index in range(depth):
        h, dims, batch_dims = net.run_dims(pre[index].detach())
        a = net.run_dims(post[index].detach())[0]
        pre_mean, pre_var = _mean_var(h, dims)
        post_mean, post_var = _mean_var(a, dims)
        rows["pre_mean"].append(pre_mean)
        rows["pre_var"].append(pre_var)
        rows["post_mean"].append(post_mean)
        rows["post_var"].append(post_var)
        if act.relu_family:  # a unit is dead if it is non-positive on the whole batch
            rows["dead_frac"].append((h.amax(dim=batch_dims) <= 0).float().mean(-1))
        else:
            rows["dead_frac"].append(nan)
        rows["sat_frac"].append(act.saturated_fraction(a, dims) if act.bounds else nan)
        g = grad_w[index]  # a transposed view for mlp layers: reduce it in place, no copy
        rows["grad_w_norm"].append(torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))))
        rows["grad_h_var"].append(_mean_var(net.run_dims(grad_h[index])[0], dims)[1])
    stacked = torch.stack([torch.stack(rows[name], dim=1) for name in LAYER_STATS])
    finite_stats = stacked[
        [i for i, n in enumerate(LAYER_STATS) if n not in ("dead_frac", "sat_frac")]
    ]
    finite = torch.isfinite(finite_stats).all(0).all(1) & torch.isfinite(out).flatten(1).all(1)
    second_moment = x.detach().flatten(1).pow(2).mean(1)
    host = torch.cat([stacked.flatten(), finite.float(), second_moment]).cpu().numpy()
    n = stacked.numel()
    stats = host[:n].reshape(stacked.shape)
    return ProbeResult(
        {name: stats[i] for i, name in enumerate(LAYER_STATS)},
        host[n : n + net.runs].astype(bool),
        host[n + net.runs :],
    )


def _mean_var(t: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance over ``dims`` in two passes (several times faster on
    CPUs than ``torch.var_mean``'s single-pass Welford, and as accurate in float32)."""
    mean = t.mean(dims, keepdim=True)
    count = t.numel() // mean.numel()
    var = torch.linalg.vector_norm(t - mean, dim=dims).square_().div_(count)
    return mean.flatten(), var


@functools.lru_cache(maxsize=4096)
def _theory(
    cell: Cell, shapes: tuple[tuple[int, ...], ...], second_moment: float, pool: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    scheme, act = cell.scheme, cell.activation
    sigma_w2 = [scheme.sigma_w2(s, act) for s in shapes]
    if any(math.isnan(s) for s in sigma_w2):
        nans = (math.nan,) * cell.depth
        return nans, nans
    q = theory.pre_var(act.fn, sigma_w2[:-1], second_moment)
    back = [fans(s)[1] * s2 / fans(s)[0] for s, s2 in zip(shapes[1:], sigma_w2[1:], strict=True)]
    back[-1] *= pool
    return tuple(q), tuple(theory.grad_h_var(act.fn, q, back, 1.0))


def theory_columns(
    cell: Cell, shapes: Sequence[tuple[int, ...]], second_moment: float, spatial: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean-field ``(theory_pre_var, theory_grad_h_var)`` per hidden layer, NaN if n/a.

    ``second_moment`` is the probe batch's ``E[x^2]``; ``spatial`` the number of positions
    that a cnn's global average pool averages (1 for mlp).
    """
    pool = 1.0 / spatial**2 if cell.arch == "cnn" else 1.0
    return _theory(cell, tuple(map(tuple, shapes)), round(second_moment, 6), pool)
