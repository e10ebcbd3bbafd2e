"""The results store's column schema (a public contract: see ``docs/results.md``).

A change to a column bumps :data:`SCHEMA_VERSION`; tests check that every column here is
documented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from initbench.measure.statistics import STATISTICS, THEORY_COLUMNS

SCHEMA_VERSION = 5

CELL_COLUMNS = {
    "run_id": "string",
    "cell_id": "string",
    "scheme_id": "string",
    "scheme": "string",
    "gain": "string",
    "gain_value": "float64",
    "activation": "string",
    "arch": "string",
    "depth": "int64",
    "width": "int64",
    "bias_var": "float64",
    "seed": "int64",
    "status": "string",
    "reason": "string",
    "rng": "string",
    "var_ratio": "float64",
    "grad_ratio": "float64",
    "input_corr": "float64",
    "chi1": "float64",
    "xi_q": "float64",
    "xi_c": "float64",
    "xi_c_fit": "float64",
    "jac_s2_mean": "float64",
    "jac_s2_var": "float64",
    "jac_s_max": "float64",
    "jac_s_min": "float64",
    "train_lr": "float64",
    "steps_to_target": "float64",
    "train_loss_auc": "float64",
    "final_train_loss": "float64",
    "final_train_acc": "float64",
    "final_test_loss": "float64",
    "final_test_acc": "float64",
    "diverged_step": "float64",
    "probe_seconds": "float64",
    "train_seconds": "float64",
    "seconds_per_step": "float64",
    "device": "string",
}
LAYER_COLUMNS = ["run_id", "layer", "module", "kind", "call", *STATISTICS, *THEORY_COLUMNS]
CURVE_COLUMNS = ["run_id", "step", "train_loss", "train_acc", "test_loss", "test_acc"]
# lo, hi and count are lists in the file, one row per bin once read
# (:func:`~initbench.sweeps.store.one_row_per_bin`)
HIST_COLUMNS = ["run_id", "layer", "quantity", "lo", "hi", "count"]
SPECTRUM_COLUMNS = ["run_id", "lo", "hi", "count"]


def cell_rows(runs: Sequence[Any], device: str, **columns: Any) -> pd.DataFrame:
    """``cells`` rows of ``runs`` (:class:`~initbench.sweeps.grid.Run`): identity columns, then
    ``columns`` (scalars or one value per run); every other column is missing."""
    values = {
        "run_id": [r.id for r in runs],
        "cell_id": [r.cell.id for r in runs],
        "scheme_id": [r.cell.scheme.id for r in runs],
        "scheme": [r.cell.scheme.name for r in runs],
        "gain": [r.cell.scheme.gain_setting for r in runs],
        "gain_value": [
            r.cell.scheme.gain(r.cell.activation) if r.cell.scheme.gain else math.nan for r in runs
        ],
        "activation": [r.cell.activation.id for r in runs],
        "arch": [r.cell.arch.id for r in runs],
        "depth": [r.cell.depth for r in runs],
        "width": [r.cell.width for r in runs],
        "bias_var": [r.cell.bias_var for r in runs],
        "seed": [r.seed for r in runs],
        "device": device,
    } | columns
    data = {}
    for column, dtype in CELL_COLUMNS.items():
        value = values.get(column, None if dtype == "string" else math.nan)
        if value is None or np.ndim(value) == 0:
            value = [value] * len(runs)
        data[column] = pd.array(value, dtype=dtype)
    return pd.DataFrame(data)
