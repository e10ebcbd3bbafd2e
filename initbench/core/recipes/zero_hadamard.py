"""ZerO (Zhao et al. 2021): a deterministic initialization of only zeros, ones and
Hadamard entries.

Every weight of m outputs and n inputs (a convolution's centre tap; its other taps 0) is
the partial identity ``I_{m x n}`` when ``m <= n``, else ``I_{m x p} H_p I_{p x n}``
with ``H_p`` the p x p Hadamard matrix of Sylvester's construction, ``p = 2^ceil(log2
m)``, normalized by ``2^(-log2(p) / 2)`` (as the reference code ``ZerO_Init_on_matrix``
does); the last layer of every residual branch is 0 (the paper's Algorithm 2). Nothing
is drawn: every seed gives the same network.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from initbench.core.lazy import LazyModule
from initbench.core.recipes import ZEROS, needs_branches, recipe
from initbench.core.roles import RESIDUAL_OUT, Site
from initbench.core.scheme import Family, Scheme

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")


def hadamard(p: int) -> torch.Tensor:
    """Sylvester's ``p x p`` Hadamard matrix (p a power of 2) of +-1 entries."""
    h = torch.ones(1, 1)
    while h.shape[0] < p:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def matrix(m: int, n: int) -> torch.Tensor:
    """ZerO's ``m x n`` matrix (Algorithm 1)."""
    if m <= n:
        return torch.eye(m, n)
    log = math.ceil(math.log2(m))
    p = 2**log
    return torch.eye(m, p) @ (hadamard(p) / 2 ** (log / 2)) @ torch.eye(p, n)


def fill(weight, activation, generator) -> None:
    """ZerO's matrix in a weight (a convolution's centre tap), zeros elsewhere."""
    m, n = weight.shape[:2]
    weight.zero_()
    tap = tuple(k // 2 for k in weight.shape[2:])
    weight[(slice(None), slice(None), *tap)] = matrix(m, n).to(weight)


ZERO_MATRIX = Scheme("zero_hadamard", {}, fill, None, theory=False, kind="zero_hadamard")


def weight(site: Site) -> Scheme:
    return ZEROS if site.role in RESIDUAL_OUT else ZERO_MATRIX


def build() -> Scheme:
    return recipe("zero_hadamard", {}, weight, needs=needs_branches("zero_hadamard"))


FAMILY = Family(
    build,
    ({},),
    doc="deterministic: identity or Hadamard matrices (a convolution's centre tap), each "
    "residual branch's last layer 0",
    short="ZerO",
    paper="Zhao, Schäfer, Anandkumar. ZerO Initialization: Initializing Neural Networks "
    "with only Zeros and Ones. TMLR 2022 (arXiv:2110.12661, 2021)",
)
