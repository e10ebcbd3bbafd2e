"""GradInit (Zhu et al. 2021): the fitter of the ``gradinit`` scheme.

A scale ``alpha_i >= 0.01`` per weight (one per run) is learned, from 1, so that one
optimizer step from the scaled weights lowers the loss most: on half of its batch the
gradient ``g`` is taken; while its norm exceeds ``gamma`` the scales shrink it (the
constraint), else they minimize the loss after the step ``theta - eta g``, on the other
half, divided by ``eta`` (the reference code's ``gradinit`` with ``gradinit_alg=sgd``, an
L2 norm). The scales move by Adam. Each run fits on its own batch (the fit stream, never
the probe batch) for ``steps`` steps, the budget its id records.
"""

from __future__ import annotations

import functools

import torch

from initbench.initialize.scales import (
    Scales,
    fit_module_with,
    fit_stack_with,
)

ETA = 0.1  # the step's learning rate (gradinit_eta)
GAMMA = 1.0  # the bound on the gradient's L2 norm (gradinit_gamma)
MIN_SCALE = 0.01  # gradinit_min_scale
LR = 0.05  # Adam's on the scales (the reference code's 1e-3 runs hundreds of steps)


def objective(scales: Scales, loss, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each run's GradInit objective, its gradient's norm and its loss after the step
    (each ``(R,)``)."""
    half = torch.arange(batch // 2, device=scales.alpha.device)
    other = torch.arange(batch // 2, batch, device=scales.alpha.device)
    params = scales.params()
    first = loss(params, half)
    grads = torch.autograd.grad(first.sum(), list(params.values()), create_graph=True)
    norm = sum(scales.per_run(g.square()) for g in grads).sqrt()
    stepped = {name: p - ETA * g for (name, p), g in zip(params.items(), grads, strict=True)}
    after = loss(stepped, other)
    return torch.where(norm > GAMMA, norm, after / ETA), norm, after


@torch.enable_grad()  # apply() initializes under no_grad
def fit(
    scales: Scales, loss, batch: int, runs: list[int] | None, steps: int
) -> list[tuple[float, float]]:
    """``steps`` Adam steps on the scales; returns the fitted runs' mean gradient norm and
    loss after the step, before every step and once more at the end."""
    optimizer = torch.optim.Adam([scales.alpha], lr=LR)
    chosen = torch.tensor(runs if runs is not None else [0], device=scales.alpha.device)
    trace = []
    for step in range(steps + 1):
        value, norm, after = (t[chosen] for t in objective(scales, loss, batch))
        trace.append((norm.mean().item(), after.mean().item()))
        if step == steps:
            break
        optimizer.zero_grad()
        value.sum().backward()
        optimizer.step()
        with torch.no_grad():
            scales.alpha.clamp_(min=MIN_SCALE)
    return trace


# the fitters: ``fit_stack(net, x, y, runs, scheme)`` and
# ``fit_module(model, data, labels, scheme)`` (see :mod:`initbench.initialize`), each
# returning the gradient norm and the loss after the step along the way
fit_stack = functools.partial(fit_stack_with, fit)
fit_module = functools.partial(fit_module_with, fit)
