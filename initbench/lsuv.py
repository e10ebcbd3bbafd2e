"""Layer-sequential unit variance (Mishkin & Matas 2016), the first data-dependent scheme.

After an orthogonal init, each weighted layer in turn is rescaled until its output has unit
variance on a data batch. With zero biases a layer's output is linear in its weight, so one
rescaling reaches the target exactly; the loop guards layers with non-zero biases.
"""

from __future__ import annotations

import torch
from torch import nn

from initbench.models import weighted_layers

TOLERANCE = 1e-3
MAX_ITERATIONS = 10


def unit_variance_scale(output: torch.Tensor, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """The factor ``1 / std`` that gives ``output`` unit variance (over ``dims``, default all)."""
    var = output.var() if dims is None else output.var(dim=dims)
    return var.clamp_min(torch.finfo(output.dtype).tiny).rsqrt()


@torch.no_grad()
def lsuv_(model: nn.Module, data: torch.Tensor) -> nn.Module:
    """Rescales every Linear and Conv weight of ``model`` so its output has unit variance."""
    captured: list[torch.Tensor] = []
    for layer in weighted_layers(model):
        handle = layer.register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            for _ in range(MAX_ITERATIONS):
                captured.clear()
                model(data)
                scale = unit_variance_scale(captured[0])
                if abs(float(scale) - 1.0) < TOLERANCE:
                    break
                layer.weight.mul_(scale)
        finally:
            handle.remove()
    return model
