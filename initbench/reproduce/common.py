"""What reproductions share: running their sweeps, fitting slopes, drawing their figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from initbench.core.intervals import mean_interval
from initbench.sweeps.grid import Grid
from initbench.sweeps.store import Results, load


def run_sweep(folder: Path, name: str, grid: Grid, device: str, progress: bool) -> Results:
    """Runs (or resumes) one of a reproduction's sweeps into ``folder/name``, writes its
    report, and loads it."""
    from initbench.report import report
    from initbench.sweeps.run import sweep

    path = sweep(grid, folder / name, device=device, progress=progress)
    report(path)
    return load(path)


def bounds(values: np.ndarray) -> tuple[float, float, float]:
    """The mean of the finite values and its 95% interval's ends ``(mean, lo, hi)``."""
    mean, half, _ = mean_interval(values)
    return mean, mean - half, mean + half


def line_figure(
    table: pd.DataFrame,
    folder: Path,
    name: str,
    *,
    x: str,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = True,
    logy: bool = True,
) -> str:
    """A line per ``series`` of ``table`` (columns ``series, x, value, lo, hi``): the mean and
    a band from the lowest to the highest seed; saved with the table it draws under
    ``folder/figures``. Returns the figure's path relative to ``folder``."""
    from initbench.report.figures.base import save, setup, write_data

    plt = setup()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for series, rows in table.groupby("series", sort=False):
        rows = rows.sort_values(x)
        line = ax.plot(
            rows[x], rows["value"], marker="o", lw=1.8, label=series, gid=f"measured|{series}"
        )
        ax.fill_between(
            rows[x],
            rows["lo"],
            rows["hi"],
            alpha=0.15,
            color=line[0].get_color(),
            gid=f"band|{series}",
        )
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(sorted(table[x].unique()), [f"{v:g}" for v in sorted(table[x].unique())])
        ax.minorticks_off()
    if logy:
        from matplotlib.ticker import ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8)
    fig.tight_layout()
    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    save(fig, figures, name)
    write_data(figures, {name: table.reset_index(drop=True)})
    return f"figures/{name}.png"


def sweep_figure(folder: Path, sweep: str, stem: str) -> str:
    """The path (relative to the reproduction's folder) of a figure of a sweep's report."""
    return f"{sweep}/report/figures/{stem}.png"


def spread(cells: pd.DataFrame) -> pd.Series:
    """Per run: the variance of the Jacobian's squared singular values over their mean
    squared, a scale-free measure of how far the spectrum spreads."""
    return cells["jac_s2_var"] / cells["jac_s2_mean"] ** 2
