"""Applying a scheme to any ``nn.Module``: its weights (:mod:`initbench.core.targets`) drawn
with the scheme, biases zeroed or drawn from N(0, bias_var), and a report of what was left
as built and why."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

import torch
from torch import nn

from initbench.core.activations import Activation, get_activation
from initbench.core.errors import UsageError
from initbench.core.fill import fill_biases, fill_targets
from initbench.core.schemes import Scheme, get_scheme
from initbench.core.targets import biases, init_targets, left_as_built


@dataclass
class Applied:
    """What :func:`apply` did to a model."""

    initialized: list[str] = field(default_factory=list)  # target names
    fallback: list[str] = field(default_factory=list)  # targets given torch's default instead
    biases: list[str] = field(default_factory=list)  # zeroed, or drawn from N(0, bias_var)
    left: dict[str, str] = field(default_factory=dict)  # parameter -> why it was left


def fitter(scheme: Scheme) -> ModuleType:
    """The module of a data-dependent scheme's fitter (``Scheme.fitter`` names it in this
    package): its ``fit_stack(net, x, runs)`` fits runs of a stacked network on their
    batches, its ``fit_module(model, data)`` any ``nn.Module`` on a batch. Adding a
    data-dependent scheme is that module and the scheme's family in
    :mod:`initbench.core.schemes`."""
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
) -> Applied:
    """Initializes every weight of ``model`` with ``scheme`` (the tutorial's
    ``initialize_weights()`` for any ``nn.Module``, torchvision models included).

    Args:
        model: the model, changed in place.
        scheme: a scheme id or :class:`~initbench.core.schemes.Scheme`.
        activation: the activation that ``matched`` gains refer to.
        generator: the random source (None: torch's global one).
        data: an input batch, needed by data-dependent schemes (``lsuv``).
        bias_var: biases are drawn from N(0, bias_var); 0 zeroes them.
        fallback: give torch's default to weights the scheme cannot take (``dirac`` on a
            Linear readout) instead of refusing.

    Returns:
        What was initialized, what fell back to torch's default, and what was left and why.

    Raises:
        UsageError: the scheme cannot take a weight (without ``fallback``), the model has
            no weight, or a data-dependent scheme got no ``data``.
    """
    scheme, activation = get_scheme(scheme), get_activation(activation)
    if scheme.data_dependent and data is None:
        raise UsageError(f"{scheme.id} is data-dependent: pass a batch as data=")
    targets = init_targets(model)
    if not targets:
        raise UsageError(f"{type(model).__name__} has no weight that a scheme initializes")
    params = dict(model.named_parameters())
    if fallback and all(scheme.not_applicable(t.view(params[t.param]).shape) for t in targets):
        raise UsageError(
            scheme.not_applicable(targets[0].view(params[targets[0].param]).shape) or ""
        )
    fell_back = fill_targets(params, targets, scheme, activation, generator, fallback=fallback)
    bias_names = biases(model)
    fill_biases(params, bias_names, bias_var, generator)
    if scheme.data_dependent:
        fitter(scheme).fit_module(model, data)
    return Applied(
        [t.name for t in targets if t.name not in fell_back],
        fell_back,
        bias_names,
        left_as_built(model),
    )
