"""Grid specs (flags, TOML files, presets), validation, and cells and runs with stable ids."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, get_type_hints

from initbench.activations import Activation, get_activation
from initbench.errors import UsageError
from initbench.models import check_arch, layer_shapes
from initbench.schemes import Scheme, expand_schemes

OPTIMIZERS = ("sgd", "adam")
MAX_WIDTH = 65_536
MAX_DEPTH = 10_000
ASSUMED_FLOPS = {"cpu": 3e10, "cuda": 2e12, "mps": 3e11}  # for time estimates only


@dataclass(frozen=True)
class Cell:
    """One scheme x activation x arch x depth x width."""

    scheme: Scheme
    activation: Activation
    arch: str
    depth: int
    width: int

    @property
    def id(self) -> str:
        return f"{self.scheme.id}|{self.activation.id}|{self.arch}|d{self.depth}|w{self.width}"

    @property
    def shape_key(self) -> tuple[str, str, int, int]:
        """Cells with the same key compute together."""
        return (self.activation.id, self.arch, self.depth, self.width)


@dataclass(frozen=True)
class Run:
    """A cell with a seed: the unit of work and of stored results."""

    cell: Cell
    seed: int

    @property
    def id(self) -> str:
        return f"{self.cell.id}|s{self.seed}"


@dataclass(frozen=True)
class Grid:
    """What a sweep crosses, and the settings every run shares.

    Attributes:
        schemes: scheme patterns (fnmatch on family names, ``xavier*``) or explicit ids.
        activations: activation ids.
        archs: ``mlp`` and/or ``cnn``.
        depths: numbers of hidden layers.
        widths: hidden units (mlp) or channels (cnn).
        gains: gain settings for gain-taking schemes: ``unit``, ``matched`` or numbers.
        seeds: how many seeds (0..seeds-1) per cell.
        batch_size: probe batch size.
        image_size: side of the standard-normal probe images of cnn cells.
        dataset: probe on a batch of this dataset (and train on it), instead of N(0, 1) input.
        train_steps: optimizer steps per run (0: probe only).
        train_batch_size: training minibatch size.
        optimizer: ``sgd`` (with momentum) or ``adam``.
        lr: learning rate.
        momentum: SGD momentum.
        eval_every: log train/test loss and accuracy every this many steps.
        target_accuracy: test accuracy whose first logged step is ``steps_to_target``.
    """

    schemes: tuple[str, ...] = ("*",)
    activations: tuple[str, ...] = ("tanh", "relu")
    archs: tuple[str, ...] = ("mlp",)
    depths: tuple[int, ...] = (5, 10, 20)
    widths: tuple[int, ...] = (128,)
    gains: tuple[str, ...] = ("unit", "matched")
    seeds: int = 3
    batch_size: int = 256
    image_size: int = 8
    dataset: str | None = None
    train_steps: int = 0
    train_batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    eval_every: int = 25
    target_accuracy: float = 0.8

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: Grid | None = None) -> Grid:
        """A grid from plain values (a TOML table, CLI flags), over ``base``'s values."""
        hints = get_type_hints(cls)
        known = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise UsageError(f"unknown grid key {key!r}; valid keys: {', '.join(known)}")
            changes[key] = _coerce(key, value, hints[key])
        return dataclasses.replace(base or cls(), **changes)

    @classmethod
    def from_toml(cls, path: str | Path, base: Grid | None = None) -> Grid:
        """A grid from a TOML file of grid keys (``depths = [5, 20]``)."""
        try:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
        except FileNotFoundError:
            raise UsageError(f"config file {str(path)!r} not found") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read config file {str(path)!r}: {error}") from None
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"config file {str(path)!r} is not valid TOML: {error}") from None
        return cls.from_dict(values.get("grid", values), base)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON and TOML friendly) that :meth:`from_dict` reads back."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
            if not f.name.startswith("_")
        }

    # ---- expansion ----------------------------------------------------------------------

    def validate(self) -> Grid:
        """Checks every value and expands the cells; raises UsageError naming the first problem."""
        _ = self._cells
        return self

    def _check(self) -> None:
        for name in ("depths", "widths"):
            values = getattr(self, name)
            if not values:
                raise UsageError(f"{name} is empty")
            limit = MAX_DEPTH if name == "depths" else MAX_WIDTH
            for value in values:
                if not 0 < value <= limit:
                    raise UsageError(f"{name} must be between 1 and {limit}, got {value}")
        for name in ("seeds", "batch_size", "image_size", "train_batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise UsageError(f"batch_size must be at least 2, got {self.batch_size}")
        if self.train_steps < 0:
            raise UsageError(f"train_steps must be 0 or more, got {self.train_steps}")
        if self.train_steps and self.dataset is None:
            raise UsageError("training needs a dataset: set dataset (--dataset digits)")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}; choose from sgd, adam")
        if not self.lr > 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.target_accuracy <= 1:
            raise UsageError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.dataset is not None:
            from initbench.data import check_dataset_name

            check_dataset_name(self.dataset)
        for name in ("schemes", "activations", "archs"):
            if not getattr(self, name):
                raise UsageError(f"{name} is empty: the grid has no cells")
        for arch in self.archs:
            check_arch(arch)

    @cached_property
    def _cells(self) -> tuple[Cell, ...]:
        self._check()
        schemes = expand_schemes(self.schemes, self.gains)
        activations = list({a.id: a for a in map(get_activation, self.activations)}.values())
        return tuple(
            Cell(scheme, act, arch, depth, width)
            for arch in dict.fromkeys(self.archs)
            for depth in dict.fromkeys(self.depths)
            for width in dict.fromkeys(self.widths)
            for act in activations
            for scheme in schemes
        )

    def cells(self) -> list[Cell]:
        """Every cell of the grid, in a stable order."""
        return list(self._cells)

    def runs(self) -> list[Run]:
        """Every run (cell x seed)."""
        return [Run(cell, seed) for cell in self.cells() for seed in range(self.seeds)]

    def io_features(self, arch: str, width: int) -> tuple[int, int]:
        """``(in_features, out_features)`` of a network in this grid."""
        if self.dataset is None:
            return width, width
        from initbench.data import dataset_info

        info = dataset_info(self.dataset)
        return (info.channels if arch == "cnn" else info.features), info.classes

    def shapes(self, cell: Cell) -> list[tuple[int, ...]]:
        return layer_shapes(
            cell.arch, cell.depth, cell.width, *self.io_features(cell.arch, cell.width)
        )

    def flops_per_run(self, cell: Cell) -> float:
        """Multiply-adds x 2 of one probe: forward, input gradients and weight gradients."""
        return 6.0 * self.batch_size * self._macs_per_example(cell)

    def estimate_seconds(self, device_type: str = "cpu") -> float:
        """A rough wall time for the whole grid: probes and training steps at a throughput
        typical of initbench on the device (tens of GFLOP/s on a laptop CPU)."""
        examples = self.batch_size + self.train_batch_size * self.train_steps
        total = sum(6.0 * examples * self._macs_per_example(cell) for cell in self.cells())
        return total * self.seeds / ASSUMED_FLOPS.get(device_type, ASSUMED_FLOPS["cpu"])

    def _macs_per_example(self, cell: Cell) -> int:
        spatial = 1
        if cell.arch == "cnn":
            side = self.image_size
            if self.dataset is not None:
                from initbench.data import dataset_info

                side = dataset_info(self.dataset).side
            spatial = side * side
        shapes = self.shapes(cell)
        return sum(_macs(s) * spatial for s in shapes[:-1]) + _macs(shapes[-1])


def _macs(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _coerce(key: str, value: Any, hint: Any) -> Any:
    text = str(hint)
    if value is None and "None" in text:
        return None
    if "tuple" in text:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise UsageError(f"{key} must be a list, got {value!r}")
        item_type = int if "int" in text else str
        return tuple(_scalar(key, item, item_type) for item in items if str(item).strip())
    for kind in (int, float, str):
        if kind.__name__ in text:
            return _scalar(key, value, kind)
    return value


def _scalar(key: str, value: Any, kind: type) -> Any:
    if kind is str:
        return str(value).strip()
    if isinstance(value, bool) or (kind is int and isinstance(value, float)):
        raise UsageError(f"{key} must be {'an integer' if kind is int else 'a number'}: {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"{key} must be {what}, got {value!r}") from None


PRESETS: dict[str, tuple[str, Grid]] = {}


def preset(name: str) -> Grid:
    """A named grid: ``quick``, ``default`` or ``full``."""
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name][1]


def _register(name: str, doc: str, grid: Grid) -> None:
    PRESETS[name] = (doc, grid)


_register(
    "quick",
    "every scheme on tanh, relu and sigmoid mlps, depths 5, 20 and 50, widths 64 and 256, "
    "2 seeds; probe only (about a minute on 2 cores)",
    Grid(activations=("tanh", "relu", "sigmoid"), depths=(5, 20, 50), widths=(64, 256), seeds=2),
)
_register(
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
_register(
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
