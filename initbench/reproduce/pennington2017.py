"""Pennington et al. 2017: orthogonal tanh nets at criticality keep their input-output
Jacobian's singular values concentrated; Gaussian and ReLU nets spread them with depth.

At sigma_w^2 = 1, sigma_b^2 = 0 a tanh net is critical (chi1 = 1). The measure of spread
is scale-free: the variance of the squared singular values over their squared mean. For a
product of Gaussian matrices it grows about linearly with depth; an orthogonal tanh net's
stays flat (dynamical isometry).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from initbench.reproduce import Outcome
from initbench.reproduce.common import bounds, line_figure, run_sweep, spread
from initbench.sweeps.grid import Grid

SERIES = {
    ("orthogonal[gain=unit]", "tanh"): "orthogonal, tanh",
    ("variance_scaling[scale=1,mode=fan_in,distribution=normal]", "tanh"): "Gaussian, tanh",
    ("orthogonal[gain=matched]", "relu"): "orthogonal, relu",
    ("kaiming_normal[mode=fan_in,nonlinearity=matched]", "relu"): "Gaussian, relu",
}


def run(folder: Path, full: bool, device: str, progress: bool) -> Outcome:
    width = 512 if full else 128
    depths = (4, 16, 64, 256) if full else (4, 16, 64)
    frames = []
    for (scheme, activation), _ in SERIES.items():
        grid = Grid(
            schemes=(scheme,),
            activations=(activation,),
            depths=depths,
            widths=(width,),
            seeds=4 if full else 3,
            batch_size=64,
            jacobian=True,
            histograms=False,
        )
        name = f"{activation}_{scheme.split('[')[0]}"
        cells = run_sweep(folder, name, grid, device, progress).cells
        frames.append(cells.assign(series=SERIES[(scheme, activation)], spread=spread(cells)))
    runs = pd.concat(frames)
    table = runs.groupby(["series", "depth"], sort=False)["spread"].agg(
        value="mean", lo="min", hi="max"
    )
    table = table.reset_index()
    figure = line_figure(
        table,
        folder,
        "spread",
        x="depth",
        xlabel="depth",
        ylabel="var(s^2) / mean(s^2)^2 of the Jacobian",
        title=f"Spread of the Jacobian's singular values, width {width}",
    )
    deepest = max(depths)
    at = runs[runs["depth"] == deepest].groupby("series")["spread"]
    orth = bounds(at.get_group("orthogonal, tanh").to_numpy())
    gauss = at.get_group("Gaussian, tanh").mean()
    relu = min(at.get_group("orthogonal, relu").mean(), at.get_group("Gaussian, relu").mean())
    shallow = runs[runs["depth"] == min(depths)].groupby("series")["spread"].mean()
    growth = {s: at.get_group(s).mean() / shallow[s] for s in SERIES.values()}
    passed = (
        orth[0] < gauss / 5
        and orth[0] < relu / 5
        and growth["orthogonal, tanh"] < 2
        and growth["Gaussian, tanh"] > 4
    )
    return Outcome(
        expected="the orthogonal tanh net's spread stays flat with depth and far below the "
        "Gaussian tanh and the ReLU nets', whose spread grows with depth",
        how=f"var(s^2) / mean(s^2)^2 of each run's Jacobian (4 samples) at depth {deepest}; mean "
        "and 95% interval over seeds, orthogonal tanh",
        measured=orth[0],
        interval=(orth[1], orth[2]),
        passed=bool(passed),
        setting=f"width {width}, depths up to {deepest} (the paper: width 400, depths up to 200 "
        "and more), standard-normal inputs, sigma_b^2 = 0 (q* = 0 at sigma_w^2 = 1)",
        details={f"spread at depth {deepest}, {s}": at.get_group(s).mean() for s in SERIES.values()}
        | {f"growth from depth {min(depths)}, {s}": g for s, g in growth.items()},
        figures=[
            (
                figure,
                "Spread of the squared singular values against depth",
                f"At depth {deepest}: orthogonal tanh {orth[0]:.3g}, Gaussian tanh {gauss:.3g}, "
                f"ReLU at least {relu:.3g}; the orthogonal tanh net's spread grows "
                f"×{growth['orthogonal, tanh']:.2f} from depth {min(depths)}, the Gaussian "
                f"tanh net's ×{growth['Gaussian, tanh']:.2f}.",
            )
        ],
        sweeps=[f"{a}_{s.split('[')[0]}" for s, a in SERIES],
    )
