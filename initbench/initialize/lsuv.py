"""Layer-sequential unit variance (Mishkin & Matas 2016): the fitter of the ``lsuv`` scheme.

After an orthogonal init, each weight in model order is rescaled until its output has unit
variance on a data batch. With zero biases a weight's output is linear in it, so one
rescaling reaches the target; the loop covers non-zero biases. A stacked network is walked
through its architecture's stages (:func:`fit_stack`); any ``nn.Module`` through forward hooks
(:func:`fit_module`), the two functions every fitter module of this package defines. The
gates of a recurrent layer (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) are computed inside its
kernel, where no hook sees them: they keep their orthogonal draw.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from initbench.core.targets import Target, init_targets, observe

if TYPE_CHECKING:
    from initbench.archs.base import Axes, Stacked
    from initbench.core.scheme import Scheme

TOLERANCE = 1e-3
MAX_ITERATIONS = 10


class _Captured(Exception):
    """Stops a forward pass once the output of interest is in hand."""


class _Capture:
    """Taps (see :class:`initbench.archs.base.Taps`) that keep one weight's output variance."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.variance: torch.Tensor | None = None

    def layer(
        self,
        index: int,
        pre: torch.Tensor,
        post: torch.Tensor | None,
        at: torch.Tensor | None = None,
    ) -> None:
        pass

    def weighted(self, target: int, out: torch.Tensor, axes: Axes) -> None:
        if target == self.target:
            self.variance = out.var(dim=axes.but_run(), correction=0)
            raise _Captured


def _scale(variance: torch.Tensor) -> torch.Tensor:
    return variance.clamp_min(torch.finfo(variance.dtype).tiny).rsqrt()


@torch.no_grad()
def fit_stack(
    net: Stacked, x: torch.Tensor, y: torch.Tensor, runs: list[int], scheme: Scheme
) -> None:
    """LSUV for runs ``runs`` of a stacked network, on their batch ``x`` ``(R, B, ...)``
    (``y``, the batch's targets, and ``scheme``, ``lsuv``, say nothing more to it)."""
    state = net.enter(x)
    for stage in net.stage_list:
        for index in stage.targets:
            target = net.targets[index]
            weight = net.param(target.param)
            for _ in range(MAX_ITERATIONS):
                capture = _Capture(index)
                with contextlib.suppress(_Captured):
                    stage.run(state, capture)
                if capture.variance is None:  # a recurrent layer's gate: no hook sees it
                    break
                scale = _scale(capture.variance[runs]).tolist()
                if max(abs(s - 1.0) for s in scale) < TOLERANCE:
                    break
                for run, s in zip(runs, scale, strict=True):
                    target.view(weight[run]).mul_(s)
        state = stage.run(state, None)


@torch.no_grad()
def fit_module(
    model: nn.Module, data: torch.Tensor, labels: torch.Tensor | None, scheme: Scheme
) -> nn.Module:
    """LSUV for any ``nn.Module``: each weight of :func:`~initbench.initialize.init_targets` in
    turn (but a recurrent layer's), its output observed with forward hooks on the batch
    ``data`` (``labels`` and ``scheme`` say nothing more to it)."""
    params = dict(model.named_parameters())
    for target in init_targets(model):
        weight = target.view(params[target.param])
        for _ in range(MAX_ITERATIONS):
            out = _target_output(model, target, data)
            if out is None:  # a recurrent layer's gate: no hook sees it
                break
            scale = float(_scale(out.var(correction=0)))
            if abs(scale - 1.0) < TOLERANCE:
                break
            weight.mul_(scale)
    return model


def _target_output(model: nn.Module, target: Target, data: torch.Tensor) -> torch.Tensor | None:
    """The output of one weight on ``data``, from a forward pass stopped right after it
    (None where no hook sees it: see :func:`~initbench.core.targets.observe`)."""
    captured: list[torch.Tensor] = []

    def keep(out: torch.Tensor) -> None:
        captured.append(out)
        raise _Captured

    handle = observe(model, target, keep)
    if handle is None:
        return None
    try:
        model(data)
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured[0]
