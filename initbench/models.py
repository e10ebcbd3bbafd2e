"""Architectures: plain ``nn.Module`` builders and their stacked (many runs at once) twins.

``mlp``: ``Linear(d_in, N)`` + act, then ``depth - 1`` x (``Linear(N, N)`` + act), then a
readout ``Linear(N, d_out)``. ``cnn``: the same with ``Conv2d(., N, 3, padding=1)`` on small
images, global average pooling, then the readout. depth = number of hidden activations.

:class:`StackedNet` holds R runs of one shape as stacked weights and computes them together
(batched matmul for mlp, a grouped convolution for cnn): run r of a StackedNet computes
exactly what :func:`build_model` with run r's weights computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from initbench.activations import Activation, get_activation
from initbench.errors import UsageError

ARCHS = ("mlp", "cnn")
KERNEL = 3
WEIGHTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """The Linear and Conv layers of ``model``, in ``model.modules()`` order."""
    return [m for m in model.modules() if isinstance(m, WEIGHTED_LAYERS)]


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise UsageError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    return arch


def layer_shapes(
    arch: str, depth: int, width: int, in_features: int, out_features: int
) -> list[tuple[int, ...]]:
    """Weight shapes in model order: ``depth`` hidden layers, then the readout."""
    check_arch(arch)
    kernel = (KERNEL, KERNEL) if arch == "cnn" else ()
    hidden = [(width, in_features if i == 0 else width, *kernel) for i in range(depth)]
    return [*hidden, (out_features, width)]


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


def build_model(
    arch: str,
    depth: int,
    width: int,
    activation: str | Activation,
    in_features: int,
    out_features: int,
) -> nn.Sequential:
    """One network as a plain ``nn.Sequential`` (what a user would write by hand)."""
    act = get_activation(activation)
    layers: list[nn.Module] = []
    for shape in layer_shapes(arch, depth, width, in_features, out_features)[:-1]:
        if arch == "mlp":
            layers.append(nn.Linear(shape[1], shape[0]))
        else:
            layers.append(nn.Conv2d(shape[1], shape[0], KERNEL, padding=KERNEL // 2))
        layers.append(act.module())
    if arch == "cnn":
        layers.append(_GlobalAvgPool())
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class StackedNet(nn.Module):
    """R networks of one architecture and shape, computed together.

    Parameters are ``weights[l]`` of shape ``(R, *layer_shape)`` and ``biases[l]`` of shape
    ``(R, out)``. Inputs are ``(R, B, d_in)`` for mlp and ``(R, B, C, H, W)`` for cnn;
    outputs ``(R, B, d_out)``.
    """

    def __init__(
        self,
        runs: int,
        arch: str,
        depth: int,
        width: int,
        activation: str | Activation,
        in_features: int,
        out_features: int,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.arch, self.depth, self.runs = check_arch(arch), depth, runs
        self.activation = get_activation(activation)
        shapes = layer_shapes(arch, depth, width, in_features, out_features)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(runs, *s, device=device)) for s in shapes
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(runs, s[0], device=device)) for s in shapes
        )

    def layer(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation of weighted layer ``index`` given its input (stacked layout)."""
        w, b = self.weights[index], self.biases[index]
        if w.dim() == 3:  # (R, out, in): x is (R, B, in)
            return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
        # grouped conv: x is (B, R*C, H, W), weight (R*out, C, k, k)
        return F.conv2d(x, w.flatten(0, 1), b.flatten(), padding=KERNEL // 2, groups=self.runs)

    def to_stacked_input(self, x: torch.Tensor) -> torch.Tensor:
        """``(R, B, ...)`` inputs to the layout of the first layer."""
        if self.arch == "cnn":
            return x.transpose(0, 1).flatten(1, 2)  # (B, R*C, H, W)
        return x

    def per_run(self, h: torch.Tensor) -> torch.Tensor:
        """A hidden tensor in per-run layout: ``(R, B, units, *spatial)``."""
        if self.arch == "cnn":
            batch, _, *spatial = h.shape
            return h.view(batch, self.runs, -1, *spatial).transpose(0, 1)
        return h

    def readout_input(self, a: torch.Tensor) -> torch.Tensor:
        if self.arch == "cnn":
            return self.per_run(a).mean(dim=(-2, -1))  # global average pool: (R, B, N)
        return a

    def forward(
        self,
        x: torch.Tensor,
        pre: list[torch.Tensor] | None = None,
        post: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Network output; hidden pre- and post-activations are appended to ``pre``, ``post``."""
        a = self.to_stacked_input(x)
        for index in range(self.depth):
            h = self.layer(index, a)
            a = self.activation.fn(h)
            if pre is not None:
                pre.append(h)
            if post is not None:
                post.append(a)
        return self.layer(self.depth, self.readout_input(a))

    def run_dims(self, h: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
        """A view of a hidden tensor for per-run reductions, without copying.

        Returns ``(view, run_dims, batch_dims)``: reducing ``view`` over ``run_dims`` gives
        one value per run; over ``batch_dims`` one value per run and unit (channel).
        """
        if self.arch == "cnn":  # (B, R*C, H, W) -> (B, R, C, H*W)
            view = h.reshape(h.shape[0], self.runs, -1, h.shape[-2] * h.shape[-1])
            return view, (0, 2, 3), (0, 3)
        return h, (1, 2), (1,)  # (R, B, N)

    @torch.no_grad()
    def load_runs(self, models: Sequence[nn.Module]) -> StackedNet:
        """Copies the weights of ``models`` (built by :func:`build_model`) into the stack."""
        for r, model in enumerate(models):
            for index, layer in enumerate(weighted_layers(model)):
                self.weights[index][r].copy_(layer.weight)
                self.biases[index][r].copy_(layer.bias)
        return self
