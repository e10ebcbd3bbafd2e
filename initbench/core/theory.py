"""Mean-field theory of signal propagation in wide random networks.

For zero-mean weights with variance ``sigma_w^2 / fan_in`` (Poole et al. 2016; Schoenholz et
al. 2017) the pre-activation second moment follows ``q_1 = sigma_w^2 E[x^2]`` and
``q_l = sigma_w^2 E_z[phi(sqrt(q_{l-1}) z)^2]``, and the backward signal scales per layer by
``sigma_w^2 E[phi'(h_l)^2]``. Expectations over ``z ~ N(0, 1)`` use Gauss-Hermite quadrature.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TypeAlias

import numpy as np
import torch

Elementwise: TypeAlias = Callable[[torch.Tensor], torch.Tensor]

_NODES, _WEIGHTS = np.polynomial.hermite.hermgauss(100)  # even: no node at 0, where ReLU kinks
_Z = torch.tensor(_NODES * np.sqrt(2.0), dtype=torch.float64)
_W = torch.tensor(_WEIGHTS / np.sqrt(np.pi), dtype=torch.float64)


@functools.lru_cache(maxsize=1 << 16)  # cells of one sweep share most steps of their maps
def second_moment(phi: Elementwise, q: float) -> float:
    """``E[phi(sqrt(q) z)^2]`` for ``z ~ N(0, 1)``."""
    return float((phi(_Z * np.sqrt(q)).square() * _W).sum())


def derivative_second_moments(phi: Elementwise, q: Sequence[float]) -> list[float]:
    """Returns ``E[phi'(sqrt(q) z)^2]`` for each ``q``, in one autograd pass."""
    h = (_Z * torch.tensor(q, dtype=torch.float64).sqrt().unsqueeze(1)).requires_grad_(True)
    (dphi,) = torch.autograd.grad(phi(h).sum(), h)
    return (dphi.square() * _W).sum(1).tolist()


def pre_var(
    phi: Elementwise,
    sigma_w2: Sequence[float],
    input_second_moment: float = 1.0,
    bias_var: float = 0.0,
) -> list[float]:
    """Predicted second moment ``q_l`` of the pre-activations of hidden layers 1..depth.

    Args:
        phi: the activation function.
        sigma_w2: ``fan_in * Var(w)`` of each hidden layer's weights, first layer first.
        input_second_moment: ``E[x^2]`` of the network input.
        bias_var: ``sigma_b^2``, the variance of every bias.

    Returns:
        One ``q_l`` per hidden layer.
    """
    qs: list[float] = []
    q_in = input_second_moment
    for layer, s2 in enumerate(sigma_w2):
        q = s2 * (q_in if layer == 0 else second_moment(phi, q_in)) + bias_var
        qs.append(q)
        q_in = q
    return qs


def grad_h_var(
    phi: Elementwise,
    q: Sequence[float],
    back_gain: Sequence[float],
    cotangent_var: float,
) -> list[float]:
    """Predicted variance of ``dL/dh_l`` for hidden layers 1..depth.

    Args:
        phi: the activation function.
        q: predicted pre-activation second moments (from :func:`pre_var`).
        back_gain: for each hidden layer l, ``fan_out * Var(w)`` of the layer *after* it
            (the next hidden layer or the readout): how much ``Var(dL/da_l)`` is
            ``Var(dL/dh_{l+1})`` times.
        cotangent_var: variance of the cotangent fed in at the network output.

    Returns:
        One variance per hidden layer, first layer first.
    """
    slopes = derivative_second_moments(phi, q) if q else []
    out: list[float] = []
    upstream = cotangent_var
    for layer in reversed(range(len(q))):
        upstream = back_gain[layer] * upstream * slopes[layer]
        out.append(upstream)
    return out[::-1]


_N2 = 200  # Gauss-Hermite nodes per axis for the two-input expectations (kinked activations
# such as ReLU converge as 1/nodes: one step of the c-map within 6e-4 of the arc-cosine
# kernel)
_AXIS_NODES, _AXIS_WEIGHTS = np.polynomial.hermite.hermgauss(_N2)
_ZA = torch.tensor(_AXIS_NODES * np.sqrt(2.0), dtype=torch.float64)
_WA = torch.tensor(_AXIS_WEIGHTS / np.sqrt(np.pi), dtype=torch.float64)


@functools.lru_cache(maxsize=1 << 16)  # cells of one sweep share most steps of their maps
def cross_moment(phi: Elementwise, q: float, c: float) -> float:
    """``E[phi(u1) phi(u2)]`` for ``u1, u2 ~ N(0, q)`` with correlation ``c``."""
    c = min(max(c, -1.0), 1.0)
    scale = np.sqrt(q)
    first = phi(_ZA * scale) * _WA  # u1 on one axis
    u2 = (c * _ZA.unsqueeze(1) + np.sqrt(1.0 - c * c) * _ZA.unsqueeze(0)) * scale
    return float(first @ (phi(u2) @ _WA))


def pair_corr(
    phi: Elementwise,
    sigma_w2: Sequence[float],
    q: Sequence[float],
    input_corr: float,
    input_second_moment: float = 1.0,
    bias_var: float = 0.0,
) -> list[float]:
    """The c-map (Poole et al. 2016): the correlation ``c_l`` of two inputs' pre-activations
    at hidden layers 1..depth, from their input correlation.

    Args:
        phi: the activation function.
        sigma_w2: ``fan_in * Var(w)`` of each hidden layer's weights.
        q: the predicted second moments (from :func:`pre_var`).
        input_corr: the inputs' cosine similarity.
        input_second_moment: ``E[x^2]`` of either input.
        bias_var: ``sigma_b^2``.
    """
    cs: list[float] = []
    for layer, s2 in enumerate(sigma_w2):
        if layer == 0:
            q_ab = s2 * input_corr * input_second_moment + bias_var
        else:
            q_ab = s2 * cross_moment(phi, q[layer - 1], cs[-1]) + bias_var
        cs.append(q_ab / q[layer] if q[layer] > 0 else math.nan)
    return cs


def variance_map(phi: Elementwise, sigma_w2: float, bias_var: float) -> Callable[[float], float]:
    """``q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2``: one hidden layer's forward map."""
    return lambda q: sigma_w2 * second_moment(phi, q) + bias_var


def fixed_point(phi: Elementwise, sigma_w2: float, bias_var: float, start: float) -> float:
    """The variance fixed point that iterating ``q -> V(q)`` from ``start`` reaches (V of
    :func:`variance_map`, increasing in q): the nearest root of ``V(q) - q`` in the
    direction V moves, found on a grid of q spanning 2^-25 to 2^25 times ``start`` and refined
    by bisection; 0 where the iteration creeps down to a root at 0, ``inf`` where it grows
    without bound."""
    grid = start * 2.0 ** (torch.arange(-200, 201, dtype=torch.float64) / 8)
    moments = (phi(grid.sqrt().unsqueeze(1) * _Z) ** 2 * _W).sum(1)
    gap = (sigma_w2 * moments + bias_var - grid).tolist()  # V(q) - q along the grid
    values = grid.tolist()
    vmap = variance_map(phi, sigma_w2, bias_var)
    here = 200
    if abs(gap[here]) <= 1e-12 * max(1.0, start):
        return start
    step = -1 if gap[here] < 0 else 1
    index = here
    while 0 <= index + step <= 400 and (gap[index + step] < 0) == (gap[here] < 0):
        index += step
    if not 0 <= index + step <= 400:  # no root on the grid in that direction
        if step > 0:
            return math.inf
        return 0.0 if bias_var == 0 else _root(lambda q: vmap(q) - q, 0.0, values[0])
    lo, hi = sorted((values[index], values[index + step]))
    return _root(lambda q: vmap(q) - q, lo, hi)


def _root(f: Callable[[float], float], lo: float, hi: float) -> float:
    """A root of ``f`` in ``[lo, hi]`` where ``f(lo)`` and ``f(hi)`` differ in sign."""
    f_lo = f(lo)
    for _ in range(100):
        mid = (lo + hi) / 2
        f_mid = f(mid)
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return (lo + hi) / 2


def depth_scales(
    phi: Elementwise, sigma_w2: float, bias_var: float, q_start: float = 1.0
) -> dict[str, float]:
    """Mean-field depth scales of a deep stack of identical layers (Schoenholz et al. 2017).

    Returns:
        ``q_star`` (the variance fixed point reached from ``q_start``), ``chi1`` (``sigma_w^2
        E[phi'(sqrt(q*) z)^2]``, the slope of the c-map at c = 1: ordered below 1, chaotic
        above), ``c_star`` (the stable correlation fixed point: 1 when ``chi1 <= 1``), and the
        depth scales ``xi_q = -1 / log V'(q*)`` and ``xi_c = -1 / log C'(c*)`` (``inf``
        where the slope is 1: at criticality).
    """
    return dict(_depth_scales(phi, sigma_w2, bias_var, q_start))


@functools.lru_cache(maxsize=4096)
def _depth_scales(
    phi: Elementwise, sigma_w2: float, bias_var: float, q_start: float
) -> tuple[tuple[str, float], ...]:
    vmap = variance_map(phi, sigma_w2, bias_var)
    q_star = fixed_point(phi, sigma_w2, bias_var, q_start)
    if not math.isfinite(q_star):
        nan = dict.fromkeys(("c_star", "chi1", "xi_q", "xi_c"), math.nan)
        return tuple({"q_star": math.inf, **nan}.items())
    chi1 = sigma_w2 * derivative_second_moments(phi, [max(q_star, 1e-300)])[0]
    dq = max(q_star, 1e-6) * 1e-4
    lo = max(q_star - dq, 0.0)
    slope_q = (vmap(q_star + dq) - vmap(lo)) / (q_star + dq - lo)

    def cmap(c: float) -> float:
        return (sigma_w2 * cross_moment(phi, q_star, c) + bias_var) / q_star if q_star else 1.0

    if chi1 <= 1 + 1e-9 or q_star == 0:
        c_star, slope_c = 1.0, chi1
    else:  # chaotic: c = 1 is unstable, the stable fixed point lies below it
        c_star = _root(lambda c: cmap(c) - c, -1.0 if cmap(-1.0) > -1.0 else 0.0, 1 - 1e-9)
        dc = 1e-4
        slope_c = (cmap(c_star + dc) - cmap(c_star - dc)) / (2 * dc)
    return (
        ("q_star", q_star),
        ("c_star", c_star),
        ("chi1", chi1),
        ("xi_q", _scale(slope_q)),
        ("xi_c", _scale(slope_c)),
    )


def _scale(slope: float) -> float:
    """``-1 / log|slope|``: the depth over which a deviation shrinks by e (``inf`` where
    it does not shrink)."""
    slope = abs(slope)
    if slope == 0:
        return 0.0
    if slope >= 1 - 1e-9:
        return math.inf
    return -1.0 / math.log(slope)


def fit_correlation_scale(corr: Sequence[float], c_star: float, floor: float) -> float:
    """The depth scale of measured correlations: fits ``|c_l - c*| ~ A exp(-l / xi)`` by least
    squares on ``log|c_l - c*|`` over the layers whose deviation exceeds ``floor`` (the
    measurement's noise). NaN with fewer than 3 such layers or no ``c*``; ``inf`` when the
    deviation does not shrink."""
    if not math.isfinite(c_star):
        return math.nan
    deviation = np.abs(np.asarray(corr, dtype=float) - c_star)
    layers = np.arange(1, len(deviation) + 1)
    keep = np.isfinite(deviation) & (deviation > floor)
    if keep.sum() < 3:
        return math.nan
    slope = np.polyfit(layers[keep], np.log(deviation[keep]), 1)[0]
    return -1.0 / slope if slope < 0 else math.inf


def residual_stream(
    phi: Elementwise,
    stem_sigma_w2: float,
    sigma_w2: Sequence[float],
    back_gain: Sequence[float],
    readout_back_gain: float,
    input_second_moment: float,
    input_corr: float,
    bias_var: float = 0.0,
    alpha: float = 1.0,
    normalized: bool = False,
) -> dict[str, list[float]]:
    """Mean-field maps of a residual stream ``x_l = x_{l-1} + alpha (W_l phi(n(x_{l-1})) + b_l)``.

    ``n`` is the identity, or a normalization to unit variance (``normalized``: LayerNorm,
    or BatchNorm over the batch) that also divides the backward signal by the stream's
    standard deviation. The stream starts at ``x_0 = W_0 x + b_0``.

    Args:
        phi: the activation function.
        stem_sigma_w2: ``fan_in * Var(w)`` of the stem ``W_0``.
        sigma_w2: ``fan_in * Var(w)`` of each block's weight.
        back_gain: ``fan_out * Var(w)`` of each block's weight.
        readout_back_gain: ``fan_out * Var(w)`` of the readout (times any pooling factor).
        input_second_moment: ``E[x^2]`` of the input.
        input_corr: the cosine similarity of the input pairs.
        bias_var: ``sigma_b^2``.
        alpha: the branch scale.
        normalized: the branch normalizes its input.

    Returns:
        Per block l = 1..depth: ``theory_pre_var`` (``q_l = E[x_l^2]``), ``theory_grad_h_var``
        (``Var(dL/dx_l)`` for a unit-variance cotangent at the output) and ``theory_corr``
        (the pairs' stream correlation).
    """
    q_prev = stem_sigma_w2 * input_second_moment + bias_var
    qab_prev = stem_sigma_w2 * input_corr * input_second_moment + bias_var
    qs, corrs, slopes = [], [], []
    for s2 in sigma_w2:
        branch_q = 1.0 if normalized else q_prev
        c_prev = qab_prev / q_prev if q_prev > 0 else 1.0
        q = q_prev + alpha**2 * (s2 * second_moment(phi, branch_q) + bias_var)
        qab = qab_prev + alpha**2 * (s2 * cross_moment(phi, branch_q, c_prev) + bias_var)
        slopes.append(
            derivative_second_moments(phi, [branch_q])[0] / (q_prev if normalized else 1.0)
        )
        qs.append(q)
        corrs.append(qab / q if q > 0 else math.nan)
        q_prev, qab_prev = q, qab
    grads = [readout_back_gain]  # Var(dL/dx_depth)
    for layer in range(len(sigma_w2) - 1, 0, -1):  # dL/dx_{l-1} = dL/dx_l (I + alpha J_l)
        grads.append(grads[-1] * (1 + alpha**2 * back_gain[layer] * slopes[layer]))
    return {"theory_pre_var": qs, "theory_grad_h_var": grads[::-1], "theory_corr": corrs}
