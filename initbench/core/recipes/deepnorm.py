"""DeepNorm (Wang et al. 2022): ``x_{l+1} = LN(alpha x_l + G(x_l))`` with the weights of
the value, the attention's output and the mlps scaled by beta.

For a decoder (or an encoder) of N blocks, ``alpha = (2 N)^1/4`` (the skip of every
residual branch, which this recipe sets and does not train) and ``beta = (8 N)^-1/4``:
the values, attention outputs and both mlp layers are ``xavier_normal_(gain=beta)``, the
queries and keys ``xavier_normal_(gain=1)`` (the paper's Figure 2); the embeddings and an
untied readout are N(0, d^-1) as in torchscale. It is a post-LN method: the ``gpt``
places its LayerNorms so with ``norm=post``.
"""

from __future__ import annotations

from initbench.core import inits
from initbench.core.recipes import EMBEDDINGS, model_width, needs_attention, recipe
from initbench.core.roles import Site
from initbench.core.scheme import Family, Scheme

SCALED = ("value", "attn_out", "mlp_in", "mlp_out")


def alpha(blocks: int) -> float:
    """The residual skip: ``(2 N)^1/4``."""
    return (2 * blocks) ** 0.25


def beta(blocks: int) -> float:
    """The gain of the value, output and mlp weights: ``(8 N)^-1/4``."""
    return (8 * blocks) ** -0.25


def weight(site: Site) -> Scheme:
    if site.role in SCALED:
        return inits.xavier("normal")(gain=beta(site.blocks))
    if site.role in EMBEDDINGS or site.role == "readout":
        return inits.normal(model_width(site) ** -0.5)
    return inits.xavier("normal")(gain="unit")


def setting(site: Site) -> tuple[float, float] | None:
    return (alpha(site.blocks), 0.0) if site.role == "skip" else None


def build() -> Scheme:
    return recipe("deepnorm", {}, weight, setting=setting, needs=needs_attention("deepnorm"))


FAMILY = Family(
    build,
    ({},),
    doc="post-LN skip alpha=(2N)^1/4; value, output and mlp weights xavier_normal "
    "gain beta=(8N)^-1/4",
    short="DeepN",
    paper="Wang, Ma, Dong, Huang, Zhang, Wei. DeepNet: Scaling Transformers to 1,000 "
    "Layers. 2022 (Figure 2); torchscale",
)
