"""Saxe et al. 2014: orthogonal weights make a deep linear net's learning time independent
of depth; scaled Gaussian weights (variance 1/N) do not.

Linear mlps (identity activation) of width 64 on digits at several depths, trained with
SGD at a learning rate scaled as 1/depth (the paper's analysis: the effective learning
rate of a depth-D linear chain grows with D); learning time is the steps to 90% test
accuracy. The claim, as a number: the slope of log(learning time) against log(depth) is 0
for orthogonal weights and clearly positive for Gaussian ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from initbench.core.intervals import slope_interval
from initbench.reproduce import Outcome
from initbench.reproduce.common import line_figure, run_sweep
from initbench.sweeps.grid import Grid

ORTHOGONAL = "orthogonal[gain=unit]"
GAUSSIAN = "normal[std=0.125]"  # variance 1/N at width 64
LEARNING_RATE = 0.03  # times 1/depth


def run(folder: Path, full: bool, device: str, progress: bool) -> Outcome:
    depths = (2, 8, 32, 64, 128) if full else (2, 8, 32, 64)
    rows = []
    for depth in depths:
        grid = Grid(
            schemes=(ORTHOGONAL, GAUSSIAN),
            activations=("identity",),
            depths=(depth,),
            widths=(64,),
            seeds=5 if full else 2,
            dataset="digits",
            train_steps=1200 if full else 600,
            lr=LEARNING_RATE / depth,
            eval_every=5,
            target_accuracy=0.9,
            histograms=False,
        )
        cells = run_sweep(folder, f"depth{depth}", grid, device, progress).cells
        rows.append(cells[["scheme_id", "depth", "seed", "steps_to_target"]])
    runs = pd.concat(rows)
    budget = 1200 if full else 600
    runs["steps"] = runs["steps_to_target"].fillna(budget * 2)  # never: beyond the budget
    fits = {
        scheme: slope_interval(np.log(group["depth"]), np.log(group["steps"]))[:2]
        for scheme, group in runs.groupby("scheme_id")
    }
    orth, gauss = fits[ORTHOGONAL], fits[GAUSSIAN]
    table = runs.groupby(["scheme_id", "depth"])["steps"].agg(value="mean", lo="min", hi="max")
    table = table.reset_index().rename(columns={"scheme_id": "series"})
    figure = line_figure(
        table,
        folder,
        "learning_time",
        x="depth",
        xlabel="depth (linear layers)",
        ylabel="steps to 90% test accuracy",
        title="Learning time of deep linear nets, lr = 0.03 / depth",
    )
    return Outcome(
        expected="slope of log(learning time) on log(depth): 0 for orthogonal weights (the "
        "paper: depth-independent), above 0 for scaled Gaussian weights",
        how="least squares over depths and seeds of log(steps to 90% test accuracy) on "
        "log(depth); 95% interval of the orthogonal slope",
        measured=orth[0],
        interval=(orth[0] - orth[1], orth[0] + orth[1]),
        passed=abs(orth[0]) < 0.15 and gauss[0] - gauss[1] > 0.2,
        setting=f"digits instead of MNIST, width 64, depths {', '.join(map(str, depths))}, "
        "SGD with momentum 0.9 at lr 0.03 / depth, learning time in steps to 90% test accuracy",
        details={
            "orthogonal slope": orth[0],
            "orthogonal slope 95% half-width": orth[1],
            "Gaussian slope": gauss[0],
            "Gaussian slope 95% half-width": gauss[1],
        },
        figures=[
            (
                figure,
                "Learning time against depth (mean and range over seeds)",
                f"Orthogonal: slope {orth[0]:.2f} ± {orth[1]:.2f} (flat); Gaussian: slope "
                f"{gauss[0]:.2f} ± {gauss[1]:.2f}: learning slows with depth.",
            )
        ],
        sweeps=[f"depth{d}" for d in depths],
    )
