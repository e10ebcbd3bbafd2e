"""MetaInit (Dauphin & Schoenholz 2019): the fitter of the ``metainit`` scheme.

A scale per weight (one per run) is learned, from 1, so that the gradient quotient

    GQ = mean over parameters of |(g - H g) / g - 1| = mean |H g / g|

is small: a gradient step of size 1 would change the gradient little relative to itself,
the curvature is low where the gradient is large. ``H g`` is a Hessian-vector product
(the gradient of ``|g|^2 / 2``); ``g`` in the denominator moves from 0 by ``1e-5`` with
its sign (the reference code's ``gradient_quotient``). The scales move by Adam, as in the
reference code (``zhuchen03/gradinit``'s ``metainit``; the paper's Algorithm 1 uses signSGD
with momentum, which at a few steps overshoots the quotient's narrow minimum), on each
run's own batch (the fit stream, never the probe batch), for ``steps`` steps, the budget
its id records. The quotient is not convex in the scales and a step can raise it: each run
keeps the scales with the lowest quotient seen along the way (the start's included).
"""

from __future__ import annotations

import functools

import torch

from initbench.initialize.scales import (
    Scales,
    fit_module_with,
    fit_stack_with,
)

EPS = 1e-5
LR = 0.01  # Adam's on the scales


def quotient(scales: Scales, loss, batch: int) -> torch.Tensor:
    """Each run's gradient quotient ``(R,)`` on the whole batch."""
    rows = torch.arange(batch, device=scales.alpha.device)
    params = scales.params()
    values = list(params.values())
    grads = torch.autograd.grad(loss(params, rows).sum(), values, create_graph=True)
    half_square = sum(g.square().sum() / 2 for g in grads)
    products = torch.autograd.grad(half_square, values, create_graph=True)
    total, count = 0, 0
    for g, hg in zip(grads, products, strict=True):
        denominator = g + EPS * (2 * (g >= 0).float() - 1).detach()
        total = total + scales.per_run(((g - hg) / denominator - 1).abs())
        count += g[0].numel() if scales.stacked else g.numel()
    return total / count


@torch.enable_grad()  # apply() initializes under no_grad
def fit(scales: Scales, loss, batch: int, runs: list[int] | None, steps: int) -> list[float]:
    """``steps`` Adam steps on the scales, each run then set to its scales of lowest
    quotient; returns the fitted runs' mean quotient before every step, and that of the
    kept scales at the end."""
    chosen = torch.tensor(runs if runs is not None else [0], device=scales.alpha.device)
    optimizer = torch.optim.Adam([scales.alpha], lr=LR)
    trace, kept = [], scales.alpha.detach().clone()
    best = torch.full((len(kept),), torch.inf, device=kept.device)
    for step in range(steps + 1):
        value = quotient(scales, loss, batch)
        with torch.no_grad():
            better = value < best
            best = torch.where(better, value, best)
            kept[better] = scales.alpha[better]
        if step == steps:
            break
        trace.append(value[chosen].mean().item())
        optimizer.zero_grad()
        value[chosen].sum().backward()
        optimizer.step()
    with torch.no_grad():
        scales.alpha.copy_(kept)
    trace.append(best[chosen].mean().item())
    return trace


# the fitters: ``fit_stack(net, x, y, runs, scheme)`` and
# ``fit_module(model, data, labels, scheme)`` (see :mod:`initbench.initialize`), each
# returning the gradient quotient along the way
fit_stack = functools.partial(fit_stack_with, fit)
fit_module = functools.partial(fit_module_with, fit)
