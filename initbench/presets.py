"""Named grids: ``initbench sweep --preset NAME``."""

from __future__ import annotations

from initbench.errors import UsageError
from initbench.grid import Grid

PRESETS: dict[str, tuple[str, Grid]] = {}


def preset(name: str) -> Grid:
    """A named grid (``initbench list presets`` shows them all)."""
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name][1]


def register_preset(name: str, doc: str, grid: Grid) -> None:
    if name in PRESETS:
        raise ValueError(f"a preset named {name!r} is already registered")
    PRESETS[name] = (doc, grid)


register_preset(
    "quick",
    "every scheme on tanh, relu and sigmoid mlps, depths 5, 20 and 50, widths 64 and 256, "
    "2 seeds; probe only (about a minute on 2 cores)",
    Grid(activations=("tanh", "relu", "sigmoid"), depths=(5, 20, 50), widths=(64, 256), seeds=2),
)
register_preset(
    "default",
    "the classic schemes on tanh and relu mlps of depth 5, 15 and 30, width 128, 3 seeds: "
    "probed on a digits batch, then 300 SGD steps (lr 0.003, momentum 0.9, batch 128) "
    "on digits (a few minutes on 2 cores)",
    Grid(
        schemes=(
            "xavier_normal",
            "kaiming_normal[mode=fan_in,nonlinearity=matched]",
            "orthogonal",
            "normal[std=0.01]",
            "torch_default",
            "lsuv",
        ),
        activations=("tanh", "relu"),
        depths=(5, 15, 30),
        widths=(128,),
        seeds=3,
        dataset="digits",
        train_steps=300,
        lr=0.003,
    ),
)
register_preset(
    "full",
    "every scheme x every activation x mlp and cnn x depths 2-50 x widths 64-256, 5 seeds, "
    "probed on digits (days on a 2-core CPU, about an hour on one GPU; spread it with "
    "--executor ray)",
    Grid(
        activations=("identity", "tanh", "sigmoid", "relu", "leaky_relu", "selu", "gelu", "silu"),
        archs=("mlp", "cnn"),
        depths=(2, 5, 10, 20, 50),
        widths=(64, 128, 256),
        seeds=5,
        dataset="digits",
    ),
)
