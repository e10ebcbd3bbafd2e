"""The plain schemes: every ``torch.nn.init`` initializer and its variants, PyTorch's module
default, Keras's variance scaling, delta-orthogonal convolutions, the spectral rule and LSUV.

Each family's builder turns id parameters into a :class:`~initbench.core.scheme.Scheme` that
fills one weight by a rule of its shape; recipes (:mod:`initbench.core.recipes`) build on
these for each weight of a network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from initbench.core.activations import Activation, calculate_gain
from initbench.core.errors import UsageError
from initbench.core.lazy import LazyModule
from initbench.core.roles import fans
from initbench.core.scheme import Family, Scheme, gain_setting, resolve_gain

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")
init = LazyModule("torch.nn.init")  # imported when a scheme first draws


def uniform(a: float = 0.0, b: float = 1.0) -> Scheme:
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


def normal(std: float = 1.0, mean: float = 0.0) -> Scheme:
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


def truncated_normal_moments(std: float, a: float, b: float) -> tuple[float, float]:
    """Mean and variance of N(0, std^2) cut to [a, b]."""
    alpha, beta = a / std, b / std
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    z = cdf(beta) - cdf(alpha)
    shift = (pdf(alpha) - pdf(beta)) / z
    var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z - shift**2
    return std * shift, std**2 * var


def trunc_normal(std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Scheme:
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
        lambda shape, act: truncated_normal_moments(std, a, b),
        theory=a == -b,
        kind="trunc_normal",
        covers=("trunc_normal_",),
        extra=(a / std, b / std),
    )


def constant(val: float) -> Scheme:
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


def fixed(name: str, value: float) -> Scheme:
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


def eye() -> Scheme:
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


def dirac() -> Scheme:
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


def xavier(kind: str) -> Callable[..., Scheme]:
    def fill(*args, **kwargs):
        return getattr(init, f"xavier_{kind}_")(*args, **kwargs)

    def build(gain: object = "unit") -> Scheme:
        setting = gain_setting(gain)

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


def kaiming(kind: str) -> Callable[..., Scheme]:
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


def orthogonal(gain: object = "unit") -> Scheme:
    setting = gain_setting(gain)

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


def delta_orthogonal(gain: object = "unit") -> Scheme:
    """Xiao et al. 2018: an orthogonal matrix at the kernel's centre tap, zero elsewhere."""
    setting = gain_setting(gain)

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


def variance_scaling(
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


def sparse(sparsity: float = 0.1, std: float = 0.01) -> Scheme:
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


def lsuv() -> Scheme:
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


def spectral() -> Scheme:
    """The spectral condition (Yang, Simon & Bernstein 2023): N(0, std^2) with
    std = fan_in^-1/2 min(1, sqrt(fan_out / fan_in)), so that every layer's spectral norm
    scales as sqrt(fan_out / fan_in)."""

    def std(shape: Sequence[int]) -> float:
        fan_in, fan_out = fans(shape)
        return min(1.0, math.sqrt(fan_out / fan_in)) / math.sqrt(fan_in)

    return Scheme(
        "spectral",
        {},
        lambda w, act, g: init.normal_(w, 0.0, std(w.shape), generator=g),
        lambda shape, act: (0.0, std(shape) ** 2),
        theory=True,
        kind="normal",
    )


TORCH = "torch.nn.init (PyTorch)"
HE = "He, Zhang, Ren, Sun. Delving Deep into Rectifiers. ICCV 2015"
GLOROT = (
    "Glorot, Bengio. Understanding the difficulty of training deep feedforward neural "
    "networks. AISTATS 2010"
)
KAIMING_VARIANTS = tuple(
    {"mode": m, "nonlinearity": n} for m in ("fan_in", "fan_out") for n in ("matched", "leaky_relu")
)

FAMILIES: dict[str, Family] = {
    "uniform": Family(
        uniform,
        ({"a": 0.0, "b": 1.0}, {"a": -0.05, "b": 0.05}),
        doc="U(a, b); torch's default U(0, 1) fails (non-zero mean), U(+-0.05) is a common pick",
        short="U",
        paper=TORCH,
    ),
    "normal": Family(
        normal,
        ({"std": 0.01}, {"std": 1.0}),
        doc="N(0, std^2); the tutorial's std=0.01 vanishes, torch's default std=1 explodes",
        short="N",
        paper=TORCH,
    ),
    "trunc_normal": Family(
        trunc_normal,
        ({"std": 0.02}, {"std": 1.0}),
        doc="N(0, std^2) cut at [a, b]; std=0.02 as in BERT and ViT",
        short="TN",
        paper=TORCH,
    ),
    "constant": Family(
        constant,
        ({"val": 0.01},),
        doc="every weight the same: units stay symmetric",
        short="C",
        paper=TORCH,
    ),
    "ones": Family(lambda: fixed("ones", 1.0), ({},), doc="every weight 1", paper=TORCH),
    "zeros": Family(lambda: fixed("zeros", 0.0), ({},), doc="every weight 0", paper=TORCH),
    "eye": Family(eye, ({},), doc="identity matrix (2-D weights only)", paper=TORCH),
    "dirac": Family(dirac, ({},), doc="identity convolution (3-5-D weights only)", paper=TORCH),
    "xavier_uniform": Family(
        xavier("uniform"), ({},), True, "Glorot & Bengio 2010, uniform", "XU", GLOROT
    ),
    "xavier_normal": Family(
        xavier("normal"), ({},), True, "Glorot & Bengio 2010, normal", "XN", GLOROT
    ),
    "kaiming_uniform": Family(
        kaiming("uniform"),
        KAIMING_VARIANTS,
        doc="He et al. 2015, uniform; nonlinearity matched or torch's default (leaky_relu, a=0)",
        short="KU",
        paper=HE,
    ),
    "kaiming_normal": Family(
        kaiming("normal"),
        KAIMING_VARIANTS,
        doc="He et al. 2015, normal; nonlinearity matched or torch's default (leaky_relu, a=0)",
        short="KN",
        paper=HE,
    ),
    "orthogonal": Family(
        orthogonal,
        ({},),
        True,
        "Saxe et al. 2014, (semi-)orthogonal",
        "orth",
        "Saxe, McClelland, Ganguli. Exact solutions to the nonlinear dynamics of learning in "
        "deep linear neural networks. ICLR 2014",
    ),
    "sparse": Family(
        sparse,
        ({"sparsity": 0.1, "std": 0.01},),
        doc="Martens 2010 (2-D only)",
        paper="Martens. Deep learning via Hessian-free optimization. ICML 2010",
    ),
    "delta_orthogonal": Family(
        delta_orthogonal,
        ({},),
        True,
        "Xiao et al. 2018: orthogonal centre tap (3-5-D only)",
        "Δorth",
        "Xiao, Bahri, Sohl-Dickstein, Schoenholz, Pennington. Dynamical Isometry and a Mean "
        "Field Theory of CNNs. ICML 2018",
    ),
    "variance_scaling": Family(
        variance_scaling,
        ({"scale": 1.0, "mode": "fan_in", "distribution": "normal"},),
        doc="Keras/JAX VarianceScaling: variance scale / fan; scale is sigma_w^2",
        short="VS",
        paper="tf.keras.initializers.VarianceScaling, jax.nn.initializers.variance_scaling",
    ),
    "spectral": Family(
        spectral,
        ({},),
        doc="every weight N(0, std^2), std = fan_in^-1/2 min(1, sqrt(fan_out/fan_in))",
        short="spec",
        paper="Yang, Simon, Bernstein. A Spectral Condition for Feature Learning. 2023 "
        "(arXiv:2310.17813)",
    ),
    "torch_default": Family(
        torch_default,
        ({},),
        doc="nn.Linear/nn.Conv reset_parameters",
        short="torch",
        paper="torch.nn.Linear.reset_parameters (PyTorch)",
    ),
    "lsuv": Family(
        lsuv,
        ({},),
        doc="orthogonal + layer-sequential unit variance on data",
        short="LSUV",
        paper="Mishkin, Matas. All you need is a good init. ICLR 2016",
    ),
}
