"""Every figure of a sweep report. A figure kind is one module of this package with
``figures(ctx, out)`` (drawing and saving its figures), ``SECTIONS`` (the page sections
they go in, key -> title) and ``PLACE`` (where those sections come on the page); adding
one is that module. The per-layer figures come from
:data:`initbench.measure.statistics.STATISTICS`: adding a statistic there adds its figure.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

from initbench.report.figures.base import Context, Figure, write_data


def _kinds() -> list[ModuleType]:
    """The figure modules of this package, in page order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "figures"):
            found.append(module)
    return sorted(found, key=lambda module: module.PLACE)


KINDS = _kinds()
SECTIONS = {key: title for kind in KINDS for key, title in kind.SECTIONS.items()}


def all_figures(ctx: Context, out: Path) -> list[Figure]:
    """Draws and saves every figure, in page order, and the tables they draw."""
    made = [figure for kind in KINDS for figure in kind.figures(ctx, out)]
    write_data(out, {figure.name: figure.data for figure in made})
    return sorted(made, key=lambda f: list(SECTIONS).index(f.section))


__all__ = ["SECTIONS", "Context", "Figure", "all_figures"]
