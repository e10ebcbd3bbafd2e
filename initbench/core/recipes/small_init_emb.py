"""Small embeddings: SmallInit (Nguyen & Salazar 2019) with tiny embeddings.

Every weight is N(0, 2 / (5 d)), d the model's width (``Transformers without Tears``'
SmallInit, Xavier's variance for a d x 4d matrix, as GPT-NeoX's ``small_init``), and the
token and position embeddings are U(-scale, scale) with ``scale = 1e-4`` (BlinkDL's
SmallInitEmb), so that the first LayerNorm sees only their directions and the embeddings
move them quickly.
"""

from __future__ import annotations

import math

from initbench.core import inits
from initbench.core.recipes import EMBEDDINGS, model_width, needs_attention, recipe
from initbench.core.roles import Site
from initbench.core.scheme import Family, Scheme


def build(scale: float = 1e-4) -> Scheme:
    scale = float(scale)

    def weight(site: Site) -> Scheme:
        if site.role in EMBEDDINGS:
            return inits.uniform(-scale, scale)
        return inits.normal(math.sqrt(2 / (5 * model_width(site))))

    return recipe(
        "small_init_emb", {"scale": scale}, weight, needs=needs_attention("small_init_emb")
    )


FAMILY = Family(
    build,
    ({"scale": 1e-4},),
    doc="embeddings U(+-1e-4); every other weight N(0, 2/(5d)) (SmallInit)",
    short="SmEmb",
    paper="Nguyen, Salazar. Transformers without Tears: Improving the Normalization of "
    "Self-Attention. IWSLT 2019 (SmallInit); BlinkDL/SmallInitEmb",
)
