"""Filling a weight target with a scheme: in order from one generator, orthogonal fills
optionally deferred so their QRs run batched, biases zeroed or drawn."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import torch

from initbench.core.activations import Activation
from initbench.core.errors import UsageError
from initbench.core.inits import torch_default
from initbench.core.roles import SETTING_DEFAULTS, Site
from initbench.core.scheme import Scheme
from initbench.core.targets import Target, weight_sites


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
    sites: list[Site] | None = None,
    fallback: bool = False,
    deferred: list[Deferred] | None = None,
) -> list[str]:
    """Fills each target of ``params`` (a name -> tensor mapping) in order, each with the
    plain scheme the scheme gives its site (``sites``: one per target; by default the
    targets' roles and blocks, and no width).

    With ``deferred``, orthogonal fills draw their Gaussian matrix now and leave the QR to
    :func:`finish_orthogonal` (the generator's stream is the same either way).

    Returns:
        The targets that got torch's default because the scheme cannot take them
        (only with ``fallback``; otherwise such a target raises UsageError).
    """
    if sites is None:
        sites = weight_sites(targets, [tuple(t.view(params[t.param]).shape) for t in targets])
    fell_back = []
    for target, site in zip(targets, sites, strict=True):
        weight = target.view(params[target.param])
        plain = scheme.at(site)
        reason = plain.not_applicable(weight.shape)
        if reason:
            if not fallback:
                raise UsageError(f"{scheme.id} cannot initialize {target.name}: {reason}")
            torch_default().init(weight, activation, generator)
            fell_back.append(target.name)
        elif deferred is not None and plain.orthogonal is not None:
            part, gain = plain.orthogonal(weight, activation)
            rows = part.shape[0]
            normal = part.new_empty((rows, part.numel() // rows)).normal_(0, 1, generator=generator)
            deferred.append(Deferred(part, normal, gain))
        else:
            plain.init(weight, activation, generator)
    return fell_back


def fill_settings(
    params: dict[str, torch.Tensor], settings: list[Target], sites: list[Site], scheme: Scheme
) -> None:
    """Sets each residual branch's scalar (gate, skip, shift) to the scheme's value, or to
    its architecture's default."""
    for target, site in zip(settings, sites, strict=True):
        value = scheme.setting(site)
        params[target.param].fill_(SETTING_DEFAULTS[target.role] if value is None else value[0])


def learning_rate_scales(
    settings: list[Target],
    setting_sites: list[Site],
    targets: list[Target],
    sites: list[Site],
    scheme: Scheme,
    optimizer: str,
) -> dict[str, float]:
    """The multiplier of each parameter's learning rate under ``scheme`` where it is not
    1: a recipe's on weights (muP's), 0 on a branch scalar the scheme leaves at its
    default (it stays there while training), the recipe's on one it sets.

    Raises:
        ValueError: a recipe gives the row blocks of one parameter different multipliers.
    """
    scales: dict[str, float] = {}
    for target, site in zip(settings, setting_sites, strict=True):
        value = scheme.setting(site)
        scales[target.param] = 0.0 if value is None else value[1]
    for target, site in zip(targets, sites, strict=True):
        scale = scheme.lr_scale(site, optimizer)
        if scales.setdefault(target.param, scale) != scale:
            raise ValueError(f"{scheme.id} scales the rows of {target.param} differently")
    return {name: scale for name, scale in scales.items() if scale != 1.0}


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
