"""OLMo's ``mitchell`` initialization, as ``olmo/initialization.py`` and ``olmo/model.py``
write it.

Every weight is N(0, std^2) cut at +-3 std, with ``std = 1 / sqrt(fan_in)`` (queries,
keys, values, the mlps' first layers, the readout; ``1 / sqrt(d_model)`` for the token and
position embeddings), and on the residual projections of block l (from 0) ``1 /
sqrt(2 fan_in (l + 1))``: the attention's output at ``1 / sqrt(2 d_model (l + 1))``, the
mlp's last layer at ``1 / sqrt(2 d_hidden (l + 1))``.
"""

from __future__ import annotations

import math

from initbench.core.recipes import EMBEDDINGS, model_width, needs_branches, recipe, truncated
from initbench.core.roles import RESIDUAL_OUT, Site
from initbench.core.scheme import Family, Scheme


def weight(site: Site) -> Scheme:
    """``1 / sqrt(d)`` cut at 3 std; ``1 / sqrt(2 d (l + 1))`` on block l's residual
    projections."""
    if site.role in RESIDUAL_OUT:
        return truncated(1 / math.sqrt(2 * site.fan_in * ((site.block or 0) + 1)))
    if site.role in EMBEDDINGS:
        return truncated(1 / math.sqrt(model_width(site)))
    return truncated(1 / math.sqrt(site.fan_in))


def build() -> Scheme:
    return recipe("mitchell", {}, weight, needs=needs_branches("mitchell"))


FAMILY = Family(
    build,
    ({},),
    doc="OLMo's mitchell: N(0, 1/fan_in) cut at 3 std; block l's residual projections "
    "1/(2 fan_in (l+1))",
    short="Mitch",
    paper="Groeneveld et al. OLMo: Accelerating the Science of Language Models. ACL 2024; "
    "olmo/initialization.py init_weights (InitFnType.mitchell)",
)
