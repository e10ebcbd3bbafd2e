"""Which parameters of any ``nn.Module`` a scheme initializes, and which it leaves.

A scheme initializes every *weight*: the ``weight`` of Linear, Conv (1-3-D, transposed
too), Bilinear and Embedding layers, the attention projections of
``nn.MultiheadAttention`` (``in_proj_weight`` as three N x N projections q, k and v, as
timm's ViT does; ``out_proj`` is a Linear), and the weights of ``nn.RNN``, ``nn.LSTM`` and
``nn.GRU``: each gate's block of rows of ``weight_ih_l{k}`` and ``weight_hh_l{k}`` (and
their ``_reverse``) as a weight of its own, and LSTM's projection ``weight_hr_l{k}``.
Biases of those layers are zeroed or drawn; normalization gains and biases keep their
built values (1 and 0), and any other parameter (a class token, a positional embedding)
is left as built. Each weight has a role (:data:`~initbench.core.roles.ROLES`) and,
inside a residual block, the block's index.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from initbench.core.models import first_tensor
from initbench.core.roles import ATTENTION, RESIDUAL_OUT, SETTING_ROLES, Site

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


RoleTable = Mapping[str, "str | tuple[str, ...]"]

# Roles of any module's weights from their layers' names (the last part of a layer's
# qualified name): GPT-2, nanoGPT, LLaMA, BERT, timm and torch conventions.
NAMED_ROLES: dict[str, tuple[str, ...]] = {
    "query": ("q", "query", "q_proj", "wq", "to_q"),
    "key": ("k", "key", "k_proj", "wk", "to_k"),
    "value": ("v", "value", "v_proj", "wv", "to_v"),
    "attn_out": ("o_proj", "out_proj", "wo", "to_out", "attn_out"),
    "mlp_in": ("fc1", "linear1", "c_fc", "up_proj", "gate_proj", "w1", "w3", "fc_in"),
    "mlp_out": ("fc2", "linear2", "down_proj", "w2", "fc_out", "mlp_out"),
    "readout": ("lm_head", "head", "readout", "classifier"),
}
_BY_NAME = {name: role for role, names in NAMED_ROLES.items() for name in names}
_MLPS = dict.fromkeys(("mlp", "ffn", "ff", "feed_forward"), "mlp_out")
HEADS = ("num_heads", "heads", "n_head")  # where attention modules keep their heads

# gates per recurrent layer, by ``nn.RNNBase.mode``: stacked along the rows of its weights
# (LSTM: input, forget, cell, output; GRU: reset, update, new), ``hidden_size`` rows each
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


@dataclass(frozen=True)
class Target:
    """One weight a scheme initializes: rows ``rows`` of the parameter ``param``, its role
    and its residual block."""

    param: str  # qualified parameter name, as in ``named_parameters``
    rows: slice | None = None  # None: the whole parameter
    role: str = "hidden"
    block: int | None = None  # the residual block, 0-based (None outside blocks)
    heads: int | None = None  # an attention projection's heads, where its module says
    lookup: bool = False  # an embedding table (nn.Embedding)

    @property
    def name(self) -> str:
        if self.rows is None:
            return self.param
        return f"{self.param}[{self.rows.start}:{self.rows.stop}]"

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        """This target's part of ``tensor`` (the parameter, or one run of a stack of it)."""
        return tensor if self.rows is None else tensor[self.rows]


def init_targets(model: nn.Module, roles: RoleTable | None = None) -> list[Target]:
    """The weights a scheme initializes, in ``model.modules()`` order, with their roles.

    Args:
        model: any module.
        roles: an architecture's table of roles (parameter-name patterns, fnmatch, to a
            role, or to one role per row block of a fused projection); None: roles from
            the layers' types and names (:data:`NAMED_ROLES`), the first weight an
            ``embedding`` and the last the ``readout`` where no name says otherwise.

    A weight tied to another (a readout that is the token embedding) is a target once,
    under its first name.
    """
    found: list[tuple[str, slice | None, str | None]] = []
    tables: set[str] = set()  # the weights of embedding tables
    heads: dict[str, int] = {}  # attention modules' heads, by name
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        last = name.rpartition(".")[2]
        count = next(
            (getattr(module, a) for a in HEADS if isinstance(getattr(module, a, None), int)), None
        )
        if count is not None:
            heads[name] = count
        if isinstance(module, WEIGHTED):
            role = _BY_NAME.get(last)
            if last in ("c_proj", "proj"):  # GPT-2's and timm's output projections
                parent = name.rpartition(".")[0].rpartition(".")[2]
                role = "attn_out" if "att" in parent else _MLPS.get(parent)
            if isinstance(module, nn.Embedding):
                role = "position" if "pos" in last or last == "wpe" else "embedding"
                tables.add(f"{prefix}weight")
            found.append((f"{prefix}weight", None, role))
        elif isinstance(module, nn.MultiheadAttention):
            if module.in_proj_weight is not None:
                e = module.embed_dim
                found += [
                    (f"{prefix}in_proj_weight", slice(i * e, (i + 1) * e), role)
                    for i, role in enumerate(("query", "key", "value"))
                ]
            else:
                found += [
                    (f"{prefix}{p}_proj_weight", None, role)
                    for p, role in zip("qkv", ("query", "key", "value"), strict=True)
                ]
        elif isinstance(module, nn.RNNBase):
            found += _recurrent_weights(prefix, module)
    present = {name for name, _ in model.named_parameters()}  # a tied weight is its first name's
    found = [entry for entry in found if entry[0] in present]
    blocks = block_indices(model)
    targets = []
    for index, (param, rows, named) in enumerate(found):
        if roles is not None:
            role = table_role(roles, param, rows, len(found), index)
        else:
            role = named or ("embedding" if index == 0 else "hidden")
            if index == len(found) - 1 and named is None and index:
                role = "readout"
        owner = param.rpartition(".")[0]
        count = heads.get(owner, heads.get(owner.rpartition(".")[0]))
        heads_of = count if role in ATTENTION else None
        targets.append(
            Target(param, rows, role, block_of(param, blocks), heads_of, param in tables)
        )
    return targets


def _recurrent_weights(
    prefix: str, module: nn.RNNBase
) -> list[tuple[str, slice | None, str | None]]:
    """A recurrent layer's weights in its parameters' order: every gate's block of
    ``weight_ih_l{k}`` and ``weight_hh_l{k}`` (``hidden_size`` rows each), and the whole
    projection ``weight_hr_l{k}``, as (parameter, rows, role): ``recurrent`` for the
    hidden-to-hidden weights, ``hidden`` for the others (never an embedding or readout)."""
    rows, gates = module.hidden_size, GATES[module.mode]
    found = []
    for name, _ in module.named_parameters(recurse=False):
        if name.startswith(("weight_ih", "weight_hh")):
            role = "recurrent" if name.startswith("weight_hh") else "hidden"
            found += [
                (f"{prefix}{name}", slice(g * rows, (g + 1) * rows), role) for g in range(gates)
            ]
        elif name.startswith("weight_hr"):
            found.append((f"{prefix}{name}", None, "hidden"))
    return found


def table_role(roles: RoleTable, param: str, rows: slice | None, count: int, index: int) -> str:
    """A parameter's role in an architecture's table (the first pattern that matches;
    a fused projection's row block takes its own of the roles listed); weights no pattern
    names are ``embedding`` (the first), ``readout`` (the last) or ``hidden``."""
    for pattern, role in roles.items():
        if fnmatch.fnmatchcase(param, pattern):
            if isinstance(role, tuple):
                part = 0 if rows is None else rows.start // (rows.stop - rows.start)
                return role[part]
            return role
    return "embedding" if index == 0 else "readout" if index == count - 1 else "hidden"


def block_indices(model: nn.Module) -> dict[str, int]:
    """The residual blocks of a module: the children of an ``nn.ModuleList`` or
    ``nn.Sequential`` that hold layers of their own (not a layer itself) and no such
    children, numbered in model order, by qualified name."""
    found: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList | nn.Sequential):
            continue
        for child_name, child in module.named_children():
            if isinstance(child, WEIGHTED) or not any(True for _ in child.parameters()):
                continue
            if any(True for _ in child.children()):
                found.append(f"{name}.{child_name}" if name else child_name)
    inner = [b for b in found if not any(other.startswith(f"{b}.") for other in found)]
    return {name: index for index, name in enumerate(inner)}


def block_of(param: str, blocks: dict[str, int]) -> int | None:
    """The block a parameter belongs to (the block whose name prefixes it), or None."""
    prefix = ""
    for part in param.split(".")[:-1]:
        prefix = f"{prefix}.{part}" if prefix else part
        if prefix in blocks:
            return blocks[prefix]
    return None


def settings(model: nn.Module, roles: RoleTable) -> list[Target]:
    """The scalars of residual branches that schemes may set (``gate``, ``skip``,
    ``shift`` in an architecture's table of roles), in model order."""
    blocks = block_indices(model)
    found = []
    for name, _ in model.named_parameters():
        for pattern, role in roles.items():
            if role in SETTING_ROLES and fnmatch.fnmatchcase(name, pattern):
                found.append(Target(name, None, str(role), block_of(name, blocks)))
                break
    return found


def weight_sites(
    targets: list[Target], shapes: list[tuple[int, ...]], width: int | None = None
) -> list[Site]:
    """The site of each target (its role, block, shape and heads; the network's blocks,
    residual branches and width)."""
    blocks = len({t.block for t in targets if t.block is not None})
    branches = sum(t.role in RESIDUAL_OUT for t in targets)
    return [
        Site(t.role, tuple(shape), t.block, blocks, width, t.heads, branches, t.lookup)
        for t, shape in zip(targets, shapes, strict=True)
    ]


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


def left_as_built(model: nn.Module, roles: RoleTable | None = None) -> dict[str, str]:
    """Parameters a scheme does not touch, with the reason (``roles``: the
    architecture's table, whose branch scalars a recipe may set)."""
    touched = {t.param for t in init_targets(model, roles)} | set(biases(model))
    scalars = {t.param for t in settings(model, roles or {})}
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
        if name in norms:
            left[name] = "normalization gain or bias: kept as built"
        elif name in scalars:
            left[name] = "a residual branch's scalar: the architecture's unless a recipe sets it"
        else:
            left[name] = "not the weight of a known layer: kept as built"
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
