"""He et al. 2015: Kaiming's initialization keeps a ReLU net's variance; Xavier's halves it.

Probe: ReLU mlps of depth 30 at width 256 (the paper derives Var[y_L] = Var[y_1] prod_l
(n_l Var[w_l] / 2): 1 for Kaiming's 2 / n, 1/2 per layer for Xavier's 1 / n on square
layers). Training: the 30-layer ReLU net of Figure 3 on digits, 300 SGD steps: Kaiming's
converges, Xavier's "completely stalls" (the paper, on ImageNet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from initbench.core import fmt
from initbench.reproduce import Outcome
from initbench.reproduce.common import bounds, run_sweep, sweep_figure
from initbench.sweeps.grid import Grid

KAIMING = "kaiming_normal[mode=fan_in,nonlinearity=matched]"
XAVIER = "xavier_normal[gain=unit]"


def per_layer_factor(results, scheme: str) -> np.ndarray:
    """Per run: 2 to the least-squares slope of log2 pre_var against the layer."""
    cells = results.cells[
        (results.cells["scheme_id"] == scheme) & (results.cells["status"] == "ok")
    ]
    factors = []
    for run_id in cells["run_id"]:
        rows = results.layers[results.layers["run_id"] == run_id].sort_values("layer")
        factors.append(2.0 ** np.polyfit(rows["layer"], np.log2(rows["pre_var"]), 1)[0])
    return np.array(factors)


def run(folder: Path, full: bool, device: str, progress: bool) -> Outcome:
    probe_grid = Grid(
        schemes=(KAIMING, XAVIER),
        activations=("relu",),
        depths=(30,),
        widths=(1024 if full else 256,),
        seeds=8 if full else 4,
        batch_size=256,
    )
    probe = run_sweep(folder, "probe", probe_grid, device, progress)
    train_grid = Grid(
        schemes=(KAIMING, XAVIER),
        activations=("relu",),
        depths=(30,),
        widths=(512 if full else 128,),
        seeds=5 if full else 3,
        dataset="digits",
        train_steps=1000 if full else 300,
        lr=0.003,
    )
    trained = run_sweep(folder, "train", train_grid, device, progress)
    xavier = bounds(per_layer_factor(probe, XAVIER))
    kaiming = bounds(per_layer_factor(probe, KAIMING))
    cells = trained.cells.set_index("scheme_id")
    acc_kaiming = bounds(cells.loc[KAIMING, "final_test_acc"].to_numpy())
    acc_xavier = bounds(cells.loc[XAVIER, "final_test_acc"].to_numpy())
    passed = (
        abs(xavier[0] - 0.5) < 0.05
        and abs(kaiming[0] - 1) < 0.05
        and acc_kaiming[0] > 0.8
        and acc_xavier[0] < 0.2
    )
    width = probe_grid.widths[0]
    return Outcome(
        expected="Xavier (gain 1) multiplies a ReLU net's variance by 1/2 per layer; Kaiming by 1",
        how="2 to the least-squares slope of log2(pre_var) against the layer, per seed; mean "
        "and 95% interval over seeds",
        measured=xavier[0],
        interval=(xavier[1], xavier[2]),
        passed=passed,
        setting=f"mlps of width {width} on standard-normal input for the variance; for training "
        f"digits (8x8) instead of ImageNet, width {train_grid.widths[0]}, "
        f"{train_grid.train_steps} SGD steps (lr 0.003, momentum 0.9)",
        details={
            "Xavier variance factor per layer": xavier[0],
            "Kaiming variance factor per layer": kaiming[0],
            "Kaiming final test accuracy": acc_kaiming[0],
            "Xavier final test accuracy": acc_xavier[0],
        },
        figures=[
            (
                sweep_figure(folder, "probe", f"signal_mlp_w{width}_relu"),
                "Pre-activation variance per layer, relative to layer 1",
                f"Kaiming: ×{kaiming[0]:.3f} per layer; Xavier: ×{xavier[0]:.3f} per layer "
                f"(×2^{29 * np.log2(xavier[0]):.0f} over 29 layers).",
            ),
            (
                sweep_figure(folder, "train", f"accuracy_mlp_w{train_grid.widths[0]}_relu"),
                "Test accuracy while training the 30-layer ReLU net",
                f"Kaiming ends at {fmt.percent(acc_kaiming[0])}, Xavier at "
                f"{fmt.percent(acc_xavier[0])} (chance 10%).",
            ),
        ],
        sweeps=["probe", "train"],
    )
