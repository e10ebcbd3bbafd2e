"""muP, the maximal update parametrization (Yang et al. 2021, Tensor Programs V): the
initialization and per-layer learning rates under which a network's every layer learns
features at a rate that does not depend on its width, so hyperparameters tuned at one
width transfer to others.

Table 3 of the paper (multipliers of 1, the readout's scale in its initialization), with
``base_width`` b the width at which muP equals the standard parametrization (He's
``kaiming_normal_``, gain matched to the activation) and w the network's:

| weights | variance | Adam learning rate | SGD learning rate |
| --- | --- | --- | --- |
| input (``embedding``, ``position``) | ``g^2 / fan_in`` (a table: ``g^2 / b``) | 1 | w / b |
| hidden (every other) | ``g^2 / fan_in`` | b / w | 1 |
| readout | ``g^2 / fan_in * b / w`` | b / w | b / w |

Biases keep the base learning rate (they start at 0; Table 3's SGD rule for them,
``fan_out``, is not applied), attention keeps its ``1 / sqrt(head_dim)`` (muP asks for
``1 / head_dim``), and a readout tied to the token embedding is the embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

from initbench.core import inits
from initbench.core.errors import UsageError
from initbench.core.recipes import EMBEDDINGS, recipe, scaled
from initbench.core.roles import Site
from initbench.core.scheme import Family, Scheme


def needs_width(sites: Sequence[Site]) -> str | None:
    if all(site.width is not None for site in sites):
        return None
    return "mup scales with the network's width: give it (apply(..., width=N))"


def build(base_width: object = 64) -> Scheme:
    base = float(base_width)
    if not (base == int(base) and base >= 1):
        raise UsageError(f"mup base_width must be a positive integer, got {base_width!r}")
    base = int(base)
    he = inits.kaiming("normal")(mode="fan_in", nonlinearity="matched")

    def weight(site: Site) -> Scheme:
        if site.role == "readout":
            return scaled(he, (base / site.width) ** 0.5)
        if site.lookup:  # a table's fan-in is the width: its variance stays the base's
            return scaled(he, (site.fan_in / base) ** 0.5)
        return he

    def lr_scale(site: Site, optimizer: str) -> float:
        ratio = base / site.width
        if site.role == "readout":
            return ratio
        if site.role in EMBEDDINGS:
            return 1.0 if optimizer == "adam" else 1 / ratio
        return ratio if optimizer == "adam" else 1.0

    return recipe("mup", {"base_width": base}, weight, lr_scale=lr_scale, needs=needs_width)


FAMILY = Family(
    build,
    ({"base_width": 64},),
    doc="He at base_width; readout variance and hidden and readout Adam learning rates "
    "times base_width/width (Table 3)",
    short="muP",
    paper="Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen, Gao. Tensor "
    "Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer. "
    "NeurIPS 2021 (Table 3)",
)
