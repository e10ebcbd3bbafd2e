"""GPT-2's scaled residual projections (Radford et al. 2019): with N(0, 0.02^2) weights the
residual stream's variance at initialization grows with depth; dividing the residual
projections' std by sqrt(2L) keeps it bounded.

Each of L branches adds its output's variance to the stream. In a pre-LN residual mlp
(``x + W gelu(LN(x))``, the gpt's mlp branch with one layer) the closed form is exact:
``q_L = q_0 + L * fan_in * Var(W) * E[gelu(z)^2]``, linear in L at 0.02 and constant in L
at 0.02 / sqrt(2L) (the mean-field map of the residual stream, ``theory_pre_var``). The
gpt itself, attention included, is measured beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from initbench.reproduce import Outcome
from initbench.reproduce.common import line_figure, run_sweep
from initbench.sweeps.grid import Grid

SCALED, PLAIN = "gpt2", "normal[std=0.02]"
NAMES = {SCALED: "0.02/sqrt(2L)", PLAIN: "0.02"}
TOLERANCE = 0.1  # measured within 10% of the closed form


def last_layer(results) -> pd.DataFrame:
    """Each run's stream variance after its last block, and the closed form there."""
    cells = results.cells[results.cells["status"] == "ok"][["run_id", "scheme_id", "depth"]]
    layers = results.layers.merge(cells, on="run_id")
    last = layers[layers["layer"] == layers["depth"]]
    return last[["scheme_id", "depth", "pre_var", "theory_pre_var"]]


def run(folder: Path, full: bool, device: str, progress: bool) -> Outcome:
    depths = (2, 8, 32, 128) if full else (2, 8, 32)
    common = {"schemes": (SCALED, PLAIN), "activations": ("gelu",), "histograms": False}
    residual = Grid(
        archs=("resmlp[norm=layer]",),
        depths=depths,
        widths=(512 if full else 256,),
        seeds=4 if full else 3,
        batch_size=128,
        **common,
    )
    decoder = Grid(
        archs=("gpt[head_dim=16]",),
        depths=depths,
        widths=(128 if full else 64,),
        seeds=2,
        batch_size=16,
        tokens=16,
        **common,
    )
    stream = last_layer(run_sweep(folder, "resmlp", residual, device, progress))
    gpt = last_layer(run_sweep(folder, "gpt", decoder, device, progress))
    error = (stream["pre_var"] / stream["theory_pre_var"] - 1).abs()
    growth = {}
    for name, table in (("resmlp", stream), ("gpt", gpt)):
        means = table.groupby(["scheme_id", "depth"])["pre_var"].mean()
        for scheme in NAMES:
            growth[(name, scheme)] = means[(scheme, max(depths))] / means[(scheme, min(depths))]
    passed = (
        error.max() < TOLERANCE
        and growth[("resmlp", PLAIN)] > 5
        and growth[("resmlp", SCALED)] < 1.5
        and growth[("gpt", PLAIN)] > 2 * growth[("gpt", SCALED)]
    )
    rows = []
    for name, table, with_theory in (("residual mlp", stream, True), ("gpt", gpt, False)):
        grouped = table.groupby(["scheme_id", "depth"])
        for (scheme, depth), group in grouped:
            label = f"{name}, {NAMES[scheme]}"
            values = group["pre_var"]
            rows.append((label, depth, values.mean(), values.min(), values.max()))
            if with_theory:
                theory = float(group["theory_pre_var"].iloc[0])
                rows.append((f"{label}: closed form", depth, theory, theory, theory))
    table = pd.DataFrame(rows, columns=["series", "depth", "value", "lo", "hi"])
    figure = line_figure(
        table,
        folder,
        "stream",
        x="depth",
        xlabel="blocks L",
        ylabel="variance of the residual stream after the last block",
        title="GPT-2's residual scaling at initialization",
    )
    ratio = np.array([growth[("resmlp", PLAIN)], growth[("resmlp", SCALED)]])
    return Outcome(
        expected="without the 1/sqrt(2L) scaling the stream's variance grows linearly with "
        "depth, with it it stays bounded; both on the closed form",
        how=f"the stream's variance after the last block at depth {max(depths)} over depth "
        f"{min(depths)}, scaled, mean over seeds (interval: the unscaled growth and the "
        "scaled); the largest deviation from the closed form is in the details",
        measured=float(ratio[1]),
        interval=(float(ratio.min()), float(ratio.max())),
        passed=bool(passed),
        setting=f"probes at initialization on standard-normal input: a pre-LN residual mlp "
        f"(GELU) and a gpt of widths {residual.widths[0]} and {decoder.widths[0]}, "
        f"depths {', '.join(map(str, depths))}",
        details={
            "growth, residual mlp, 0.02": growth[("resmlp", PLAIN)],
            "growth, residual mlp, 0.02/sqrt(2L)": growth[("resmlp", SCALED)],
            "growth, gpt, 0.02": growth[("gpt", PLAIN)],
            "growth, gpt, 0.02/sqrt(2L)": growth[("gpt", SCALED)],
            "largest deviation from the closed form": float(error.max()),
        },
        figures=[
            (
                figure,
                "The residual stream's variance after the last block, against depth",
                f"From {min(depths)} to {max(depths)} blocks it grows ×"
                f"{growth[('resmlp', PLAIN)]:.1f} at 0.02 and ×{growth[('resmlp', SCALED)]:.2f} "
                f"with the scaling (the gpt: ×{growth[('gpt', PLAIN)]:.1f} and "
                f"×{growth[('gpt', SCALED)]:.2f}); the measurement is within "
                f"{100 * error.max():.1f}% of the closed form.",
            )
        ],
        sweeps=["resmlp", "gpt"],
    )
