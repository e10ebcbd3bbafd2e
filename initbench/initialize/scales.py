"""One learned scale per weight and run, for the fitters that tune a network's weight
norms by gradient descent (GradInit, MetaInit).

A network's weights are held fixed as drawn; :class:`Scales` multiplies each weight (each
row block of a fused projection) of each run by its own scalar and gives the scaled
parameters to ``torch.func.functional_call``, so that any objective of the network's
outputs and gradients is differentiable in the scales. The fitted scales are then
written into the weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from initbench.archs.base import per_run_loss
from initbench.core.scheme import Scheme
from initbench.core.targets import Target, init_targets

SEED = 0  # random targets of a plain module's batch, when none are given


def higher_derivatives():
    """Attention by its plain formula, whose second and third derivatives torch has (its
    fused CPU kernel has no second)."""
    return sdpa_kernel(SDPBackend.MATH)


class Scales:
    """Scales ``(R, targets)`` of the weights of R stacked runs (or of one plain module,
    ``runs=None``), all starting at 1.

    Args:
        params: the parameters by name (a stacked network's carry a leading run axis).
        names: the names ``functional_call`` knows the parameters by, in ``params``' order.
        targets: the weights to scale.
        runs: the runs stacked on the leading axis, or None for a plain module.
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        names: dict[str, str],
        targets: list[Target],
        runs: int | None,
    ) -> None:
        self.base = {name: p.detach() for name, p in params.items()}
        self.names, self.targets, self.stacked = names, targets, runs is not None
        device = next(iter(self.base.values())).device
        self.alpha = torch.ones(runs or 1, len(targets), device=device, requires_grad=True)

    def params(self) -> dict[str, torch.Tensor]:
        """The scaled weights, by ``functional_call`` name (differentiable in ``alpha``)."""
        out: dict[str, list] = {}
        for index, target in enumerate(self.targets):
            base = self.base[target.param]
            if not self.stacked:
                base = base.unsqueeze(0)
            part = target.view(base.transpose(0, 1)).transpose(0, 1) if target.rows else base
            scale = self.alpha[:, index].view(-1, *[1] * (base.dim() - 1))
            out.setdefault(target.param, []).append(part * scale)
        scaled = {}
        for name, parts in out.items():
            value = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            scaled[self.names[name]] = value if self.stacked else value.squeeze(0)
        return scaled

    def per_run(self, values: torch.Tensor) -> torch.Tensor:
        """The sum of a parameter-shaped tensor over each run: ``(R,)``."""
        return values.flatten(1).sum(1) if self.stacked else values.sum().view(1)

    @torch.no_grad()
    def write(self, params: dict[str, torch.Tensor], runs: list[int] | None) -> None:
        """Multiplies each fitted run's weights (``runs``; all of a plain module's) by
        their scales."""
        for index, target in enumerate(self.targets):
            weight = params[target.param]
            for run in runs if runs is not None else [None]:
                part = target.view(weight if run is None else weight[run])
                part.mul_(self.alpha[0 if run is None else run, index])


def stacked_objective(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[Scales, Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]]:
    """The scales of a stacked network's weights, and its per-run loss on a batch as a
    function of the scaled parameters (and of the batch's samples to use)."""
    names = {name: f"stack.{name.replace('.', '__')}" for name in net.names}
    params = {name: net.param(name) for name in net.names}
    scales = Scales(params, names, net.targets, net.runs)

    def loss(scaled: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        with higher_derivatives():
            out = torch.func.functional_call(net, scaled, (x[:, rows],))
        return per_run_loss(out, y[:, rows])[0]

    return scales, loss


def module_objective(
    model: nn.Module, targets: list[Target], x: torch.Tensor, y: torch.Tensor | None
) -> tuple[Scales, Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]]:
    """The same for a plain module (one run), its batch's targets random classes of a
    fixed seed where none are given."""
    params = dict(model.named_parameters())
    scales = Scales(params, {name: name for name in params}, targets, None)
    if y is None:
        with torch.no_grad():
            shape = model(x[:1]).shape  # (1, ..., classes)
        generator = torch.Generator().manual_seed(SEED)
        y = torch.randint(shape[-1], (len(x), *shape[1:-1]), generator=generator).to(x.device)

    def loss(scaled: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        with higher_derivatives():
            out = torch.func.functional_call(model, scaled, (x[rows],))
        return per_run_loss(out.unsqueeze(0), y[rows].unsqueeze(0))[0]

    return scales, loss


Fit = Callable[..., list]  # (scales, loss, batch, runs, steps) -> the fit's trace


def fit_stack_with(
    fit: Fit, net: nn.Module, x: torch.Tensor, y: torch.Tensor, runs: list[int], scheme: Scheme
) -> list:
    """``fit`` for runs ``runs`` of a stacked network, on their batch ``x`` and targets
    ``y``, for the steps the scheme's id records; returns the fit's trace (the fitted
    runs' means)."""
    scales, loss = stacked_objective(net, x, y)
    trace = fit(scales, loss, x.shape[1], runs, int(scheme.params["steps"]))
    scales.write({name: net.param(name) for name in net.names}, runs)
    return trace


def fit_module_with(
    fit: Fit, model: nn.Module, data: torch.Tensor, labels: torch.Tensor | None, scheme: Scheme
) -> list:
    """``fit`` for any ``nn.Module`` on the batch ``data`` (``labels``: its classes, or
    random ones); returns the fit's trace."""
    scales, loss = module_objective(model, init_targets(model), data, labels)
    trace = fit(scales, loss, len(data), None, int(scheme.params["steps"]))
    scales.write(dict(model.named_parameters()), None)
    return trace
