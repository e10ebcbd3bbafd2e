"""OLMo's ``full_megatron`` initialization (Megatron-LM's, with OLMo's truncation and
readout), as ``olmo/initialization.py`` and ``olmo/model.py`` write it.

Every weight is N(0, std^2) cut at +-3 std: the queries, keys, values and the mlps' first
layers (OLMo's ``in_module``) and the token and position embeddings (``emb``) at
``std``; the residual projections (``out_module``: each attention's output and each
mlp's last layer) at ``std / sqrt(2 n_layers)``; the readout (``final_out``) at
``d_model^-1/2``. OLMo's ``init_std`` defaults to 0.02; 0.006 is the other variant.
"""

from __future__ import annotations

from initbench.core.recipes import depth_std, needs_branches, recipe, truncated
from initbench.core.roles import RESIDUAL_OUT, Site
from initbench.core.scheme import Family, Scheme


def build(std: float = 0.02) -> Scheme:
    std = float(std)

    def weight(site: Site) -> Scheme:
        if site.role in RESIDUAL_OUT:
            return truncated(depth_std(std, site.blocks))
        if site.role == "readout":
            return truncated(site.fan_in**-0.5)
        return truncated(std)

    return recipe("megatron", {"std": std}, weight, needs=needs_branches("megatron"))


FAMILY = Family(
    build,
    ({"std": 0.02}, {"std": 0.006}),
    doc="OLMo's full_megatron: N(0, std^2) cut at 3 std; residual projections "
    "std/sqrt(2L); readout d^-1/2",
    short="Meg",
    paper="Groeneveld et al. OLMo: Accelerating the Science of Language Models. ACL 2024; "
    "olmo/initialization.py init_weights (InitFnType.full_megatron); Shoeybi et al. "
    "Megatron-LM. 2019",
)
