"""The probe: one forward and one backward pass through R stacked runs, every per-layer
statistic of :data:`~initbench.measure.statistics.STATISTICS` taken on the way, and the
histograms of the layers :func:`~initbench.measure.histograms.layers` names when asked
for. Statistics stay on the device until one transfer at the end."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from initbench.archs.base import Stacked, Taps
from initbench.measure import histograms
from initbench.measure.statistics import STATISTICS, Layer


@dataclass
class ProbeResult:
    """Per-layer statistics of R runs."""

    stats: dict[str, np.ndarray]  # name -> (R, depth)
    finite: np.ndarray  # (R,) no NaN or inf in the statistics (but the weight-gradient
    # norm of a layer without weights) or the output
    input_second_moment: np.ndarray  # (R,) E[x^2] of each run's probe batch
    input_corr: np.ndarray  # (R,) mean cosine similarity of the input pairs
    hists: dict[str, np.ndarray] | None  # quantity -> counts (R, layers, bins)
    hist_layers: list[int]  # the hidden layers (from 1) of the histograms' second axis


class _Record(Taps):
    def __init__(self) -> None:
        self.pre: list[torch.Tensor] = []
        self.post: list[torch.Tensor | None] = []
        self.at: list[torch.Tensor] = []  # where each layer's gradient is taken

    def layer(
        self,
        index: int,
        pre: torch.Tensor,
        post: torch.Tensor | None,
        at: torch.Tensor | None = None,
    ) -> None:
        self.pre.append(pre)
        self.post.append(post)
        self.at.append(pre if at is None else at)


def _input_moments(
    vectors: torch.Tensor | None, runs: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each run's ``E[x^2]`` and the mean cosine similarity of its input pairs (samples 2i
    and 2i+1); NaN for inputs that are not vectors."""
    if vectors is None:
        nan = torch.full((runs,), torch.nan, device=like.device)
        return nan, nan
    second_moment = vectors.pow(2).mean((1, 2))
    pairs = vectors.shape[1] // 2
    a, b = vectors[:, 0 : 2 * pairs : 2], vectors[:, 1 : 2 * pairs : 2]
    # each norm before the product: the product of two squared norms overflows float32
    norms = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
    input_corr = (torch.linalg.vecdot(a, b) / norms).mean(1)
    return second_moment, input_corr


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
        # a layer or weight the output does not depend on gets a zero gradient
        grads = torch.autograd.grad(
            out, record.at + weights, cotangent, allow_unused=True, materialize_grads=True
        )
    grad_h, grad_w = grads[:depth], iter(grads[depth:])
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in STATISTICS}
    samples: dict[str, list[torch.Tensor]] = {q: [] for q in histograms.QUANTITIES}
    hist_layers = histograms.layers(depth) if hists else []
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
            computed = statistic.computed_at(index + 1, depth)
            rows[name].append(statistic.compute(layer) if computed else layer.nan())
        if index + 1 in hist_layers:
            views = {"pre": layer.pre, "post": layer.post, "grad_h": layer.grad_h}
            for quantity, view in views.items():
                samples[quantity].append(histograms.sample(view, axes, net.runs))
    stacked = torch.stack([torch.stack(rows[name], dim=1) for name in STATISTICS])
    checked = [i for i, s in enumerate(STATISTICS.values()) if s.divergence]
    finite = torch.isfinite(stacked)  # (statistics, R, depth)
    # a layer without weights (a model's parameter-free module) has no weight-gradient norm
    weightless = torch.tensor([not layer for layer in names], device=finite.device)
    finite[list(STATISTICS).index("grad_w_norm")] |= weightless
    finite = finite[checked].all(0).all(1) & torch.isfinite(out).flatten(1).all(1)
    second_moment, input_corr = _input_moments(net.input_vectors(x.detach()), net.runs, out)
    host = torch.cat([stacked.flatten(), finite.float(), second_moment, input_corr]).cpu().numpy()
    n, r = stacked.numel(), net.runs
    stats = host[:n].reshape(stacked.shape)
    hist_arrays = None
    if hists:
        counted = histograms.layer_counts(samples, act)
        hist_arrays = {q: c.cpu().numpy() for q, c in counted.items()}
    return ProbeResult(
        {name: stats[i] for i, name in enumerate(STATISTICS)},
        host[n : n + r].astype(bool),
        host[n + r : n + 2 * r],
        host[n + 2 * r : n + 3 * r],
        hist_arrays,
        hist_layers,
    )
