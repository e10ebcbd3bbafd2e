"""Signal propagation at initialization: the statistics of every hidden layer.

:data:`STATISTICS` names each per-layer statistic and how it is computed from a layer's
tensors (as mup's coord check keeps its ``FDICT``): adding one is one entry here and one
line in ``docs/results.md``. All runs of a chunk are computed as one stacked network, and
statistics stay on the device until one transfer at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from initbench.archs.base import Axes, Stacked, Taps
from initbench.core.activations import Activation
from initbench.measure import histograms


@dataclass
class Layer:
    """One hidden layer of R stacked runs: its tensors as views with a run axis."""

    pre: torch.Tensor
    post: torch.Tensor
    grad_h: torch.Tensor
    grad_w: list[torch.Tensor]  # (R, ...) gradients of the layer's weights
    axes: Axes
    activation: Activation
    runs: int

    @cached_property
    def pre_squares(self) -> torch.Tensor:
        """Each sample's squared norm: the pre-activation summed over positions and units."""
        return torch.linalg.vector_norm(self.pre, dim=self.axes.vector()).square_()

    @cached_property
    def pre_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.pre.mean(self.axes.but_run())
        square = self.pre_squares.sum(self.axes.vector_reduced_batch()) / self.per_run(self.pre)
        return _guarded(self.pre, self.axes.but_run(), mean, square)

    @cached_property
    def post_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        return mean_var(self.post, self.axes.but_run())

    def per_run(self, t: torch.Tensor) -> int:
        return t.numel() // self.runs

    def nan(self) -> torch.Tensor:
        return torch.full((self.runs,), math.nan, device=self.pre.device)


CANCELLATION = 1e-2  # E[x^2] - mean^2 below this share of E[x^2]: recompute in two passes


def mean_var(t: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance over ``dims``: ``E[x^2] - mean^2`` from two reductions
    that allocate nothing (several times faster on CPUs than centring first, or than
    ``torch.var_mean``'s Welford), recomputed from centred values where the subtraction
    would lose float32's precision."""
    mean = t.mean(dims)
    square = torch.linalg.vector_norm(t, dim=dims).square_().div_(t.numel() // mean.numel())
    return _guarded(t, dims, mean, square)


def _guarded(
    t: torch.Tensor, dims: tuple[int, ...], mean: torch.Tensor, square: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, E[x^2] - mean^2)``, or the two-pass variance when the difference cancels
    (always on GPUs, where the check would wait for the device)."""
    var = square - mean.square()
    if t.device.type != "cpu" or bool((var <= CANCELLATION * square).any()):
        shape = [1] * t.dim()
        shape[next(d for d in range(t.dim()) if d not in dims)] = -1
        centred = t - mean.view(shape)
        var = torch.linalg.vector_norm(centred, dim=dims).square_().div_(t.numel() // mean.numel())
    return mean, var


def dead_fraction(layer: Layer) -> torch.Tensor:
    """ReLU family: the fraction of units with ``h <= 0`` for every sample and position."""
    if not layer.activation.relu_family:
        return layer.nan()
    samples = layer.axes.samples()
    dead = (layer.pre.amax(dim=samples) <= 0).float()
    return _average_but_run(dead, layer.axes, samples)


def saturated_fraction(layer: Layer) -> torch.Tensor:
    """tanh, sigmoid: the fraction of post-activations within 1% of the range of a bound."""
    if not layer.activation.bounds:
        return layer.nan()
    return layer.activation.saturated_fraction(layer.post, layer.axes.but_run())


def weight_gradient_norm(layer: Layer) -> torch.Tensor:
    """The Frobenius norm of the layer's weight gradients (all of its weights together).

    An mlp's gradients are transposed views: they are reduced in place, not copied."""
    squares = [
        torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))).square() for g in layer.grad_w
    ]
    return torch.stack(squares).sum(0).sqrt()


def pair_correlation(layer: Layer) -> torch.Tensor:
    """The mean cosine similarity of the pre-activations of input pairs (2i, 2i+1)."""
    axes, pre = layer.axes, layer.pre
    pairs = pre.shape[axes.batch] // 2
    if pairs == 0:
        return layer.nan()
    both = pre.narrow(axes.batch, 0, 2 * pairs).unflatten(axes.batch, (pairs, 2))
    a, b = both.select(axes.batch + 1, 0), both.select(axes.batch + 1, 1)
    vector = axes.vector()
    # squared norms per sample (shared with the variance), of the 2i-th and 2i+1-th
    batch = axes.vector_reduced_batch()
    squares = layer.pre_squares.narrow(batch, 0, 2 * pairs).unflatten(batch, (pairs, 2))
    norms = squares.select(batch + 1, 0).mul(squares.select(batch + 1, 1)).sqrt_()
    cosine = (a * b).sum(vector).div_(norms)
    return _average_but_run(cosine, axes, vector)


def _average_but_run(t: torch.Tensor, axes: Axes, reduced: tuple[int, ...]) -> torch.Tensor:
    """One value per run: the mean of what is left of a tensor once ``reduced`` are gone."""
    remaining = [d for d in range(3 + len(axes.positions)) if d not in reduced]
    run = remaining.index(axes.run)
    others = tuple(i for i in range(len(remaining)) if i != run)
    return t.mean(others) if others else t


Statistic = Callable[[Layer], torch.Tensor]

STATISTICS: dict[str, Statistic] = {
    "pre_mean": lambda layer: layer.pre_moments[0],
    "pre_var": lambda layer: layer.pre_moments[1],
    "post_mean": lambda layer: layer.post_moments[0],
    "post_var": lambda layer: layer.post_moments[1],
    "dead_frac": dead_fraction,
    "sat_frac": saturated_fraction,
    "grad_w_norm": weight_gradient_norm,
    "grad_h_var": lambda layer: mean_var(layer.grad_h, layer.axes.but_run())[1],
    "corr": pair_correlation,
}
FRACTIONS = ("dead_frac", "sat_frac", "corr")  # NaN where they do not apply: not divergence


@dataclass
class ProbeResult:
    """Per-layer statistics of R runs."""

    stats: dict[str, np.ndarray]  # name -> (R, depth)
    finite: np.ndarray  # (R,) no NaN or inf in the statistics or the output
    input_second_moment: np.ndarray  # (R,) E[x^2] of each run's probe batch
    input_corr: np.ndarray  # (R,) mean cosine similarity of the input pairs
    hists: dict[str, np.ndarray] | None  # quantity -> counts (R, depth, bins)


class _Record(Taps):
    def __init__(self) -> None:
        self.pre: list[torch.Tensor] = []
        self.post: list[torch.Tensor | None] = []

    def layer(self, index: int, pre: torch.Tensor, post: torch.Tensor | None) -> None:
        self.pre.append(pre)
        self.post.append(post)


def probe(
    net: Stacked, x: torch.Tensor, cotangent: torch.Tensor, *, hists: bool = False
) -> ProbeResult:
    """Forward statistics of every hidden layer, and the backward pass of ``cotangent``.

    The cotangent enters at the network output (a vector-Jacobian product), so gradients
    show signal propagation rather than a loss's scale.
    """
    act, depth = net.activation, net.depth
    record = _Record()
    with torch.enable_grad():
        out = net(x, record)
        names = [net.layer_params(layer) for layer in range(1, depth + 1)]
        weights = [net.param(n) for layer in names for n in layer]
        grads = torch.autograd.grad(out, record.pre + weights, grad_outputs=cotangent)
    grad_h, grad_w = grads[:depth], iter(grads[depth:])
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in STATISTICS}
    counts: dict[str, list[torch.Tensor]] = {q: [] for q in histograms.QUANTITIES}
    for index in range(depth):
        pre = record.pre[index].detach()
        post = record.post[index]
        post = act.fn(pre) if post is None else post.detach()
        h, axes = net.view(pre)
        layer = Layer(
            h,
            net.view(post)[0],
            net.view(grad_h[index])[0],
            [next(grad_w) for _ in names[index]],
            axes,
            act,
            net.runs,
        )
        for name, statistic in STATISTICS.items():
            rows[name].append(statistic(layer))
        if hists:
            views = {"pre": layer.pre, "post": layer.post, "grad_h": layer.grad_h}
            for quantity, c in histograms.layer_counts(views, axes, net.runs, act).items():
                counts[quantity].append(c)
    stacked = torch.stack([torch.stack(rows[name], dim=1) for name in STATISTICS])
    checked = [i for i, n in enumerate(STATISTICS) if n not in FRACTIONS]
    finite = torch.isfinite(stacked[checked]).all(0).all(1) & torch.isfinite(out).flatten(1).all(1)
    flat_x = x.detach().flatten(2)  # (R, B, features)
    second_moment = flat_x.pow(2).mean((1, 2))
    pairs = flat_x.shape[1] // 2
    a, b = flat_x[:, 0 : 2 * pairs : 2], flat_x[:, 1 : 2 * pairs : 2]
    input_corr = ((a * b).sum(-1) / (a.square().sum(-1) * b.square().sum(-1)).sqrt()).mean(1)
    host = torch.cat([stacked.flatten(), finite.float(), second_moment, input_corr]).cpu().numpy()
    n, r = stacked.numel(), net.runs
    stats = host[:n].reshape(stacked.shape)
    hist_arrays = None
    if hists:
        hist_arrays = {q: torch.stack(c, dim=1).cpu().numpy() for q, c in counts.items()}
    return ProbeResult(
        {name: stats[i] for i, name in enumerate(STATISTICS)},
        host[n : n + r].astype(bool),
        host[n + r : n + 2 * r],
        host[n + 2 * r : n + 3 * r],
        hist_arrays,
    )
