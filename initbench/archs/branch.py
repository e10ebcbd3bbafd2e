"""The scalars of a residual branch, which recipes set: ``x -> skip x + gate f(x + shift_in)
+ shift_out``.

Their defaults (``skip = gate = 1``, ``shift_in = shift_out = 0``) leave the branch as
written (``x + f(x)``) to the last bit, and training leaves them there unless a scheme
sets them (:func:`~initbench.core.fill.learning_rate_scales`): ReZero and SkipInit start
the gate at 0 and train it, Fixup trains the gate and the shifts, DeepNorm sets the skip
(its alpha).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from initbench.core.roles import SETTING_DEFAULTS

# each scalar's role (initbench.archs.BRANCH_ROLES)
SCALARS = {"gate": "gate", "skip": "skip", "shift_in": "shift", "shift_out": "shift"}


class Branch(nn.Module):
    """A residual branch's scalars (the plain module's)."""

    def __init__(self) -> None:
        super().__init__()
        for name, role in SCALARS.items():
            self.register_parameter(name, nn.Parameter(torch.tensor(SETTING_DEFAULTS[role])))

    def forward(self, x: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return self.skip * x + self.gate * f(x + self.shift_in) + self.shift_out


def stacked_branch(
    x: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    scalars: Callable[[str], torch.Tensor],
) -> torch.Tensor:
    """A branch of every run: ``skip x + gate f(x + shift_in) + shift_out``, where
    ``scalars(name)`` gives every run's scalar shaped to broadcast against ``x``."""
    return scalars("skip") * x + scalars("gate") * f(x + scalars("shift_in")) + scalars("shift_out")
