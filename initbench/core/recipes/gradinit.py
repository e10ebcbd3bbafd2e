"""GradInit (Zhu, Ni, Xu, Kong, Huang, Goldstein 2021): PyTorch's default initialization,
then one scale per weight learned on data so that the first optimizer step lowers the
loss most while the gradient's norm stays bounded (:mod:`initbench.initialize.gradinit`,
``steps`` steps on the run's own batch)."""

from __future__ import annotations

from initbench.core.recipes import fitted
from initbench.core.scheme import Family, Scheme


def build(steps: object = 20) -> Scheme:
    return fitted("gradinit", steps)


FAMILY = Family(
    build,
    ({"steps": 20},),
    doc="torch's default, then a scale per weight fitted (steps) so the first SGD step "
    "lowers the loss most, the gradient norm bounded",
    short="GradI",
    paper="Zhu, Ni, Xu, Kong, Huang, Goldstein. GradInit: Learning to Initialize Neural "
    "Networks for Stable and Efficient Training. NeurIPS 2021",
)
