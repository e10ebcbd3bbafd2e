"""Reports: the answer matrix, figures with the tidy data they draw, tables, HTML pages.

``report`` (:mod:`initbench.report.pages`) and ``publish`` (:mod:`initbench.report.site`)
are imported on first use, so the package's modules can import each other without a cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["publish", "report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = "initbench.report.site" if name == "publish" else "initbench.report.pages"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'initbench.report' has no attribute {name!r}")
