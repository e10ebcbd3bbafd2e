"""Applying a scheme to any ``nn.Module``: its weights (:mod:`initbench.core.targets`) drawn
with the scheme, biases zeroed or drawn from N(0, bias_var), and a report of what was left
as built and why."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

import torch
from torch import nn

from initbench.archs.base import network_parts
from initbench.core.activations import Activation, get_activation
from initbench.core.errors import UsageError
from initbench.core.fill import (
    fill_biases,
    fill_settings,
    fill_targets,
    learning_rate_scales,
)
from initbench.core.scheme import Scheme
from initbench.core.schemes import get_scheme
from initbench.core.targets import biases, left_as_built


@dataclass
class Applied:
    """What :func:`apply` did to a model."""

    initialized: list[str] = field(default_factory=list)  # target names
    fallback: list[str] = field(default_factory=list)  # targets given torch's default instead
    biases: list[str] = field(default_factory=list)  # zeroed, or drawn from N(0, bias_var)
    left: dict[str, str] = field(default_factory=dict)  # parameter -> why it was left


def param_groups(
    model: nn.Module,
    scheme: str | Scheme | None,
    lr: float,
    optimizer: str = "adam",
    *,
    roles: dict[str, str | tuple[str, ...]] | None = None,
    width: int | None = None,
) -> list[dict]:
    """``torch.optim`` parameter groups that train ``model`` as ``scheme`` asks: each
    parameter at ``lr`` times its multiplier (muP's on weights; 0 on a residual branch's
    scalar that the scheme leaves at its default, so that it stays there).

    Args:
        model: the model, initialized with ``scheme``.
        scheme: a scheme id or :class:`~initbench.core.scheme.Scheme`; None: the model's
            own initialization (its branch scalars stay at their defaults).
        lr: the base learning rate.
        optimizer: ``sgd`` or ``adam`` (muP's multipliers depend on it).
        roles: the architecture's table of roles (as :func:`apply` takes it).
        width: the network's width (as :func:`apply` takes it).

    Returns:
        One group per multiplier: ``{"params": [...], "lr": lr * multiplier}``.
    """
    parts = network_parts(model, roles, width)
    chosen = get_scheme("torch_default" if scheme is None else scheme)  # any plain scheme
    scales = learning_rate_scales(
        parts.settings, parts.setting_sites, parts.targets, parts.sites, chosen, optimizer
    )
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        groups.setdefault(scales.get(name, 1.0), []).append(param)
    return [{"params": params, "lr": lr * scale} for scale, params in groups.items()]


def fitter(scheme: Scheme) -> ModuleType:
    """The module of a data-dependent scheme's fitter (``Scheme.fitter`` names it in this
    package): its ``fit_stack(net, x, y, runs, scheme)`` fits runs of a stacked network
    on their batches and targets, its ``fit_module(model, data, labels, scheme)`` any
    ``nn.Module`` on a batch (``labels``: its targets, or None). Adding a data-dependent
    scheme is that module and the scheme's family (``fitter="NAME"``)."""
    return importlib.import_module(f"{__package__}.{scheme.fitter}")


@torch.no_grad()
def apply(
    model: nn.Module,
    scheme: str | Scheme,
    activation: str | Activation = "relu",
    *,
    generator: torch.Generator | None = None,
    data: torch.Tensor | None = None,
    bias_var: float = 0.0,
    fallback: bool = False,
    roles: dict[str, str | tuple[str, ...]] | None = None,
    width: int | None = None,
    labels: torch.Tensor | None = None,
) -> Applied:
    """Initializes every weight of ``model`` with ``scheme`` (the tutorial's
    ``initialize_weights()`` for any ``nn.Module``, torchvision models included).

    A recipe (``gpt2``, ``fixup``) gives each weight the distribution of its role and
    block: the roles come from the layers' types and names (``lm_head`` is the readout,
    ``c_proj`` under ``attn`` the attention's output, the children of a ``ModuleList``
    are blocks), or from ``roles``, an architecture's table.

    Args:
        model: the model, changed in place.
        scheme: a scheme id or :class:`~initbench.core.scheme.Scheme`.
        activation: the activation that ``matched`` gains refer to.
        generator: the random source (None: torch's global one).
        data: an input batch, needed by data-dependent schemes (``lsuv``, ``gradinit``,
            ``metainit``).
        labels: ``data``'s class targets, for schemes that fit a loss (``gradinit``,
            ``metainit``); None: random classes.
        bias_var: biases are drawn from N(0, bias_var); 0 zeroes them.
        fallback: give torch's default to weights the scheme cannot take (``dirac`` on a
            Linear readout) instead of refusing.
        roles: the role of each parameter (patterns to roles, as
            :mod:`initbench.archs` registers them); None: from the layers' names.
        width: the network's width, for recipes that scale with it (muP).

    Returns:
        What was initialized, what fell back to torch's default, and what was left and why.

    Raises:
        UsageError: the scheme cannot take a weight (without ``fallback``) or the network
            (a recipe's condition), the model has no weight, or a data-dependent scheme got
            no ``data``.
    """
    scheme, activation = get_scheme(scheme), get_activation(activation)
    if scheme.data_dependent and data is None:
        raise UsageError(f"{scheme.id} is data-dependent: pass a batch as data=")
    parts = network_parts(model, roles, width)
    targets, sites = parts.targets, parts.sites
    if not targets:
        raise UsageError(f"{type(model).__name__} has no weight that a scheme initializes")
    params = dict(model.named_parameters())
    reason = scheme.not_applicable_to(sites) if scheme.recipe else None
    if not reason and fallback and all(scheme.at(s).not_applicable(s.shape) for s in sites):
        reason = scheme.not_applicable_to(sites)
    if reason:
        raise UsageError(reason)
    fell_back = fill_targets(
        params, targets, scheme, activation, generator, sites=sites, fallback=fallback
    )
    bias_names = biases(model)
    fill_biases(params, bias_names, bias_var, generator)
    fill_settings(params, parts.settings, parts.setting_sites, scheme)
    if scheme.data_dependent:
        fitter(scheme).fit_module(model, data, labels, scheme)
    return Applied(
        [t.name for t in targets if t.name not in fell_back],
        fell_back,
        bias_names,
        left_as_built(model, roles),
    )
