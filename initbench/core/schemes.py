"""The registry of initialization schemes: every ``torch.nn.init`` initializer and its variants.

A scheme is an initializer with fixed parameters. Its id, ``name[k=v,...]``, is a stable key
in stored results: ``xavier_normal[gain=matched]``,
``kaiming_normal[mode=fan_in,nonlinearity=matched]``, ``normal[std=0.01]``, ``torch_default``.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from initbench.core.activations import Activation, calculate_gain
from initbench.core.errors import UsageError
from initbench.core.ids import format_id, format_value, parse_id, parse_number
from initbench.core.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")
init = LazyModule("torch.nn.init")  # imported when a scheme first draws

GAIN_SETTINGS = ("unit", "matched")

InitFn = Callable[["torch.Tensor", Activation, "torch.Generator | None"], None]
MomentsFn = Callable[[Sequence[int], Activation], "tuple[float, float]"]
GainFn = Callable[[Activation], float]


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of this shape, as torch.nn.init computes them."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


@dataclass(frozen=True, eq=False)
class Scheme:
    """An initializer with fixed parameters.

    Attributes:
        name: the family (``xavier_normal``), usually a ``torch.nn.init`` function less its
            trailing underscore.
        params: the id parameters, in id order.
        init: fills one weight tensor in place.
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

    def not_applicable(self, shape: Sequence[int]) -> str | None:
        """Why this scheme cannot initialize a weight of ``shape``, or None if it can."""
        if len(shape) not in self.dims:
            need = "/".join(str(d) for d in self.dims)
            return f"{self.name} needs {need}-D weights, got {len(shape)}-D {tuple(shape)}"
        return None

    @property
    def gain_setting(self) -> str:
        """The gain setting as ids spell it (``unit``, ``matched``, ``1.5``; kaiming's
        ``nonlinearity``), or an empty string for schemes without one."""
        if self.gain is None:
            return ""
        return format_value(self.params.get("gain", self.params.get("nonlinearity")))

    def signature(self, shape: Sequence[int], activation: Activation) -> tuple[object, ...]:
        """What fixes the weights' distribution on ``shape``: equal signatures on every
        weight of a cell make two schemes equivalent there (the same seed draws the same
        weights, up to float rounding)."""
        if self.data_dependent or self.moments is None:
            return ("scheme", self.id)
        mean, var = self.moments(shape, activation)
        return (self.kind, float(f"{mean:.9g}"), float(f"{var:.9g}"), *self.extra)

    def variance(self, shape: Sequence[int], activation: Activation) -> float:
        """``Var(w)`` of the entries where the mean-field theory applies, else NaN."""
        if not self.theory or self.moments is None:
            return math.nan
        return self.moments(shape, activation)[1]

    def sigma_w2(self, shape: Sequence[int], activation: Activation) -> float:
        """``fan_in * Var(w)`` for the mean-field theory (NaN where it does not apply)."""
        if not self.theory or self.moments is None:
            return math.nan
        return fans(shape)[0] * self.moments(shape, activation)[1]


def resolve_gain(setting: object, activation: Activation) -> float:
    """Turns a gain setting (``unit``, ``matched`` or a number) into a number."""
    if setting == "unit":
        return 1.0
    if setting == "matched":
        return activation.gain()
    return float(setting)  # type: ignore[arg-type]


def _gain_setting(value: object) -> object:
    if value in GAIN_SETTINGS:
        return value
    gain = parse_number(str(value), "gain")
    if not gain > 0 or not math.isfinite(gain):
        raise UsageError(f"gain must be unit, matched or a positive number, got {value!r}")
    return gain


# ---- families -------------------------------------------------------------------------


def _uniform(a: float = 0.0, b: float = 1.0) -> Scheme:
    a, b = float(a), float(b)
    if not a < b:
        raise UsageError(f"uniform needs a < b, got a={a:g}, b={b:g}")
    return Scheme(
        "uniform",
        {"a": a, "b": b},
        lambda w, act, g: init.uniform_(w, a, b, generator=g),
        lambda shape, act: ((a + b) / 2, (b - a) ** 2 / 12),
        theory=a == -b,
        kind="uniform",
        covers=("uniform_",),
    )


def _normal(std: float = 1.0, mean: float = 0.0) -> Scheme:
    std, mean = float(std), float(mean)
    if not std >= 0:
        raise UsageError(f"normal needs a std >= 0, got std={std:g}")
    params = {"std": std} | ({"mean": mean} if mean else {})
    return Scheme(
        "normal",
        params,
        lambda w, act, g: init.normal_(w, mean, std, generator=g),
        lambda shape, act: (mean, std**2),
        theory=mean == 0.0,
        kind="normal",
        covers=("normal_",),
    )


def _truncated_normal_moments(std: float, a: float, b: float) -> tuple[float, float]:
    alpha, beta = a / std, b / std
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    z = cdf(beta) - cdf(alpha)
    shift = (pdf(alpha) - pdf(beta)) / z
    var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z - shift**2
    return std * shift, std**2 * var


def _trunc_normal(std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Scheme:
    std, a, b = float(std), float(a), float(b)
    if not std > 0:
        raise UsageError(f"trunc_normal needs a std > 0, got std={std:g}")
    if not a < b:
        raise UsageError(f"trunc_normal needs a < b, got a={a:g}, b={b:g}")
    params = {"std": std} | ({"a": a, "b": b} if (a, b) != (-2.0, 2.0) else {})
    return Scheme(
        "trunc_normal",
        params,
        lambda w, act, g: init.trunc_normal_(w, 0.0, std, a, b, generator=g),
        lambda shape, act: _truncated_normal_moments(std, a, b),
        theory=a == -b,
        kind="trunc_normal",
        covers=("trunc_normal_",),
        extra=(a / std, b / std),
    )


def _constant(val: float) -> Scheme:
    val = float(val)
    return Scheme(
        "constant",
        {"val": val},
        lambda w, act, g: init.constant_(w, val),
        lambda shape, act: (val, 0.0),
        theory=False,
        kind="constant",
        covers=("constant_",),
    )


def _fixed(name: str, value: float) -> Scheme:
    return Scheme(
        name,
        {},
        lambda w, act, g: getattr(init, f"{name}_")(w),
        lambda shape, act: (value, 0.0),
        theory=False,
        kind="constant",
        covers=(f"{name}_",),
    )


def _identity_moments(shape: Sequence[int], act: Activation) -> tuple[float, float]:
    p = min(shape[0], shape[1]) / math.prod(shape)
    return p, p - p * p


def _eye() -> Scheme:
    return Scheme(
        "eye",
        {},
        lambda w, act, g: init.eye_(w),
        _identity_moments,
        theory=False,
        kind="identity",
        dims=(2,),
        covers=("eye_",),
    )


def _dirac() -> Scheme:
    return Scheme(
        "dirac",
        {},
        lambda w, act, g: init.dirac_(w),
        _identity_moments,
        theory=False,
        kind="identity",
        dims=(3, 4, 5),
        covers=("dirac_",),
    )


def _xavier(kind: str) -> Callable[..., Scheme]:
    def fill(*args, **kwargs):
        return getattr(init, f"xavier_{kind}_")(*args, **kwargs)

    def build(gain: object = "unit") -> Scheme:
        setting = _gain_setting(gain)

        def moments(shape: Sequence[int], act: Activation) -> tuple[float, float]:
            fan_in, fan_out = fans(shape)
            return 0.0, resolve_gain(setting, act) ** 2 * 2.0 / (fan_in + fan_out)

        return Scheme(
            f"xavier_{kind}",
            {"gain": setting},
            lambda w, act, g: fill(w, resolve_gain(setting, act), generator=g),
            moments,
            theory=True,
            kind=kind,
            covers=(f"xavier_{kind}_",),
            gain=lambda act: resolve_gain(setting, act),
        )

    return build


def _kaiming_gain(nonlinearity: str, act: Activation) -> float:
    if nonlinearity == "matched":
        return act.gain()
    return calculate_gain("leaky_relu", 0)  # torch's default: leaky_relu with a=0


def _kaiming(kind: str) -> Callable[..., Scheme]:
    def fill(*args, **kwargs):
        return getattr(init, f"kaiming_{kind}_")(*args, **kwargs)

    def build(mode: str = "fan_in", nonlinearity: str = "matched") -> Scheme:
        if mode not in ("fan_in", "fan_out"):
            raise UsageError(f"kaiming mode must be fan_in or fan_out, got {mode!r}")
        if nonlinearity not in ("matched", "leaky_relu"):
            raise UsageError(
                f"kaiming nonlinearity must be matched or leaky_relu (torch's default), "
                f"got {nonlinearity!r}"
            )

        def fill_weight(w: torch.Tensor, act: Activation, g: torch.Generator | None) -> None:
            if nonlinearity == "leaky_relu":
                fill(w, 0, mode, "leaky_relu", generator=g)
            elif act.gain_name is not None:
                fill(w, act.gain_param or 0, mode, act.gain_name, generator=g)
            else:  # calculate_gain has no entry: torch's linear fill times the quadrature gain
                fill(w, 0, mode, "linear", generator=g)
                w.mul_(act.gain())

        def moments(shape: Sequence[int], act: Activation) -> tuple[float, float]:
            fan = fans(shape)[0 if mode == "fan_in" else 1]
            return 0.0, _kaiming_gain(nonlinearity, act) ** 2 / fan

        return Scheme(
            f"kaiming_{kind}",
            {"mode": mode, "nonlinearity": nonlinearity},
            fill_weight,
            moments,
            theory=True,
            kind=kind,
            covers=(f"kaiming_{kind}_",),
            gain=lambda act: _kaiming_gain(nonlinearity, act),
        )

    return build


def _orthogonal(gain: object = "unit") -> Scheme:
    setting = _gain_setting(gain)

    def moments(shape: Sequence[int], act: Activation) -> tuple[float, float]:
        rows = shape[0]
        cols = math.prod(shape) // rows
        return 0.0, resolve_gain(setting, act) ** 2 / max(rows, cols)

    return Scheme(
        "orthogonal",
        {"gain": setting},
        lambda w, act, g: init.orthogonal_(w, resolve_gain(setting, act), generator=g),
        moments,
        theory=True,
        kind="orthogonal",
        covers=("orthogonal_",),
        gain=lambda act: resolve_gain(setting, act),
        orthogonal=lambda w, act: (w, resolve_gain(setting, act)),
    )


def _delta_orthogonal(gain: object = "unit") -> Scheme:
    """Xiao et al. 2018: an orthogonal matrix at the kernel's centre tap, zero elsewhere."""
    setting = _gain_setting(gain)

    def centre(w: torch.Tensor, act: Activation) -> tuple[torch.Tensor, float]:
        w.zero_()
        tap = tuple(k // 2 for k in w.shape[2:])
        return w[(slice(None), slice(None), *tap)], resolve_gain(setting, act)

    def fill(w: torch.Tensor, act: Activation, g: torch.Generator | None) -> None:
        part, gain = centre(w, act)
        init.orthogonal_(part, gain, g)

    def moments(shape: Sequence[int], act: Activation) -> tuple[float, float]:
        taps = math.prod(shape[2:])
        return 0.0, resolve_gain(setting, act) ** 2 / max(shape[0], shape[1]) / taps

    return Scheme(
        "delta_orthogonal",
        {"gain": setting},
        fill,
        moments,
        theory=True,
        kind="delta_orthogonal",
        dims=(3, 4, 5),
        gain=lambda act: resolve_gain(setting, act),
        orthogonal=centre,
    )


def _variance_scaling(
    scale: float = 1.0, mode: str = "fan_in", distribution: str = "normal"
) -> Scheme:
    """Keras/JAX ``VarianceScaling``: entries of variance ``scale / fan`` (fan_in, fan_out or
    their mean), normal or uniform. ``scale`` is the mean-field ``sigma_w^2``."""
    scale = float(scale)
    if not scale >= 0 or not math.isfinite(scale):
        raise UsageError(f"variance_scaling needs a scale >= 0, got {scale:g}")
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise UsageError(f"variance_scaling mode must be fan_in, fan_out or fan_avg, got {mode!r}")
    if distribution not in ("normal", "uniform"):
        raise UsageError(
            f"variance_scaling distribution must be normal or uniform, got {distribution!r}"
        )

    def variance(shape: Sequence[int]) -> float:
        fan_in, fan_out = fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        return scale / fan

    def fill(w: torch.Tensor, act: Activation, g: torch.Generator | None) -> None:
        std = math.sqrt(variance(w.shape))
        if distribution == "normal":
            init.normal_(w, 0.0, std, generator=g)
        else:
            init.uniform_(w, -math.sqrt(3) * std, math.sqrt(3) * std, generator=g)

    return Scheme(
        "variance_scaling",
        {"scale": scale, "mode": mode, "distribution": distribution},
        fill,
        lambda shape, act: (0.0, variance(shape)),
        theory=True,
        kind=distribution,
    )


def _with_global_seed(source: torch.Generator | None, fill: Callable, *args, **kwargs) -> None:
    """Runs ``fill`` with torch's global RNG seeded from ``source``.

    ``sparse_`` draws its zero positions from the global RNG even when given a generator.
    """
    if source is None:
        fill(*args, **kwargs)
        return
    seed = int(torch.randint(2**62, (1,), generator=source))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fill(*args, **kwargs)


def _sparse(sparsity: float = 0.1, std: float = 0.01) -> Scheme:
    sparsity, std = float(sparsity), float(std)
    if not 0 <= sparsity < 1:
        raise UsageError(f"sparse needs 0 <= sparsity < 1, got {sparsity:g}")
    if not std >= 0:
        raise UsageError(f"sparse needs a std >= 0, got std={std:g}")

    def moments(shape: Sequence[int], act: Activation) -> tuple[float, float]:
        rows = shape[0]
        kept = rows - math.ceil(sparsity * rows)
        return 0.0, std**2 * kept / rows

    return Scheme(
        "sparse",
        {"sparsity": sparsity, "std": std},
        lambda w, act, g: _with_global_seed(g, init.sparse_, w, sparsity, std, generator=g),
        moments,
        theory=True,
        kind="sparse",
        dims=(2,),
        covers=("sparse_",),
        extra=(sparsity,),
        global_rng=True,
    )


_TORCH_DEFAULT_A = math.sqrt(5)


def torch_default() -> Scheme:
    """What ``nn.Linear`` and ``nn.Conv*`` do in ``reset_parameters``: U(+-1/sqrt(fan_in))."""
    return Scheme(
        "torch_default",
        {},
        lambda w, act, g: init.kaiming_uniform_(w, a=_TORCH_DEFAULT_A, generator=g),
        lambda shape, act: (0.0, 1.0 / (3 * fans(shape)[0])),
        theory=True,
        kind="uniform",
    )


def _lsuv() -> Scheme:
    """Orthogonal init, then layer-sequential unit variance on data (Mishkin, Matas 2016)."""
    return Scheme(
        "lsuv",
        {},
        lambda w, act, g: init.orthogonal_(w, 1.0, generator=g),
        None,
        theory=False,
        kind="lsuv",
        fitter="lsuv",
        orthogonal=lambda w, act: (w, 1.0),
    )


@dataclass(frozen=True)
class Family:
    """A scheme family: how to build one from id parameters, and its documented variants."""

    build: Callable[..., Scheme]
    variants: tuple[dict[str, object], ...]  # default variants; gain families take grid gains
    takes_gain: bool = False
    doc: str = ""
    short: str = ""  # the family in a crowded header (``KN``); its name when empty


FAMILIES: dict[str, Family] = {
    "uniform": Family(
        _uniform,
        ({"a": 0.0, "b": 1.0}, {"a": -0.05, "b": 0.05}),
        doc="U(a, b); torch's default U(0, 1) fails (non-zero mean), U(+-0.05) is a common pick",
        short="U",
    ),
    "normal": Family(
        _normal,
        ({"std": 0.01}, {"std": 1.0}),
        doc="N(0, std^2); the tutorial's std=0.01 vanishes, torch's default std=1 explodes",
        short="N",
    ),
    "trunc_normal": Family(
        _trunc_normal,
        ({"std": 0.02}, {"std": 1.0}),
        doc="N(0, std^2) cut at [a, b]; std=0.02 as in BERT and ViT",
        short="TN",
    ),
    "constant": Family(
        _constant, ({"val": 0.01},), doc="every weight the same: units stay symmetric", short="C"
    ),
    "ones": Family(lambda: _fixed("ones", 1.0), ({},), doc="every weight 1"),
    "zeros": Family(lambda: _fixed("zeros", 0.0), ({},), doc="every weight 0"),
    "eye": Family(_eye, ({},), doc="identity matrix (2-D weights only)"),
    "dirac": Family(_dirac, ({},), doc="identity convolution (3-5-D weights only)"),
    "xavier_uniform": Family(
        _xavier("uniform"), ({},), True, "Glorot & Bengio 2010, uniform", short="XU"
    ),
    "xavier_normal": Family(
        _xavier("normal"), ({},), True, "Glorot & Bengio 2010, normal", short="XN"
    ),
    "kaiming_uniform": Family(
        _kaiming("uniform"),
        tuple(
            {"mode": m, "nonlinearity": n}
            for m in ("fan_in", "fan_out")
            for n in ("matched", "leaky_relu")
        ),
        doc="He et al. 2015, uniform; nonlinearity matched or torch's default (leaky_relu, a=0)",
        short="KU",
    ),
    "kaiming_normal": Family(
        _kaiming("normal"),
        tuple(
            {"mode": m, "nonlinearity": n}
            for m in ("fan_in", "fan_out")
            for n in ("matched", "leaky_relu")
        ),
        doc="He et al. 2015, normal; nonlinearity matched or torch's default (leaky_relu, a=0)",
        short="KN",
    ),
    "orthogonal": Family(
        _orthogonal, ({},), True, "Saxe et al. 2014, (semi-)orthogonal", short="orth"
    ),
    "sparse": Family(_sparse, ({"sparsity": 0.1, "std": 0.01},), doc="Martens 2010 (2-D only)"),
    "delta_orthogonal": Family(
        _delta_orthogonal,
        ({},),
        True,
        "Xiao et al. 2018: orthogonal centre tap (3-5-D only)",
        short="Δorth",
    ),
    "variance_scaling": Family(
        _variance_scaling,
        ({"scale": 1.0, "mode": "fan_in", "distribution": "normal"},),
        doc="Keras/JAX VarianceScaling: variance scale / fan; scale is sigma_w^2",
        short="VS",
    ),
    "torch_default": Family(
        torch_default, ({},), doc="nn.Linear/nn.Conv reset_parameters", short="torch"
    ),
    "lsuv": Family(
        _lsuv, ({},), doc="orthogonal + layer-sequential unit variance on data", short="LSUV"
    ),
}


def torch_initializers() -> list[str]:
    """Every public in-place initializer that the installed ``torch.nn.init`` exposes."""
    import torch.nn.init

    return sorted(
        name
        for name, fn in vars(torch.nn.init).items()
        if name.endswith("_") and not name.startswith("_") and inspect.isfunction(fn)
    )


def _build(name: str, params: dict[str, object]) -> Scheme:
    try:
        scheme = FAMILIES[name].build(**params)
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(f"scheme {name!r} got a bad parameter value: {error}") from None
    except TypeError:
        accepted = list(inspect.signature(FAMILIES[name].build).parameters)
        raise UsageError(
            f"scheme {name!r} takes parameters {accepted or 'none'}, got {sorted(params)}"
        ) from None
    for key, value in scheme.params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"scheme {name!r} needs a finite {key}, got {value}")
    return scheme


# parameter values as :func:`short_label` spells them
_SHORT_VALUES = {
    "matched": "g",  # the gain (or nonlinearity) matched to the activation
    "unit": "1",
    "fan_in": "in",
    "fan_out": "out",
    "leaky_relu": "lrelu",
    "normal": "n",
    "uniform": "u",
    "truncated_normal": "tn",
}


def short_label(scheme_id: str) -> str:
    """A scheme in a few characters, for crowded headers: its family's short name, then
    its parameter values (``KN in,g`` is ``kaiming_normal[mode=fan_in,nonlinearity=matched]``,
    ``XU 1`` is ``xavier_uniform[gain=unit]``); pages that use it print the key."""
    name, params = parse_id(scheme_id)
    family = FAMILIES.get(name)
    head = family.short if family and family.short else name
    values = ",".join(_SHORT_VALUES.get(v, v) for v in params.values())
    return f"{head} {values}" if values else head


def get_scheme(scheme_id: str | Scheme) -> Scheme:
    """Builds a scheme from its id, e.g. ``normal[std=0.05]`` or ``xavier_normal[gain=matched]``.

    Args:
        scheme_id: the id, or a scheme (returned as it is).

    Returns:
        The scheme.

    Raises:
        UsageError: an unknown family, or parameters it does not take or cannot use.
    """
    if isinstance(scheme_id, Scheme):
        return scheme_id
    name, params = parse_id(scheme_id)
    if name not in FAMILIES:
        raise UsageError(f"unknown scheme {name!r}; choose from {', '.join(FAMILIES)}")
    return _build(name, dict(params))


def expand_schemes(
    patterns: Iterable[str], gains: Sequence[object] = GAIN_SETTINGS
) -> list[Scheme]:
    """Expands scheme patterns (``xavier*``, ``*``) and explicit ids into schemes.

    A pattern matches family names (fnmatch) and yields each family's documented variants,
    gain-taking families once per gain setting. An explicit id (``normal[std=0.05]``) yields
    exactly that scheme. Order follows the registry; duplicates are dropped.

    Args:
        patterns: fnmatch patterns of family names, or explicit scheme ids.
        gains: the gain settings (``unit``, ``matched`` or numbers) gain-taking families
            are expanded over.

    Returns:
        The schemes, each once.

    Raises:
        UsageError: a pattern that matches no family, or a bad id or gain.
    """
    gains = [_gain_setting(g) for g in gains]
    found: dict[str, Scheme] = {}
    for pattern in patterns:
        pattern = pattern.strip()
        if "=" in pattern:
            scheme = get_scheme(pattern)
            found.setdefault(scheme.id, scheme)
            continue
        names = [n for n in FAMILIES if fnmatch.fnmatchcase(n, pattern)]
        if not names:
            raise UsageError(f"no scheme matches {pattern!r}; choose from {', '.join(FAMILIES)}")
        for name in names:
            family = FAMILIES[name]
            variants = [{"gain": g} for g in gains] if family.takes_gain else family.variants
            for params in variants:
                scheme = _build(name, dict(params))
                found.setdefault(scheme.id, scheme)
    return list(found.values())
