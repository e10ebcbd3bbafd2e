"""A hand-written, one-run-at-a-time probe in the tutorial's style: the independent check."""

from __future__ import annotations

import math

import torch

from initbench.device import run_generator
from initbench.grid import Run
from initbench.models import build_model, weighted_layers
from initbench.schemes import apply


def reference_probe(
    run: Run, batch: int, in_features: int, out_features: int, spatial: tuple[int, ...] = ()
) -> dict[str, list[float]]:
    """Every per-layer statistic of one run, computed plainly."""
    cell = run.cell
    model = build_model(
        cell.arch, cell.depth, cell.width, cell.activation, in_features, out_features
    )
    generator = run_generator(run.seed)
    # the same draw order as the engine: weights, probe batch, cotangent
    with torch.no_grad():
        for layer in weighted_layers(model):
            cell.scheme.fill(layer.weight, cell.activation, generator)
            layer.bias.zero_()
    x = torch.randn(batch, in_features, *spatial, generator=generator)
    cotangent = torch.randn(batch, out_features, generator=generator)
    if cell.scheme.data_dependent:
        from initbench.lsuv import lsuv_

        lsuv_(model, x)
    pre = []
    hooks = [
        layer.register_forward_hook(lambda m, i, o: pre.append(o))
        for layer in weighted_layers(model)[:-1]
    ]
    out = model(x)
    for hook in hooks:
        hook.remove()
    weights = [layer.weight for layer in weighted_layers(model)[:-1]]
    grads = torch.autograd.grad(out, pre + weights, grad_outputs=cotangent)
    depth = cell.depth
    act = cell.activation
    post = [act.fn(h) for h in pre]

    def dead(h: torch.Tensor) -> float:  # h: (B, units, *spatial)
        if not act.relu_family:
            return math.nan
        return (h <= 0).transpose(0, 1).flatten(1).all(1).float().mean().item()

    def saturated(a: torch.Tensor) -> float:
        if act.bounds is None:
            return math.nan
        lo, hi = act.bounds
        margin = 0.01 * (hi - lo)
        return ((a < lo + margin) | (a > hi - margin)).float().mean().item()

    return {
        "pre_mean": [h.mean().item() for h in pre],
        "pre_var": [h.var(correction=0).item() for h in pre],
        "post_mean": [a.mean().item() for a in post],
        "post_var": [a.var(correction=0).item() for a in post],
        "dead_frac": [dead(h) for h in pre],
        "sat_frac": [saturated(a) for a in post],
        "grad_h_var": [g.var(correction=0).item() for g in grads[:depth]],
        "grad_w_norm": [g.norm().item() for g in grads[depth:]],
    }


def apply_reference(run: Run, model: torch.nn.Module) -> None:
    """Initializes a model through the public ``apply`` with the run's generator."""
    apply(model, run.cell.scheme, run.cell.activation, generator=run_generator(run.seed))
