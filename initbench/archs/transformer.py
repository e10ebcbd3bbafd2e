"""``transformer``: pre-LN encoder blocks on token sequences.

``x_0 = Linear(d_token, N)(tokens) + positions`` (fixed sinusoidal encodings, no
parameters), then ``depth`` blocks ``x = x + attn(LN(x))``, ``x = x + mlp(LN(x))`` (torch's
``nn.TransformerEncoderLayer`` with ``norm_first=True``, no dropout; the mlp is
``N -> 4N -> N`` with the cell's activation; heads of ``head_dim`` units; each branch with
the scalars of :mod:`initbench.archs.branch`), then the mean over tokens and a Linear
readout. Layer l's statistics describe the stream after block l;
``grad_w_norm`` is the norm of all of the block's weights' gradients together.

Datasets become token sequences row by row: an image ``(C, H, W)`` is H tokens of C x W
values (digits: 8 tokens of 8 pixels), a 1-D signal ``(C, L)`` is L tokens of C values
(MNIST-1D: 40 tokens of 1 value). The standard-normal probe has ``tokens`` tokens of the
layer's width. All runs compute together: batched matmuls, and one attention call with
the runs folded into the batch.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from initbench.archs.base import ROWS, Arch, Axes, Inputs, Stacked, Stage, Taps, stacked_linear
from initbench.archs.branch import Branch, stacked_branch
from initbench.core.activations import Activation
from initbench.core.errors import UsageError

TOKENS = Axes(run=0, batch=1, positions=(2,), units=3)  # (R, B, T, N)
MLP_RATIO = 4


def positions(tokens: int, width: int) -> torch.Tensor:
    """Sinusoidal position encodings ``(tokens, width)`` (Vaswani et al. 2017)."""
    position = torch.arange(tokens, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(1e4) / width))
    table = torch.zeros(tokens, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : width // 2]
    return table


class EncoderLayer(nn.TransformerEncoderLayer):
    """torch's pre-LN encoder layer, each of its two residual branches with the scalars of
    :mod:`initbench.archs.branch` (``x + sa(norm1(x))``, then ``x + ff(norm2(x))``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attn_branch, self.mlp_branch = Branch(), Branch()

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = self.attn_branch(src, lambda u: self._sa_block(self.norm1(u), src_mask, None))
        return self.mlp_branch(x, lambda u: self._ff_block(self.norm2(u)))


class TransformerNet(nn.Module):
    """Token embedding plus positions, encoder blocks, mean over tokens, readout."""

    def __init__(
        self, d_token: int, tokens: int, width: int, blocks: list[nn.Module], classes: int
    ):
        super().__init__()
        self.embed = nn.Linear(d_token, width)
        self.register_buffer("positions", positions(tokens, width), persistent=False)
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) + self.positions
        for block in self.blocks:
            x = block(x)
        return self.readout(x.mean(1))


class Heads:
    """An architecture with attention heads of ``head_dim`` units (its parameter)."""

    values: dict
    id: str

    def check_width(self, width: int) -> None:
        head_dim = self.values["head_dim"]
        if width > head_dim and width % head_dim:
            raise UsageError(
                f"{self.id}: heads of {head_dim} units do not divide width {width}; choose "
                f"widths that are multiples of {head_dim} (or at most {head_dim}: one head)"
            )

    def heads(self, width: int) -> int:
        """``width / head_dim`` heads; one head of every unit at widths up to ``head_dim``."""
        return max(1, width // self.values["head_dim"])


class Transformer(Heads, Arch):
    supports_jacobian = True

    def synthetic_sample(self, width, image_size, tokens):
        return (tokens, width)

    def data_sample(self, x):
        if x.dim() == 4:  # images (n, C, H, W): H tokens of C x W values
            return x.permute(0, 2, 1, 3).flatten(2)
        return x.transpose(1, 2)  # 1-D (n, C, L): L tokens of C values

    def positions(self, inputs: Inputs) -> int:
        return inputs.sample[0]

    def build(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> nn.Module:
        blocks = [
            EncoderLayer(
                width,
                self.heads(width),
                MLP_RATIO * width,
                dropout=0.0,
                activation=activation.fn,
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        ]
        tokens, d_token = inputs.sample
        return TransformerNet(d_token, tokens, width, blocks, inputs.classes)

    def layer_modules(self, model: nn.Module) -> list[nn.Module]:
        return list(model.blocks)

    def activation_elements(self, depth: int, width: int, inputs: Inputs) -> int:
        tokens = inputs.sample[0]
        per_block = tokens * width * (6 + 2 * MLP_RATIO) + self.heads(width) * tokens * tokens * 2
        return tokens * width + depth * per_block

    def macs_per_sample(self, depth, width, activation, inputs) -> float:
        tokens = inputs.sample[0]
        attention = 2 * tokens * tokens * width  # scores and their weighted sum
        return super().macs_per_sample(depth, width, activation, inputs) + depth * attention

    def stack(self, runs, depth, width, activation, inputs, device="cpu") -> Stacked:
        parts = self.parts(depth, width, activation, inputs)
        net = StackedTransformer(parts, runs, depth, activation, device)
        net.heads = self.heads(width)
        net.positions = positions(inputs.sample[0], width).to(device)
        return net


class StackedTransformer(Stacked):
    """The stream is ``(R, B, T, N)``; attention folds runs into its batch."""

    heads: int
    positions: torch.Tensor
    TARGETS_PER_BLOCK = 6  # q, k, v, out, linear1, linear2

    def view(self, t: torch.Tensor) -> tuple[torch.Tensor, Axes]:
        return t, TOKENS

    def stages(self) -> list[Stage]:
        per = self.TARGETS_PER_BLOCK
        blocks = [
            Stage(tuple(range(1 + per * i, 1 + per * (i + 1))), functools.partial(self._block, i))
            for i in range(self.depth)
        ]
        last = 1 + per * self.depth
        return [Stage((0,), self._embed), *blocks, Stage((last,), self._readout)]

    def _embed(self, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        out = stacked_linear(x, self.param("embed.weight"), self.param("embed.bias"))
        if taps is not None:
            taps.weighted(0, out, TOKENS)
        return out + self.positions

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        out = F.layer_norm(x, x.shape[-1:])
        weight, bias = self.param(f"{name}.weight"), self.param(f"{name}.bias")
        return out * weight[:, None, None, :] + bias[:, None, None, :]

    def _attention(self, i: int, u: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        p, first = f"blocks.{i}", 1 + self.TARGETS_PER_BLOCK * i
        runs, batch, tokens, width = u.shape
        qkv = stacked_linear(
            self._norm(u, f"{p}.norm1"),
            self.param(f"{p}.self_attn.in_proj_weight"),
            self.param(f"{p}.self_attn.in_proj_bias"),
        )
        if taps is not None:
            for j in range(3):
                taps.weighted(first + j, qkv[..., j * width : (j + 1) * width], TOKENS)
        heads = qkv.view(runs * batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = heads.permute(2, 0, 3, 1, 4)  # each (R*B, heads, T, head_dim)
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(1, 2).reshape(runs, batch, tokens, width)
        out = stacked_linear(
            attended,
            self.param(f"{p}.self_attn.out_proj.weight"),
            self.param(f"{p}.self_attn.out_proj.bias"),
        )
        if taps is not None:
            taps.weighted(first + 3, out, TOKENS)
        return out

    def _mlp(self, i: int, u: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        p, first = f"blocks.{i}", 1 + self.TARGETS_PER_BLOCK * i
        hidden = stacked_linear(
            self._norm(u, f"{p}.norm2"),
            self.param(f"{p}.linear1.weight"),
            self.param(f"{p}.linear1.bias"),
        )
        mlp = stacked_linear(
            self.activation.fn(hidden),
            self.param(f"{p}.linear2.weight"),
            self.param(f"{p}.linear2.bias"),
        )
        if taps is not None:
            taps.weighted(first + 4, hidden, TOKENS)
            taps.weighted(first + 5, mlp, TOKENS)
        return mlp

    def _block(self, i: int, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        p = f"blocks.{i}"

        def scalars(branch: str):
            return lambda name: self.param(f"{p}.{branch}.{name}").view(-1, 1, 1, 1)

        attention = functools.partial(self._attention, i, taps=taps)
        x = stacked_branch(x, attention, scalars("attn_branch"))
        x = stacked_branch(x, functools.partial(self._mlp, i, taps=taps), scalars("mlp_branch"))
        if taps is not None:
            taps.layer(i + 1, x, None)
        return x

    def _readout(self, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        w, b = self.param("readout.weight"), self.param("readout.bias")
        out = torch.baddbmm(b.unsqueeze(1), x.mean(2), w.transpose(1, 2))
        if taps is not None:
            taps.weighted(1 + self.TARGETS_PER_BLOCK * self.depth, out, ROWS)
        return out

    def layer_params(self, layer: int) -> list[str]:
        p = f"blocks.{layer - 1}"
        names = ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight")
        return [f"{p}.{n}" for n in (*names, "linear2.weight")]
