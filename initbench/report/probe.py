"""The page of an ``initbench probe`` folder (``meta.json``'s kind ``probe``).

One figure: the output variance of every module call (top) and the weight-gradient norm of
every module with weights (bottom) against forward order: the mean over seeds, with a band
from the lowest to the highest seed, and arrows where the signal grows and shrinks most
between consecutive modules that have weights or are norms. Its verdict says the same in
numbers, and a sortable table lists every module call.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from initbench.core import fmt
from initbench.core.errors import UsageError
from initbench.report.figures.base import Figure, save, setup, write_data
from initbench.report.pages import Page, measured_on, provenance, write_page
from initbench.sweeps.store import Results

NAME = "modules"
KEYS = ["order", "module", "kind", "call"]  # one module call (the same in every seed)
PANELS = {  # a panel per statistic of the probe: its title
    "out_var": "Output variance per module call",
    "weight_grad_norm": "Weight-gradient norm per module with weights",
}
COLORS = {"out_var": "#0072b2", "weight_grad_norm": "#d55e00"}
DATA_COLUMNS = [
    "module",
    "kind",
    "call",
    "order",
    "statistic",
    "value",
    "lo",
    "hi",
    "kind_of_point",
]
TABLE_COLUMNS = {
    "out_var": "output variance",
    "grad_out_var": "gradient variance",
    "weight_var": "weight variance",
    "weight_grad_norm": "weight-gradient norm",
}
MAX_TICKS = 40  # module names on the x axis


def aggregate(modules: pd.DataFrame, column: str, keys: list[str] = KEYS) -> pd.DataFrame:
    """Per module call (``keys``, sorted: forward order by default): the mean, lowest and
    highest of ``column`` over the seeds with a finite value; ``inf`` where every seed
    overflowed, NaN where no seed has a value."""
    values = modules[column].astype(float)
    groups = [modules[k] for k in keys]
    finite = values.where(np.isfinite(values)).groupby(groups, sort=True)
    frame = pd.DataFrame({"value": finite.mean(), "lo": finite.min(), "hi": finite.max()})
    exploded = (values == math.inf).groupby(groups, sort=True).any()
    frame.loc[frame["value"].isna() & exploded, ["value", "lo", "hi"]] = math.inf
    return frame.reset_index()


def figure_data(modules: pd.DataFrame) -> pd.DataFrame:
    """The tidy table the figure draws: one row per statistic and module call with a value."""
    frames = [
        aggregate(modules, statistic)
        .dropna(subset=["value"])
        .assign(statistic=statistic, kind_of_point="measured")
        for statistic in PANELS
    ]
    return pd.concat(frames, ignore_index=True)[DATA_COLUMNS]


def label(row) -> str:
    """``layer1.0.relu``, or ``layer1.0.relu #1`` for a module's second call."""
    return row.module if row.call == 0 else f"{row.module} #{row.call}"


def steps(modules: pd.DataFrame, data: pd.DataFrame) -> pd.DataFrame:
    """The change of the (mean) output variance between consecutive calls of modules that
    have weights or are norms: ``log2`` of the ratio, and the ``previous`` call's label."""
    marked = modules["weight_var"].notna() | modules["kind"].str.contains("Norm")
    names = set(modules.loc[marked, "module"])
    rows = data[(data["statistic"] == "out_var") & data["module"].isin(names)]
    rows = rows[np.isfinite(rows["value"]) & (rows["value"] > 0)].sort_values("order")
    previous = [label(r) for r in rows.itertuples()][:-1]
    return rows.iloc[1:].assign(previous=previous, log2=np.diff(np.log2(rows["value"].to_numpy())))


def extremes(changes: pd.DataFrame) -> dict[str, pd.Series]:
    """The step where the signal shrinks most (``drop``) and grows most (``growth``), if any."""
    marks = {}
    if len(changes):
        drop, growth = changes.loc[changes["log2"].idxmin()], changes.loc[changes["log2"].idxmax()]
        if drop["log2"] < 0:
            marks["drop"] = drop
        if growth["log2"] > 0:
            marks["growth"] = growth
    return marks


def draw(data: pd.DataFrame, marks: dict[str, pd.Series]):
    """Two panels against forward order, module names on the shared x axis."""
    plt = setup()
    fig, axes = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    for ax, (statistic, title) in zip(axes, PANELS.items(), strict=True):
        ax.set_yscale("log")
        _panel(ax, data[data["statistic"] == statistic], statistic)
        ax.set_title(title, fontsize=10)
    for what, step in marks.items():
        verb = "grows" if what == "growth" else "shrinks"
        axes[0].annotate(
            f"{verb} most: {fmt.factor(step['log2'])}",
            xy=(step["order"], step["value"]),
            xytext=(0, 30 if what == "growth" else -34),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            arrowprops={"arrowstyle": "->", "color": "0.25"},
            gid=what,
        )
    calls = data[data["statistic"] == "out_var"].sort_values("order")
    ticks = calls.iloc[:: max(1, math.ceil(len(calls) / MAX_TICKS))]
    axes[1].set_xticks(ticks["order"], [label(r) for r in ticks.itertuples()])
    axes[1].tick_params(axis="x", labelrotation=90, labelsize=7)
    axes[1].set_xlabel("module call, in forward order")
    fig.tight_layout()
    return fig


def _panel(ax, rows: pd.DataFrame, statistic: str) -> None:
    """The mean line and seed band of the values a log axis shows; ``x`` at the bottom edge
    for values of exactly 0, ``^`` at the top for overflows."""
    x, y = rows["order"].to_numpy(), rows["value"].to_numpy(float)
    lo, hi = rows["lo"].to_numpy(float), rows["hi"].to_numpy(float)
    shown = np.isfinite(y) & (y > 0)
    band = shown & (lo > 0)
    color = COLORS[statistic]
    ax.fill_between(
        x[band], lo[band], hi[band], color=color, alpha=0.2, lw=0, gid=f"band|{statistic}"
    )
    ax.plot(
        x[shown], y[shown], color=color, lw=1.4, marker="o", ms=2.5, gid=f"measured|{statistic}"
    )
    bottom, top = ax.get_ylim()
    for mask, edge, marker, gid in (
        (y == 0, bottom, "x", "zero"),
        (y == math.inf, top, "^", "inf"),
    ):
        if mask.any():
            ax.plot(
                x[mask],
                np.full(mask.sum(), edge),
                marker,
                color=color,
                ms=6,
                clip_on=False,
                gid=f"{gid}|{statistic}",
            )
    ax.set_ylim(bottom, top)


def verdict(modules: pd.DataFrame, data: pd.DataFrame, marks: dict[str, pd.Series]) -> str:
    """What the figure shows, one finding per line, in initbench's number format."""
    signal = data[data["statistic"] == "out_var"].sort_values("order")
    if signal.empty:
        return "No module call has an output variance."
    seeds = modules["seed"].nunique()
    first, last = signal.iloc[0], signal.iloc[-1]
    lines = [
        f"The output variance goes from {fmt.number(first['value'])} at {label(first)} to "
        f"{fmt.number(last['value'])} at {label(last)}: "
        f"{fmt.factor(_log2_ratio(last['value'], first['value']))} over {len(signal)} module "
        f"calls" + (f" (mean of {seeds} seeds)." if seeds > 1 else ".")
    ]
    for what, verb in (("drop", "shrinks"), ("growth", "grows")):
        if what in marks:
            step = marks[what]
            lines.append(
                f"Between modules with weights or norms it {verb} most at {label(step)}: "
                f"{fmt.factor(step['log2'])} from {step['previous']}."
            )
    lines += _gradient_lines(data[data["statistic"] == "weight_grad_norm"].sort_values("order"))
    calls = modules["order"].nunique()
    for mask, what in (
        (~np.isfinite(modules["out_var"]), "a non-finite output variance (an overflow)"),
        (modules["out_var"] == 0, "a constant output (variance exactly 0)"),
    ):
        if mask.any():
            count = modules.loc[mask, "order"].nunique()
            lines.append(f"{count} of {calls} module calls have {what} in some seed.")
    spread = signal[(signal["lo"] > 0) & np.isfinite(signal["hi"])]
    if seeds > 1 and len(spread):
        widest = spread.loc[(spread["hi"] / spread["lo"]).idxmax()]
        lines.append(
            f"Seeds differ by at most {fmt.factor(_log2_ratio(widest['hi'], widest['lo']))} "
            f"in output variance (at {label(widest)})."
        )
    return "\n".join(lines)


def _gradient_lines(grads: pd.DataFrame) -> list[str]:
    if grads.empty:
        return ["No module's weights get a gradient."]
    lines = []
    positive = grads[np.isfinite(grads["value"]) & (grads["value"] > 0)]
    if len(positive) == 1:
        only = positive.iloc[0]
        lines.append(
            f"Only {label(only)} gets a non-zero weight gradient: {fmt.number(only['value'])}."
        )
    elif len(positive):
        first, last = positive.iloc[0], positive.iloc[-1]
        lines.append(
            f"The weight-gradient norm is {fmt.number(first['value'])} at {label(first)}, the "
            f"first module whose weights get a gradient, and {fmt.number(last['value'])} at "
            f"{label(last)}, the last: the first gets "
            f"{fmt.factor(_log2_ratio(first['value'], last['value']))} the last's."
        )
    zero = (grads["value"] == 0).sum()
    if zero:
        lines.append(
            f"{zero} of {len(grads)} modules with weights get a weight gradient of exactly 0."
        )
    return lines


def _log2_ratio(a: float, b: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.log2(np.float64(a) / np.float64(b)))


def table(modules: pd.DataFrame) -> pd.DataFrame:
    """Every module call in forward order, the mean of each statistic over seeds as text."""
    view = aggregate(modules, "out_var")[KEYS].rename(columns={"order": "#"})
    for column, title in TABLE_COLUMNS.items():
        view[title] = [fmt.number(v) for v in aggregate(modules, column)["value"]]
    return view


def summary(meta: dict) -> list[tuple[str, str]]:
    """The page's "about this probe" lines."""
    args = ", ".join(f"{k}={v}" for k, v in (meta.get("model_args") or {}).items())
    scheme = meta.get("scheme")
    lines = [
        ("model", str(meta.get("model"))),
        ("model arguments", args or "none"),
        ("input", f"{meta.get('input')} ({'x'.join(map(str, meta.get('input_shape', [])))})"),
        (
            "initialization",
            f"{scheme}, matched to {meta.get('activation')}" if scheme else "as built",
        ),
        ("seeds", str(meta.get("seeds"))),
    ]
    return lines + provenance(meta)


def _modules(results: Results) -> pd.DataFrame:
    modules = results.tables.get("modules")
    if modules is None or modules.empty:
        raise UsageError(f"{results.path} holds no modules.parquet: run initbench probe first")
    return modules


def findings(results: Results) -> str:
    """The page's verdict on a probe folder: what ``initbench probe`` prints.

    Args:
        results: the loaded probe folder.

    Returns:
        Where the signal grows and shrinks most, in sentences.

    Raises:
        UsageError: the folder holds no ``modules.parquet``.
    """
    modules = _modules(results)
    data = figure_data(modules)
    return verdict(modules, data, extremes(steps(modules, data)))


def page(results: Results, out: Path) -> Path:
    """Writes ``out/index.html``, ``out/figures/modules.png`` and the table it draws."""
    modules = _modules(results)
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    data = figure_data(modules)
    marks = extremes(steps(modules, data))
    save(draw(data, marks), figures_dir, NAME)
    write_data(figures_dir, {NAME: data})
    figure = Figure(
        NAME,
        "signal",
        f"Output variance and weight-gradient norm per module of {results.meta.get('model')}",
        verdict(modules, data, marks),
        "Lines: the mean over seeds; bands: the lowest to the highest seed. Arrows: where "
        "the output variance grows and shrinks most from one module with weights or norm to "
        "the next. x at the bottom: exactly 0; ^ at the top: an overflow.",
    )
    html = table(modules).to_html(index=False, classes="sortable", border=0, escape=True)
    return write_page(
        "probe.html.j2",
        out,
        title=f"initbench probe: {results.meta.get('model')}",
        measured_on=measured_on(results.meta),
        figure=figure,
        table=html,
        summary=summary(results.meta),
    )


PAGES = {"probe": Page(page, "per-module probe of a model")}
