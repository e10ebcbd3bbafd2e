"""Applying a scheme to any ``nn.Module``: its weights (:mod:`initbench.targets`) drawn
with the scheme, biases zeroed or drawn from N(0, bias_var), and a report of what was left
as built and why."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch
from torch import nn

from initbench.activations import Activation, get_activation
from initbench.errors import UsageError
from initbench.lsuv import lsuv_module
from initbench.schemes import Scheme, get_scheme, torch_default
from initbench.targets import Target, biases, init_targets, left_as_built


@dataclass
class Applied:
    """What :func:`apply` did to a model."""

    initialized: list[str] = field(default_factory=list)  # target names
    fallback: list[str] = field(default_factory=list)  # targets given torch's default instead
    biases: list[str] = field(default_factory=list)  # zeroed, or drawn from N(0, bias_var)
    left: dict[str, str] = field(default_factory=dict)  # parameter -> why it was left


@dataclass
class Deferred:
    """An orthogonal fill waiting for its QR: the weight part, its Gaussian draw (the one
    ``torch.nn.init.orthogonal_`` makes), and the gain."""

    part: torch.Tensor
    normal: torch.Tensor
    gain: float


def fill_targets(
    params: dict[str, torch.Tensor],
    targets: list[Target],
    scheme: Scheme,
    activation: Activation,
    generator: torch.Generator | None,
    *,
    fallback: bool = False,
    deferred: list[Deferred] | None = None,
) -> list[str]:
    """Fills each target of ``params`` (a name -> tensor mapping) in order.

    With ``deferred``, orthogonal fills draw their Gaussian matrix now and leave the QR to
    :func:`finish_orthogonal` (the generator's stream is the same either way).

    Returns:
        The targets that got torch's default because the scheme cannot take them
        (only with ``fallback``; otherwise such a target raises UsageError).
    """
    fell_back = []
    for target in targets:
        weight = target.view(params[target.param])
        reason = scheme.not_applicable(weight.shape)
        if reason:
            if not fallback:
                raise UsageError(f"{scheme.id} cannot initialize {target.name}: {reason}")
            torch_default().init(weight, activation, generator)
            fell_back.append(target.name)
        elif deferred is not None and scheme.orthogonal is not None:
            part, gain = scheme.orthogonal(weight, activation)
            rows = part.shape[0]
            normal = part.new_empty((rows, part.numel() // rows)).normal_(0, 1, generator=generator)
            deferred.append(Deferred(part, normal, gain))
        else:
            scheme.init(weight, activation, generator)
    return fell_back


def finish_orthogonal(
    deferred: list[Deferred], pool: Executor | None = None, workers: int = 1
) -> None:
    """The QRs of deferred orthogonal fills, one batch per matrix shape (split in
    ``workers`` parts run on ``pool`` when given): what ``torch.nn.init.orthogonal_``
    computes (Q with the signs of R's diagonal, times the gain), equal to it up to float
    rounding."""
    shapes: dict[tuple[int, int], list[Deferred]] = {}
    for item in deferred:
        shapes.setdefault(tuple(item.normal.shape), []).append(item)
    batches = []
    for items in shapes.values():
        size = -(-len(items) // workers)
        batches += [items[i : i + size] for i in range(0, len(items), size)]
    if pool is None:
        for batch in batches:
            _orthogonal_batch(batch)
    else:
        list(pool.map(_orthogonal_batch, batches))


@torch.no_grad()
def _orthogonal_batch(items: list[Deferred]) -> None:
    """One batched QR: ``orthogonal_``'s steps for matrices of one shape."""
    rows, cols = items[0].normal.shape
    normals = torch.stack([item.normal for item in items])
    if rows < cols:
        normals = normals.transpose(1, 2)
    q, r = torch.linalg.qr(normals)
    q = q * torch.diagonal(r, dim1=1, dim2=2).sign().unsqueeze(1)
    if rows < cols:
        q = q.transpose(1, 2)
    for item, matrix in zip(items, q, strict=True):
        item.part.view_as(matrix).copy_(matrix).mul_(item.gain)


def fill_biases(
    params: dict[str, torch.Tensor],
    names: list[str],
    bias_var: float,
    generator: torch.Generator | None,
) -> None:
    """Zeroes each bias, or draws it from N(0, bias_var) in order."""
    for name in names:
        if bias_var > 0:
            params[name].normal_(0.0, bias_var**0.5, generator=generator)
        else:
            params[name].zero_()


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
        scheme: a scheme id or :class:`~initbench.schemes.Scheme`.
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
        lsuv_module(model, data)
    return Applied(
        [t.name for t in targets if t.name not in fell_back],
        fell_back,
        bias_names,
        left_as_built(model),
    )
