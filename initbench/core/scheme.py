"""What a scheme is: a weight distribution with fixed parameters, or a recipe that gives each
weight of a network its own (by role, block and depth), and a family of them.

A *plain* scheme (``xavier_normal[gain=matched]``) fills every weight with one rule of its
shape. A *recipe* (``gpt2``, ``fixup``, ``mup``) is a scheme whose :class:`Recipe` chooses a
plain scheme for each weight's :class:`~initbench.core.roles.Site`, may set the scalars of
residual branches (gates, skips, shifts), may scale each parameter's learning rate when a
sweep trains, and may not apply to a network at all (Fixup without residual branches).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from initbench.core.activations import Activation
from initbench.core.errors import UsageError
from initbench.core.ids import format_id, format_value, parse_number
from initbench.core.roles import Site, fans

if TYPE_CHECKING:
    import torch

GAIN_SETTINGS = ("unit", "matched")

InitFn = Callable[["torch.Tensor", Activation, "torch.Generator | None"], None]
MomentsFn = Callable[[Sequence[int], Activation], "tuple[float, float]"]
GainFn = Callable[[Activation], float]


@dataclass(frozen=True)
class Recipe:
    """How a recipe treats each part of a network.

    Attributes:
        weight: the plain scheme that fills the weight at a site.
        setting: the value a residual branch's scalar (a ``gate``, ``skip`` or ``shift``
            site) starts at and the multiplier of its learning rate, or None to keep the
            architecture's (1 or 0, not trained).
        lr_scale: the multiplier of a weight's learning rate when the sweep trains with
            an optimizer (``sgd`` or ``adam``): muP's.
        needs: why the recipe cannot initialize a network with these weight sites, or None.
    """

    weight: Callable[[Site], Scheme]
    setting: Callable[[Site], tuple[float, float] | None] = lambda site: None
    lr_scale: Callable[[Site, str], float] = lambda site, optimizer: 1.0
    needs: Callable[[Sequence[Site]], str | None] = lambda sites: None


@dataclass(frozen=True, eq=False)
class Scheme:
    """An initializer with fixed parameters.

    Attributes:
        name: the family (``xavier_normal``), usually a ``torch.nn.init`` function less its
            trailing underscore.
        params: the id parameters, in id order.
        init: fills one weight tensor in place (plain schemes; a recipe fills each weight
            with the plain scheme :meth:`at` its site).
        moments: closed-form ``(mean, variance)`` of the weight entries for a shape, or None.
        theory: the mean-field variance map applies (zero-mean entries of variance
            ``sigma_w^2 / fan_in``, independent or orthogonal).
        kind: the distribution's shape (``normal``, ``uniform``, ``orthogonal``, ...): two
            schemes of one kind and the same moments on a shape draw the same weights.
        dims: the weight dimensionalities the initializer accepts.
        fitter: the data-dependent fitter that adjusts the drawn weights on a batch: the
            name of its module in :mod:`initbench.initialize` (``lsuv``); None: the scheme
            needs no data.
        covers: the ``torch.nn.init`` functions this family exercises.
        gain: the gain the scheme uses for an activation (None: it takes no gain).
        extra: distribution parameters the moments do not fix (truncation, sparsity).
        orthogonal: for schemes that end in ``torch.nn.init.orthogonal_``: the part of a
            weight it fills and the gain (the rest prepared), so many weights' QRs can run
            as one batch with the same draws (:func:`initbench.core.fill.finish_orthogonal`).
        global_rng: the initializer also draws from torch's global generator (``sparse_``):
            runs cannot draw in parallel threads.
        recipe: a recipe's rules by site (None: a plain scheme).
    """

    name: str
    params: dict[str, object]
    init: InitFn
    moments: MomentsFn | None
    theory: bool
    kind: str
    dims: tuple[int, ...] = (2, 3, 4, 5)
    fitter: str | None = None
    covers: tuple[str, ...] = field(default=())
    gain: GainFn | None = None
    extra: tuple[object, ...] = ()
    orthogonal: Callable[[torch.Tensor, Activation], tuple[torch.Tensor, float]] | None = None
    global_rng: bool = False
    recipe: Recipe | None = None

    @property
    def data_dependent(self) -> bool:
        """The scheme also needs a data batch: its fitter adjusts the drawn weights."""
        return self.fitter is not None

    @property
    def id(self) -> str:
        return format_id(self.name, self.params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def at(self, site: Site) -> Scheme:
        """The plain scheme that fills the weight at ``site``: a recipe's choice, else this
        scheme."""
        return self if self.recipe is None else _resolve(self, site)

    def not_applicable(self, shape: Sequence[int]) -> str | None:
        """Why this plain scheme cannot initialize a weight of ``shape``, or None if it can."""
        if len(shape) not in self.dims:
            need = "/".join(str(d) for d in self.dims)
            return f"{self.name} needs {need}-D weights, got {len(shape)}-D {tuple(shape)}"
        return None

    def not_applicable_to(self, sites: Sequence[Site]) -> str | None:
        """Why this scheme cannot initialize a network whose weights sit at ``sites`` (in
        model order), or None: a recipe's own condition, then the first weight's shape."""
        if self.recipe is not None:
            reason = self.recipe.needs(sites)
            if reason:
                return reason
        return self.at(sites[0]).not_applicable(sites[0].shape)

    def setting(self, site: Site) -> tuple[float, float] | None:
        """The start value and learning-rate multiplier this scheme gives a residual
        branch's scalar, or None to keep the architecture's."""
        return None if self.recipe is None else self.recipe.setting(site)

    def lr_scale(self, site: Site, optimizer: str) -> float:
        """The multiplier of the learning rate of the weight at ``site`` when it trains
        with ``optimizer`` (``sgd``, ``adam``): 1 but for recipes such as muP's."""
        return 1.0 if self.recipe is None else self.recipe.lr_scale(site, optimizer)

    @property
    def gain_setting(self) -> str:
        """The gain setting as ids spell it (``unit``, ``matched``, ``1.5``; kaiming's
        ``nonlinearity``), or an empty string for schemes without one."""
        if self.gain is None:
            return ""
        return format_value(self.params.get("gain", self.params.get("nonlinearity")))

    def signature(self, site: Site, activation: Activation) -> tuple[object, ...]:
        """What fixes the distribution of the weight at ``site``: equal signatures on every
        weight of a cell make two schemes equivalent there (the same seed draws the same
        weights, up to float rounding)."""
        if self.data_dependent:
            return ("scheme", self.id)
        scheme = self.at(site)
        if scheme.moments is None:
            return ("scheme", scheme.id)
        mean, var = scheme.moments(site.shape, activation)
        return (scheme.kind, float(f"{mean:.9g}"), float(f"{var:.9g}"), *scheme.extra)

    def variance(self, site: Site, activation: Activation) -> float:
        """``Var(w)`` of the entries at ``site`` where the mean-field theory applies, else
        NaN."""
        scheme = self.at(site)
        if self.data_dependent or not scheme.theory or scheme.moments is None:
            return math.nan
        return scheme.moments(site.shape, activation)[1]

    def sigma_w2(self, site: Site, activation: Activation) -> float:
        """``fan_in * Var(w)`` for the mean-field theory (NaN where it does not apply)."""
        return fans(site.shape)[0] * self.variance(site, activation)


@functools.lru_cache(maxsize=65536)
def _resolve(scheme: Scheme, site: Site) -> Scheme:
    return scheme.recipe.weight(site)  # type: ignore[union-attr]


def resolve_gain(setting: object, activation: Activation) -> float:
    """Turns a gain setting (``unit``, ``matched`` or a number) into a number."""
    if setting == "unit":
        return 1.0
    if setting == "matched":
        return activation.gain()
    return float(setting)  # type: ignore[arg-type]


def gain_setting(value: object) -> object:
    """A gain setting as given (``unit``, ``matched``, a number), checked."""
    if value in GAIN_SETTINGS:
        return value
    gain = parse_number(str(value), "gain")
    if not gain > 0 or not math.isfinite(gain):
        raise UsageError(f"gain must be unit, matched or a positive number, got {value!r}")
    return gain


@dataclass(frozen=True)
class Family:
    """A scheme family: how to build one from id parameters, and its documented variants.

    Attributes:
        build: the scheme from its id parameters.
        variants: the default variants; gain families take the grid's gains instead.
        takes_gain: one variant per gain setting of the grid.
        doc: what it does (to which roles, for a recipe).
        short: its name in a crowded header (``KN``); its name when empty.
        paper: where it comes from: the paper, or the reference code.
    """

    build: Callable[..., Scheme]
    variants: tuple[dict[str, object], ...]
    takes_gain: bool = False
    doc: str = ""
    short: str = ""
    paper: str = ""
