"""initbench: a benchmark suite for neural-network weight initialization in PyTorch.

The public API is imported on first use, so ``import initbench`` (and the command line's
``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "Grid": "initbench.grid",
    "apply": "initbench.initialize",
    "coord_check": "initbench.coord",
    "expand_schemes": "initbench.schemes",
    "get_activation": "initbench.activations",
    "get_arch": "initbench.archs",
    "get_scheme": "initbench.schemes",
    "load": "initbench.store",
    "preset": "initbench.presets",
    "probe_model": "initbench.modelprobe",
    "sweep": "initbench.sweeps",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'initbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
