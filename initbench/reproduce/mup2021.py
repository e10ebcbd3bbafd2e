"""Yang et al. 2021 (Tensor Programs V): under muP every layer's coordinates keep their
size as the network widens, during training too; under the standard parametrization
they do not.

mup's "coord check": tanh mlps of 3 hidden layers on a fixed batch of 32 input features,
at widths 128 to 2048, trained 20 Adam steps on it (random class labels); after each step
the mean absolute value of every module's output, its slope against width on log-log
axes. muP (``mup[base_width=128]``: He's weights at width 128, the readout's variance and
the hidden and readout learning rates times 128 / width) against He's weights trained at
the one learning rate (the standard parametrization).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from initbench.archs import get_arch
from initbench.archs.base import Inputs
from initbench.core.activations import get_activation
from initbench.reproduce import Outcome
from initbench.reproduce.common import line_figure
from initbench.studies.coord import STABLE, Family, fit_slopes, measure

MUP = "mup[base_width=128]"
SP = "kaiming_normal[mode=fan_in,nonlinearity=matched]"
NAMES = {MUP: "muP", SP: "standard"}
FEATURES, CLASSES, DEPTH = 32, 10, 3
GROWS = 0.3  # a slope the standard parametrization must exceed somewhere


def family() -> Family:
    """The mlp at any width, on a batch of a fixed number of features (muP's input
    layer has a finite fan-in)."""
    arch, act = get_arch("mlp"), get_activation("tanh")
    return Family(
        lambda width: arch.build(DEPTH, width, act, Inputs((FEATURES,), CLASSES)),
        lambda width: (64, FEATURES),
        arch.roles,
    )


def run(folder: Path, full: bool, device: str, progress: bool) -> Outcome:
    widths = [128, 256, 512, 1024, 2048, 4096] if full else [128, 256, 512, 1024, 2048]
    steps = 20
    slopes, sizes = {}, []
    for scheme, name in NAMES.items():
        records = measure(
            family(),
            widths,
            steps=steps,
            seeds=3,
            scheme=scheme,
            activation="tanh",
            optimizer="adam",
            lr=0.01,
            device=device,
        )
        fitted = fit_slopes(records)
        slopes[name] = fitted[fitted["statistic"] == "out_abs_mean"]
        last = records[records["step"] == steps]
        size = last.groupby(["module", "width"])["out_abs_mean"].agg(
            value="mean", lo="min", hi="max"
        )
        sizes.append(size.reset_index().assign(scheme=name))
    late = {n: s[s["step"] >= 10] for n, s in slopes.items()}
    worst = late["muP"].loc[late["muP"]["slope"].abs().idxmax()]
    standard = late["standard"]["slope"].abs().max()
    passed = (late["muP"]["slope"].abs() <= STABLE).all() and standard > GROWS
    table = pd.concat(sizes, ignore_index=True)
    figures = []
    for name in NAMES.values():
        rows = table[table["scheme"] == name].assign(series=lambda t: "module " + t["module"])
        figure = line_figure(
            rows[["series", "width", "value", "lo", "hi"]],
            folder,
            f"coord_{name}",
            x="width",
            xlabel="width",
            ylabel=f"mean |output| after {steps} Adam steps",
            title=f"Coordinate check, {name} parametrization",
        )
        highest = slopes[name][slopes[name]["step"] == steps]["slope"].abs().max()
        figures.append(
            (
                figure,
                f"Every module's coordinate size against width, {name}",
                f"After {steps} steps the steepest module's slope is {highest:.2f} "
                f"(width-stable: at most {STABLE}).",
            )
        )
    return Outcome(
        expected=f"muP: every module's coordinates width-stable (|slope| <= {STABLE}) at "
        f"every step from 10 to {steps}; the standard parametrization: some grow (slope > "
        f"{GROWS})",
        how="least-squares slope of log(mean |output|) against log(width) over 3 seeds per "
        "width, every module and step from 10 on; the steepest muP module's slope and its "
        "95% interval",
        measured=float(worst["slope"]),
        interval=(float(worst["slope"] - worst["ci"]), float(worst["slope"] + worst["ci"])),
        passed=bool(passed),
        setting=f"tanh mlps of {DEPTH} hidden layers on a fixed batch of {FEATURES} "
        f"standard-normal features at widths {widths[0]}-{widths[-1]}, Adam at lr 0.01 "
        "(the paper: Transformers and ResNets, several learning rates)",
        details={
            "muP steepest slope from step 10": float(late["muP"]["slope"].abs().max()),
            "standard steepest slope from step 10": float(standard),
        },
        figures=figures,
    )
