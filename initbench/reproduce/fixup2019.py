"""Zhang, Dauphin & Ma 2019: Fixup trains a residual network of depth 100 without
normalization; He's initialization does not.

A residual mlp of 100 ReLU blocks without LayerNorm (``x + W relu(x)``) on digits, SGD with
momentum at one learning rate for both: with He's weights the stream's variance doubles
with every block (2^100 at the readout) and training diverges at once; with Fixup (every
branch and the readout at 0, the branches' scalar multipliers and biases trained) each
block starts as the identity and the network trains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from initbench.core import fmt
from initbench.report.figures.base import stem
from initbench.reproduce import Outcome
from initbench.reproduce.common import bounds, run_sweep, sweep_figure
from initbench.sweeps.grid import Grid

FIXUP = "fixup"
HE = "kaiming_normal[mode=fan_in,nonlinearity=matched]"
DEPTH = 100
CHANCE = 0.2  # digits has 10 classes: a net below 20% has learnt nothing


def run(folder: Path, full: bool, device: str, progress: bool) -> Outcome:
    width = 128 if full else 32
    grid = Grid(
        schemes=(FIXUP, HE),
        activations=("relu",),
        archs=("resmlp",),
        depths=(DEPTH,),
        widths=(width,),
        seeds=3 if full else 2,
        batch_size=128,
        histograms=False,
        dataset="digits",
        train_steps=1000 if full else 200,
        lr=0.01,
        eval_every=20,
    )
    cells = run_sweep(folder, "train", grid, device, progress).cells.set_index("scheme_id")
    fixup = bounds(cells.loc[FIXUP, "final_test_acc"].to_numpy())
    he = cells.loc[HE]
    he_failed = (he["status"] == "diverged") | (he["final_test_acc"] < CHANCE)
    passed = fixup[0] > 0.8 and bool(he_failed.all())
    diverged = int((he["status"] == "diverged").sum())
    steps = he["diverged_step"].dropna()
    keys = {"arch": "resmlp", "width": width, "activation": "relu"}
    return Outcome(
        expected="Fixup trains the 100-block residual mlp without normalization (the paper: "
        "ResNets of up to 10,000 layers); He's initialization diverges or stalls at the "
        "same learning rate",
        how="final test accuracy of Fixup's runs after the SGD steps, mean and 95% interval "
        "over seeds; He's runs diverged (a non-finite loss) or ended below 20%",
        measured=fixup[0],
        interval=(fixup[1], fixup[2]),
        passed=passed,
        setting=f"digits instead of CIFAR-10 and ImageNet, an mlp of {DEPTH} residual blocks "
        f"of width {width} instead of convolutions, {grid.train_steps} SGD steps (lr 0.01, "
        "momentum 0.9)",
        details={
            "Fixup final test accuracy": fixup[0],
            "He final test accuracy": float(he["final_test_acc"].mean()),
            "He runs diverged": diverged,
            "He diverged at step": float(np.median(steps)) if len(steps) else float("nan"),
        },
        figures=[
            (
                sweep_figure(folder, "train", f"accuracy_{stem(keys)}"),
                f"Test accuracy while training the {DEPTH}-block residual mlp",
                f"Fixup ends at {fmt.percent(fixup[0])}; He's initialization "
                + (f"diverges in {diverged} of {len(he)} runs." if diverged else "stalls."),
            )
        ],
        sweeps=["train"],
    )
