"""T-Fixup (Huang, Perez, Ba, Volkovs 2020): a transformer trained without LayerNorm or
warmup.

Xavier-uniform weights, N(0, d^-1) embeddings; the values, attention outputs, both mlp
layers and the embeddings are then scaled by ``(9 N)^-1/4`` in a decoder of N blocks
(``stack=decoder``) or ``0.67 N^-1/4`` in an encoder (``stack=encoder``). The queries,
keys and an untied readout keep their Xavier weights. It is meant for networks without
normalization (``gpt[norm=none]``).
"""

from __future__ import annotations

from initbench.core import inits
from initbench.core.errors import UsageError
from initbench.core.recipes import EMBEDDINGS, model_width, needs_attention, recipe, scaled
from initbench.core.roles import Site
from initbench.core.scheme import Family, Scheme

SCALED = ("value", "attn_out", "mlp_in", "mlp_out")


def factor(stack: str, blocks: int) -> float:
    """The scale of the value, output, mlp and embedding weights."""
    return (9 * blocks) ** -0.25 if stack == "decoder" else 0.67 * blocks**-0.25


def build(stack: str = "decoder") -> Scheme:
    if stack not in ("decoder", "encoder"):
        raise UsageError(f"t_fixup stack must be decoder or encoder, got {stack!r}")

    def weight(site: Site) -> Scheme:
        if site.role in EMBEDDINGS:
            return scaled(inits.normal(model_width(site) ** -0.5), factor(stack, site.blocks))
        xavier = inits.xavier("uniform")(gain="unit")
        return scaled(xavier, factor(stack, site.blocks)) if site.role in SCALED else xavier

    return recipe("t_fixup", {"stack": stack}, weight, needs=needs_attention("t_fixup"))


FAMILY = Family(
    build,
    ({"stack": "decoder"},),
    doc="Xavier; value, output, mlp weights and embeddings N(0, 1/d) scaled by (9N)^-1/4 "
    "(decoder) or 0.67 N^-1/4 (encoder)",
    short="TFix",
    paper="Huang, Perez, Ba, Volkovs. Improving Transformer Optimization Through Better "
    "Initialization. ICML 2020",
)
