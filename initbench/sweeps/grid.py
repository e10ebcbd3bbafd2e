"""Grid specs (flags, TOML files), validation, and cells and runs with stable ids."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from initbench.archs import check_arch_id, get_arch, parse_model_id
from initbench.core.activations import Activation, get_activation
from initbench.core.errors import UsageError
from initbench.core.ids import format_value, shape_text
from initbench.core.roles import Site
from initbench.core.scheme import Scheme
from initbench.core.schemes import expand_schemes

if TYPE_CHECKING:
    import pandas as pd

    from initbench.archs.base import Arch, Inputs

OPTIMIZERS = ("sgd", "adam")
MAX_WIDTH = 65_536
MAX_DEPTH = 10_000
JACOBIAN_MAX_WIDTH = 1024  # an exact N x N Jacobian per run: O(depth N^3) work, O(N^2) memory


def option(name: str, value: object) -> list[str]:
    """A grid field as ``initbench sweep`` takes it: ``["--depths", "5,20"]``,
    ``["--no-histograms"]``."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, list | tuple):
        return [flag, ",".join(format_value(v) for v in value)]
    return [flag, format_value(value)]


@dataclass(frozen=True)
class Cell:
    """One scheme x activation x arch x depth x width (x bias variance)."""

    scheme: Scheme
    activation: Activation
    arch: Arch
    depth: int
    width: int
    bias_var: float = 0.0

    @property
    def id(self) -> str:
        cell = f"{self.scheme.id}|{self.activation.id}|{self.arch.id}|d{self.depth}|w{self.width}"
        return cell + (f"|b{format_value(self.bias_var)}" if self.bias_var else "")

    @property
    def shape_key(self) -> tuple[str, str, int, int]:
        """Cells with the same key compute together."""
        return (self.activation.id, self.arch.id, self.depth, self.width)


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
        archs: architecture ids (``mlp``, ``cnn``, ``resmlp[norm=layer]``, ...), or models
            (``torchvision:resnet18[num_classes=10]``, ``path/to/file.py:make[input=32]``:
            see :mod:`initbench.archs.model`).
        depths: numbers of hidden layers (blocks, for residual and transformer archs); a
            model has its own.
        widths: hidden units (channels for convolutional archs); a model has its own.
        gains: gain settings for gain-taking schemes: ``unit``, ``matched`` or numbers.
        bias_vars: bias variances ``sigma_b^2`` (biases drawn from N(0, sigma_b^2); 0: zero).
        seeds: how many seeds (0..seeds-1) per cell.
        batch_size: probe batch size.
        image_size: side of the standard-normal probe images of convolutional archs.
        tokens: tokens per standard-normal probe sequence of the transformer.
        input_corr: correlation of the probe batch's input pairs (samples 2i and 2i+1).
        histograms: store per-layer histograms of pre-, post-activations and gradients.
        jacobian: compute each run's input-output Jacobian spectrum (archs that compute each
            sample on its own; widths and inputs of up to 1024 values).
        dataset: probe on a batch of this dataset (and train on it), instead of N(0, 1) input.
        train_steps: optimizer steps per run (0: probe only).
        train_batch_size: training minibatch size.
        optimizer: ``sgd`` (with momentum) or ``adam``.
        lr: learning rate.
        lrs: learning rates to train every run at instead (a decade apart, say); each run
            keeps its outcome at the one where it ends with the best test accuracy, so that
            an init is not judged by one learning rate. Empty: ``lr`` alone.
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
    bias_vars: tuple[float, ...] = (0.0,)
    seeds: int = 3
    batch_size: int = 256
    image_size: int = 8
    tokens: int = 16
    input_corr: float = 0.5
    histograms: bool = True
    jacobian: bool = False
    dataset: str | None = None
    train_steps: int = 0
    train_batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.01
    lrs: tuple[float, ...] = ()
    momentum: float = 0.9
    eval_every: int = 25
    target_accuracy: float = 0.8

    def __post_init__(self) -> None:
        self.run_count()  # every name, size and setting checked where the grid is made

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: Grid | None = None) -> Grid:
        """A grid from plain values (a TOML table, CLI flags), over ``base``'s values."""
        hints = get_type_hints(cls)
        known = [f.name for f in dataclasses.fields(cls)]
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise UsageError(f"unknown grid key {key!r}; valid keys: {', '.join(known)}")
            changes[key] = _coerce(key, value, hints[key])
        return dataclasses.replace(base or cls(), **changes)

    @classmethod
    def from_toml(cls, path: str | Path, base: Grid | None = None) -> Grid:
        """A grid from a TOML file of grid keys (``depths = [5, 20]``)."""
        return cls.from_dict(read_toml(path), base)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON and TOML friendly) that :meth:`from_dict` reads back."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    def options(self) -> list[str]:
        """The ``initbench sweep`` options that make this grid: one per field that is not
        the default (every field is an option)."""
        default = Grid().to_dict()
        return [
            text
            for name, value in self.to_dict().items()
            if value != default[name]
            for text in option(name, value)
        ]

    # ---- expansion ----------------------------------------------------------------------

    def _check(self) -> None:
        for name in ("depths", "widths"):
            values = getattr(self, name)
            if not values:
                raise UsageError(f"{name} is empty")
            limit = MAX_DEPTH if name == "depths" else MAX_WIDTH
            for value in values:
                if not 0 < value <= limit:
                    raise UsageError(f"{name} must be between 1 and {limit}, got {value}")
        for name in (
            "seeds",
            "batch_size",
            "image_size",
            "tokens",
            "train_batch_size",
            "eval_every",
        ):
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
        for lr in self.learning_rates:
            if not (lr > 0 and math.isfinite(lr)):
                raise UsageError(f"learning rates must be positive, got {lr}")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.target_accuracy <= 1:
            raise UsageError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if not -1 <= self.input_corr <= 1:
            raise UsageError(f"input_corr must be in [-1, 1], got {self.input_corr}")
        if not self.bias_vars:
            raise UsageError("bias_vars is empty")
        for value in self.bias_vars:
            if not (value >= 0 and math.isfinite(value)):
                raise UsageError(f"bias_vars must be variances >= 0, got {value}")
        if self.dataset is not None:
            from initbench.core.data import check_dataset_name

            check_dataset_name(self.dataset)
        for name in ("schemes", "activations", "archs"):
            if not getattr(self, name):
                raise UsageError(f"{name} is empty: the grid has no cells")

    def _check_arch(self, arch: Arch) -> None:
        for width in self.widths:
            arch.check_width(width)
        if self.dataset is not None:
            inputs = self.inputs(arch, max(self.widths))  # refuses a layout it cannot give
            out = arch.output_sample(inputs, self.batch_size)
            if self.train_steps and out[-1:] != (inputs.classes,):
                raise UsageError(
                    f"arch {arch.id} outputs {shape_text(out)} values per sample; training "
                    f"on {self.dataset} needs {inputs.classes} class scores"
                )
        if self.jacobian:
            if not arch.supports_jacobian:
                raise UsageError(
                    f"--jacobian needs an arch that computes each sample on its own (not "
                    f"BatchNorm's resnet), got {arch.id}"
                )
            features = math.prod(self.inputs(arch, max(self.widths)).sample)
            if max(self.widths) > JACOBIAN_MAX_WIDTH or features > JACOBIAN_MAX_WIDTH:
                raise UsageError(
                    f"--jacobian is limited to widths and inputs of up to {JACOBIAN_MAX_WIDTH} "
                    f"values (an exact Jacobian per run), got width {max(self.widths)} and "
                    f"{features} input values"
                )

    @cached_property
    def _cells(self) -> tuple[Cell, ...]:
        self._check()
        schemes = expand_schemes(self.schemes, self.gains)
        activations = list({a.id: a for a in map(get_activation, self.activations)}.values())
        archs = list({a.id: a for a in map(get_arch, self.archs)}.values())
        for arch in archs:
            self._check_arch(arch)
        return tuple(
            Cell(scheme, act, arch, depth, width, bias_var)
            for arch in archs
            for depth, width in arch.sizes(
                list(dict.fromkeys(self.depths)),
                list(dict.fromkeys(self.widths)),
                self.inputs(arch, max(self.widths)),
                self.batch_size,
            )
            for bias_var in dict.fromkeys(self.bias_vars)
            for act in activations
            for scheme in schemes
        )

    def cells(self) -> list[Cell]:
        """Every cell of the grid, in a stable order."""
        return list(self._cells)

    def runs(self) -> list[Run]:
        """Every run (cell x seed)."""
        return [Run(cell, seed) for cell in self.cells() for seed in range(self.seeds)]

    @property
    def learning_rates(self) -> tuple[float, ...]:
        """The learning rates every run trains at: ``lrs``, else ``lr``."""
        return tuple(dict.fromkeys(self.lrs)) or (self.lr,)

    def run_count(self) -> int:
        """The number of runs, without building the cells (or loading torch)."""
        self._check()
        # a model fixes its own depth and width: one size; a registered arch crosses them
        sizes = sum(
            1 if parse_model_id(a) else len(set(self.depths)) * len(set(self.widths))
            for a in {check_arch_id(a) and a for a in self.archs}
        )
        counts = [
            len(expand_schemes(self.schemes, self.gains)),
            len({get_activation(a).id for a in self.activations}),
            sizes,
            len(set(self.bias_vars)),
            self.seeds,
        ]
        return math.prod(counts)

    def inputs(self, arch: Arch, width: int) -> Inputs:
        """What a network of this grid sees: standard-normal samples of its width (and
        as many outputs; token ids of a vocabulary of its width for an arch on text), or
        the dataset's samples and classes.

        Raises:
            UsageError: a text for an arch on vectors or images, or the reverse.
        """
        from initbench.archs.base import Inputs

        if self.dataset is None:
            return Inputs(arch.synthetic_sample(width, self.image_size, self.tokens), width)
        from initbench.core.data import check_dataset_name

        info = check_dataset_name(self.dataset)
        if (info.kind == "text") != arch.tokens:
            takes = "token ids (a text: chars)" if arch.tokens else "vectors or images"
            raise UsageError(f"{arch.id} takes {takes}; dataset {info.name!r} is {info.kind}")
        return Inputs(arch.data_shape(info.sample), info.classes, info.dtype)

    def cell_inputs(self, cell: Cell) -> Inputs:
        return self.inputs(cell.arch, cell.width)

    def sites(self, cell: Cell) -> list[Site]:
        """The site (role, block, shape) of every weight of a cell's network, in model
        order."""
        return cell.arch.weight_sites(
            cell.depth, cell.width, cell.activation, self.cell_inputs(cell)
        )

    def weight_signatures(self) -> pd.DataFrame:
        """Per cell: ``cell_id`` and ``weights``, what fixes the distribution of every
        weight of its network (:meth:`~initbench.core.scheme.Scheme.signature` on each
        weight, in model order: once per shape where every weight of a shape has one
        distribution, else once per weight; its own id where the scheme cannot fill the
        weight), and the residual branches' scalars a recipe sets. Two schemes of one cell
        draw the same weights exactly when their ``weights`` are equal."""
        import pandas as pd

        rows = []
        for cell in self.cells():
            scheme = cell.scheme
            sites = self.sites(cell)
            reason = scheme.not_applicable_to(sites)
            if reason:  # every run of the cell is skipped: it shares no group
                rows.append((cell.id, repr((("not applicable", scheme.id),))))
                continue
            signed = [
                # a scheme that cannot fill a weight shares no group (the weight gets
                # torch's default, or the run fails)
                (
                    site.shape,
                    ("not applicable", scheme.id)
                    if scheme.at(site).not_applicable(site.shape)
                    else scheme.signature(site, cell.activation),
                )
                for site in sites
            ]
            by_shape = dict(signed)
            if len(set(signed)) == len(by_shape):  # one distribution per shape
                signature = tuple(by_shape.values())
            else:
                signature = tuple(sig for _, sig in signed)
            parts = cell.arch.parts(cell.depth, cell.width, cell.activation, self.cell_inputs(cell))
            scalars = tuple(
                (site.role, site.block, *value)
                for site in parts.setting_sites
                if (value := scheme.setting(site)) is not None
            )
            rows.append((cell.id, repr(signature + ((("scalars", scalars),) if scalars else ()))))
        return pd.DataFrame(rows, columns=["cell_id", "weights"]).astype("string")

    def flops_per_run(self, cell: Cell) -> float:
        """Multiply-adds x 2 of one probe: forward, input gradients and weight gradients."""
        return 6.0 * self.batch_size * self.macs_per_sample(cell)

    def macs_per_sample(self, cell: Cell) -> float:
        return cell.arch.macs_per_sample(
            cell.depth, cell.width, cell.activation, self.cell_inputs(cell)
        )

    def total_flops(self) -> float:
        """The grid's probe and training FLOPs (6 x multiply-adds x examples)."""
        trained = self.train_batch_size * self.train_steps * len(self.learning_rates)
        examples = self.batch_size + trained
        return 6.0 * examples * self.seeds * sum(map(self.macs_per_sample, self.cells()))


def read_toml(path: str | Path) -> dict[str, Any]:
    """The grid keys of a TOML file (top level, or its ``[grid]`` table).

    Args:
        path: the file.

    Returns:
        The keys, as :meth:`Grid.from_dict` takes them.

    Raises:
        UsageError: a missing, unreadable or invalid file.
    """
    try:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read config file {str(path)!r}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"config file {str(path)!r} is not valid TOML: {error}") from None
    return values.get("grid", values)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    text = str(hint)
    if value is None and "None" in text:
        return None
    if "tuple" in text:
        items = value
        if not isinstance(items, list | tuple):
            example = _as_list(value)
            raise UsageError(f"{key} must be a list, got {value!r} (write {key} = {example})")
        item_type = int if "int" in text else float if "float" in text else str
        return tuple(_scalar(key, item, item_type) for item in items if str(item).strip())
    for kind in (bool, int, float, str):
        if kind.__name__ in text:
            return _scalar(key, value, kind)
    return value


def _as_list(value: Any) -> str:
    """How a list of ``value``'s items is written in TOML: ``[3]``, ``["relu", "tanh"]``."""
    items = [part.strip() for part in str(value).split(",") if part.strip()]
    try:
        [float(item) for item in items]
        return f"[{', '.join(items)}]"
    except ValueError:
        return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def _scalar(key: str, value: Any, kind: type) -> Any:
    if kind is str:
        return str(value).strip()
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "false", "0", "no"):
            return str(value).lower() in ("true", "1", "yes")
        raise UsageError(f"{key} must be true or false, got {value!r}")
    what = {int: "an integer", float: "a number"}[kind]
    if isinstance(value, bool) or (kind is int and isinstance(value, float)):
        raise UsageError(f"{key} must be {what}: {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{key} must be {what}, got {value!r}") from None
