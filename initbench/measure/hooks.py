"""Forward hooks on any ``nn.Module``: a row per call of every watched module, with
statistics of its output, of the gradient at that output, and of its own weights. The model
probe and the coordinate check both record through :class:`Recorder`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial

import pandas as pd
import torch
from torch import nn

from initbench.core.models import first_tensor, own_weights, watched

# statistics of a module call's output (detached, as float32)
OUTPUT_STATISTICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "out_mean": lambda value: value.mean(),
    "out_var": lambda value: value.var(correction=0),
    "out_abs_max": lambda value: value.abs().max(),
    "out_abs_mean": lambda value: value.abs().mean(),
}
GRADIENT_COLUMN = "grad_out_var"  # the variance of dL/d output
WEIGHT_COLUMNS = ["weight_var", "weight_grad_norm"]  # the module's own weights
ROW_COLUMNS = ["step", "module", "kind", "call", "order"]


class Recorder:
    """Forward hooks on the :func:`~initbench.core.models.watched` modules of ``net``;
    values stay on the device until :meth:`frame` copies them off at once.

    Args:
        net: the model; hooks are added now and removed by :meth:`remove` (or on leaving a
            ``with`` block).
        device: where the model computes.
        outputs: the :data:`OUTPUT_STATISTICS` to take of each call's output.
        gradients: also keep the variance of the gradient at each output
            (:data:`GRADIENT_COLUMN`), once a backward pass reaches it.
        weights: also take each module's weight variance and the norm of their gradients
            (:data:`WEIGHT_COLUMNS`), when :meth:`frame` is called.
    """

    def __init__(
        self,
        net: nn.Module,
        device: torch.device,
        outputs: Sequence[str],
        *,
        gradients: bool = False,
        weights: bool = False,
    ) -> None:
        self.modules = watched(net)
        self.outputs = [OUTPUT_STATISTICS[name] for name in outputs]
        self.columns = list(outputs)
        self.gradients, self.weights = gradients, weights
        self.nan = torch.tensor(math.nan, device=device)
        self.rows: list[tuple[int, str, str, int, int]] = []  # step, module, kind, call, order
        self.values: list[torch.Tensor] = []
        self.grads: dict[int, torch.Tensor] = {}  # row -> variance of dL/d output
        self.begin(0)
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def begin(self, step: int) -> None:
        """Rows from now on belong to ``step``, counted from a new forward pass."""
        self.step, self.calls, self.order = step, Counter(), 0

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            row = len(self.rows)
            self.rows.append((self.step, name, type(module).__name__, self.calls[name], self.order))
            self.calls[name] += 1
            self.order += 1
            tensor = first_tensor(output)
            if tensor is None or tensor.numel() == 0:
                self.values.append(self.nan.expand(len(self.outputs)))
                return
            value = tensor.detach().float()
            self.values.append(torch.stack([statistic(value) for statistic in self.outputs]))
            if self.gradients and tensor.requires_grad:
                tensor.register_hook(partial(self._keep_grad, row))

        return hook

    def _keep_grad(self, row: int, grad: torch.Tensor) -> None:
        self.grads[row] = grad.detach().float().var(correction=0)

    def remove(self) -> None:
        """Removes the hooks."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _weights(self, module: nn.Module) -> torch.Tensor:
        """Variance of the module's weights and the norm of their gradients (NaN: none)."""
        weights = own_weights(module)
        if not weights:
            return self.nan.expand(2)
        variance = torch.cat([w.detach().flatten().float() for w in weights]).var(correction=0)
        grads = [w.grad.float().square().sum() for w in weights if w.grad is not None]
        norm = torch.stack(grads).sum().sqrt() if grads else self.nan
        return torch.stack([variance, norm])

    def frame(self) -> pd.DataFrame:
        """A row per recorded call: :data:`ROW_COLUMNS`, then the output statistics, then
        the gradient's and the weights' columns when asked for."""
        columns = [*self.columns]
        parts = [torch.stack(self.values)] if self.values else []
        if self.gradients:
            columns.append(GRADIENT_COLUMN)
            grads = [self.grads.get(row, self.nan) for row in range(len(self.rows))]
            parts += [torch.stack(grads)[:, None]] if grads else []
        if self.weights:
            columns += WEIGHT_COLUMNS
            names = {name for _, name, _, _, _ in self.rows}
            stats = {name: self._weights(m) for name, m in self.modules if name in names}
            parts += [torch.stack([stats[row[1]] for row in self.rows])] if self.rows else []
        frame = pd.DataFrame(self.rows, columns=ROW_COLUMNS)
        values = torch.cat(parts, dim=1).cpu() if parts else torch.empty(0, len(columns))
        frame[columns] = values.double().numpy()
        return frame
