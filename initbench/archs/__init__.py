"""Architectures as objects: a registry of :class:`~initbench.archs.base.Arch` classes.

Adding an architecture is one module in this package (its ``Arch`` and ``Stacked``
classes) and one :func:`register_arch` line below, which names it, says where its class
lives, and documents it. Modules are imported when first used, so listing architectures
does not load torch.

Any ``nn.Module`` is an architecture too: ``torchvision:NAME`` or
``path/to/file.py:FACTORY``, its arguments and its sample's shape in brackets
(``torchvision:resnet18[num_classes=10,input=3x32x32]``; see
:mod:`initbench.archs.model`).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from initbench.core.errors import UsageError
from initbench.core.ids import parse_id, parse_params
from initbench.core.roles import ROLES

# the scalars of a residual branch (initbench.archs.branch, which loads torch), by name
BRANCH_ROLES = {"*.gate": "gate", "*.skip": "skip", "*.shift_in": "shift", "*.shift_out": "shift"}

if TYPE_CHECKING:
    from initbench.archs.base import Arch, Inputs, Stacked  # noqa: F401


@dataclass(frozen=True)
class ArchEntry:
    """A registered architecture: its name, where its class lives, its doc, parameters
    (name -> default; a tuple lists the choices, its first item the default) and the role
    of each of its parameters (parameter-name patterns, fnmatch, to a role of
    :data:`~initbench.core.roles.ROLES`, or to one role per row block of a fused projection;
    the first pattern that matches; weights no pattern names are the ``embedding`` (the
    first), the ``readout`` (the last) or ``hidden``)."""

    name: str
    target: str  # "module:Class"
    doc: str
    params: dict[str, object] = field(default_factory=dict)
    roles: dict[str, str | tuple[str, ...]] = field(default_factory=dict)

    def load(self) -> type[Arch]:
        module, _, name = self.target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        cls.name, cls.doc, cls.params, cls.roles = self.name, self.doc, self.params, self.roles
        return cls


ARCHS: dict[str, ArchEntry] = {}


def register_arch(
    name: str,
    target: str,
    doc: str,
    roles: dict[str, str | tuple[str, ...]] | None = None,
    **params: object,
) -> None:
    """Adds an architecture; a name can be registered once."""
    if name in ARCHS:
        raise ValueError(f"an architecture named {name!r} is already registered")
    unknown = {r for role in (roles or {}).values() for r in _as_tuple(role)} - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; choose from {', '.join(ROLES)}")
    ARCHS[name] = ArchEntry(name, target, doc, params, roles or {})


def _as_tuple(role: str | tuple[str, ...]) -> tuple[str, ...]:
    return role if isinstance(role, tuple) else (role,)


def get_arch(arch_id: str | Arch) -> Arch:
    """An architecture from its id: ``mlp``, ``resmlp[norm=layer,alpha=0.5]``, or a model
    (``torchvision:resnet18[num_classes=10]``, ``path/to/file.py:make[input=32]``).

    Args:
        arch_id: the id, or an architecture (returned as it is).

    Returns:
        The architecture.

    Raises:
        UsageError: an unknown architecture or parameter; for a model, what
            :class:`~initbench.archs.model.ModelArch` refuses (a factory that raises, ...).
    """
    from initbench.archs.base import Arch

    if isinstance(arch_id, Arch):
        return arch_id
    model = parse_model_id(arch_id)
    if model is not None:
        from initbench.archs.model import ModelArch

        return ModelArch(*model)
    name, params = parse_id(arch_id)
    if name not in ARCHS:
        raise UsageError(f"unknown arch {name!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[name].load()(**params)


def check_arch_id(arch_id: str) -> str:
    """The architecture's name (a model's ``torchvision:NAME`` or ``FILE.py:FACTORY``), if
    ``arch_id`` names a registered one or a model (without loading it)."""
    model = parse_model_id(arch_id)
    if model is not None:
        return model[0]
    name, _ = parse_id(arch_id)
    if name not in ARCHS:
        raise UsageError(f"unknown arch {name!r}; choose from {', '.join(ARCHS)}")
    return name


_MODEL_ID = re.compile(r"^(?P<spec>[^\[\]]+?)(?:\[(?P<params>[^\[\]]*)\])?$")


def parse_model_id(arch_id: str) -> tuple[str, dict[str, str]] | None:
    """A model's id as its ``MODEL`` and its raw parameters:
    ``torchvision:resnet18[num_classes=10]`` -> ``("torchvision:resnet18", {"num_classes":
    "10"})``; None for an id without ``:`` (a registered architecture's).

    Raises:
        UsageError: a malformed id, a source other than ``torchvision`` or a ``.py`` file.
    """
    text = arch_id.strip()
    if ":" not in text.partition("[")[0]:
        return None
    match = _MODEL_ID.match(text)
    source, _, name = (match["spec"] if match else "").rpartition(":")
    if (
        not match
        or not name.isidentifier()
        or not (source == "torchvision" or source.endswith(".py"))
    ):
        raise UsageError(
            f"a model arch is torchvision:NAME or path/to/file.py:FACTORY, with its arguments "
            f"in brackets (torchvision:resnet18[num_classes=10]), got {arch_id!r}"
        )
    return match["spec"], parse_params(match["params"] or "", text)


def describe(entry: ArchEntry) -> dict[str, object]:
    """An architecture's listing entry: name, parameters and defaults, doc, and the role of
    its parameters (pattern -> role, or roles of a fused projection's row blocks)."""
    defaults = {k: v[0] if isinstance(v, tuple) else v for k, v in entry.params.items()}
    roles = {k: list(v) if isinstance(v, tuple) else v for k, v in entry.roles.items()}
    return {"name": entry.name, "params": defaults, "doc": entry.doc, "roles": roles}


PLAIN_STACK = {"0.weight": "embedding", "*.bias": "bias"}  # then hidden layers, the readout

register_arch(
    "mlp",
    "initbench.archs.mlp:MLP",
    "Linear + act per hidden layer, then a Linear readout (depth = hidden activations)",
    roles=PLAIN_STACK,
)
register_arch(
    "cnn",
    "initbench.archs.cnn:CNN",
    "3x3 Conv2d (circular padding) + act per hidden layer, global average pool, Linear",
    roles=PLAIN_STACK,
)
register_arch(
    "resmlp",
    "initbench.archs.resmlp:ResMLP",
    "residual stream of Linear blocks: x + alpha (W phi(norm(x)) + b); norm none or layer",
    roles={
        "stem.weight": "embedding",
        "blocks.*.linear.weight": "mlp_out",
        "head.weight": "readout",
        "blocks.*.norm.*": "norm",
        "*.bias": "bias",
        **BRANCH_ROLES,
    },
    norm=("none", "layer"),
    alpha=1.0,
)
register_arch(
    "resnet",
    "initbench.archs.resnet:ResNet",
    "residual stream of 3x3 conv blocks on images: x + alpha conv(phi(BN(x))); norm batch "
    "(batch statistics) or none",
    roles={
        "stem.weight": "embedding",
        "blocks.*.conv.weight": "mlp_out",
        "head.1.weight": "readout",
        "blocks.*.norm.*": "norm",
        "*.bias": "bias",
        **BRANCH_ROLES,
    },
    norm=("batch", "none"),
    alpha=1.0,
)
register_arch(
    "transformer",
    "initbench.archs.transformer:Transformer",
    "pre-LN encoder blocks on token sequences (attention, then an N-4N-N mlp with the "
    "activation), mean over tokens, Linear; heads of head_dim units",
    roles={
        "embed.weight": "embedding",
        "blocks.*.self_attn.in_proj_weight": ("query", "key", "value"),
        "blocks.*.self_attn.out_proj.weight": "attn_out",
        "blocks.*.linear1.weight": "mlp_in",
        "blocks.*.linear2.weight": "mlp_out",
        "readout.weight": "readout",
        "blocks.*.norm*": "norm",
        "*bias": "bias",
        **BRANCH_ROLES,
    },
    head_dim=64,
)


register_arch(
    "gpt",
    "initbench.archs.gpt:GPT",
    "GPT-style decoder on token ids: token and position embeddings, causal self-attention "
    "and N-4N-N mlp blocks (LayerNorm pre, post or none), a readout of next-token logits "
    "(its own or tied to the embedding); heads of head_dim units",
    roles={
        "wte.weight": "embedding",
        "wpe.weight": "position",
        "blocks.*.attn.query.weight": "query",
        "blocks.*.attn.key.weight": "key",
        "blocks.*.attn.value.weight": "value",
        "blocks.*.attn.out.weight": "attn_out",
        "blocks.*.fc_in.weight": "mlp_in",
        "blocks.*.fc_out.weight": "mlp_out",
        "head.weight": "readout",
        "*ln*": "norm",
        "*.bias": "bias",
        **BRANCH_ROLES,
    },
    norm=("pre", "post", "none"),
    tie=False,
    head_dim=64,
)


def __getattr__(name: str) -> object:  # Arch, Inputs, Stacked load with torch, on first use
    if name in ("Arch", "Inputs", "Stacked"):
        return getattr(importlib.import_module("initbench.archs.base"), name)
    raise AttributeError(f"module 'initbench.archs' has no attribute {name!r}")
