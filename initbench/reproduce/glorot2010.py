"""Glorot & Bengio 2010: with tanh, the standard initialization shrinks activations and
back-propagated gradients layer by layer; the normalized initialization keeps them.

The standard initialization is U(-1/sqrt(n), 1/sqrt(n)) (initbench's ``torch_default``:
variance 1 / (3 n)), the normalized one U(+-sqrt(6 / (n_in + n_out))) (``xavier_uniform``,
gain 1). With tanh near its linear regime every layer multiplies the variance by about
n Var(w): 1/3 for the standard initialization, 1 for the normalized one. The paper's
networks have 5 hidden layers of 1000 tanh units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from initbench.reproduce import Outcome
from initbench.reproduce.common import bounds, run_sweep, sweep_figure
from initbench.sweeps.grid import Grid

STANDARD = "torch_default"
NORMALIZED = "xavier_uniform[gain=unit]"


def factors(results, scheme: str, column: str, backward: bool) -> np.ndarray:
    """Per run: the geometric mean factor per layer of ``column`` along the pass."""
    cells = results.cells[
        (results.cells["scheme_id"] == scheme) & (results.cells["status"] == "ok")
    ]
    out = []
    for run_id in cells["run_id"]:
        rows = results.layers[results.layers["run_id"] == run_id].sort_values("layer")
        values = rows[column].to_numpy()
        first, last = (values[-1], values[0]) if backward else (values[0], values[-1])
        out.append((last / first) ** (1 / (len(values) - 1)))
    return np.array(out)


def run(folder: Path, full: bool, device: str, progress: bool) -> Outcome:
    grid = Grid(
        schemes=(STANDARD, NORMALIZED),
        activations=("tanh",),
        depths=(5,),
        widths=(1000 if full else 256,),
        seeds=8 if full else 4,
        batch_size=300,
    )
    results = run_sweep(folder, "probe", grid, device, progress)
    standard = bounds(factors(results, STANDARD, "post_var", False))
    normalized = bounds(factors(results, NORMALIZED, "post_var", False))
    grad_standard = bounds(factors(results, STANDARD, "grad_h_var", True))
    grad_normalized = bounds(factors(results, NORMALIZED, "grad_h_var", True))
    passed = (
        0.25 < standard[0] < 0.45
        and 0.25 < grad_standard[0] < 0.45
        and normalized[0] > 0.6
        and grad_normalized[0] > 0.6
    )
    width = grid.widths[0]
    return Outcome(
        expected="the standard initialization multiplies the activations' variance by about 1/3 "
        "per layer, forward and backward; the normalized one keeps it within a factor 0.6-1",
        how="per seed, (variance at layer 5 / variance at layer 1)^(1/4) of the post-activations "
        "(forward) and of dL/dh from layer 5 to layer 1 (backward); mean and 95% interval",
        measured=standard[0],
        interval=(standard[1], standard[2]),
        passed=passed,
        setting=f"5 tanh layers of width {width} on standard-normal input (the paper: 1000 "
        "units, Shapeset-3x2 images); histograms at initialization rather than during training",
        details={
            "standard, activations, factor per layer": standard[0],
            "normalized, activations, factor per layer": normalized[0],
            "standard, gradients, factor per layer": grad_standard[0],
            "normalized, gradients, factor per layer": grad_normalized[0],
        },
        figures=[
            (
                sweep_figure(folder, "probe", f"hist_mlp_w{width}_tanh_d5"),
                "Histograms of pre-activations, activations and gradients per layer (Glorot & "
                "Bengio's Figures 6-7)",
                f"Standard: activations shrink ×{standard[0]:.2f} per layer, gradients "
                f"×{grad_standard[0]:.2f}; normalized: ×{normalized[0]:.2f} and "
                f"×{grad_normalized[0]:.2f}.",
            ),
            (
                sweep_figure(folder, "probe", f"signal_mlp_w{width}_tanh"),
                "Pre-activation variance per layer",
                "The standard initialization's variance falls layer after layer, as the "
                "mean-field theory (dashed) predicts.",
            ),
        ],
        sweeps=["probe"],
    )
