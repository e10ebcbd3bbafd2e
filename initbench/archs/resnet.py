"""``resnet``: the residual stream of ``resmlp`` with 3x3 convolutions on images.

``x_0 = Conv2d(C, N, 3)(x)``, then ``depth`` blocks ``x_l = x_{l-1} + alpha (conv_l(
phi(BN(x_{l-1}))) + b_l)``, a global average pool and a Linear readout. Convolutions use
circular padding (as ``cnn`` does); BatchNorm always normalizes with the batch's own
statistics (``track_running_stats=False``: training mode, in evaluation too), so the probe
describes the batch it sees. ``norm=none`` drops it. Each block is a residual branch with
the scalars of :mod:`initbench.archs.branch`, which recipes set. All runs compute as one grouped
convolution per layer.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from initbench.archs.base import ROWS, Axes, Inputs, Stacked, Stage, Taps
from initbench.archs.branch import Branch, stacked_branch
from initbench.archs.cnn import KERNEL, PIXELS, GlobalAvgPool, ImageArch, grouped_conv
from initbench.archs.resmlp import ResidualNet, residual_theory
from initbench.core.activations import Activation


class ConvBlock(nn.Module):
    """``x + alpha * conv(phi(bn(x)))``, with the branch's scalars
    (:mod:`initbench.archs.branch`)."""

    def __init__(self, width: int, activation: Activation, norm: str, alpha: float) -> None:
        super().__init__()
        batch_norm = nn.BatchNorm2d(width, track_running_stats=False)
        self.norm = batch_norm if norm == "batch" else nn.Identity()
        self.act = activation.module()
        self.conv = nn.Conv2d(width, width, KERNEL, padding=KERNEL // 2, padding_mode="circular")
        self.alpha = alpha
        self.branch = Branch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x, lambda u: self.alpha * self.conv(self.act(self.norm(u))))


class ResNet(ImageArch):
    def build(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> nn.Module:
        norm, alpha = self.values["norm"], self.values["alpha"]
        stem = nn.Conv2d(
            inputs.sample[0], width, KERNEL, padding=KERNEL // 2, padding_mode="circular"
        )
        blocks = [ConvBlock(width, activation, norm, alpha) for _ in range(depth)]
        head = nn.Sequential(GlobalAvgPool(), nn.Linear(width, inputs.classes))
        return ResidualNet(stem, blocks, head)

    def layer_modules(self, model: nn.Module) -> list[nn.Module]:
        return list(model.blocks)

    def stack(self, runs, depth, width, activation, inputs, device="cpu") -> Stacked:
        parts = self.parts(depth, width, activation, inputs)
        return StackedResNet(
            parts, runs, depth, activation, device, self.values["norm"], self.values["alpha"]
        )

    def theory(self, activation, weights, bias_var, inputs, input_second_moment, input_corr):
        pool = 1.0 / self.positions(inputs) ** 2
        return residual_theory(
            activation, weights, bias_var, input_second_moment, input_corr, self.values, pool
        )


class StackedResNet(Stacked):
    """The stream is ``(B, R*C, H, W)``: one grouped convolution computes every run."""

    def __init__(self, parts, runs, depth, activation, device, norm: str, alpha: float):
        super().__init__(parts, runs, depth, activation, device)
        self.norm, self.alpha = norm, alpha

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1).flatten(1, 2)

    def view(self, t: torch.Tensor) -> tuple[torch.Tensor, Axes]:
        return t.view(t.shape[0], self.runs, -1, t.shape[-2] * t.shape[-1]), PIXELS

    def stages(self) -> list[Stage]:
        blocks = [Stage((i + 1,), functools.partial(self._block, i)) for i in range(self.depth)]
        return [Stage((0,), self._stem), *blocks, Stage((self.depth + 1,), self._head)]

    def _stem(self, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        out = grouped_conv(x, self.param("stem.weight"), self.param("stem.bias"), self.runs)
        if taps is not None:
            taps.weighted(0, *self.view(out))
        return out

    def _block(self, i: int, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        prefix = f"blocks.{i}"
        channels = x.shape[1] // self.runs

        def branch(u: torch.Tensor) -> torch.Tensor:
            if self.norm == "batch":
                weight = self.param(f"{prefix}.norm.weight").flatten()
                bias = self.param(f"{prefix}.norm.bias").flatten()
                u = F.batch_norm(u, None, None, weight, bias, training=True)
            w, b = self.param(f"{prefix}.conv.weight"), self.param(f"{prefix}.conv.bias")
            y = grouped_conv(self.activation.fn(u), w, b, self.runs)
            if taps is not None:
                taps.weighted(i + 1, *self.view(y))
            return self.alpha * y

        def scalars(name: str) -> torch.Tensor:  # each run's scalar on each of its channels
            value = self.param(f"{prefix}.branch.{name}")
            return value.repeat_interleave(channels).view(1, -1, 1, 1)

        out = stacked_branch(x, branch, scalars)
        if taps is not None:
            taps.layer(i + 1, out, None)
        return out

    def _head(self, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        pooled = self.view(x)[0].mean(-1).transpose(0, 1)  # (R, B, C)
        w, b = self.param("head.1.weight"), self.param("head.1.bias")
        out = torch.baddbmm(b.unsqueeze(1), pooled, w.transpose(1, 2))
        if taps is not None:
            taps.weighted(self.depth + 1, out, ROWS)
        return out

    def layer_params(self, layer: int) -> list[str]:
        return [f"blocks.{layer - 1}.conv.weight"]
