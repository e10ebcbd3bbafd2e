"""SkipInit (De & Smith 2020): a trainable scalar at the end of every residual branch,
initialized to 0, so that every block is the identity at initialization; He's
N(0, 2 / fan_in) weights (gain matched to the activation)."""

from __future__ import annotations

from initbench.core import inits
from initbench.core.recipes import needs_branches, recipe, zero_gates
from initbench.core.scheme import Family, Scheme


def build() -> Scheme:
    he = inits.kaiming("normal")(mode="fan_in", nonlinearity="matched")
    return recipe(
        "skipinit", {}, lambda site: he, setting=zero_gates, needs=needs_branches("skipinit")
    )


FAMILY = Family(
    build,
    ({},),
    doc="every branch's gate 0 (trained): each block the identity; He weights",
    short="SkipI",
    paper="De, Smith. Batch Normalization Biases Residual Blocks Towards the Identity "
    "Function in Deep Networks. NeurIPS 2020",
)
