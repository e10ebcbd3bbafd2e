"""``resmlp``: a residual stream of Linear blocks.

``x_0 = Linear(d_in, N)(x)``, then ``depth`` blocks ``x_l = x_{l-1} + alpha (W_l
phi(norm(x_{l-1})) + b_l)`` and a readout ``Linear(N, d_out)`` on ``x_depth``; ``norm`` is
the identity (``none``) or a LayerNorm (``layer``). Each block is a residual branch with
the scalars of :mod:`initbench.archs.branch`, which recipes set. Layer l's statistics describe the
stream ``x_l`` (its ``post_*`` ones ``phi(x_l)``), ``grad_h_var`` is the variance of
``dL/dx_l`` and ``grad_w_norm`` W_l's gradient norm. All runs compute as batched matmuls.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from initbench.archs.base import ROWS, Arch, Inputs, Stacked, Stage, Taps
from initbench.archs.branch import Branch, stacked_branch
from initbench.core import theory
from initbench.core.activations import Activation
from initbench.core.roles import fans


class ResidualBlock(nn.Module):
    """``x + alpha * linear(phi(norm(x)))``, with the branch's scalars
    (:mod:`initbench.archs.branch`)."""

    def __init__(self, width: int, activation: Activation, norm: str, alpha: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width) if norm == "layer" else nn.Identity()
        self.act = activation.module()
        self.linear = nn.Linear(width, width)
        self.alpha = alpha
        self.branch = Branch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x, lambda u: self.alpha * self.linear(self.act(self.norm(u))))


class ResidualNet(nn.Module):
    """A stem, residual blocks, and a head (the plain network of residual archs)."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.ModuleList(blocks), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class ResMLP(Arch):
    supports_jacobian = True

    def build(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> nn.Module:
        norm, alpha = self.values["norm"], self.values["alpha"]
        blocks = [ResidualBlock(width, activation, norm, alpha) for _ in range(depth)]
        return ResidualNet(
            nn.Linear(inputs.sample[0], width), blocks, nn.Linear(width, inputs.classes)
        )

    def layer_modules(self, model: nn.Module) -> list[nn.Module]:
        return list(model.blocks)

    def stack(self, runs, depth, width, activation, inputs, device="cpu") -> Stacked:
        parts = self.parts(depth, width, activation, inputs)
        return StackedResMLP(
            parts, runs, depth, activation, device, self.values["norm"], self.values["alpha"]
        )

    def theory(self, activation, weights, bias_var, inputs, input_second_moment, input_corr):
        return residual_theory(
            activation, weights, bias_var, input_second_moment, input_corr, self.values
        )


def residual_theory(
    activation: Activation,
    weights,
    bias_var: float,
    input_second_moment: float,
    input_corr: float,
    values: dict,
    readout_factor: float = 1.0,
) -> dict[str, list[float]]:
    """The residual stream's mean-field maps from the weights' shapes and variances
    (stem, one per block, readout), or nothing where a variance is unknown."""
    if any(math.isnan(var) for _, var in weights):
        return {}
    fan = [fans(shape) for shape, _ in weights]
    sigma_w2 = [f[0] * var for f, (_, var) in zip(fan, weights, strict=True)]
    back = [f[1] * var for f, (_, var) in zip(fan, weights, strict=True)]
    return theory.residual_stream(
        activation.fn,
        sigma_w2[0],
        sigma_w2[1:-1],
        back[1:-1],
        back[-1] * readout_factor,
        input_second_moment,
        input_corr,
        bias_var,
        values["alpha"],
        values["norm"] != "none",
    )


class StackedResMLP(Stacked):
    """The stream is ``(R, B, N)``."""

    def __init__(self, parts, runs, depth, activation, device, norm: str, alpha: float):
        super().__init__(parts, runs, depth, activation, device)
        self.norm, self.alpha = norm, alpha

    def stages(self) -> list[Stage]:
        stem = functools.partial(self._linear, 0, "stem")
        blocks = [Stage((i + 1,), functools.partial(self._block, i)) for i in range(self.depth)]
        head = functools.partial(self._linear, self.depth + 1, "head")
        return [Stage((0,), stem), *blocks, Stage((self.depth + 1,), head)]

    def _linear(self, target: int, name: str, x: torch.Tensor, taps: Taps | None):
        w, b = self.param(f"{name}.weight"), self.param(f"{name}.bias")
        out = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
        if taps is not None:
            taps.weighted(target, out, ROWS)
        return out

    def _block(self, i: int, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        prefix = f"blocks.{i}"

        def branch(u: torch.Tensor) -> torch.Tensor:
            if self.norm == "layer":
                u = F.layer_norm(u, u.shape[-1:])
                u = u * self.param(f"{prefix}.norm.weight").unsqueeze(1)
                u = u + self.param(f"{prefix}.norm.bias").unsqueeze(1)
            w, b = self.param(f"{prefix}.linear.weight"), self.param(f"{prefix}.linear.bias")
            y = torch.baddbmm(b.unsqueeze(1), self.activation.fn(u), w.transpose(1, 2))
            if taps is not None:
                taps.weighted(i + 1, y, ROWS)
            return self.alpha * y

        out = stacked_branch(
            x, branch, lambda name: self.param(f"{prefix}.branch.{name}").view(-1, 1, 1)
        )
        if taps is not None:
            taps.layer(i + 1, out, None)
        return out

    def layer_params(self, layer: int) -> list[str]:
        return [f"blocks.{layer - 1}.linear.weight"]
