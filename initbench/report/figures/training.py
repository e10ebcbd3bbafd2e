"""Training figures: test accuracy and training loss while training, steps to the target.

One figure per (arch, width, bias variance, activation). Curves: a panel per depth, a
line per group of schemes (the mean over seeds, a band from the lowest to the highest
seed). Steps to target: a panel per depth, a bar per group; a target never reached is
drawn to the budget, hatched.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from initbench.core import fmt
from initbench.report.classify import TRAINING
from initbench.report.figures.base import (
    DATA_COLUMNS,
    Context,
    Figure,
    cell_rows,
    choose_groups,
    depth_panels,
    drawn_rows,
    facet_title,
    finish,
    label_lists,
    marker,
    mean_and_band,
    save,
    setup,
    stem,
)

PLACE = 2  # where its sections come on the page
SECTIONS = {"training": "Training"}

CURVES = {
    "accuracy": ("test_acc", "test accuracy", "Test accuracy while training"),
    "loss": ("train_loss", "training loss (log scale)", "Training loss while training"),
}


def curve_data(ctx: Context, column: str, keys: dict, groups: list[str]) -> pd.DataFrame:
    """Per group, cell and logged step: mean, lowest and highest seed."""
    cells = cell_rows(ctx.cells[ctx.cells["status"].isin(["ok", "diverged"])], keys)
    cells = cells[cells["scheme_id"].isin(groups)]
    merged = ctx.curves[["run_id", "step", column]].merge(
        cells[["run_id", "activation", "depth", "scheme_id"]], on="run_id"
    )
    if merged.empty:
        return pd.DataFrame(columns=DATA_COLUMNS)
    agg = merged.groupby(["activation", "depth", "scheme_id", "step"], sort=True)[column].agg(
        value="mean", lo="min", hi="max"
    )
    agg = agg.reset_index()
    return drawn_rows(ctx, keys, agg, agg["step"], column)  # x: the logged step


def draw_curves(ctx: Context, name: str, keys: dict, table: pd.DataFrame, groups: list[str]):
    from matplotlib.lines import Line2D

    _, ylabel, title = CURVES[name]
    if name == "loss" and ctx.text:
        ylabel = "training loss, bits per character (log scale)"
    colors = ctx.palette(groups)
    fig, panels = depth_panels(setup(), table, "step")
    for ax, _, _, panel in panels:
        for scheme, rows in panel.groupby("scheme_id", sort=False):
            x = rows["layer"].to_numpy(float)
            mean_and_band(
                ax, x, rows, colors[scheme], scheme, lw=1.6, marker=marker(colors, scheme)
            )
        if name == "accuracy":
            ax.axhline(ctx.target, ls=":", color="0.4", lw=1)
            ax.set_ylim(0, 1)
        else:
            ax.set_yscale("log")
        ax.set_ylabel("")
    extra = [Line2D([], [], color="0.3", lw=1.6, label="mean of seeds (band: range)")]
    if name == "accuracy":
        extra.append(Line2D([], [], color="0.4", ls=":", label=f"target {fmt.percent(ctx.target)}"))
    finish(fig, colors, keys, table, title, ylabel, extra)
    return fig


def steps_data(ctx: Context, keys: dict, groups: list[str]) -> pd.DataFrame:
    """Per group, activation and depth: the median steps to target over seeds (``inf``
    where no seed reached it), and the lowest and highest seed."""
    cells = cell_rows(ctx.cells[ctx.cells["status"].isin(["ok", "diverged"])], keys)
    cells = cells[cells["scheme_id"].isin(groups)]
    steps = cells["steps_to_target"].astype(float).fillna(math.inf)
    agg = (
        cells.assign(s=steps)
        .groupby(["activation", "depth", "scheme_id"], sort=True)["s"]
        .agg(value="median", lo="min", hi="max")
        .reset_index()
    )
    return drawn_rows(ctx, keys, agg, np.nan, "steps_to_target")


def draw_steps(ctx: Context, keys: dict, table: pd.DataFrame, groups: list[str], budget: int):
    """A panel per depth, a bar per group: the median steps to the target
    (a line from the lowest to the highest seed), hatched to the budget when it is never."""
    from matplotlib.patches import Patch

    colors = ctx.palette(groups)
    shown = [g for g in colors if g in set(table["scheme_id"])]
    fig, panels = depth_panels(setup(), table, f"steps to {fmt.percent(ctx.target)} test accuracy")
    for ax, depth, activation, panel in panels:
        for i, scheme in enumerate(shown):
            row = panel[panel["scheme_id"] == scheme]
            if row.empty:
                continue
            value = float(row["value"].iloc[0])
            never = not math.isfinite(value)
            bar = ax.barh(
                i,
                budget * 1.05 if never else value,
                height=0.8,
                color=colors[scheme],
                alpha=0.35 if never else 0.9,
                hatch="xxx" if never else "",
                edgecolor="0.3",
                lw=0.5,
            )
            bar.patches[0].set_gid(f"bar|{scheme}|{activation}|{depth}")
            if never:
                ax.text(budget * 1.05, i, " never", va="center", fontsize=9)
            else:
                lo, hi = float(row["lo"].iloc[0]), float(row["hi"].iloc[0])
                ax.plot(
                    [lo, min(hi, budget * 1.05)],
                    [i, i],
                    color="0.2",
                    lw=1,
                    gid=f"range|{scheme}|{activation}|{depth}",
                )
        ax.axvline(budget, ls=":", color="0.4")
        ax.set_yticks(range(len(shown)), [""] * len(shown))
        ax.set_ylim(len(shown) - 0.5, -0.5)
        ax.set_xlim(0, budget * 1.3)
    never = Patch(facecolor="0.85", hatch="xxx", edgecolor="0.3", label=f"never (budget {budget})")
    title = "Steps to target, median over seeds (line: range)"
    finish(fig, colors, keys, table, title, "", [never])
    return fig


def curve_verdict(ctx: Context, keys: dict, table: pd.DataFrame) -> str:
    parts = []
    for (depth, activation), _ in table.groupby(["depth", "activation"], sort=True):
        rows = cell_rows(ctx.verdicts, keys | {"activation": activation, "depth": depth})
        rows = rows[rows["group"].isin(set(table["scheme_id"]))]
        text = label_lists(rows, "training", TRAINING, lambda r: fmt.percent(r.final_test_acc))
        parts.append(f"{activation}, depth {depth}: {text}")
    return "\n".join(parts)


def steps_verdict(table: pd.DataFrame) -> str:
    parts = []
    for (depth, activation), rows in table.groupby(["depth", "activation"], sort=True):
        reached = rows[np.isfinite(rows["value"].astype(float))].sort_values("value")
        never = rows[~np.isfinite(rows["value"].astype(float))]["scheme_id"].tolist()
        text = f"{activation}, depth {depth}: "
        if len(reached):
            best = reached.iloc[0]
            text += f"fastest {best['scheme_id']} ({fmt.steps(best['value'])} steps)"
        if never:
            text += ("; " if len(reached) else "") + "never: " + ", ".join(never)
        parts.append(text)
    return "\n".join(parts)


def figures(ctx: Context, out: Path) -> list[Figure]:
    """Every training figure of the sweep (none when it did not train)."""
    budget = ctx.budget
    if not ctx.trained or ctx.curves.empty:
        return []
    made = []
    for keys, rows in ctx.facets():
        groups, folded = choose_groups(rows)
        note = (
            f" Not drawn ({len(folded)} more; see the tables): {', '.join(folded)}."
            if folded
            else ""
        )
        for name, (column, _, title) in CURVES.items():
            table = curve_data(ctx, column, keys, groups)
            if table.empty:
                continue
            fig = draw_curves(ctx, name, keys, table, groups)
            stem_name = f"{name}_{stem(keys)}"
            save(fig, out, stem_name)
            made.append(
                Figure(
                    stem_name,
                    "training",
                    f"{title} ({facet_title(keys)})",
                    curve_verdict(ctx, keys, table),
                    "Logged every eval_every steps; accuracy on the whole test split." + note,
                    folded,
                    table,
                )
            )
        table = steps_data(ctx, keys, groups)
        if not table.empty:
            fig = draw_steps(ctx, keys, table, groups, budget)
            stem_name = f"steps_{stem(keys)}"
            save(fig, out, stem_name)
            made.append(
                Figure(
                    stem_name,
                    "training",
                    f"Steps to target ({facet_title(keys)})",
                    steps_verdict(table),
                    "A bar per group; hatched to the budget: no seed reached the target." + note,
                    folded,
                    table,
                )
            )
    return made
