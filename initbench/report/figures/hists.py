"""Activation and gradient histograms per layer, Glorot & Bengio 2010 (Figs. 6-7) style.

One figure per (arch, width, bias variance, activation) at the sweep's deepest depth: a row
per group of schemes, a column per quantity (pre-activations, post-activations,
back-propagated gradients dL/dh), a few layers overlaid from light (first) to dark (last).

Unbounded values are drawn by magnitude on a log axis (the stored bins are signed; at
initialization both signs mirror each other), so a shrinking or growing signal shifts the
curve left or right; exactly-zero values (dead ReLUs) get a bar of their own at the left,
as do values below 1e-8 (vanished) and above 1e8 (exploded). Bounded post-activations
(tanh, sigmoid) are drawn on their linear range in 25 bins, so saturation shows as mass
in the end bins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from initbench.measure import histograms
from initbench.measure.histograms import DECADES, LINEAR_BINS, ZERO
from initbench.report.figures.base import (
    DATA_COLUMNS,
    LEGEND_POINTS,
    Context,
    Figure,
    cell_rows,
    drawn_rows,
    facet_title,
    save,
    setup,
    stem,
)

PLACE = 1  # where its sections come on the page
SECTIONS = {"histograms": "Histograms"}

MAX_ROWS = 8
SHOWN_BINS = 25  # bounded post-activations: 100 stored bins drawn as 25
QUANTITY_TITLES = {
    "pre": "|pre-activation h|",
    "post": "post-activation phi(h)",
    "grad_h": "|gradient dL/dh|",
}
LOW, HIGH = 10.0 ** DECADES[0], 10.0 ** DECADES[1]


def display_bins(bins: pd.DataFrame, bounds: tuple[float, float] | None) -> pd.DataFrame:
    """Stored bins ``(lo, hi, value)`` as drawn: magnitude bins (sign folded), or for a
    bounded post-activation 25 linear bins."""
    if bounds is not None:
        step = (bounds[1] - bounds[0]) / LINEAR_BINS
        index = np.clip(np.floor((bins["lo"] - bounds[0]) / step + 0.5), 0, LINEAR_BINS - 1)
        group = (index // (LINEAR_BINS // SHOWN_BINS)).astype(int)
        width = step * LINEAR_BINS / SHOWN_BINS
        out = bins.assign(lo=bounds[0] + group * width, hi=bounds[0] + (group + 1) * width)
    else:
        lo, hi = bins["lo"].abs(), bins["hi"].abs()
        zero = (bins["lo"] <= 0) & (bins["hi"] >= 0)
        out = bins.assign(
            lo=np.where(zero, 0.0, np.minimum(lo, hi)), hi=np.where(zero, ZERO, np.maximum(lo, hi))
        )
    keys = [c for c in out.columns if c not in ("value", "lo", "hi")]
    summed = out.groupby([*keys, "lo", "hi"], sort=True, as_index=False)["value"].sum()
    grid = all_bins(bounds)  # every drawn bin, empty ones at 0, so lines drop to 0 there
    full = summed[keys].drop_duplicates().merge(grid, how="cross")
    full = full.merge(summed, on=[*keys, "lo", "hi"], how="left")
    return full.fillna({"value": 0.0})


def all_bins(bounds: tuple[float, float] | None) -> pd.DataFrame:
    """Every drawn bin ``(lo, hi)``: 25 linear bins over ``bounds``, or the magnitude bins
    (zero, below 1e-8, the quarter decades up to 1e8, above 1e8)."""
    if bounds is not None:
        edges = np.linspace(bounds[0], bounds[1], SHOWN_BINS + 1)
        return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:]})
    mags = 10.0 ** (np.arange(DECADES[0] * 4, DECADES[1] * 4 + 1) / 4)
    lo = np.concatenate(
        [
            [0.0, ZERO],
            mags,
        ]
    )
    hi = np.concatenate([[ZERO], mags, [np.inf]])
    return pd.DataFrame({"lo": lo, "hi": hi})


def data(ctx: Context, keys: dict, activation: str, groups: list[str]) -> pd.DataFrame:
    """Per group, quantity and shown layer: each drawn bin's share of the values, over seeds."""
    from initbench.core.activations import get_activation

    depth = int(cell_rows(ctx.cells, keys | {"activation": activation})["depth"].max())
    cells = cell_rows(ctx.cells, keys | {"activation": activation, "depth": depth})
    cells = cells[(cells["status"] == "ok") & cells["scheme_id"].isin(groups)]
    shown = ctx.hists["layer"].isin(histograms.layers(depth))
    hists = ctx.hists[ctx.hists["run_id"].isin(cells["run_id"]) & shown]
    if hists.empty:
        return pd.DataFrame(columns=DATA_COLUMNS)
    merged = hists.merge(cells[["run_id", "scheme_id"]], on="run_id")
    counts = merged.groupby(["scheme_id", "quantity", "layer", "lo", "hi"], sort=True)[
        "count"
    ].sum()
    share = (counts / counts.groupby(["scheme_id", "quantity", "layer"]).transform("sum")).rename(
        "value"
    )
    share = share.reset_index()
    bounds = get_activation(activation).bounds
    frames = [
        display_bins(rows, bounds if quantity == "post" else None)
        for quantity, rows in share.groupby("quantity", sort=False)
    ]
    shown = pd.concat(frames, ignore_index=True)
    shown = shown.assign(activation=activation, depth=depth)
    return drawn_rows(ctx, keys, shown, shown["layer"].to_numpy(), shown["quantity"].to_numpy())


def positions(
    lo: np.ndarray, hi: np.ndarray, left: float, right: float
) -> tuple[np.ndarray, np.ndarray]:
    """Where magnitude bins sit on the log axis: log10 of their edges; the zero bin, the
    vanished bin (below 1e-8) and the exploded bin (above 1e8) at fixed places beyond
    the range ``[left, right]`` of the others."""
    with np.errstate(divide="ignore"):
        x0, x1 = np.log10(lo), np.log10(hi)
    zero, vanished, exploded = hi <= ZERO, (lo >= ZERO) & (hi <= LOW), lo >= HIGH
    x0 = np.where(
        zero, left - 2.5, np.where(vanished, left - 1.0, np.where(exploded, right + 0.4, x0))
    )
    x1 = np.where(
        zero, left - 2.0, np.where(vanished, left - 0.5, np.where(exploded, right + 0.9, x1))
    )
    return x0, x1


def _column_range(rows: pd.DataFrame) -> tuple[float, float]:
    regular = rows[(rows["lo"] >= LOW) & (rows["hi"] <= HIGH) & (rows["value"] > 1e-3)]
    if regular.empty:
        return -1.0, 1.0
    return float(np.log10(regular["lo"].min())) - 0.25, float(np.log10(regular["hi"].max())) + 0.25


def draw(ctx: Context, table: pd.DataFrame, groups: list[str], title: str):
    import matplotlib as mpl

    from initbench.core.activations import get_activation

    bounded = get_activation(table["activation"].iloc[0]).bounds is not None
    plt = setup()
    rows = [g for g in groups if g in set(table["scheme_id"])]
    quantities = [q for q in QUANTITY_TITLES if q in set(table["statistic"])]
    fig, axes = plt.subplots(
        len(rows),
        len(quantities),
        figsize=(4.2 * len(quantities), 0.9 + 1.6 * len(rows)),
        squeeze=False,
        sharex="col",
    )
    layers = sorted(table["layer"].unique())
    cmap = mpl.colormaps["viridis_r"]
    colors = {
        layer: cmap(0.15 + 0.8 * i / max(len(layers) - 1, 1)) for i, layer in enumerate(layers)
    }
    for j, quantity in enumerate(quantities):
        column = table[table["statistic"] == quantity]
        linear = quantity == "post" and bounded
        left, right = _column_range(column)
        for i, scheme in enumerate(rows):
            ax = axes[i][j]
            panel = column[column["scheme_id"] == scheme]
            for layer, bins in panel.groupby("layer"):
                lo, hi = bins["lo"].to_numpy(float), bins["hi"].to_numpy(float)
                x0, x1 = (lo, hi) if linear else positions(lo, hi, left, right)
                density = bins["value"].to_numpy() / np.maximum(x1 - x0, 1e-9)
                regular = np.ones(len(lo), bool) if linear else (lo >= LOW) & (hi <= HIGH)
                ax.plot(
                    np.column_stack([x0, x1])[regular].ravel(),
                    np.repeat(density[regular], 2),
                    color=colors[layer],
                    lw=1.3,
                    gid=f"hist|{scheme}|{quantity}|{layer}",
                )
                special = ~regular & (density > 0)
                if special.any():
                    ax.bar(
                        x0[special],
                        density[special],
                        width=(x1 - x0)[special],
                        align="edge",
                        color=colors[layer],
                        alpha=0.35,
                        gid=f"special|{scheme}|{quantity}|{layer}",
                    )
            ax.set_yticks([])
            if linear:
                ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(5))
                ax.tick_params(axis="x", labelsize=LEGEND_POINTS)
            else:
                _log_ticks(ax, column, left, right)
            if j == 0:
                ax.text(
                    0.01, 0.97, scheme, transform=ax.transAxes, fontsize=LEGEND_POINTS, va="top"
                )
            if i == 0:
                ax.set_title(QUANTITY_TITLES[quantity] + ("" if linear else " (log)"), fontsize=9)
    handles = [
        mpl.lines.Line2D([], [], color=colors[layer], lw=2, label=f"layer {layer}")
        for layer in layers
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=len(handles),
        frameon=False,
        fontsize=LEGEND_POINTS,
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return fig


def _log_ticks(ax, column: pd.DataFrame, left: float, right: float) -> None:
    ticks = list(range(int(np.ceil(left)), int(np.floor(right)) + 1))
    if len(ticks) > 6:
        ticks = ticks[:: int(np.ceil(len(ticks) / 6))]
    specials = [
        ((column["hi"] <= ZERO), left - 2.25, "0"),
        ((column["lo"] >= ZERO) & (column["hi"] <= LOW), left - 0.75, "<1e-8"),
        ((column["lo"] >= HIGH), right + 0.65, ">1e8"),
    ]
    shown = [
        (where, label) for mask, where, label in specials if (column.loc[mask, "value"] > 0).any()
    ]
    # a decade's label within 1.5 decades of a special bar's would print over it
    decades = [
        (t, f"1e{t}" if t else "1") for t in ticks if all(abs(t - w) >= 1.5 for w, _ in shown)
    ]
    places, labels = zip(*(decades + shown), strict=True) if decades or shown else ((), ())
    ax.set_xticks(places, labels, fontsize=LEGEND_POINTS)
    lo_edge = min([left] + [where - 0.3 for where, _ in shown])
    hi_edge = max([right] + [where + 0.3 for where, _ in shown])
    ax.set_xlim(lo_edge, hi_edge)


def verdict(table: pd.DataFrame) -> str:
    """What the histograms show at the last layer: zeros, saturation, vanished mass."""
    from initbench.core.activations import get_activation

    bounded = get_activation(table["activation"].iloc[0]).bounds is not None
    depth = int(table["depth"].max())
    parts = []
    last = table[table["layer"] == table["layer"].max()]
    for scheme, rows in last.groupby("scheme_id", sort=False):
        notes = []
        pre, post = rows[rows["statistic"] == "pre"], rows[rows["statistic"] == "post"]
        tiny = pre.loc[pre["hi"] <= LOW, "value"].sum()
        if tiny > 0.5:
            notes.append(f"{tiny:.0%} of pre-activations below 1e-8")
        if not bounded:
            zero = post.loc[post["hi"] <= ZERO, "value"].sum()
            if zero > 0.55:
                notes.append(f"{zero:.0%} of outputs exactly 0")
        elif len(post):
            edge = post.loc[
                (post["lo"] == post["lo"].min()) | (post["hi"] == post["hi"].max()), "value"
            ].sum()
            if edge > 0.2:
                notes.append(f"{edge:.0%} of outputs in the outer 4% of the range")
        if notes:
            parts.append(f"{scheme}: " + ", ".join(notes))
    if not parts:
        return f"Layer {depth}: no scheme shows vanished, dead or saturated values."
    return "\n".join(f"Layer {depth}, {part}." for part in parts)


def figures(ctx: Context, out: Path) -> list[Figure]:
    """Every histogram figure of the sweep (none without histograms)."""
    if ctx.hists.empty:
        return []
    made = []
    for keys, rows in ctx.facets():
        for activation, act_rows in rows.groupby("activation", sort=True):
            deepest = act_rows[act_rows["depth"] == act_rows["depth"].max()]
            ordered = deepest[deepest["note"] == ""].sort_values(
                ["recommended", "signal"], ascending=[False, True]
            )
            groups = list(dict.fromkeys(ordered["group"]))
            shown, folded = groups[:MAX_ROWS], groups[MAX_ROWS:]
            table = data(ctx, keys, activation, shown)
            if table.empty:
                continue
            depth = int(table["depth"].max())
            title = f"Histograms at initialization, depth {depth} ({facet_title(keys)})"
            name = "".join(
                c if c.isalnum() or c in "._-" else "-" for c in f"hist_{stem(keys)}_d{depth}"
            )
            save(draw(ctx, table, shown, title), out, name)
            caption = (
                "Share of values per bin, drawn as a density, layers from light (first) to dark "
                "(last). Unbounded values by magnitude on a log axis, with bars for exactly 0, "
                "below 1e-8 and above 1e8; bounded outputs on their linear range."
            )
            if folded:
                caption += f" Not drawn: {', '.join(folded)}."
            made.append(Figure(name, "histograms", title, verdict(table), caption, folded, table))
    return made
