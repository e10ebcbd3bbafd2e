"""Activation functions, each with its ``calculate_gain`` entry and failure modes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from initbench import theory
from initbench.errors import UsageError
from initbench.ids import format_id, parse_id, parse_number

DEFAULT_LEAKY_SLOPE = 0.01
SATURATION_MARGIN = 0.01  # within 1% of a bound counts as saturated


@dataclass(frozen=True, eq=False)
class Activation:
    """One activation function and what initbench knows about it.

    Attributes:
        name: registry name (``leaky_relu``).
        fn: the elementwise function.
        gain_name: the ``torch.nn.init.calculate_gain`` nonlinearity, or None when torch has
            no entry (then :meth:`gain` uses the variance-preserving quadrature gain).
        gain_param: ``calculate_gain``'s ``param`` (LeakyReLU's negative slope).
        relu_family: units can die (zero output for a whole batch).
        bounds: output bounds that saturating activations approach.
        params: the id parameters.
    """

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
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

    def gain(self) -> float:
        """The recommended gain: ``calculate_gain``'s, else ``1 / sqrt(E[phi(z)^2])``."""
        if self.gain_name is not None:
            return torch.nn.init.calculate_gain(self.gain_name, self.gain_param)
        return 1.0 / math.sqrt(theory.expect(lambda h: self.fn(h) ** 2))

    def module(self) -> nn.Module:
        """An ``nn.Module`` computing this activation."""
        return _Lambda(self.fn, self.id)

    def saturated_fraction(self, post: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """Fraction of outputs (over ``dims``) strictly within 1% of the range of a bound.

        Computed in float arithmetic (``sign(relu(|post - centre| - threshold))``), which
        runs several times faster on CPUs than comparison masks do.
        """
        lo, hi = self.bounds  # type: ignore[misc]
        threshold = (hi - lo) / 2 - SATURATION_MARGIN * (hi - lo)
        distance = (post - (lo + hi) / 2).abs_()
        return distance.sub_(threshold).clamp_(min=0).sign_().mean(dims)


class _Lambda(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        super().__init__()
        self.fn, self.name = fn, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def _leaky_relu(negative_slope: float = DEFAULT_LEAKY_SLOPE) -> Activation:
    slope = float(negative_slope)
    return Activation(
        "leaky_relu",
        lambda x: F.leaky_relu(x, slope),
        "leaky_relu",
        slope,
        relu_family=True,
        params={"negative_slope": slope} if slope != DEFAULT_LEAKY_SLOPE else {},
    )


_FACTORIES: dict[str, Callable[..., Activation]] = {
    "identity": lambda: Activation("identity", lambda x: x, "linear"),
    "tanh": lambda: Activation("tanh", torch.tanh, "tanh", bounds=(-1.0, 1.0)),
    "sigmoid": lambda: Activation("sigmoid", torch.sigmoid, "sigmoid", bounds=(0.0, 1.0)),
    "relu": lambda: Activation("relu", torch.relu, "relu", relu_family=True),
    "leaky_relu": _leaky_relu,
    "selu": lambda: Activation("selu", F.selu, "selu"),
    "gelu": lambda: Activation("gelu", F.gelu, None),
    "silu": lambda: Activation("silu", F.silu, None),
}

ACTIVATION_NAMES = tuple(_FACTORIES)


def get_activation(activation_id: str | Activation) -> Activation:
    """Looks up ``relu``, ``leaky_relu``, ``leaky_relu[negative_slope=0.2]`` and so on."""
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
