"""``gpt``: a GPT-style decoder on token ids (GPT-2's and nanoGPT's layout).

``x_0 = wte(tokens) + wpe(positions)`` (learned token and position embeddings), then
``depth`` blocks of causal self-attention and an ``N -> 4N -> N`` mlp with the cell's
activation, each a residual branch; ``norm`` places their LayerNorms: ``pre`` (GPT-2: ``x +
attn(LN(x))``, a final LayerNorm before the readout), ``post`` (the original Transformer's
and DeepNorm's: ``LN(x + attn(x))``) or ``none``. The readout ``Linear(N, vocab)`` gives
every position's next-token logits, its own weight or the token embedding's (``tie``).
Queries, keys and values are separate ``Linear(N, N)`` layers; heads of ``head_dim`` units.
Every branch has the scalars of :mod:`initbench.archs.branch`, which recipes set.

Layer l's statistics describe the stream after block l; ``grad_w_norm`` is the norm of
all of the block's weights' gradients together. The standard-normal probe of a sweep
becomes uniform random token ids (``tokens`` of them, a vocabulary of the width's size);
a dataset must be a text's (``chars``). All runs compute together: batched matmuls, and
one attention call with the runs folded into the batch.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from initbench.archs.base import Arch, Inputs, Stacked, Stage, Taps, stacked_linear
from initbench.archs.branch import Branch, stacked_branch
from initbench.archs.transformer import MLP_RATIO, TOKENS, Heads
from initbench.core.activations import Activation


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate query, key and value projections."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = (split(p(x)) for p in (self.query, self.key, self.value))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(attended.transpose(1, 2).reshape(batch, tokens, width))


class Block(nn.Module):
    """A decoder block: an attention branch, then an mlp branch."""

    def __init__(self, width: int, heads: int, activation: Activation, norm: str) -> None:
        super().__init__()
        self.norm = norm
        layer_norm = (lambda: nn.LayerNorm(width)) if norm != "none" else nn.Identity
        self.ln1, self.ln2 = layer_norm(), layer_norm()
        self.attn = CausalSelfAttention(width, heads)
        self.fc_in = nn.Linear(width, MLP_RATIO * width)
        self.act = activation.module()
        self.fc_out = nn.Linear(MLP_RATIO * width, width)
        self.attn_branch, self.mlp_branch = Branch(), Branch()

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "pre":
            x = self.attn_branch(x, lambda u: self.attn(self.ln1(u)))
            return self.mlp_branch(x, lambda u: self.mlp(self.ln2(u)))
        x = self.ln1(self.attn_branch(x, self.attn))
        return self.ln2(self.mlp_branch(x, self.mlp))


class GPTNet(nn.Module):
    """Token and position embeddings, decoder blocks, a final LayerNorm (pre-LN), readout."""

    def __init__(
        self, vocab: int, tokens: int, width: int, blocks: list[Block], norm: str, tie: bool
    ) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(tokens, width)
        self.blocks = nn.ModuleList(blocks)
        self.ln_f = nn.LayerNorm(width) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(width, vocab, bias=False)
        if tie:
            self.head.weight = self.wte.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[-1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class GPT(Heads, Arch):
    tokens = True

    def synthetic_sample(self, width, image_size, tokens):
        return (tokens,)

    def draw_inputs(self, batch, inputs, generator, device):
        return torch.randint(
            inputs.classes, (batch, *inputs.sample), generator=generator, device=device
        )

    def data_sample(self, x):
        return x

    def positions(self, inputs: Inputs) -> int:
        return inputs.sample[0]

    def output_sample(self, inputs: Inputs, batch: int) -> tuple[int, ...]:
        return (inputs.sample[0], inputs.classes)

    def build(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> nn.Module:
        norm = self.values["norm"]
        blocks = [Block(width, self.heads(width), activation, norm) for _ in range(depth)]
        return GPTNet(inputs.classes, inputs.sample[0], width, blocks, norm, self.values["tie"])

    def layer_modules(self, model: nn.Module) -> list[nn.Module]:
        return list(model.blocks)

    def activation_elements(self, depth: int, width: int, inputs: Inputs) -> int:
        tokens = inputs.sample[0]
        per_block = tokens * width * (10 + 2 * MLP_RATIO) + self.heads(width) * tokens * tokens * 2
        return tokens * (width + inputs.classes) + depth * per_block

    def macs_per_sample(self, depth, width, activation, inputs) -> float:
        tokens, vocab = inputs.sample[0], inputs.classes
        lookups = (vocab + tokens) * width * tokens  # the embeddings are looked up
        attention = tokens * tokens * width  # causal: half the scores and weighted sums
        tied = vocab * width * tokens if self.values["tie"] else 0  # the readout is wte
        total = super().macs_per_sample(depth, width, activation, inputs)
        return total - lookups + tied + depth * attention

    def stack(self, runs, depth, width, activation, inputs, device="cpu") -> Stacked:
        parts = self.parts(depth, width, activation, inputs)
        return StackedGPT(
            parts, runs, depth, activation, device, self.heads(width), self.values["norm"]
        )


class StackedGPT(Stacked):
    """The stream is ``(R, B, T, N)``; attention folds runs into its batch."""

    def __init__(self, parts, runs, depth, activation, device, heads: int, norm: str):
        super().__init__(parts, runs, depth, activation, device)
        self.heads, self.norm = heads, norm
        self.tied = "head.weight" not in self.names
        self.per_block = 6  # query, key, value, out, fc_in, fc_out

    def view(self, t: torch.Tensor):
        return t, TOKENS

    def input_vectors(self, x: torch.Tensor) -> None:
        return None  # token ids: no second moment or correlation to speak of

    def stages(self) -> list[Stage]:
        per = self.per_block
        blocks = [
            Stage(tuple(range(2 + per * i, 2 + per * (i + 1))), functools.partial(self._block, i))
            for i in range(self.depth)
        ]
        readout = () if self.tied else (2 + per * self.depth,)
        return [Stage((0, 1), self._embed), *blocks, Stage(readout, self._readout)]

    def _embed(self, tokens: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        runs = torch.arange(self.runs, device=tokens.device).view(-1, 1, 1)
        words = self.param("wte.weight")[runs, tokens]  # (R, B, T, N)
        places = self.param("wpe.weight")[:, : tokens.shape[-1]].unsqueeze(1)  # (R, 1, T, N)
        if taps is not None:
            taps.weighted(0, words, TOKENS)
            taps.weighted(1, places, TOKENS)
        return words + places

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if self.norm == "none":
            return x
        out = F.layer_norm(x, x.shape[-1:])
        weight, bias = self.param(f"{name}.weight"), self.param(f"{name}.bias")
        return out * weight[:, None, None, :] + bias[:, None, None, :]

    def _linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return stacked_linear(x, self.param(f"{name}.weight"), self.param(f"{name}.bias"))

    def _attention(self, i: int, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        p, first = f"blocks.{i}.attn", 2 + self.per_block * i
        runs, batch, tokens, width = x.shape
        projected = [self._linear(f"{p}.{name}", x) for name in ("query", "key", "value")]
        if taps is not None:
            for j, out in enumerate(projected):
                taps.weighted(first + j, out, TOKENS)
        q, k, v = (
            t.reshape(runs * batch, tokens, self.heads, width // self.heads).transpose(1, 2)
            for t in projected
        )
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = self._linear(f"{p}.out", attended.transpose(1, 2).reshape(x.shape))
        if taps is not None:
            taps.weighted(first + 3, out, TOKENS)
        return out

    def _mlp(self, i: int, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        p, first = f"blocks.{i}", 2 + self.per_block * i
        hidden = self._linear(f"{p}.fc_in", x)
        out = self._linear(f"{p}.fc_out", self.activation.fn(hidden))
        if taps is not None:
            taps.weighted(first + 4, hidden, TOKENS)
            taps.weighted(first + 5, out, TOKENS)
        return out

    def _block(self, i: int, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        p = f"blocks.{i}"

        def scalars(branch: str):
            return lambda name: self.param(f"{p}.{branch}.{name}").view(-1, 1, 1, 1)

        attn = functools.partial(self._attention, i, taps=taps)
        mlp = functools.partial(self._mlp, i, taps=taps)
        if self.norm == "pre":
            x = stacked_branch(x, lambda u: attn(self._norm(u, f"{p}.ln1")), scalars("attn_branch"))
            x = stacked_branch(x, lambda u: mlp(self._norm(u, f"{p}.ln2")), scalars("mlp_branch"))
        else:
            x = self._norm(stacked_branch(x, attn, scalars("attn_branch")), f"{p}.ln1")
            x = self._norm(stacked_branch(x, mlp, scalars("mlp_branch")), f"{p}.ln2")
        if taps is not None:
            taps.layer(i + 1, x, None)
        return x

    def _readout(self, x: torch.Tensor, taps: Taps | None) -> torch.Tensor:
        if self.norm == "pre":
            x = self._norm(x, "ln_f")
        weight = self.param("wte.weight" if self.tied else "head.weight")
        out = stacked_linear(x, weight, None)
        if taps is not None and not self.tied:
            taps.weighted(2 + self.per_block * self.depth, out, TOKENS)
        return out

    def layer_params(self, layer: int) -> list[str]:
        p = f"blocks.{layer - 1}"
        names = ("attn.query", "attn.key", "attn.value", "attn.out", "fc_in", "fc_out")
        return [f"{p}.{name}.weight" for name in names]
