"""Fixup (Zhang, Dauphin & Ma 2019): a residual network trained without normalization.

1. The readout and the last layer of every residual branch (``attn_out``, ``mlp_out``)
   start at 0.
2. Every other layer gets He's N(0, 2 / fan_in) (``kaiming_normal_``, the gain matched to
   the activation), and the layers inside a branch of m layers are scaled by
   ``L^(-1 / (2 m - 2))``, L the number of residual branches: ``L^-1/2`` for the two-layer
   branches of a transformer's mlp (``mlp_in``) and attention (queries, keys, values); a
   one-layer branch (``resmlp``, ``resnet``) has none to scale.
3. Each branch's multiplier (its ``gate``, 1) and scalar biases (its ``shift``s, 0: before
   the branch's activation and after its multiplier) train.
"""

from __future__ import annotations

from initbench.core import inits
from initbench.core.recipes import ZEROS, needs_branches, recipe, scaled
from initbench.core.roles import RESIDUAL_OUT, Site
from initbench.core.scheme import Family, Scheme

INNER = ("query", "key", "value", "mlp_in")  # layers of two-layer branches before their last


def he() -> Scheme:
    return inits.kaiming("normal")(mode="fan_in", nonlinearity="matched")


def weight(site: Site) -> Scheme:
    """0 for the readout and the branches' last layers; He, times ``L^-1/2`` inside
    two-layer branches."""
    if site.role in RESIDUAL_OUT or site.role == "readout":
        return ZEROS
    if site.role in INNER:
        return scaled(he(), max(site.branches, 1) ** -0.5)  # m = 2: L^(-1/(2m-2))
    return he()


def setting(site: Site) -> tuple[float, float] | None:
    """The multiplier at 1 and the scalar biases at 0, both trained."""
    return {"gate": (1.0, 1.0), "shift": (0.0, 1.0)}.get(site.role)


def build() -> Scheme:
    return recipe("fixup", {}, weight, setting=setting, needs=needs_branches("fixup"))


FAMILY = Family(
    build,
    ({},),
    doc="readout and each branch's last layer 0; He elsewhere, L^-1/2 inside 2-layer "
    "branches; branch multipliers and scalar biases trained",
    short="Fixup",
    paper="Zhang, Dauphin, Ma. Fixup Initialization: Residual Learning Without "
    "Normalization. ICLR 2019",
)
