"""Per-layer figures: signal, gradients, dead or saturated units, correlations.

One figure per (arch, width, bias variance, activation): a panel per depth, three to a
row, a line per group of equivalent schemes (at most eight: the mean over seeds, a band
from the lowest to the highest seed), the mean-field theory dashed in the same colour.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from initbench.core import fmt
from initbench.measure.statistics import STATISTICS, LayerFigure, drawn, layer_figures
from initbench.report.classify import SIGNALS
from initbench.report.figures.base import (
    DATA_COLUMNS,
    Context,
    Figure,
    cell_rows,
    choose_groups,
    depth_panels,
    facet_title,
    finish,
    finite_range,
    label_lists,
    marker,
    mean_and_band,
    off_chart,
    save,
    setup,
    stem,
    zero_marks,
)
from initbench.report.rule import RULE

PLACE = 0  # where its sections come on the page
SECTIONS = {figure.name: figure.section for figure in layer_figures()}


def data(ctx: Context, stat: LayerFigure, keys: dict, groups: list[str]) -> pd.DataFrame:
    """The tidy table one figure draws: measured (mean, lo, hi over seeds) and theory."""
    cells = cell_rows(ctx.cells[ctx.cells["status"] == "ok"], keys)
    cells = cells[cells["scheme_id"].isin(groups)]
    frames = []
    for activation, runs in cells.groupby("activation", sort=True):
        statistic = drawn(stat, activation)
        if statistic is None or statistic.column not in ctx.layers:  # an older store
            continue
        column, theory_column = statistic.column, statistic.theory
        merged = ctx.layers[
            ["run_id", "layer", column, *([theory_column] if theory_column else [])]
        ]
        merged = merged.merge(runs[["run_id", "depth", "scheme_id", "seed"]], on="run_id")
        merged = merged.sort_values(["run_id", "layer"])
        merged["y"] = _transform(merged, column, stat.relative)
        if theory_column:
            merged["t"] = _transform(merged, theory_column, stat.relative)
        for (depth, scheme), rows in merged.groupby(["depth", "scheme_id"], sort=True):
            if statistic.at is not None:  # only the layers it is computed at
                rows = rows[rows["layer"].isin(statistic.at(depth))]
            by_layer = rows.groupby("layer")
            measured = by_layer["y"].agg(_mean_finite)
            lo = by_layer["y"].agg(_min_finite)
            hi = by_layer["y"].agg(_max_finite)
            common = {
                "activation": activation,
                "arch": keys["arch"],
                "depth": depth,
                "width": keys["width"],
                "bias_var": keys["bias_var"],
                "scheme_id": scheme,
                "members": ctx.members(keys | {"activation": activation, "depth": depth}, scheme),
                "statistic": column,
            }
            frames.append(
                pd.DataFrame(
                    common
                    | {
                        "layer": measured.index,
                        "value": measured.to_numpy(),
                        "lo": lo.to_numpy(),
                        "hi": hi.to_numpy(),
                        "kind": "measured",
                    }
                )
            )
            if theory_column:
                theory = by_layer["t"].first()
                if theory.notna().any():
                    frames.append(
                        pd.DataFrame(
                            common
                            | {
                                "layer": theory.index,
                                "value": theory.to_numpy(),
                                "lo": np.nan,
                                "hi": np.nan,
                                "kind": "theory",
                            }
                        )
                    )
    if not frames:
        return pd.DataFrame(columns=DATA_COLUMNS)
    return pd.concat(frames, ignore_index=True)[DATA_COLUMNS]


def _transform(rows: pd.DataFrame, column: str, relative: str | None) -> pd.Series:
    values = rows[column].astype(float)
    if relative is None:
        return values
    reference = rows.groupby("run_id")[column].transform(relative).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.Series(np.log2(values.to_numpy() / reference.to_numpy()), index=rows.index)


def _mean_finite(v: pd.Series) -> float:
    finite = v[np.isfinite(v)]
    if len(finite):
        return float(finite.mean())
    return -math.inf if (v == -math.inf).any() else math.nan


def _min_finite(v: pd.Series) -> float:
    finite = v[np.isfinite(v)]
    return float(finite.min()) if len(finite) else _mean_finite(v)


def _max_finite(v: pd.Series) -> float:
    finite = v[np.isfinite(v)]
    return float(finite.max()) if len(finite) else _mean_finite(v)


def draw(ctx: Context, stat: LayerFigure, keys: dict, table: pd.DataFrame, groups: list[str]):
    """The figure of one facet's table: measured lines, bands, theory, off-chart marks."""
    from matplotlib.lines import Line2D

    colors = ctx.palette(groups)
    fig, panels = depth_panels(setup(), table, "hidden layer")
    for ax, depth, activation, panel in panels:
        _panel(ax, ctx, colors, stat, keys, panel, activation, depth)
        ax.set_ylabel("")
    extra = [
        Line2D(
            [],
            [],
            color="0.3",
            lw=1.8,
            marker="o",
            ms=3,
            label="measured: mean of seeds (band: range)",
        ),
    ]
    if any(s.theory for s in STATISTICS.values() if s.figure == stat):
        extra.append(Line2D([], [], color="0.3", lw=1.1, ls="--", label="mean-field theory"))
    if stat.relative:
        extra.append(Line2D([], [], color="0.3", lw=0, marker="v", label="leaves the chart there"))
        extra.append(Line2D([], [], color="0.3", lw=0, marker="x", mew=2, label="exactly 0"))
    finish(fig, colors, keys, table, stat.title, stat.ylabel, extra)
    return fig


def _panel(ax, ctx, colors, stat, keys, panel, activation, depth) -> None:
    measured = panel[panel["kind"] == "measured"]
    theory = panel[panel["kind"] == "theory"]
    if stat.relative:  # fit the healthy: stable or recommended groups, else +-12 bits
        rows = cell_rows(ctx.verdicts, keys | {"activation": activation, "depth": depth})
        good = rows[stat.verdict].isin(["stable", "critical"]) | rows["recommended"]
        healthy = set(rows.loc[good, "group"])
        shown = measured[measured["scheme_id"].isin(healthy)]
        values = [
            shown["value"],
            shown["lo"],
            shown["hi"],
            theory[theory["scheme_id"].isin(healthy)]["value"],
        ]
        if shown.empty:
            values = [measured["value"].clip(-12, 12)]
        lo, hi = finite_range(values, stat.floor)
    else:
        lo, hi = finite_range([measured["lo"], measured["hi"], theory["value"]], stat.floor)
    for scheme, rows in theory.groupby("scheme_id", sort=False):
        ax.plot(
            rows["layer"],
            rows["value"],
            ls="--",
            lw=1.1,
            alpha=0.85,
            color=colors[scheme],
            zorder=2,
            gid=f"theory|{scheme}",
        )
    for scheme, rows in measured.groupby("scheme_id", sort=False):
        color = colors[scheme]
        x, y = rows["layer"].to_numpy(), rows["value"].to_numpy(float)
        mean_and_band(ax, x, rows, color, scheme, lw=1.8, marker=marker(colors, scheme), ms=4)
        off_chart(ax, x, y, color, lo, hi)
        zero_marks(ax, x, y, color, lo)
    from matplotlib.ticker import MaxNLocator

    ax.set_ylim(lo, hi)
    ax.set_xlim(0.5, depth + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def verdict(ctx: Context, stat: LayerFigure, keys: dict, table: pd.DataFrame) -> str:
    """One sentence per panel: from the classification (signal, gradients), or the
    figure's own sentence of the data."""
    parts = []
    for (depth, activation), panel in table.groupby(["depth", "activation"], sort=True):
        head = f"{activation}, depth {depth}: "
        if stat.verdict:
            rows = cell_rows(ctx.verdicts, keys | {"activation": activation, "depth": depth})
            rows = rows[rows["group"].isin(set(panel["scheme_id"]))]
            change = f"{stat.verdict}_change"
            text = label_lists(
                rows, stat.verdict, SIGNALS, lambda r, c=change: fmt.factor(getattr(r, c))
            )
            parts.append(head + text)
        else:
            parts.append(head + stat.describe(panel, depth, RULE))
    return "\n".join(parts) if parts else "No finished runs to draw."


def figures(ctx: Context, out: Path) -> list[Figure]:
    """Every per-layer figure of the sweep."""
    made = []
    for stat in layer_figures():
        for keys, rows in ctx.facets():
            groups, folded = choose_groups(rows)
            table = data(ctx, stat, keys, groups)
            if table.empty:
                continue
            fig = draw(ctx, stat, keys, table, groups)
            name = f"{stat.name}_{stem(keys)}"
            save(fig, out, name)
            caption = stat.caption
            if folded:
                caption += f" Not drawn ({len(folded)} more; see the tables): {', '.join(folded)}."
            made.append(
                Figure(
                    name,
                    stat.name,
                    f"{stat.title} ({facet_title(keys)})",
                    verdict(ctx, stat, keys, table),
                    caption,
                    folded,
                    table,
                )
            )
    return made
