"""``mlp``: ``Linear(d_in, N)`` + act, ``depth - 1`` x (``Linear(N, N)`` + act), readout
``Linear(N, d_out)``. All runs of one shape compute as one batched matmul per layer."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from initbench.archs.base import ROWS, THEORY, Arch, Inputs, Stacked, Stage, Taps
from initbench.core import theory
from initbench.core.activations import Activation
from initbench.core.roles import fans


class MLP(Arch):
    supports_jacobian = True

    def build(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> nn.Module:
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(inputs.sample[0] if i == 0 else width, width), activation.module()]
        layers.append(nn.Linear(width, inputs.classes))
        return nn.Sequential(*layers)

    def layer_modules(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in model if isinstance(m, nn.Linear)][:-1]

    def stack(self, runs, depth, width, activation, inputs, device="cpu") -> Stacked:
        parts = self.parts(depth, width, activation, inputs)
        return StackedMLP(parts, runs, depth, activation, device)

    def theory(self, activation, weights, bias_var, inputs, input_second_moment, input_corr):
        return feedforward_theory(activation, weights, bias_var, input_second_moment, input_corr)

    def depth_scales(self, activation, weights, bias_var, q_start):
        return repeated_layer_scales(activation, weights, bias_var, q_start)


class StackedMLP(Stacked):
    """Hidden tensors are ``(R, B, N)``."""

    def stages(self) -> list[Stage]:
        stages = [Stage((i,), functools.partial(self._hidden, i, 2 * i)) for i in range(self.depth)]
        readout = functools.partial(self._readout, 2 * self.depth)
        return [*stages, Stage((self.depth,), readout)]

    def _layer(self, index: int) -> tuple[nn.Parameter, nn.Parameter]:
        """Layer ``index``'s weight and bias, looked up when the stage runs (so that
        ``torch.func.functional_call`` can substitute them)."""
        return self.param(f"{index}.weight"), self.param(f"{index}.bias")

    def _hidden(self, i: int, layer: int, a: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        w, b = self._layer(layer)
        h = torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2))
        post = self.activation.fn(h)
        if taps is not None:
            taps.weighted(i, h, ROWS)
            taps.layer(i + 1, h, post)
        return post

    def _readout(self, layer: int, a: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        w, b = self._layer(layer)
        out = torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2))
        if taps is not None:
            taps.weighted(self.depth, out, ROWS)
        return out

    def layer_params(self, layer: int) -> list[str]:
        return [f"{2 * (layer - 1)}.weight"]


def feedforward_theory(
    activation: Activation,
    weights: Sequence[tuple[tuple[int, ...], float]],
    bias_var: float,
    input_second_moment: float,
    input_corr: float,
    readout_factor: float = 1.0,
) -> dict[str, list[float]]:
    """The mean-field forward, backward and correlation maps of a plain stack of layers.

    ``readout_factor`` scales the backward variance entering the last hidden layer (a
    global average pool over P positions divides it by P^2).
    """
    depth = len(weights) - 1
    if any(math.isnan(var) for _, var in weights):
        return dict.fromkeys(THEORY, [math.nan] * depth)
    sigma_w2 = [fans(shape)[0] * var for shape, var in weights]
    back = [fans(shape)[1] * var for shape, var in weights[1:]]
    back[-1] *= readout_factor
    phi = activation.fn
    q = theory.pre_var(phi, sigma_w2[:-1], input_second_moment, bias_var)
    corr = theory.pair_corr(phi, sigma_w2[:-1], q, input_corr, input_second_moment, bias_var)
    return {
        "theory_pre_var": q,
        "theory_grad_h_var": theory.grad_h_var(phi, q, back, 1.0),
        "theory_corr": corr,
    }


def repeated_layer_scales(
    activation: Activation,
    weights: Sequence[tuple[tuple[int, ...], float]],
    bias_var: float,
    q_start: float,
) -> dict[str, float]:
    """Depth scales of the last hidden layer's map, repeated (every hidden layer after the
    first has its shape)."""
    if len(weights) < 2 or math.isnan(weights[-2][1]):
        return dict.fromkeys(("q_star", "c_star", "chi1", "xi_q", "xi_c"), math.nan)
    shape, var = weights[-2]
    return theory.depth_scales(activation.fn, fans(shape)[0] * var, bias_var, q_start)
