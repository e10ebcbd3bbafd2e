"""initbench: a benchmark suite for neural-network weight initialization in PyTorch.

The public API is imported on first use, so ``import initbench`` (and the command line's
``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "Grid": "initbench.sweeps.grid",
    "apply": "initbench.initialize",
    "audit": "initbench.studies.audit",
    "coord_check": "initbench.studies.coord",
    "expand_schemes": "initbench.core.schemes",
    "get_activation": "initbench.core.activations",
    "get_arch": "initbench.archs",
    "get_scheme": "initbench.core.schemes",
    "load": "initbench.sweeps.store",
    "param_groups": "initbench.initialize",
    "preset": "initbench.sweeps.presets",
    "probe_model": "initbench.studies.probe",
    "sweep": "initbench.sweeps.run",
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
