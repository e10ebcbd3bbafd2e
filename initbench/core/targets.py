"""Which parameters of any ``nn.Module`` a scheme initializes, and which it leaves.

A scheme initializes every *weight*: the ``weight`` of Linear, Conv (1-3-D, transposed
too), Bilinear and Embedding layers, the attention projections of
``nn.MultiheadAttention`` (``in_proj_weight`` as three N x N projections q, k and v, as
timm's ViT does; ``out_proj`` is a Linear), and the weights of ``nn.RNN``, ``nn.LSTM`` and
``nn.GRU``: each gate's block of rows of ``weight_ih_l{k}`` and ``weight_hh_l{k}`` (and
their ``_reverse``) as a weight of its own, and LSTM's projection ``weight_hr_l{k}``.
Biases of those layers are zeroed or drawn; normalization gains and biases keep their
built values (1 and 0), and any other parameter (a class token, a positional embedding)
is left as built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from initbench.core.models import first_tensor

WEIGHTED = (
    nn.Linear,
    nn.Bilinear,
    nn.Embedding,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.RMSNorm,
)


# gates per recurrent layer, by ``nn.RNNBase.mode``: stacked along the rows of its weights
# (LSTM: input, forget, cell, output; GRU: reset, update, new), ``hidden_size`` rows each
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


@dataclass(frozen=True)
class Target:
    """One weight a scheme initializes: rows ``rows`` of the parameter ``param``."""

    param: str  # qualified parameter name, as in ``named_parameters``
    rows: slice | None = None  # None: the whole parameter

    @property
    def name(self) -> str:
        if self.rows is None:
            return self.param
        return f"{self.param}[{self.rows.start}:{self.rows.stop}]"

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        """This target's part of ``tensor`` (the parameter, or one run of a stack of it)."""
        return tensor if self.rows is None else tensor[self.rows]


def init_targets(model: nn.Module) -> list[Target]:
    """The weights a scheme initializes, in ``model.modules()`` order."""
    targets: list[Target] = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, WEIGHTED):
            targets.append(Target(f"{prefix}weight"))
        elif isinstance(module, nn.MultiheadAttention):
            if module.in_proj_weight is not None:
                e = module.embed_dim
                targets += [
                    Target(f"{prefix}in_proj_weight", slice(i * e, (i + 1) * e)) for i in range(3)
                ]
            else:
                targets += [Target(f"{prefix}{p}_proj_weight") for p in "qkv"]
        elif isinstance(module, nn.RNNBase):
            targets += _recurrent_targets(prefix, module)
    return targets


def _recurrent_targets(prefix: str, module: nn.RNNBase) -> list[Target]:
    """A recurrent layer's weights in its parameters' order: every gate's block of
    ``weight_ih_l{k}`` and ``weight_hh_l{k}`` (``hidden_size`` rows each), and the whole
    projection ``weight_hr_l{k}``."""
    rows, gates = module.hidden_size, GATES[module.mode]
    targets = []
    for name, _ in module.named_parameters(recurse=False):
        if name.startswith(("weight_ih", "weight_hh")):
            targets += [
                Target(f"{prefix}{name}", slice(g * rows, (g + 1) * rows)) for g in range(gates)
            ]
        elif name.startswith("weight_hr"):
            targets.append(Target(f"{prefix}{name}"))
    return targets


def biases(model: nn.Module) -> list[str]:
    """Bias parameters of the layers whose weights are targets, in module order."""
    names = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, WEIGHTED) and getattr(module, "bias", None) is not None:
            names.append(f"{prefix}bias")
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_bias is not None:
            names.append(f"{prefix}in_proj_bias")
        elif isinstance(module, nn.RNNBase):
            names += [
                f"{prefix}{name}"
                for name, _ in module.named_parameters(recurse=False)
                if name.startswith("bias_")
            ]
    return names


def left_as_built(model: nn.Module) -> dict[str, str]:
    """Parameters a scheme does not touch, with the reason."""
    touched = {t.param for t in init_targets(model)} | set(biases(model))
    norms = {
        f"{name}.{p}" if name else p
        for name, module in model.named_modules()
        if isinstance(module, NORMS)
        for p, _ in module.named_parameters(recurse=False)
    }
    left = {}
    for name, _ in model.named_parameters():
        if name in touched:
            continue
        left[name] = (
            "normalization gain or bias: kept as built"
            if name in norms
            else ("not the weight of a known layer: kept as built")
        )
    return left


def observe(
    model: nn.Module, target: Target, keep: Callable[[torch.Tensor], None]
) -> RemovableHandle | None:
    """Hooks ``model`` so that every forward pass calls ``keep`` with ``target``'s output:
    its module's output (its first tensor), a q, k or v projection's (the attention's input
    times that part of its weight, and bias), the attention's output for its ``out_proj``.
    None for a recurrent layer's gate: it is computed inside the layer's kernel, where no
    hook sees it.

    Returns:
        The hook's handle (``handle.remove()`` takes it off), or None.
    """
    modules = dict(model.named_modules())
    owner_name, _, param = target.param.rpartition(".")
    owner = modules[owner_name]
    parent = modules.get(owner_name.rpartition(".")[0]) if owner_name else None
    if isinstance(owner, nn.RNNBase):
        return None
    if isinstance(owner, nn.MultiheadAttention):  # q, k or v: its input times its weight
        e = owner.embed_dim
        which = target.rows.start // e if target.rows is not None else "qkv".index(param[0])
        span = slice(which * e, (which + 1) * e)

        def pre_hook(module, args, kwargs):
            inputs = [*args, *(kwargs[k] for k in ("query", "key", "value") if k in kwargs)]
            bias = None if module.in_proj_bias is None else module.in_proj_bias[span]
            keep(F.linear(inputs[which], target.view(getattr(module, param)), bias))

        return owner.register_forward_pre_hook(pre_hook, with_kwargs=True)
    if isinstance(parent, nn.MultiheadAttention) and owner is parent.out_proj:
        # the attention calls out_proj's weight directly: its output is the attention's
        return parent.register_forward_hook(lambda m, i, out: keep(out[0]))
    return owner.register_forward_hook(lambda m, i, out: keep(first_tensor(out)))
