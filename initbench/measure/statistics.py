"""Every per-layer statistic of a sweep, one entry each in :data:`STATISTICS`: how it is
computed from a layer's tensors (as mup's coord check keeps its ``FDICT``), its column in
``layers.parquet``, what it means, the mean-field theory column beside it, and the figure
and verdict sentence the report draws for it. Adding a statistic is one entry here (and
its line in ``docs/results.md``); the store, the probe, the figures and the pages read it.

torch is imported when a statistic is computed, so the report reads this table without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd

from initbench.core import fmt
from initbench.core.activations import Activation, get_activation

if TYPE_CHECKING:
    import torch

    from initbench.archs.base import Axes


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
        import torch

        return torch.linalg.vector_norm(self.pre, dim=self.axes.vector()).square_()

    @cached_property
    def pre_square_mean(self) -> torch.Tensor:
        """Each run's ``E[h^2]``."""
        return self.pre_squares.sum(self.axes.vector_reduced_batch()) / self.per_run(self.pre)

    @cached_property
    def pre_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.pre.mean(self.axes.but_run())
        return _guarded(self.pre, self.axes.but_run(), mean, self.pre_square_mean)

    @cached_property
    def post_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        return mean_var(self.post, self.axes.but_run())

    def per_run(self, t: torch.Tensor) -> int:
        return t.numel() // self.runs

    def nan(self) -> torch.Tensor:
        import torch

        return torch.full((self.runs,), math.nan, device=self.pre.device)


CANCELLATION = 1e-2  # E[x^2] - mean^2 below this share of E[x^2]: recompute in two passes


def mean_var(t: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance over ``dims``: ``E[x^2] - mean^2`` from two reductions
    that allocate nothing (several times faster on CPUs than centring first, or than
    ``torch.var_mean``'s Welford), recomputed from centred values where the subtraction
    would lose float32's precision."""
    import torch

    mean = t.mean(dims)
    square = torch.linalg.vector_norm(t, dim=dims).square_().div_(t.numel() // mean.numel())
    return _guarded(t, dims, mean, square)


def _guarded(
    t: torch.Tensor, dims: tuple[int, ...], mean: torch.Tensor, square: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, E[x^2] - mean^2)``, or the two-pass variance when the difference cancels
    (always on GPUs, where the check would wait for the device)."""
    import torch

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
    """The Frobenius norm of the layer's weight gradients (all of its weights together;
    NaN for a layer without weights: a model's parameter-free module).

    An mlp's gradients are transposed views: they are reduced in place, not copied."""
    import torch

    if not layer.grad_w:
        return layer.nan()
    squares = [
        torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))).square() for g in layer.grad_w
    ]
    return torch.stack(squares).sum(0).sqrt()


def pair_correlation(layer: Layer) -> torch.Tensor:
    """The mean cosine similarity of the pre-activations of input pairs (2i, 2i+1)."""
    import torch

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
    # sqrt of each before the product: the product of two squared norms overflows float32
    norms = squares.select(batch + 1, 0).sqrt().mul_(squares.select(batch + 1, 1).sqrt())
    # one vector axis (mlp, transformer): a fused dot, twice as fast as multiply-then-sum
    dots = torch.linalg.vecdot(a, b, dim=vector[0]) if len(vector) == 1 else (a * b).sum(vector)
    cosine = dots.div_(norms)
    return _average_but_run(cosine, axes, vector)


GRAM_RANGE = (1e-30, 1e28)  # E[h^2] within which a Gram matrix of h neither overflows
# nor underflows float32 unscaled (its products stay normal numbers)


def effective_rank(layer: Layer) -> torch.Tensor:
    """The participation ratio ``(sum s^2)^2 / sum s^4`` of the singular values ``s`` of the
    batch's centred pre-activations: how many directions carry the batch's variance, from
    1 (the units compute one thing, as under constant weights) to ``min(batch - 1,
    features)`` (every direction the same). From the smaller Gram matrix, ``tr(G)^2 /
    ||G||_F^2``.

    The centred Gram is the uncentred one less its mean's outer product, which copies
    nothing; where that cancels (the centred trace under 1% of the uncentred one), where
    ``E[h^2]`` lies outside :data:`GRAM_RANGE`, and on GPUs (where the check would wait for
    the device), it is formed from centred values scaled to a largest value of 1.
    """
    import torch

    axes = layer.axes
    x = layer.pre.movedim((axes.run, axes.batch), (0, 1)).flatten(2)
    lo, hi = GRAM_RANGE
    square = layer.pre_square_mean
    if x.device.type == "cpu" and bool(((square > lo) & (square < hi)).all()):
        gram, trace = _centred_gram(x)
        if not bool((gram.diagonal(dim1=1, dim2=2).sum(1) <= CANCELLATION * trace).any()):
            return _participation(gram)
    x = x - x.mean(1, keepdim=True)
    x = x / x.abs().amax((1, 2), keepdim=True).clamp_min_(torch.finfo(x.dtype).tiny)
    return _participation(x @ x.transpose(1, 2) if x.shape[1] <= x.shape[2] else x.mT @ x)


def _centred_gram(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The smaller Gram matrix of ``x`` ``(R, batch, features)`` centred over the batch,
    from the uncentred one in place (no copy of the matrix); and the uncentred trace."""
    batch, features = x.shape[1], x.shape[2]
    if batch <= features:  # (I - 11'/B) X X' (I - 11'/B)
        gram = x @ x.mT
        trace = gram.diagonal(dim1=1, dim2=2).sum(1)
        rows = gram.mean(2)
        gram.sub_(rows.unsqueeze(2)).sub_(rows.unsqueeze(1)).add_(rows.mean(1).view(-1, 1, 1))
        return gram, trace
    gram = x.mT @ x  # X'X - B m m'
    trace = gram.diagonal(dim1=1, dim2=2).sum(1)
    mean = x.mean(1)
    return gram.baddbmm_(mean.unsqueeze(2), mean.unsqueeze(1), alpha=-batch), trace


def _participation(gram: torch.Tensor) -> torch.Tensor:
    """``tr(G)^2 / ||G||_F^2`` of each run's Gram matrix, as ``1 / ||G / tr(G)||_F^2``: no
    square overflows or underflows. Overwrites ``gram``."""
    trace = gram.diagonal(dim1=1, dim2=2).sum(1)
    return 1 / gram.div_(trace.view(-1, 1, 1)).square_().sum((1, 2))


def _average_but_run(t: torch.Tensor, axes: Axes, reduced: tuple[int, ...]) -> torch.Tensor:
    """One value per run: the mean of what is left of a tensor once ``reduced`` are gone."""
    remaining = [d for d in range(3 + len(axes.positions)) if d not in reduced]
    run = remaining.index(axes.run)
    others = tuple(i for i in range(len(remaining)) if i != run)
    return t.mean(others) if others else t


# ---- what the report draws ------------------------------------------------------------------


@dataclass(frozen=True)
class LayerFigure:
    """How the report draws a per-layer statistic: a figure per (arch, width, bias
    variance), a panel per depth and activation, a line per group of schemes.

    Statistics that share a figure (dead and saturated units) are drawn in it, each for
    the activations it applies to.
    """

    name: str  # the figure's file stem and the page section's key
    section: str  # the page section's title
    place: int  # its position among the per-layer figures of the page
    title: str
    ylabel: str
    caption: str
    relative: str | None = None  # "first" or "last": log2 of the value over that layer's
    floor: tuple[float, float] = (-3.0, 3.0)  # the y range shown at least
    verdict: str | None = None  # the classification column a panel's sentence reads
    # else: a panel's sentence, of its table, depth and the verdicts' rule (report.rule.Rule)
    describe: Callable[[pd.DataFrame, int, Any], str] | None = None


@dataclass(frozen=True)
class Statistic:
    """One per-layer statistic: one value per run and hidden layer."""

    column: str  # in layers.parquet
    compute: Callable[[Layer], torch.Tensor]  # (R,) values of one layer of R runs
    meaning: str
    theory: str | None = None  # the mean-field prediction's column beside it
    applies: Callable[[Activation], bool] = lambda act: True  # NaN by design elsewhere
    divergence: bool = True  # a non-finite value means the run diverged
    figure: LayerFigure | None = None
    # the hidden layers (from 1) of a depth-D network it is computed at, NaN at the others;
    # None: every layer
    at: Callable[[int], frozenset[int]] | None = None

    def computed_at(self, layer: int, depth: int) -> bool:
        """Whether the statistic is computed at hidden layer ``layer`` (from 1)."""
        return self.at is None or layer in self.at(depth)


def doubling_layers(depth: int) -> frozenset[int]:
    """Hidden layers 1, 2, 4, 8, ... and the last: a statistic that costs as much as a
    layer's forward pass (a Gram matrix) at a logarithmic number of depths."""
    return frozenset({*(2**k for k in range(depth.bit_length())), depth})


def _unit_sentence(panel: pd.DataFrame, depth: int, rule: Any) -> str:
    """Which schemes have more than 10% of units dead or saturated at the last layer."""
    last = panel[(panel["kind"] == "measured") & (panel["layer"] == depth)]
    what = "dead" if panel["statistic"].iloc[0] == "dead_frac" else "saturated"
    high = last.sort_values("value", ascending=False)
    high = high[high["value"] > 0.1]
    if high.empty:
        return f"no scheme has more than 10% of units {what} at the last layer"
    listed = ", ".join(f"{r.scheme_id} {fmt.percent(r.value)}" for r in high.itertuples())
    return f"{what} at the last layer: {listed}"


def _correlation_sentence(panel: pd.DataFrame, depth: int, rule: Any) -> str:
    """How far the measured correlations lie from the c-map, and where pairs collapse."""
    measured = panel[panel["kind"] == "measured"].set_index(["scheme_id", "layer"])["value"]
    theory = panel[panel["kind"] == "theory"].set_index(["scheme_id", "layer"])["value"]
    both = pd.concat([measured, theory], axis=1, keys=["m", "t"]).dropna()
    text = []
    if len(both):
        text.append(
            f"measured within {fmt.number(float((both['m'] - both['t']).abs().max()))} of the c-map"
        )
    collapsed = measured[measured > 0.99].reset_index().groupby("scheme_id")["layer"].min()
    if len(collapsed):
        text.append(
            "pairs indistinguishable (c > 0.99) from layer "
            + ", ".join(f"{layer} ({scheme})" for scheme, layer in collapsed.items())
        )
    return "; ".join(text) or "no correlation measured"


def _rank_sentence(panel: pd.DataFrame, depth: int, rule: Any) -> str:
    """Which schemes' last layers keep fewer directions than the rule's rank collapse
    (``rule.rank``), the threshold the verdicts use."""
    last = panel[(panel["kind"] == "measured") & (panel["layer"] == depth)]
    low = last[last["value"] < rule.rank].sort_values("value")
    if low.empty:
        return f"every scheme keeps {rule.rank:g} or more directions at the last layer"
    listed = ", ".join(f"{r.scheme_id} {fmt.number(r.value)}" for r in low.itertuples())
    return f"fewer than {rule.rank:g} directions at the last layer (rank collapse): {listed}"


SIGNAL = LayerFigure(
    "signal",
    "Signal",
    0,
    "Signal: pre-activation variance per layer, relative to layer 1",
    "log2(variance / layer 1's)",
    "0 keeps the signal; -1 halves the variance. For residual and transformer archs the "
    "variance is the residual stream's.",
    relative="first",
    verdict="signal",
)
GRADIENTS = LayerFigure(
    "gradients",
    "Gradients",
    1,
    "Gradients: variance of dL/dh per layer, relative to the last hidden layer",
    "log2(gradient variance / last layer's)",
    "The backward pass runs right to left: a line falling towards layer 1 means gradients "
    "vanish before they reach the first layers.",
    relative="last",
    verdict="gradients",
)
UNITS = LayerFigure(
    "units",
    "Dead and saturated units",
    2,
    "Units: dead (ReLU family: never positive) or saturated (tanh, sigmoid) per layer",
    "fraction of units",
    "Dead: units whose pre-activation is <= 0 for every sample. Saturated: outputs within "
    "1% of the output range of a bound.",
    floor=(0.0, 1.0),
    describe=_unit_sentence,
)
CORRELATION = LayerFigure(
    "correlation",
    "Correlations",
    3,
    "Correlation of input pairs' pre-activations per layer (the c-map)",
    "correlation",
    "Mean cosine similarity of the pre-activations of input pairs; dashed: the mean-field "
    "c-map (Poole et al. 2016). Reaching 1 means the net no longer tells its inputs apart.",
    floor=(0.0, 1.0),
    describe=_correlation_sentence,
)

RANK = LayerFigure(
    "rank",
    "Effective rank",
    4,
    "Effective rank of each layer's batch representation (participation ratio)",
    "effective directions",
    "The participation ratio of the singular values of the batch's centred pre-activations: "
    "how many directions carry its variance. 1 when every unit computes the same thing "
    "(constant weights). Measured at layers 1, 2, 4, 8, ... and the last.",
    floor=(1.0, 4.0),
    describe=_rank_sentence,
)


def _variance(quantity: str) -> Callable[[Layer], torch.Tensor]:
    return lambda layer: mean_var(getattr(layer, quantity), layer.axes.but_run())[1]


STATISTICS: dict[str, Statistic] = {
    s.column: s
    for s in (
        Statistic("pre_mean", lambda layer: layer.pre_moments[0], "mean of h = W x + b"),
        Statistic(
            "pre_var",
            lambda layer: layer.pre_moments[1],
            "variance of h (of the residual stream, for residual archs)",
            theory="theory_pre_var",
            figure=SIGNAL,
        ),
        Statistic("post_mean", lambda layer: layer.post_moments[0], "mean of phi(h)"),
        Statistic("post_var", lambda layer: layer.post_moments[1], "variance of phi(h)"),
        Statistic(
            "dead_frac",
            dead_fraction,
            "ReLU family: fraction of units never positive",
            applies=lambda act: act.relu_family,
            divergence=False,
            figure=UNITS,
        ),
        Statistic(
            "sat_frac",
            saturated_fraction,
            "tanh, sigmoid: fraction of outputs within 1% of a bound",
            applies=lambda act: bool(act.bounds),
            divergence=False,
            figure=UNITS,
        ),
        Statistic(
            "grad_w_norm", weight_gradient_norm, "Frobenius norm of the layer's weight gradients"
        ),
        Statistic(
            "grad_h_var",
            _variance("grad_h"),
            "variance of dL/dh",
            theory="theory_grad_h_var",
            figure=GRADIENTS,
        ),
        Statistic(
            "corr",
            pair_correlation,
            "mean cosine similarity of the pre-activations of input pairs",
            theory="theory_corr",
            divergence=False,
            figure=CORRELATION,
        ),
        Statistic(
            "eff_rank",
            effective_rank,
            "participation ratio of the batch's centred pre-activations (effective directions), "
            "at hidden layers 1, 2, 4, 8, ... and the last",
            divergence=False,
            figure=RANK,
            at=doubling_layers,
        ),
    )
}
THEORY_COLUMNS = [s.theory for s in STATISTICS.values() if s.theory]


def layer_figures() -> list[LayerFigure]:
    """The per-layer figures, in page order."""
    found = {s.figure.name: s.figure for s in STATISTICS.values() if s.figure}
    return sorted(found.values(), key=lambda figure: figure.place)


def drawn(figure: LayerFigure, activation: str) -> Statistic | None:
    """The statistic ``figure`` draws for ``activation`` (None: none applies)."""
    act = get_activation(activation)
    for statistic in STATISTICS.values():
        if statistic.figure == figure and statistic.applies(act):
            return statistic
    return None
