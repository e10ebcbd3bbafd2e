"""Mimetic initialization (Trockman & Kolter 2023): self-attention initialized to look like
a trained one.

Per head, ``W_q^T W_k`` (in ``nn.Linear``'s layout, ``scores = x^T W_q^T W_k x'``) is the
best rank-``head_dim`` approximation of ``alpha_1 Z_1 + beta_1 I`` and, over all heads,
``W_out W_v = alpha_2 Z_2 - beta_2 I``, with ``Z`` of i.i.d. entries U(+-sqrt(3 / d))
(variance 1 / d), ``alpha_1 = beta_1 = 0.7``, ``alpha_2 = beta_2 = 0.4``, each product
split by its SVD ``U S V^T`` into ``U S^1/2`` and ``S^1/2 V^T``, as the reference code
does. The other weights are timm's ViT initialization, N(0, 0.02^2) cut at +-2.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from initbench.core import inits
from initbench.core.lazy import LazyModule
from initbench.core.recipes import needs_attention, recipe
from initbench.core.roles import ATTENTION, Site
from initbench.core.scheme import Family, Scheme

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")

QK = (0.7, 0.7)  # alpha_1, beta_1: W_q^T W_k ~ alpha_1 Z_1 + beta_1 I
VO = (0.4, 0.4)  # alpha_2, beta_2: W_out W_v ~ alpha_2 Z_2 - beta_2 I
PAIRS = {"query": "key", "value": "attn_out"}  # the first of a pair draws both

# the second weight of a pair, drawn with the first, waiting for its fill: by the
# generator's identity (one per run and thread) and the weight's role
_pending: dict[tuple[int, str], torch.Tensor] = {}


def factors(
    d: int, alpha: float, beta: float, generator: torch.Generator | None, dtype, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U S^1/2, S^1/2 V^T)`` of ``alpha Z + beta I``, Z's entries U(+-sqrt(3 / d))."""
    bound = math.sqrt(3 / d)
    z = torch.empty(d, d, dtype=dtype, device=device).uniform_(-bound, bound, generator=generator)
    u, s, vh = torch.linalg.svd(alpha * z + beta * torch.eye(d, dtype=dtype, device=device))
    root = s.sqrt()
    return u * root, root.unsqueeze(1) * vh


def _pair(
    role: str, heads: int, weight: torch.Tensor, generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two weights of a pair: ``(W_q, W_k)`` head by head, or ``(W_v, W_out)``."""
    d = weight.shape[1]
    kw = {"dtype": weight.dtype, "device": weight.device}
    if role == "query":
        size = d // heads
        left, right = [], []
        for _ in range(heads):
            u, v = factors(d, *QK, generator, **kw)
            left.append(u[:, :size].T)
            right.append(v[:size])
        return torch.cat(left), torch.cat(right)
    alpha, beta = VO
    u, v = factors(d, alpha, -beta, generator, **kw)
    return v, u  # W_v = S^1/2 V^T, W_out = U S^1/2: W_out W_v = alpha Z - beta I


def part(site: Site) -> Scheme:
    """The plain scheme of one attention weight: its half of its pair's product."""
    first = site.role in PAIRS
    lead = site.role if first else next(k for k, v in PAIRS.items() if v == site.role)

    def fill(weight, activation, generator) -> None:
        key = (id(generator), site.role)
        if not first and key in _pending:
            weight.copy_(_pending.pop(key))
            return
        mine, other = _pair(lead, site.heads or 1, weight, generator)
        weight.copy_(mine if first else other)
        if first:
            _pending[(id(generator), PAIRS[site.role])] = other

    return Scheme(
        "mimetic_part",
        {"role": site.role, "heads": site.heads or 1},
        fill,
        None,
        theory=False,
        kind="mimetic",
        dims=(2,),
    )


def weight(site: Site) -> Scheme:
    if site.role in ATTENTION:
        return part(site)
    return inits.trunc_normal(0.02)


def build() -> Scheme:
    return recipe("mimetic", {}, weight, needs=needs_attention("mimetic"))


FAMILY = Family(
    build,
    ({},),
    doc="per head W_q^T W_k ~ 0.7 Z + 0.7 I; W_out W_v ~ 0.4 Z - 0.4 I; other weights "
    "N(0, 0.02^2) cut at 2",
    short="mim",
    paper="Trockman, Kolter. Mimetic Initialization of Self-Attention Layers. ICML 2023",
)
