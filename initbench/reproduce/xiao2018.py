"""Xiao et al. 2018: delta-orthogonal convolutions keep a deep CNN's input-output Jacobian
concentrated; Gaussian convolutions spread it with depth.

Tanh CNNs at criticality (sigma_w^2 = 1, sigma_b^2 = 0) with 3x3 circular convolutions on
8x8 images: the delta-orthogonal kernel (an orthogonal matrix at the centre tap) against
a Gaussian kernel of variance 1 / fan_in. The paper trains 10,000-layer CNNs with the
former; on a CPU this reproduces the mechanism it proves, the Jacobian's spectrum. With
``--full`` the nets are also trained at depth 256 on digits (a GPU is advised).
"""

from __future__ import annotations

from pathlib import Path

from initbench.reproduce import Outcome
from initbench.reproduce.common import bounds, line_figure, run_sweep, spread
from initbench.sweeps.grid import Grid

DELTA = "delta_orthogonal[gain=unit]"
GAUSSIAN = "variance_scaling[scale=1,mode=fan_in,distribution=normal]"
NAMES = {DELTA: "delta-orthogonal", GAUSSIAN: "Gaussian"}


def run(folder: Path, full: bool, device: str, progress: bool) -> Outcome:
    depths = (4, 16, 64, 256) if full else (4, 16, 64)
    grid = Grid(
        schemes=(DELTA, GAUSSIAN),
        activations=("tanh",),
        archs=("cnn",),
        depths=depths,
        widths=(16 if full else 8,),
        image_size=8,
        seeds=4 if full else 2,
        batch_size=16,
        jacobian=True,
        histograms=False,
    )
    cells = run_sweep(folder, "spectra", grid, device, progress).cells
    runs = cells.assign(series=cells["scheme_id"].map(NAMES), spread=spread(cells))
    table = runs.groupby(["series", "depth"], sort=False)["spread"].agg(
        value="mean", lo="min", hi="max"
    )
    figure = line_figure(
        table.reset_index(),
        folder,
        "spread",
        x="depth",
        xlabel="depth (convolutions)",
        ylabel="var(s^2) / mean(s^2)^2 of the Jacobian",
        title="Spread of a tanh CNN's Jacobian singular values",
    )
    deepest, shallowest = max(depths), min(depths)
    by = runs.groupby(["series", "depth"])["spread"]
    delta = bounds(by.get_group(("delta-orthogonal", deepest)).to_numpy())
    gauss = by.get_group(("Gaussian", deepest)).mean()
    growth = {n: _growth(by, n, shallowest, deepest) for n in NAMES.values()}
    passed = delta[0] < gauss / 5 and growth["delta-orthogonal"] < 2 and growth["Gaussian"] > 4
    figures = [
        (
            figure,
            "Spread of the squared singular values against depth",
            f"At depth {deepest}: delta-orthogonal {delta[0]:.3g}, Gaussian {gauss:.3g}; from "
            f"depth {shallowest} the delta-orthogonal spread grows "
            f"×{growth['delta-orthogonal']:.2f}, the Gaussian ×{growth['Gaussian']:.2f}.",
        )
    ]
    sweeps = ["spectra"]
    details = {
        f"spread at depth {deepest}, {n}": by.get_group((n, deepest)).mean() for n in NAMES.values()
    }
    if full:
        train = Grid(
            schemes=(DELTA, GAUSSIAN),
            activations=("tanh",),
            archs=("cnn",),
            depths=(256,),
            widths=(32,),
            seeds=2,
            dataset="digits",
            train_steps=2000,
            lr=0.01,
            histograms=False,
        )
        trained = run_sweep(folder, "train", train, device, progress).cells
        accuracy = trained.groupby("scheme_id")["final_test_acc"].mean()
        details |= {f"final test accuracy at depth 256, {NAMES[s]}": a for s, a in accuracy.items()}
        figures.append(("train/report/figures/accuracy_cnn_w32.png", "Training at depth 256", ""))
        sweeps.append("train")
    return Outcome(
        expected="the delta-orthogonal CNN's spread stays flat with depth and far below the "
        "Gaussian CNN's, which grows with depth",
        how=f"var(s^2) / mean(s^2)^2 of each run's Jacobian (4 samples of 8x8 images) at depth "
        f"{deepest}; mean and 95% interval over seeds, delta-orthogonal",
        measured=delta[0],
        interval=(delta[1], delta[2]),
        passed=bool(passed),
        setting="8x8 standard-normal images, 8 channels, depths up to 64 (the paper: CIFAR-10 "
        "and MNIST, 10,000 layers, trained); the training itself only with --full",
        details=details,
        figures=figures,
        sweeps=sweeps,
    )


def _growth(by, name: str, shallowest: int, deepest: int) -> float:
    """How many times the mean spread grows from the shallowest depth to the deepest."""
    return by.get_group((name, deepest)).mean() / by.get_group((name, shallowest)).mean()
