"""torchtitan's Llama initialization, ``depth_init`` on or off, as
``torchtitan/models/llama3/model.py`` writes it (``init_weights``).

Queries, keys, values and the mlps' first layers are ``trunc_normal_(std=0.02)`` (torch's
default cut at +-2, absolute); the residual projections (``wo``, ``w2``) are
``trunc_normal_(std=init_std)`` with ``init_std = 0.02 / sqrt(2 (l + 1))`` for block l
(from 0) when ``depth_init`` is on, ``0.02 / sqrt(2 n_layers)`` when it is off; the token
embedding is N(0, 1) (Llama has no position embedding: the gpt's gets the same); the
readout is N(0, d^-1) cut at +-3 std.
"""

from __future__ import annotations

import math

from initbench.core import inits
from initbench.core.recipes import EMBEDDINGS, needs_branches, parse_flag, recipe, truncated
from initbench.core.roles import RESIDUAL_OUT, Site
from initbench.core.scheme import Family, Scheme

STD = 0.02


def build(enabled: object = "true") -> Scheme:
    on = parse_flag(enabled, "depth_init's enabled")

    def weight(site: Site) -> Scheme:
        if site.role in RESIDUAL_OUT:
            layers = (site.block or 0) + 1 if on else max(site.blocks, 1)
            return inits.trunc_normal(STD / math.sqrt(2 * layers))
        if site.role in EMBEDDINGS:
            return inits.normal(1.0)
        if site.role == "readout":
            return truncated(site.fan_in**-0.5)
        return inits.trunc_normal(STD)

    return recipe("depth_init", {"enabled": on}, weight, needs=needs_branches("depth_init"))


FAMILY = Family(
    build,
    ({"enabled": "true"}, {"enabled": "false"}),
    doc="torchtitan: 0.02 trunc normal; residual projections 0.02/sqrt(2(l+1)) (enabled) "
    "or 0.02/sqrt(2L); embeddings N(0,1); readout d^-1/2",
    short="titan",
    paper="torchtitan (PyTorch): torchtitan/models/llama3/model.py init_weights, "
    "TransformerModelArgs.depth_init",
)
