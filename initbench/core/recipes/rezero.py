"""ReZero (Bachlechner et al. 2020): ``x_{l+1} = x_l + alpha_l F(x_l)`` with every
``alpha_l`` (the branch's gate) a trainable scalar initialized to 0, so that every block is
the identity at initialization; Xavier-uniform weights, what the paper's transformers
(``nn.Transformer``'s ``_reset_parameters``) draw."""

from __future__ import annotations

from initbench.core import inits
from initbench.core.recipes import needs_branches, recipe, zero_gates
from initbench.core.scheme import Family, Scheme


def build() -> Scheme:
    xavier = inits.xavier("uniform")(gain="unit")
    return recipe(
        "rezero", {}, lambda site: xavier, setting=zero_gates, needs=needs_branches("rezero")
    )


FAMILY = Family(
    build,
    ({},),
    doc="every branch's gate alpha 0 (trained): each block the identity; Xavier-uniform weights",
    short="ReZero",
    paper="Bachlechner, Majumder, Mao, Cottrell, McAuley. ReZero is All You Need: Fast "
    "Convergence at Large Depth. UAI 2021 (arXiv:2003.04887, 2020)",
)
