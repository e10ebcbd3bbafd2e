"""Architectures as objects: a registry of :class:`~initbench.archs.base.Arch` classes.

Adding an architecture is one module in this package (its :class:`Arch` and
:class:`~initbench.archs.base.Stacked` classes) and one :func:`register_arch` line below.
"""

from __future__ import annotations

from initbench.archs.base import Arch, Inputs, Stacked, describe
from initbench.archs.cnn import CNN
from initbench.archs.mlp import MLP
from initbench.errors import UsageError
from initbench.ids import parse_id

ARCHS: dict[str, type[Arch]] = {}


def register_arch(cls: type[Arch]) -> type[Arch]:
    """Adds an architecture class under its ``name``; a name can be registered once."""
    if cls.name in ARCHS:
        raise ValueError(f"an architecture named {cls.name!r} is already registered")
    ARCHS[cls.name] = cls
    return cls


def get_arch(arch_id: str | Arch) -> Arch:
    """An architecture from its id: ``mlp``, ``resmlp[norm=layer,alpha=0.5]``."""
    if isinstance(arch_id, Arch):
        return arch_id
    name, params = parse_id(arch_id)
    if name not in ARCHS:
        raise UsageError(f"unknown arch {name!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[name](**params)


register_arch(MLP)
register_arch(CNN)

__all__ = ["ARCHS", "Arch", "Inputs", "Stacked", "describe", "get_arch", "register_arch"]
