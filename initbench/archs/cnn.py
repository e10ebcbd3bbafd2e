"""``cnn``: the mlp with ``Conv2d(., N, 3)`` layers (circular padding) on images, a global
average pool, then a Linear readout. All runs of one shape compute as one grouped
convolution per layer.

Circular padding keeps every position's fan-in at 9 N, so the mean-field map holds at
every pixel (with zero padding, border pixels lose part of their input at every layer);
it is the setting of Xiao et al. 2018.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from initbench.archs.base import ROWS, Arch, Axes, Inputs, Stacked, Stage, Taps
from initbench.archs.mlp import feedforward_theory, repeated_layer_scales
from initbench.core.activations import Activation
from initbench.core.errors import UsageError

KERNEL = 3
PIXELS = Axes(run=1, batch=0, positions=(3,), units=2)  # (B, R, C, H*W)


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


def image_sample(x: torch.Tensor) -> torch.Tensor:
    """Dataset samples as images, refusing 1-D data."""
    if x.dim() != 4:
        raise UsageError("a 1-D dataset has no images: use an arch for vectors (mlp, resmlp)")
    return x


class ImageArch(Arch):
    """An arch on images: ``(channels, side, side)`` samples, a position per pixel."""

    def synthetic_sample(self, width, image_size, tokens):
        return (width, image_size, image_size)

    def data_sample(self, x):
        return image_sample(x)

    def positions(self, inputs: Inputs) -> int:
        return inputs.sample[1] * inputs.sample[2]


class CNN(ImageArch):
    supports_jacobian = True

    def build(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> nn.Module:
        layers: list[nn.Module] = []
        for i in range(depth):
            conv = nn.Conv2d(
                inputs.sample[0] if i == 0 else width,
                width,
                KERNEL,
                padding=KERNEL // 2,
                padding_mode="circular",
            )
            layers += [conv, activation.module()]
        layers += [GlobalAvgPool(), nn.Linear(width, inputs.classes)]
        return nn.Sequential(*layers)

    def layer_modules(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in model if isinstance(m, nn.Conv2d)]

    def stack(self, runs, depth, width, activation, inputs, device="cpu") -> Stacked:
        parts = self.parts(depth, width, activation, inputs)
        return StackedCNN(parts, runs, depth, activation, device)

    def theory(self, activation, weights, bias_var, inputs, input_second_moment, input_corr):
        pool = 1.0 / self.positions(inputs) ** 2  # d pooled / d a_p = 1 / P
        return feedforward_theory(
            activation, weights, bias_var, input_second_moment, input_corr, pool
        )

    def depth_scales(self, activation, weights, bias_var, q_start):
        return repeated_layer_scales(activation, weights, bias_var, q_start)


def grouped_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, runs: int) -> torch.Tensor:
    """Each run's 3x3 convolution with circular padding: x ``(B, R*C, H, W)``, w ``(R, out,
    C, k, k)``, b ``(R, out)``."""
    pad = KERNEL // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="circular")
    return F.conv2d(x, w.flatten(0, 1), b.flatten(), groups=runs)


class StackedCNN(Stacked):
    """Hidden tensors are ``(B, R*C, H, W)``: one grouped convolution computes every run."""

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1).flatten(1, 2)

    def view(self, t: torch.Tensor) -> tuple[torch.Tensor, Axes]:
        return t.view(t.shape[0], self.runs, -1, t.shape[-2] * t.shape[-1]), PIXELS

    def stages(self) -> list[Stage]:
        stages = [Stage((i,), functools.partial(self._hidden, i, 2 * i)) for i in range(self.depth)]
        readout = functools.partial(self._readout, 2 * self.depth + 1)
        return [*stages, Stage((self.depth,), readout)]

    def _layer(self, index: int) -> tuple[nn.Parameter, nn.Parameter]:
        """Layer ``index``'s weight and bias, looked up when the stage runs (so that
        ``torch.func.functional_call`` can substitute them)."""
        return self.param(f"{index}.weight"), self.param(f"{index}.bias")

    def _hidden(self, i: int, layer: int, a: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        w, b = self._layer(layer)
        h = grouped_conv(a, w, b, self.runs)
        post = self.activation.fn(h)
        if taps is not None:
            taps.weighted(i, *self.view(h))
            taps.layer(i + 1, h, post)
        return post

    def _readout(self, layer: int, a: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        w, b = self._layer(layer)
        pooled = self.view(a)[0].mean(-1).transpose(0, 1)  # (R, B, C)
        out = torch.baddbmm(b.unsqueeze(1), pooled, w.transpose(1, 2))
        if taps is not None:
            taps.weighted(self.depth, out, ROWS)
        return out

    def layer_params(self, layer: int) -> list[str]:
        return [f"{2 * (layer - 1)}.weight"]

    def features(self, state: torch.Tensor) -> torch.Tensor:
        return state.view(state.shape[0], self.runs, -1).transpose(0, 1)
