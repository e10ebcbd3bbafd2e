"""The page of an ``initbench coord`` folder (``meta.json``'s kind ``coord``).

One figure in mup's style: a panel per step (initialization, then after each optimizer
step), each module call's mean |output| against width on log axes (the mean over seeds, a
band from the lowest to the highest seed), one line per module call coloured by forward
order. A flat line is width-stable; a climbing one grows with width. Its verdict names the
modules that grow or shrink and their fitted exponents, and a sortable table lists every
slope.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from initbench.core import fmt
from initbench.core.errors import UsageError
from initbench.core.ids import shape_text
from initbench.report.figures.base import Figure, save, setup, write_data
from initbench.report.pages import Page, measured_on, provenance, write_page
from initbench.report.probe import aggregate, label
from initbench.sweeps.store import Results

NAME = "coords"
STATISTIC = "out_abs_mean"  # mup's coordinate size
KEYS = ["step", "order", "module", "kind", "call", "width"]  # one point of one line
DATA_COLUMNS = [
    "step",
    "module",
    "kind",
    "call",
    "order",
    "width",
    "statistic",
    "value",
    "lo",
    "hi",
]
STATISTIC_NAMES = {"out_abs_mean": "mean |output|", "out_var": "output variance"}
MAX_LABELS = 10  # modules named in the legend
MAX_LISTED = 5  # modules named per finding of the verdict
PANELS_PER_ROW = 4


def figure_data(coords: pd.DataFrame) -> pd.DataFrame:
    """The tidy table the figure draws: per step, module call and width, the mean, lowest
    and highest mean |output| over the seeds with a finite value; points a log axis cannot
    show (no finite value, or 0) are left out."""
    frame = aggregate(coords, STATISTIC, KEYS)
    shown = np.isfinite(frame["value"]) & (frame["value"] > 0)
    return frame[shown].assign(statistic=STATISTIC)[DATA_COLUMNS].reset_index(drop=True)


def name(row) -> str:
    """``2 (Linear)``, ``blocks.0.self_attn #1 (MultiheadAttention)``."""
    return f"{label(row)} ({row.kind})"


def step_title(step: int, optimizer: str) -> str:
    return "at initialization" if step == 0 else f"after {step} {optimizer} step{_s(step)}"


def draw(data: pd.DataFrame, steps: int, optimizer: str):
    """A panel per step, lines coloured by forward order, a legend naming some of them."""
    plt = setup()
    from matplotlib.ticker import NullLocator

    cols = min(steps + 1, PANELS_PER_ROW)
    rows = math.ceil((steps + 1) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.4 * cols, 3.2 * rows), sharey=True, squeeze=False
    )
    orders = sorted(data["order"].unique())
    cmap = plt.get_cmap("viridis")
    colors = {o: cmap(i / max(1, len(orders) - 1)) for i, o in enumerate(orders)}
    named = set(orders[:: max(1, math.ceil(len(orders) / MAX_LABELS))]) | set(orders[-1:])
    handles: dict[int, tuple] = {}
    widths = sorted(data["width"].unique())
    for step, ax in enumerate(axes.flat):
        if step > steps:
            ax.set_visible(False)
            continue
        lines = data[data["step"] == step].groupby(["order", "module", "call"], sort=True)
        for (order, _, _), line in lines:
            x, y = line["width"].to_numpy(float), line["value"].to_numpy(float)
            lo, hi = line["lo"].to_numpy(float), line["hi"].to_numpy(float)
            band = lo > 0
            color = colors[order]
            ax.fill_between(
                x[band],
                lo[band],
                hi[band],
                color=color,
                alpha=0.15,
                lw=0,
                gid=f"band|{step}|{order}",
            )
            (drawn,) = ax.plot(
                x, y, color=color, lw=1.3, marker="o", ms=3, gid=f"mean|{step}|{order}"
            )
            if order in named:
                handles.setdefault(order, (drawn, name(line.iloc[0])))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(step_title(step, optimizer), fontsize=10)
        ax.set_xlabel("width")
    for row in axes:
        row[0].set_ylabel(STATISTIC_NAMES[STATISTIC])
    fig.tight_layout()
    if handles:
        shown = [handles[o] for o in sorted(handles)]
        fig.legend(
            [h for h, _ in shown],
            [text for _, text in shown],
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            fontsize=8,
            title="module (forward order)",
            title_fontsize=8,
            frameon=False,
        )
    return fig


def verdict(slopes: pd.DataFrame, steps: int, optimizer: str, points: int, stable: float) -> str:
    """What the figure shows, one finding per line: at initialization and after the last
    step, which modules are width-stable and which grow or shrink, and how fast."""
    fits = slopes[slopes["statistic"] == STATISTIC]
    lines = [_finding(fits[fits["step"] == 0], "At init", stable)]
    if steps:
        lines.append(
            _finding(fits[fits["step"] == steps], step_title(steps, optimizer).capitalize(), stable)
        )
    moving = fits[(fits["step"].isin([0, steps])) & (fits["slope"].abs() > stable)]
    unsure = moving[moving["slope"].abs() <= moving["ci"]]
    if len(unsure):
        lines.append(
            f"{len(unsure)} of the {len(moving)} slopes above outside ±{stable} have a 95% "
            "interval that reaches 0: more seeds would tell whether those modules move with width."
        )
    skipped = fits[fits["points"] < points]
    if len(skipped):
        lines.append(
            f"{len(skipped)} of {len(fits)} fits skip points whose {STATISTIC_NAMES[STATISTIC]} "
            f"is 0 or not finite (of {points} per fit; the table's points column says how many "
            "remain)."
        )
    return "\n".join(lines)


def _finding(fits: pd.DataFrame, when: str, stable: float) -> str:
    total = len(fits)
    grow = fits[fits["slope"] > stable].sort_values("slope", ascending=False)
    shrink = fits[fits["slope"] < -stable].sort_values("slope")
    unfit = fits[fits["slope"].isna()]
    stable = total - len(grow) - len(shrink) - len(unfit)
    if stable == total:
        return f"{when} every module is width-stable (all {total} slopes within ±{stable})."
    clauses = [
        (len(rows), verb, text)
        for rows, verb, text in (
            (grow, "grow", _listing(grow)),
            (shrink, "shrink", _listing(shrink)),
            (unfit, "have no fit", "fewer than 2 widths with a value"),
        )
        if len(rows)
    ]
    parts = [
        f"{count}{f' of {total} modules' if i == 0 else ''} {_verb(verb, count)}: {text}"
        for i, (count, verb, text) in enumerate(clauses)
    ]
    if stable:
        parts.append(f"the other {stable} {'is' if stable == 1 else 'are'} width-stable")
    return f"{when} {'; '.join(parts)}."


def _listing(rows: pd.DataFrame) -> str:
    named = [
        f"{name(r)} like width^{fmt.number(r.slope, r.ci)}"
        for r in rows.head(MAX_LISTED).itertuples()
    ]
    more = len(rows) - len(named)
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def _verb(verb: str, count: int) -> str:
    if count != 1:
        return verb
    return "has no fit" if verb == "have no fit" else f"{verb}s"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def table(slopes: pd.DataFrame) -> pd.DataFrame:
    """Every slope, in step and forward order, its numbers as text."""
    return pd.DataFrame(
        {
            "#": slopes["order"],
            "module": [label(r) for r in slopes.itertuples()],
            "kind": slopes["kind"],
            "step": slopes["step"],
            "statistic": slopes["statistic"].map(STATISTIC_NAMES),
            "slope ± 95% CI": [
                fmt.number(s, c) for s, c in zip(slopes["slope"], slopes["ci"], strict=True)
            ],
            "verdict": slopes["verdict"],
            "points": slopes["points"],
        }
    )


def summary(meta: dict) -> list[tuple[str, str]]:
    """The page's "about this check" lines."""
    widths = meta.get("widths") or []
    shapes = meta.get("input_shapes") or {}
    batches = ", ".join(shape_text(shapes[str(w)]) for w in widths if str(w) in shapes)
    args = ", ".join(f"{k}={v}" for k, v in (meta.get("model_args") or {}).items())
    scheme, depth = meta.get("scheme"), meta.get("depth")
    lines = [
        ("model", str(meta.get("model"))),
        ("model arguments", args or "none"),
        ("widths", ", ".join(map(str, widths))),
        (
            "batch",
            f"standard normal, {batches}" + (f" ({meta['input']})" if meta.get("input") else ""),
        ),
    ]
    if depth is not None:
        lines.append(("depth", f"{depth} hidden layers, {meta.get('activation')}"))
    lines += [
        (
            "initialization",
            f"{scheme}, matched to {meta.get('activation')}" if scheme else "as built",
        ),
        (
            "training",
            f"{meta.get('steps')} {meta.get('optimizer')} step{_s(meta.get('steps', 0))} at lr "
            f"{fmt.number(meta.get('lr'))} on one fixed batch",
        ),
        ("seeds", str(meta.get("seeds"))),
    ]
    return lines + provenance(meta)


def _tables(results: Results) -> tuple[pd.DataFrame, pd.DataFrame]:
    coords, slopes = results.tables.get("coords"), results.tables.get("slopes")
    if coords is None or coords.empty or slopes is None:
        raise UsageError(f"{results.path} holds no coords.parquet: run initbench coord first")
    return coords, slopes


def findings(results: Results) -> str:
    """The page's verdict on a coord folder: what ``initbench coord`` prints.

    Args:
        results: the loaded coord folder.

    Returns:
        A sentence per step (at initialization, after the last step), then how sure.

    Raises:
        UsageError: the folder holds no ``coords.parquet``.
    """
    coords, slopes = _tables(results)
    points = coords.groupby(["width", "seed"]).ngroups
    steps = int(coords["step"].max())
    meta = results.meta
    return verdict(slopes, steps, str(meta.get("optimizer")), points, float(meta["stable"]))


def page(results: Results, out: Path) -> Path:
    """Writes ``out/index.html``, ``out/figures/coords.png`` and the table it draws."""
    coords, slopes = _tables(results)
    meta = results.meta
    steps, optimizer = int(coords["step"].max()), str(meta.get("optimizer"))
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    data = figure_data(coords)
    save(draw(data, steps, optimizer), figures_dir, NAME)
    write_data(figures_dir, {NAME: data})
    points = coords.groupby(["width", "seed"]).ngroups
    figure = Figure(
        NAME,
        "scaling",
        f"Mean |output| of every module of {meta.get('model')} against width",
        verdict(slopes, steps, optimizer, points, float(meta["stable"])),
        "A panel per step; lines: the mean over seeds, one per module call, coloured by "
        "forward order (dark: first, yellow: last; the legend names some); bands: the lowest "
        "to the highest seed. A flat line is width-stable.",
    )
    html = table(slopes).to_html(index=False, classes="sortable", border=0, escape=True)
    return write_page(
        "coord.html.j2",
        out,
        title=f"initbench coord: {meta.get('model')}",
        measured_on=measured_on(meta),
        figure=figure,
        table=html,
        stable=float(meta["stable"]),
        summary=summary(meta),
    )


PAGES = {"coord": Page(page, "width scaling check")}
