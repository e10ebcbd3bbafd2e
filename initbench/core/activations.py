"""Activation functions, each with its ``calculate_gain`` entry and failure modes.

Importing this module does not import torch (so the command line lists activations at
once): each activation's function is looked up in torch on first use.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from initbench.core.errors import UsageError
from initbench.core.ids import format_id, parse_id, parse_number

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_LEAKY_SLOPE = 0.01
SATURATION_MARGIN = 0.01  # within 1% of a bound counts as saturated
# 1 / sqrt(E[phi(z)^2]) for z ~ N(0, 1), by Gauss-Hermite quadrature (100 nodes), for the
# activations torch's calculate_gain has no entry for; a test recomputes them
QUADRATURE_GAINS = {"gelu": 1.5335304411955348, "silu": 1.6765324703310907}


@dataclass(frozen=True, eq=False)
class Activation:
    """One activation function and what initbench knows about it.

    Attributes:
        name: registry name (``leaky_relu``).
        gain_name: the ``torch.nn.init.calculate_gain`` nonlinearity, or None when torch has
            no entry (then :meth:`gain` is the variance-preserving quadrature gain).
        gain_param: ``calculate_gain``'s ``param`` (LeakyReLU's negative slope).
        relu_family: units can die (zero output for a whole batch).
        bounds: output bounds that saturating activations approach.
        params: the id parameters.
    """

    name: str
    gain_name: str | None
    gain_param: float | None = None
    relu_family: bool = False
    bounds: tuple[float, float] | None = None
    params: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return format_id(self.name, self.params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @functools.cached_property
    def fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The elementwise function (torch)."""
        import torch
        import torch.nn.functional as F

        if self.name == "leaky_relu":
            return functools.partial(F.leaky_relu, negative_slope=self.gain_param)
        return {
            "identity": lambda x: x,
            "tanh": torch.tanh,
            "sigmoid": torch.sigmoid,
            "relu": torch.relu,
            "selu": F.selu,
            "gelu": F.gelu,
            "silu": F.silu,
        }[self.name]

    def gain(self) -> float:
        """The recommended gain: ``calculate_gain``'s, else ``1 / sqrt(E[phi(z)^2])``."""
        if self.gain_name is None:
            return QUADRATURE_GAINS[self.name]
        return calculate_gain(self.gain_name, self.gain_param)

    def module(self) -> nn.Module:
        """An ``nn.Module`` computing this activation."""
        return _module_class()(self.fn, self.id)

    def saturated_fraction(self, post: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """Fraction of outputs (over ``dims``) strictly within 1% of the range of a bound.

        Computed in float arithmetic (``sign(relu(|post - centre| - threshold))``), which
        runs several times faster on CPUs than comparison masks do.
        """
        lo, hi = self.bounds  # type: ignore[misc]
        threshold = (hi - lo) / 2 - SATURATION_MARGIN * (hi - lo)
        distance = (post - (lo + hi) / 2).abs_()
        return distance.sub_(threshold).clamp_(min=0).sign_().mean(dims)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """``torch.nn.init.calculate_gain`` for the nonlinearities initbench uses (a test checks
    it against torch's)."""
    if nonlinearity in ("linear", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = DEFAULT_LEAKY_SLOPE if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"no gain for {nonlinearity!r}")


@functools.cache
def _module_class() -> type:
    from torch import nn

    class Lambda(nn.Module):
        """An elementwise function as a module; ``extra_repr`` names it."""

        def __init__(self, fn: Callable, name: str) -> None:
            super().__init__()
            self.fn, self.name = fn, name

        def forward(self, x):
            return self.fn(x)

        def extra_repr(self) -> str:
            return self.name

    return Lambda


def _leaky_relu(negative_slope: float = DEFAULT_LEAKY_SLOPE) -> Activation:
    slope = float(negative_slope)
    return Activation(
        "leaky_relu",
        "leaky_relu",
        slope,
        relu_family=True,
        params={"negative_slope": slope} if slope != DEFAULT_LEAKY_SLOPE else {},
    )


_FACTORIES: dict[str, Callable[..., Activation]] = {
    "identity": lambda: Activation("identity", "linear"),
    "tanh": lambda: Activation("tanh", "tanh", bounds=(-1.0, 1.0)),
    "sigmoid": lambda: Activation("sigmoid", "sigmoid", bounds=(0.0, 1.0)),
    "relu": lambda: Activation("relu", "relu", relu_family=True),
    "leaky_relu": _leaky_relu,
    "selu": lambda: Activation("selu", "selu"),
    "gelu": lambda: Activation("gelu", None),
    "silu": lambda: Activation("silu", None),
}

ACTIVATION_NAMES = tuple(_FACTORIES)


def get_activation(activation_id: str | Activation) -> Activation:
    """Looks up ``relu``, ``leaky_relu``, ``leaky_relu[negative_slope=0.2]`` and so on.

    Args:
        activation_id: the id, or an activation (returned as it is).

    Returns:
        The activation.

    Raises:
        UsageError: an unknown activation or parameter.
    """
    if isinstance(activation_id, Activation):
        return activation_id
    name, raw = parse_id(activation_id)
    if name not in _FACTORIES:
        raise UsageError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATION_NAMES)}")
    try:
        params = {k: parse_number(v, f"{name} parameter {k}") for k, v in raw.items()}
        return _FACTORIES[name](**params)
    except TypeError:
        raise UsageError(f"activation {name!r} takes no parameters {sorted(raw)}") from None
