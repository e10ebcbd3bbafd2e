"""MetaInit (Dauphin & Schoenholz 2019): PyTorch's default initialization, then one scale
per weight learned on data so that the gradient quotient ``|H g / g|`` is small
(:mod:`initbench.initialize.metainit`, ``steps`` steps on the run's own batch)."""

from __future__ import annotations

from initbench.core.recipes import fitted
from initbench.core.scheme import Family, Scheme


def build(steps: object = 20) -> Scheme:
    return fitted("metainit", steps)


FAMILY = Family(
    build,
    ({"steps": 20},),
    doc="torch's default, then a scale per weight fitted (steps) to lower the gradient "
    "quotient |Hg/g|",
    short="MetaI",
    paper="Dauphin, Schoenholz. MetaInit: Initializing learning by learning to initialize. "
    "NeurIPS 2019",
)
