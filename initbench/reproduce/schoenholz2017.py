"""Schoenholz et al. 2017: random tanh nets train only up to about 6 xi_c layers.

A phase diagram of tanh mlps at sigma_b^2 = 0.05 across sigma_w^2 and depth, trained
briefly on digits: a net "trains" when most seeds reach 80% test accuracy. The measured
value is how often the prediction (depth < 6 xi_c, from the mean-field theory at that
sigma_w^2) agrees with the measurement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from initbench.report.phase import TRAINABLE, measurements
from initbench.reproduce import Outcome
from initbench.studies.phase import parse_values, phase
from initbench.sweeps.store import load


def run(folder: Path, full: bool, device: str, progress: bool) -> Outcome:
    sigma_w2 = parse_values("0.5:4:15" if full else "0.5:4:8", "sigma_w2")
    depths = (4, 8, 16, 32, 64, 128) if full else (4, 8, 16, 32)
    path = phase(
        "tanh",
        sigma_w2,
        (0.05,),
        depths,
        folder / "phase",
        width=256 if full else 64,
        seeds=4 if full else 2,
        device=device,
        progress=progress,
        dataset="digits",
        train_steps=300 if full else 100,
        lr=0.01,
        batch_size=128,
        histograms=False,
    )
    from initbench.report import report

    report(path)
    table = measurements(load(path))
    predicted = table["depth"] < TRAINABLE * table["xi_c"]
    trains = table["training"] == "trains"
    agree = (predicted == trains).to_numpy()
    rate = float(agree.mean())
    half = 1.96 * float(np.sqrt(rate * (1 - rate) / len(agree)))
    shallow = trains[predicted].mean() if predicted.any() else float("nan")
    deep = trains[~predicted].mean() if (~predicted).any() else float("nan")
    return Outcome(
        expected="trainable exactly where depth < 6 xi_c (the paper's Figure 5 boundary)",
        how="the share of (sigma_w^2, depth) points where 'depth < 6 xi_c' and 'most seeds reach "
        "80% test accuracy' agree; a normal-approximation 95% interval",
        measured=rate,
        interval=(rate - half, rate + half),
        passed=rate >= 0.8,
        setting=f"digits instead of MNIST and CIFAR-10, width {64 if not full else 256}, "
        f"depths up to {max(depths)} (the paper: up to 300), "
        f"{300 if full else 100} SGD steps (lr 0.01)",
        details={
            "points": len(agree),
            "trains when shallower than 6 xi_c": float(shallow),
            "trains when deeper than 6 xi_c": float(deep),
        },
        figures=[
            (
                "phase/report/figures/phase_b0.05.png",
                "Phase diagram: variance change, measured depth scale, accuracy",
                f"The prediction agrees with training at {100 * rate:.0f}% of the points: "
                f"{100 * shallow:.0f}% of the nets shallower than 6 xi_c train, "
                f"{100 * deep:.0f}% of the deeper ones.",
            ),
            (
                "phase/report/figures/depth_scale.png",
                "The correlation depth scale: fitted to measured correlations, and predicted",
                "xi_c diverges at the order-to-chaos transition (chi1 = 1).",
            ),
        ],
        sweeps=["phase"],
    )
