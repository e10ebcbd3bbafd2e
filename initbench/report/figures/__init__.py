"""Every figure of a sweep report. A figure kind is a module with ``figures(ctx, out)``;
adding one is a module and a line in :func:`all_figures`. The per-layer figures come from
:data:`initbench.measure.statistics.STATISTICS`: adding a statistic there adds its figure."""

from __future__ import annotations

from pathlib import Path

from initbench.measure.statistics import layer_figures
from initbench.report.figures import hists, layers, training
from initbench.report.figures.base import Context, Figure

SECTIONS = {f.name: f.section for f in layer_figures()} | {
    "histograms": "Histograms",
    "training": "Training",
}


def all_figures(ctx: Context, out: Path, budget: int) -> list[Figure]:
    """Draws and saves every figure, in page order."""
    made = layers.figures(ctx, out) + hists.figures(ctx, out) + training.figures(ctx, out, budget)
    return sorted(made, key=lambda f: list(SECTIONS).index(f.section))


__all__ = ["SECTIONS", "Context", "Figure", "all_figures"]
