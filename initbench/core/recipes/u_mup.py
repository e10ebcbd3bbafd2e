"""u-muP, the unit-scaled maximal update parametrization (Blake et al. 2024), on
initbench's networks.

u-muP draws every weight from N(0, 1) and scales the operations instead: a hidden layer's
output by ``fan_in^-1/2``, the readout's by ``1 / fan_in``, an embedding table's not at
all; Adam's learning rates are ``fan_in^-1/2`` for the weights and embedding tables (a
table's fan-in is its width) and 1 for the readout (graphcore's ``unit_scaling``,
``lr_scale_func_adam``). initbench's layers have no multipliers, so each is moved into its
weight (what Adam steps do not see): N(0, 1 / fan_in) weights at learning rate
``1 / fan_in``, an N(0, 1 / fan_in^2) readout at ``1 / fan_in``, N(0, 1) tables at
``width^-1/2``. Without a base width, the global learning rate u-muP asks for is of order
1. The unit-scaled activations and residual branches are not reproduced.
"""

from __future__ import annotations

from initbench.core import inits
from initbench.core.recipes import recipe
from initbench.core.roles import Site
from initbench.core.scheme import Family, Scheme


def weight(site: Site) -> Scheme:
    if site.lookup:
        return inits.normal(1.0)
    if site.role == "readout":
        return inits.normal(1 / site.fan_in)
    return inits.normal(site.fan_in**-0.5)


def lr_scale(site: Site, optimizer: str) -> float:
    """Adam's multipliers (u-muP's; SGD takes the same)."""
    return site.fan_in**-0.5 if site.lookup else 1 / site.fan_in


def build() -> Scheme:
    return recipe("u_mup", {}, weight, lr_scale=lr_scale)


FAMILY = Family(
    build,
    ({},),
    doc="unit-scaled muP, multipliers folded in: N(0, 1/fan_in) weights and learning "
    "rates 1/fan_in, readout N(0, 1/fan_in^2), tables N(0, 1) at width^-1/2",
    short="u-muP",
    paper="Blake, Eichenberg, Dean, Balles, Prince, Deiseroth, Cruz-Salinas, Luschi, "
    "Weinbach, Orr. u-muP: The Unit-Scaled Maximal Update Parametrization. 2024 "
    "(arXiv:2407.17465); graphcore-research/unit-scaling",
)
