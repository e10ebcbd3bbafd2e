"""A hand-written, one-run-at-a-time probe in the tutorial's style: the independent check.

It builds the plain ``nn.Module`` of a run, initializes it through the public
:func:`initbench.apply` machinery with the run's generator (the same draws as the engine),
and computes every statistic with forward hooks and plain tensor operations.
"""

from __future__ import annotations

import math

import torch

from initbench.archs.base import network_parts
from initbench.core.fill import fill_biases, fill_settings, fill_targets
from initbench.core.rng import Stream, run_generator
from initbench.core.targets import biases
from initbench.initialize import fitter
from initbench.sweeps.engine import correlate_pairs
from initbench.sweeps.grid import Grid, Run


def build_run(run: Run, grid: Grid) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The run's plain network, initialized, with its probe batch and cotangent."""
    cell = run.cell
    inputs = grid.cell_inputs(cell)
    model = cell.arch.build(cell.depth, cell.width, cell.activation, inputs)
    generator = run_generator(run.seed, Stream.WEIGHTS)
    params = dict(model.named_parameters())
    parts = network_parts(model, cell.arch.roles, cell.width)
    with torch.no_grad():  # the engine's draw order: weights, then biases; batch, cotangent
        fill_targets(
            params,
            parts.targets,
            cell.scheme,
            cell.activation,
            generator,
            sites=parts.sites,
            fallback=True,
        )
        fill_biases(params, biases(model), cell.bias_var, generator)
        fill_settings(params, parts.settings, parts.setting_sites, cell.scheme)
    data = run_generator(run.seed, Stream.INPUTS)
    cpu = torch.device("cpu")
    x = cell.arch.draw_inputs(grid.batch_size, inputs, data, cpu)
    if x.is_floating_point():
        x = correlate_pairs(x, grid.input_corr)
    cotangent = torch.randn(
        grid.batch_size, *cell.arch.output_sample(inputs, grid.batch_size), generator=data
    )
    if cell.scheme.data_dependent:
        fit_data = run_generator(run.seed, Stream.FIT)
        fit_x = cell.arch.draw_inputs(grid.batch_size, inputs, fit_data, cpu)
        targets = (grid.batch_size, *cell.arch.output_sample(inputs, grid.batch_size)[:-1])
        fit_y = torch.randint(inputs.classes, targets, generator=fit_data)
        fitter(cell.scheme).fit_module(model, fit_x, fit_y, cell.scheme)
    return model, x, cotangent


def reference_probe(run: Run, grid: Grid, layer_weights) -> dict[str, list[float]]:
    """Every per-layer statistic of one run, computed plainly.

    ``layer_weights(l)`` names the parameters whose joint gradient norm is layer l's.
    """
    cell = run.cell
    model, x, cotangent = build_run(run, grid)
    pre = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: pre.append(o))
        for m in cell.arch.layer_modules(model)
    ]
    out = model(x)
    for hook in hooks:
        hook.remove()
    params = dict(model.named_parameters())
    names = [layer_weights(layer) for layer in range(1, cell.depth + 1)]
    weights = [params[n] for layer in names for n in layer]
    grads = torch.autograd.grad(out, pre + weights, grad_outputs=cotangent)
    grad_h, grad_w = grads[: cell.depth], list(grads[cell.depth :])
    act = cell.activation
    post = [act.fn(h) for h in pre]
    unit_axis = 1 if pre[0].dim() == 4 else -1  # images (B, C, H, W): channels are units

    def dead(h: torch.Tensor) -> float:
        if not act.relu_family:
            return math.nan
        per_unit = (h <= 0).movedim(unit_axis, 0).flatten(1).all(1)
        return per_unit.float().mean().item()

    def saturated(a: torch.Tensor) -> float:
        if act.bounds is None:
            return math.nan
        lo, hi = act.bounds
        margin = 0.01 * (hi - lo)
        return ((a < lo + margin) | (a > hi - margin)).float().mean().item()

    def corr(h: torch.Tensor) -> float:
        v = h.flatten(1).double()
        pairs = len(v) // 2
        a, b = v[0 : 2 * pairs : 2], v[1 : 2 * pairs : 2]
        return torch.nn.functional.cosine_similarity(a, b, dim=1).mean().item()

    def rank(h: torch.Tensor) -> float:
        v = h.flatten(1).double()
        s = torch.linalg.svdvals(v - v.mean(0))
        return ((s**2).sum() ** 2 / (s**4).sum()).item()

    grad_norms = []
    for layer in names:
        squares = [grad_w.pop(0).pow(2).sum() for _ in layer]
        grad_norms.append(torch.stack(squares).sum().sqrt().item())
    return {
        "pre_mean": [h.mean().item() for h in pre],
        "pre_var": [h.var(correction=0).item() for h in pre],
        "post_mean": [a.mean().item() for a in post],
        "post_var": [a.var(correction=0).item() for a in post],
        "dead_frac": [dead(h) for h in pre],
        "sat_frac": [saturated(a) for a in post],
        "grad_h_var": [g.var(correction=0).item() for g in grad_h],
        "grad_w_norm": grad_norms,
        "corr": [corr(h) for h in pre],
        "eff_rank": [rank(h) for h in pre],
    }
