"""One classification per scheme and cell, used by every table, caption and summary.

**Signal** (forward) and **gradients** (backward) each get ``stable``, ``vanishing`` or
``exploding`` from the same rule. For a run, the signal's change is
``log2(pre_var[depth] / pre_var[1])``; the gradients' is ``log2(grad_h_var[1] /
grad_h_var[depth])`` (the backward signal, from the last hidden layer to the first).
Over a cell's seeds these give a mean and a 95% interval. At finite width the log-variance
moves like a random walk with independent steps from layer to layer (Hanin & Nica 2019),
so the interval comes from the per-layer steps: their spread around each layer's mean
step over seeds gives ``(seeds - 1) x (depth - 1)`` degrees of freedom instead of
``seeds - 1``, and a few seeds already tell a real drift from noise.

- ``vanishing``: the interval lies below ``-THRESHOLD`` bits (the quantity ends up less
  than a quarter of where it started), or a run's quantity is exactly 0.
- ``exploding``: the interval lies above ``+THRESHOLD`` bits, or a run is non-finite.
- otherwise ``stable``; and a candidate for vanishing or exploding is ``stable`` after all
  when it *settled*: over the deep half of the network (at least 3 layers) the fitted
  per-layer trend changes it by at most ``SETTLED`` bits (a fixed point such as tanh's
  with the matched gain, where the variance moves early and then holds), unless its mean
  change goes beyond ``SETTLED_LIMIT`` bits (a 64-fold change: the signal has collapsed or
  blown up, and a fixed point there keeps nothing of it).
  With one seed there is no interval and the mean decides.

**Training** (when the sweep trains): ``diverges`` if any seed's loss went non-finite,
``trains`` if most seeds reach ``target_accuracy``, else ``stalls``.

**Equivalent schemes**: two schemes whose weights have the same distribution on every
weight of the cell's network (same kind and moments: ``xavier_normal[gain=matched]`` and
``kaiming_normal[mode=fan_in,nonlinearity=matched]`` on square layers) form one group.

**Failing** is judged on what the sweep measures last: training when it trained
(``stalls`` or ``diverges``; a signal or gradients that vanish or explode are then
*warnings*: the scheme trains here, but the drift predicts trouble deeper or at other
learning rates), else the signal and the gradients (anything but ``stable``).

**Recommended**: the groups that fail nothing and are statistically tied with the best of
them. The best has the highest mean final test accuracy (trained) or the smallest mean of
``|signal change| + |gradient change|`` (probe only). A group is set apart from the best
only when two tests agree: the 95% interval of the paired per-seed difference (seeds
share their random streams across schemes) lies below 0, and the 95% intervals of the two
means do not overlap. With one seed nothing can be told apart, and every group that fails
nothing is recommended.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from initbench.core.intervals import mean_interval, t_quantile

THRESHOLD = 2.0  # bits: a fourfold change end to end
SETTLED = 0.5  # bits over the deep half: the quantity has stopped moving
SETTLED_LIMIT = 6.0  # bits: no change beyond this is stable, settled or not
MIN_SETTLE_LAYERS = 3
CELL_KEYS = ["activation", "arch", "depth", "width", "bias_var"]
SIGNALS = ("stable", "vanishing", "exploding")
TRAINING = ("trains", "stalls", "diverges")


def quantity_measures(y: np.ndarray) -> dict[str, float]:
    """One quantity of one cell: ``y`` is ``(seeds, layers)`` of log2 values in the order
    of the pass (forward: layer 1 first; backward: the last layer first).

    Returns:
        ``change`` (mean over seeds of the end-to-end change, bits), ``ci`` (its 95%
        half-width), ``settle`` (bits moved over the deep half by the fitted trend, mean
        over seeds), ``zero`` and ``nonfinite`` (1.0 if any value is exactly 0 or not
        finite, else 0.0).
    """
    seeds, layers = y.shape
    out = {"change": math.nan, "ci": math.nan, "settle": math.nan}
    out["zero"] = float(np.isneginf(y).any())
    out["nonfinite"] = float((np.isposinf(y) | np.isnan(y)).any())
    if out["zero"] or out["nonfinite"] or layers < 2:
        return out
    steps = np.diff(y, axis=1)  # (seeds, layers - 1)
    out["change"] = float(steps.sum(1).mean())
    if seeds > 1:
        dof = (seeds - 1) * (layers - 1)
        spread = ((steps - steps.mean(0)) ** 2).sum() / dof
        out["ci"] = float(t_quantile(dof) * math.sqrt((layers - 1) * spread / seeds))
    deep = np.arange(layers) >= math.ceil(layers / 2) - 1
    if deep.sum() >= MIN_SETTLE_LAYERS:
        x = np.arange(layers)[deep].astype(float)
        slopes = np.polyfit(x, y[:, deep].T, 1)[0]
        out["settle"] = float(slopes.mean() * (x.max() - x.min()))
    return out


def cell_measures(cells: pd.DataFrame, layers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell and scheme: the signal's and the gradients' measures over the ok runs; and
    per run: each quantity's end-to-end change (bits)."""
    ok = cells.loc[cells["status"] == "ok", [*CELL_KEYS, "scheme_id", "run_id"]]
    merged = layers[["run_id", "layer", "pre_var", "grad_h_var"]].merge(ok, on="run_id")
    merged = merged.sort_values(["run_id", "layer"])
    rows, per_run = [], []
    for key, group in merged.groupby([*CELL_KEYS, "scheme_id"], sort=False, dropna=False):
        run_ids = group["run_id"].unique()
        row = dict(zip([*CELL_KEYS, "scheme_id"], key, strict=True))
        totals = {"run_id": run_ids}
        for name, column, backward in (
            ("signal", "pre_var", False),
            ("gradients", "grad_h_var", True),
        ):
            values = group[column].to_numpy(float).reshape(len(run_ids), -1)
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.log2(values[:, ::-1] if backward else values)
                totals[f"{name}_total"] = y[:, -1] - y[:, 0]
            row |= {f"{name}_{k}": v for k, v in quantity_measures(y).items()}
        rows.append(row)
        per_run.append(pd.DataFrame(totals))
    runs = (
        pd.concat(per_run)
        if per_run
        else pd.DataFrame(columns=["run_id", "signal_total", "gradients_total"])
    )
    return pd.DataFrame(rows, columns=[*CELL_KEYS, "scheme_id"] if not rows else None), runs


def classify_change(measures: dict[str, float], name: str) -> str:
    """``stable``, ``vanishing`` or ``exploding`` from one quantity's measures."""
    if measures.get(f"{name}_zero") == 1:
        return "vanishing"
    if measures.get(f"{name}_nonfinite") == 1:
        return "exploding"
    mean, half = measures[f"{name}_change"], measures[f"{name}_ci"]
    if math.isnan(mean):
        return ""
    lo, hi = (mean, mean) if math.isnan(half) else (mean - half, mean + half)
    label = "vanishing" if hi < -THRESHOLD else "exploding" if lo > THRESHOLD else "stable"
    settled = abs(measures[f"{name}_settle"]) <= SETTLED and abs(mean) <= SETTLED_LIMIT
    if label != "stable" and settled:
        return "stable"
    return label


def classify_training(runs: pd.DataFrame) -> str:
    """``diverges``, ``trains`` or ``stalls`` for one cell's runs."""
    if runs["diverged_step"].notna().any() or (runs["status"] == "diverged").any():
        return "diverges"
    reached = runs["steps_to_target"].notna()
    return "trains" if reached.sum() * 2 > len(runs) else "stalls"


def classify(
    cells: pd.DataFrame,
    layers: pd.DataFrame,
    trained: bool,
    groups: dict[tuple, str] | None = None,
) -> pd.DataFrame:
    """Every scheme and cell's classification: one row per (cell keys, scheme).

    Args:
        cells: the sweep's ``cells`` table.
        layers: its ``layers`` table.
        trained: the sweep trained (classify training, rank by accuracy).
        groups: ``(activation, arch, depth, width, bias_var, scheme_id) -> group`` for
            equivalent schemes (default: every scheme its own group).

    Returns:
        Columns ``activation, arch, depth, width, bias_var, scheme_id, group, signal,
        gradients, training, recommended`` and the numbers behind them (see
        ``docs/report.md``).
    """
    cells = cells.copy()
    cells["bias_var"] = cells["bias_var"].fillna(0.0)
    keys = [*CELL_KEYS, "scheme_id"]
    measures, totals = cell_measures(cells, layers)
    measures = measures.set_index(keys)
    cells = cells.merge(totals, on="run_id", how="left")
    rows = []
    for key, runs in cells.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key, strict=True))
        row["group"] = (groups or {}).get(key, row["scheme_id"])
        found = measures.loc[key].to_dict() if key in measures.index else {}
        rows.append(row | _classify_cell(runs, found, trained))
    verdicts = pd.DataFrame(rows)
    verdicts["recommended"] = False
    for _, cell in verdicts.groupby(CELL_KEYS, sort=False, dropna=False):
        verdicts.loc[_tied_with_best(cell, cells, trained), "recommended"] = True
    return verdicts


def _classify_cell(runs: pd.DataFrame, measures: dict, trained: bool) -> dict[str, object]:
    counts = runs["status"].value_counts()
    statuses = ("ok", "diverged", "skipped", "failed", "oom")
    row: dict[str, object] = {"seeds": len(runs)} | {s: int(counts.get(s, 0)) for s in statuses}
    note = ""
    if (runs["status"] == "skipped").all():
        note = str(runs["reason"].iloc[0])
    elif not (runs["status"].isin(["ok", "diverged"])).any():
        reasons = runs["reason"].dropna()
        note = "no run finished" + (f": {reasons.iloc[0]}" if len(reasons) else "")
    diverged = (runs["status"] == "diverged") & runs["reason"].fillna("").str.contains("initial")
    for name in ("signal", "gradients"):
        values = {f"{name}_{k}": measures.get(f"{name}_{k}", math.nan) for k in MEASURES}
        if diverged.any():
            values[f"{name}_nonfinite"] = 1.0
        row[name] = "" if note else classify_change(values, name)
        row[f"{name}_change"] = values[f"{name}_change"]
        row[f"{name}_ci"] = values[f"{name}_ci"]
        if values[f"{name}_zero"] == 1:
            row[f"{name}_change"] = -math.inf
        elif values[f"{name}_nonfinite"] == 1:
            row[f"{name}_change"] = math.inf
    row["training"] = ""
    if trained:
        if not note:
            row["training"] = classify_training(runs[runs["status"].isin(["ok", "diverged"])])
        for column in ("final_test_acc", "steps_to_target"):
            mean, half, _ = mean_interval(runs[column].to_numpy(float))
            row[column], row[f"{column}_ci"] = mean, half
        row["reached_target"] = int(runs["steps_to_target"].notna().sum())
    row["note"] = note
    return row


MEASURES = ("change", "ci", "settle", "zero", "nonfinite")


def failing(verdicts: pd.DataFrame, trained: bool) -> pd.Series:
    """Rows that fail what the sweep is judged on: training (``stalls``, ``diverges``)
    when it trained, else the signal or the gradients (not ``stable``); and rows with no
    finished run."""
    if trained:
        bad = verdicts["training"].isin(["stalls", "diverges"])
    else:
        bad = (verdicts["signal"] != "stable") | (verdicts["gradients"] != "stable")
    return bad | (verdicts["note"] != "")


def warnings(row: pd.Series | object, trained: bool) -> list[str]:
    """Diagnostics of a trained row that do not fail it: a signal or gradients that vanish
    or explode (trouble at greater depth, or at other learning rates)."""
    if not trained or getattr(row, "note", ""):
        return []
    return [
        f"{name} {getattr(row, name)}"
        for name in ("signal", "gradients")
        if getattr(row, name) not in ("stable", "")
    ]


def _metric(runs: pd.DataFrame, trained: bool) -> pd.Series:
    """Per run, higher is better: final test accuracy, or minus the total drift
    (``|signal change| + |gradient change|``)."""
    if trained:
        return runs["final_test_acc"].astype(float)
    return -(runs["signal_total"].abs() + runs["gradients_total"].abs())


def _tied_with_best(cell: pd.DataFrame, runs: pd.DataFrame, trained: bool) -> list[int]:
    """Index labels of the cell's rows that fail nothing and tie with the best."""
    eligible = cell[~failing(cell, trained)]
    if eligible.empty:
        return []
    keys = cell.iloc[0][CELL_KEYS]
    mask = np.ones(len(runs), dtype=bool)
    for key in CELL_KEYS:
        mask &= (runs[key] == keys[key]).to_numpy()
    here = runs[mask & (runs["status"] == "ok").to_numpy()]
    metric = here.assign(metric=_metric(here, trained)).pivot_table(
        index="seed", columns="scheme_id", values="metric", aggfunc="first"
    )
    means = metric[eligible["scheme_id"]].mean()
    if means.isna().all():
        return list(eligible.index)
    best = means.idxmax()
    tied = []
    for index, row in eligible.iterrows():
        scheme = row["scheme_id"]
        if scheme == best:
            tied.append(index)
            continue
        if not _separated(metric[scheme].to_numpy(float), metric[best].to_numpy(float)):
            tied.append(index)
    return tied


def _separated(values: np.ndarray, best: np.ndarray) -> bool:
    """Whether both tests set ``values`` apart from (below) ``best``: the 95% interval of
    the paired per-seed difference lies below 0, and the two 95% intervals of the means do
    not overlap."""
    both = np.isfinite(values) & np.isfinite(best)
    mean, half, n = mean_interval(values[both] - best[both])
    if n < 2 or not math.isfinite(half) or mean + half >= 0:
        return False
    m_a, h_a, n_a = mean_interval(values)
    m_b, h_b, n_b = mean_interval(best)
    if min(n_a, n_b) < 2:
        return False
    return m_a + h_a < m_b - h_b


def equivalence_groups(cells: pd.DataFrame, weights: pd.DataFrame | None) -> dict[tuple, str]:
    """``(activation, arch, depth, width, bias_var, scheme_id) -> group``: schemes with the
    same weight distribution on every weight of the cell share the first one's id.

    Args:
        cells: the sweep's runs (``cell_id`` and the cell's keys).
        weights: each cell's weight signature (the sweep's ``weights.parquet``); None or
            missing cells: every scheme is its own group.
    """
    if weights is None or weights.empty:
        return {}
    signature = dict(zip(weights["cell_id"], weights["weights"], strict=True))
    groups: dict[tuple, str] = {}
    rows = cells[[*CELL_KEYS, "scheme_id", "cell_id"]].drop_duplicates([*CELL_KEYS, "scheme_id"])
    for cell_key, schemes in rows.groupby(CELL_KEYS, sort=False, dropna=False):
        first: dict[str, str] = {}
        for scheme_id, cell_id in zip(schemes["scheme_id"], schemes["cell_id"], strict=True):
            key = signature.get(cell_id)
            groups[(*cell_key, scheme_id)] = (
                scheme_id if key is None else first.setdefault(key, scheme_id)
            )
    return groups
