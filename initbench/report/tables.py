"""Comparison tables: schemes ranked per activation and depth, with 95% intervals over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _stats

STATUSES = ("ok", "diverged", "skipped", "failed", "oom")
HEALTHY_DRIFT = 0.25  # |log2| variance change per layer: up to ~19% per layer


def interval(values: pd.Series) -> tuple[float, float, float]:
    """Mean and a 95% t-interval half-width over seeds (NaN half-width for one value)."""
    values = values.dropna()
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(values.mean())
    if n == 1:
        return mean, math.nan, 1
    half = float(_stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean, half, n


def add_derived(cells: pd.DataFrame) -> pd.DataFrame:
    """Per-run drift measures: |log2| change per layer of variance and gradient norm."""
    cells = cells.copy()
    steps = (cells["depth"] - 1).clip(lower=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        cells["var_drift"] = np.abs(np.log2(cells["var_ratio"].astype(float))) / steps
        cells["grad_drift"] = np.abs(np.log2(cells["grad_ratio"].astype(float))) / steps
    bad = cells["status"] != "ok"
    cells.loc[bad, ["var_drift", "grad_drift"]] = np.nan
    return cells


@dataclass
class Table:
    """One ranked table with its verdict."""

    title: str
    frame: pd.DataFrame
    verdict: str


def _fmt(mean: float, half: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(half):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {half:.2g}"


def ranking(cells: pd.DataFrame, trained: bool) -> list[Table]:
    """One table per activation and depth, best scheme first.

    Ranked by final test accuracy when the sweep trained, else by variance drift.
    """
    cells = add_derived(cells)
    tables = []
    for (arch, width, activation, depth), group in cells.groupby(
        ["arch", "width", "activation", "depth"], sort=True
    ):
        rows = []
        for scheme_id, runs in group.groupby("scheme_id", sort=False):
            counts = runs["status"].value_counts()
            row = {"scheme": scheme_id}
            for column in ("var_drift", "grad_drift"):
                mean, half, _ = interval(runs[column])
                row[column] = mean
                row[f"{column}_ci"] = half
            mean, half, _ = interval(
                np.log2(runs.loc[runs["status"] == "ok", "var_ratio"].astype(float))
            )
            row["log2_var_ratio"], row["log2_var_ratio_ci"] = mean, half
            if trained:
                for column in ("final_test_acc", "steps_to_target"):
                    mean, half, _ = interval(runs[column])
                    row[column], row[f"{column}_ci"] = mean, half
                row["reached_target"] = int(runs["steps_to_target"].notna().sum())
            row["seeds"] = len(runs)
            for status in STATUSES:
                row[status] = int(counts.get(status, 0))
            rows.append(row)
        frame = pd.DataFrame(rows)
        key = ["final_test_acc", "var_drift"] if trained else ["var_drift"]
        ascending = [False, True] if trained else [True]
        frame = frame.sort_values(key, ascending=ascending, na_position="last").reset_index(
            drop=True
        )
        frame.insert(0, "rank", range(1, len(frame) + 1))
        title = f"{activation}, {arch} depth {depth}, width {width}"
        tables.append(Table(title, frame, verdict(frame, trained)))
    return tables


def verdict(frame: pd.DataFrame, trained: bool) -> str:
    """One line: the best scheme, and which ones fail and how."""
    if frame.empty or frame["ok"].sum() == 0:
        return "No run finished: nothing to rank."
    best = frame.iloc[0]
    if trained and not math.isnan(best.get("final_test_acc", math.nan)):
        line = f"Best: {best['scheme']} ({best['final_test_acc']:.1%} test accuracy"
    else:
        line = f"Best: {best['scheme']} ("
    drift = best["var_drift"]
    if not math.isnan(drift):
        line += f"{', ' if trained else ''}variance changes {2**drift:.2f}x per layer)"
    else:
        line += ")"
    failures = []
    for _, row in frame.iterrows():
        lr = row["log2_var_ratio"]
        if row["diverged"]:
            failures.append(f"{row['scheme']} diverges")
        elif not math.isnan(lr) and row["var_drift"] > HEALTHY_DRIFT:
            failures.append(f"{row['scheme']} {'vanishes' if lr < 0 else 'explodes'}")
        elif row["skipped"] == row["seeds"]:
            failures.append(f"{row['scheme']} does not apply")
    if trained and "reached_target" in frame:
        stuck = frame[(frame["reached_target"] == 0) & (frame["ok"] > 0)]["scheme"].tolist()
        if stuck:
            failures.append("never reach the target: " + ", ".join(stuck))
    if failures:
        shown = failures[:6]
        more = f" and {len(failures) - 6} more" if len(failures) > 6 else ""
        line += ". Fails: " + "; ".join(shown) + more
    return line + "."


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """Merges mean and interval columns into readable text columns."""
    out = pd.DataFrame({"rank": frame["rank"], "scheme": frame["scheme"]})
    for column, label in (
        ("final_test_acc", "test accuracy"),
        ("steps_to_target", "steps to target"),
        ("var_drift", "variance drift (|log2|/layer)"),
        ("grad_drift", "gradient drift (|log2|/layer)"),
        ("log2_var_ratio", "log2 var ratio"),
    ):
        if column in frame:
            out[label] = [
                _fmt(m, h) for m, h in zip(frame[column], frame[f"{column}_ci"], strict=True)
            ]
    out["seeds"] = frame["seeds"]
    problems = [
        ", ".join(f"{frame.at[i, s]} {s}" for s in STATUSES[1:] if frame.at[i, s]) or "—"
        for i in frame.index
    ]
    out["not ok"] = problems
    return out
