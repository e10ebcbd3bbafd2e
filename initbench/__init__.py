"""initbench: a benchmark suite for neural-network weight initialization in PyTorch."""

__version__ = "0.1.0"

from initbench.activations import get_activation
from initbench.grid import Grid, preset
from initbench.runner import sweep
from initbench.schemes import apply, expand_schemes, get_scheme
from initbench.store import load

__all__ = [
    "Grid",
    "__version__",
    "apply",
    "expand_schemes",
    "get_activation",
    "get_scheme",
    "load",
    "preset",
    "sweep",
]
