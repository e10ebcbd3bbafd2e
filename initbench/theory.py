"""Mean-field theory of signal propagation in wide random networks.

For zero-mean weights with variance ``sigma_w^2 / fan_in`` (Poole et al. 2016; Schoenholz et
al. 2017) the pre-activation second moment follows ``q_1 = sigma_w^2 E[x^2]`` and
``q_l = sigma_w^2 E_z[phi(sqrt(q_{l-1}) z)^2]``, and the backward signal scales per layer by
``sigma_w^2 E[phi'(h_l)^2]``. Expectations over ``z ~ N(0, 1)`` use Gauss-Hermite quadrature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

import numpy as np
import torch

Elementwise: TypeAlias = Callable[[torch.Tensor], torch.Tensor]

_NODES, _WEIGHTS = np.polynomial.hermite.hermgauss(100)  # even: no node at 0, where ReLU kinks
_Z = torch.tensor(_NODES * np.sqrt(2.0), dtype=torch.float64)
_W = torch.tensor(_WEIGHTS / np.sqrt(np.pi), dtype=torch.float64)


def expect(f: Elementwise, q: float = 1.0) -> float:
    """Returns ``E[f(sqrt(q) z)]`` for ``z ~ N(0, 1)``."""
    return float((f(_Z * np.sqrt(q)) * _W).sum())


def derivative_second_moments(phi: Elementwise, q: Sequence[float]) -> list[float]:
    """Returns ``E[phi'(sqrt(q) z)^2]`` for each ``q``, in one autograd pass."""
    h = (_Z * torch.tensor(q, dtype=torch.float64).sqrt().unsqueeze(1)).requires_grad_(True)
    (dphi,) = torch.autograd.grad(phi(h).sum(), h)
    return (dphi.square() * _W).sum(1).tolist()


def pre_var(
    phi: Elementwise,
    sigma_w2: Sequence[float],
    input_second_moment: float = 1.0,
) -> list[float]:
    """Predicted second moment ``q_l`` of the pre-activations of hidden layers 1..depth.

    Args:
        phi: the activation function.
        sigma_w2: ``fan_in * Var(w)`` of each hidden layer's weights, first layer first.
        input_second_moment: ``E[x^2]`` of the network input.

    Returns:
        One ``q_l`` per hidden layer.
    """
    qs: list[float] = []
    q_in = input_second_moment
    for layer, s2 in enumerate(sigma_w2):
        q = s2 * (q_in if layer == 0 else expect(lambda h: phi(h) ** 2, q_in))
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
