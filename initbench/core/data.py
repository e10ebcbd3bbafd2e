"""Datasets: embedded ones that need no download, and torchvision's with explicit download.

``digits`` (scikit-learn, 8x8 images, shipped in the package) is the default. ``mnist1d`` is
generated offline by the ``mnist1d`` package (1-D signals: mlp, resmlp and transformer).
``chars`` is text that ships with Python: the source of a few modules of its standard
library, as windows of characters whose targets are the next characters (the ``gpt``
arch). ``mnist``, ``fashion_mnist`` and ``cifar10`` load through torchvision from
``data_dir`` and download only when asked. Images and signals are standardised with
training-set statistics, per channel.

A dataset can also be a factory in a file, ``path/to/file.py:FACTORY``: called without
arguments, it returns ``(x_train, y_train, x_test, y_test)``, tensors taken as they are
(not standardised: integer token ids stay integers), labels the integers 0..classes-1.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from initbench.core.errors import UsageError

if TYPE_CHECKING:
    import torch

DEFAULT_DATA_DIR = Path("~/.cache/initbench/data").expanduser()
DIGITS_TEST_FRACTION = 0.2
SPLIT_SEED = 0
# chars: these modules of the standard library, in 64-character windows (characters past
# ASCII read as "?"), the last tenth of each module's windows held out for testing
CHARS_MODULES = (
    "argparse",
    "difflib",
    "textwrap",
    "calendar",
    "random",
    "dataclasses",
    "csv",
    "copy",
    "string",
)
CHARS_CONTEXT = 64
CHARS_VOCAB = 128
CHARS_TEST_FRACTION = 0.1


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    sample: tuple[int, ...]  # one sample: (C, H, W) images, (C, L) 1-D signals, (T,) tokens
    classes: int  # classes, or the vocabulary of a text
    source: str
    kind: str = "images"  # images, signals (1-D) or text (token ids, a target per token)
    dtype: str = "float32"  # of the samples (a factory's may be integer token ids)

    @property
    def features(self) -> int:
        return math.prod(self.sample)


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("digits", (1, 8, 8), 10, "scikit-learn load_digits (shipped, no download)"),
        DatasetInfo("mnist1d", (1, 40), 10, "mnist1d make_dataset (generated offline)", "signals"),
        DatasetInfo(
            "chars",
            (CHARS_CONTEXT,),
            CHARS_VOCAB,
            "the Python standard library's own source (argparse, difflib, textwrap, ...): "
            "64-character windows, next-character targets (no download)",
            kind="text",
            dtype="int64",
        ),
        DatasetInfo("mnist", (1, 28, 28), 10, "torchvision MNIST"),
        DatasetInfo("fashion_mnist", (1, 28, 28), 10, "torchvision FashionMNIST"),
        DatasetInfo("cifar10", (3, 32, 32), 10, "torchvision CIFAR10"),
    )
}
_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def check_dataset_name(name: str) -> DatasetInfo:
    """The dataset's description (a factory's: it is called), or a UsageError listing the
    known names."""
    if is_factory(name):
        return _from_factory(name).info
    if name not in DATASETS:
        raise UsageError(
            f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}, or give "
            "path/to/file.py:FACTORY"
        )
    return DATASETS[name]


def is_factory(name: str) -> bool:
    """Whether ``name`` is ``path/to/file.py:FACTORY`` rather than a built-in dataset."""
    return ".py:" in name


@dataclass(frozen=True)
class Dataset:
    """Standardised tensors: images ``(N, C, H, W)`` (1-D data: ``(N, C, L)``), int labels;
    for text, token ids ``(N, T)`` and the next token of each ``(N, T)``. Each architecture
    turns samples into its own layout (``Arch.data_sample``)."""

    info: DatasetInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _standardise(
    x_train: np.ndarray, x_test: np.ndarray, y_train: np.ndarray, y_test: np.ndarray, info
) -> Dataset:
    import torch

    x_train = torch.as_tensor(x_train, dtype=torch.float32)
    x_test = torch.as_tensor(x_test, dtype=torch.float32)
    dims = [d for d in range(x_train.dim()) if d != 1]
    mean = x_train.mean(dim=dims, keepdim=True)
    std = x_train.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return Dataset(
        info,
        (x_train - mean) / std,
        torch.as_tensor(y_train, dtype=torch.long),
        (x_test - mean) / std,
        torch.as_tensor(y_test, dtype=torch.long),
    )


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None]  # (N, 1, 8, 8)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(len(x) * DIGITS_TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return _standardise(
        x[train], x[test], bunch.target[train], bunch.target[test], DATASETS["digits"]
    )


def _mnist1d() -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)  # make_dataset reseeds numpy's global generator
    return _standardise(
        data["x"][:, None], data["x_test"][:, None], data["y"], data["y_test"], DATASETS["mnist1d"]
    )


def _chars() -> Dataset:
    import sysconfig

    import torch

    root = Path(sysconfig.get_paths()["stdlib"])
    train, test = [], []
    for module in CHARS_MODULES:
        path = root / f"{module}.py"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise UsageError(f"dataset 'chars' reads {path}: {error.strerror}") from None
        codes = torch.tensor(list(text.encode("ascii", errors="replace")))  # past ASCII: ?
        windows = codes.unfold(0, CHARS_CONTEXT + 1, CHARS_CONTEXT)  # (n, T + 1)
        held_out = max(1, round(len(windows) * CHARS_TEST_FRACTION))
        train.append(windows[:-held_out])
        test.append(windows[-held_out:])
    train_windows, test_windows = torch.cat(train), torch.cat(test)
    return Dataset(
        DATASETS["chars"],
        train_windows[:, :-1].contiguous(),
        train_windows[:, 1:].contiguous(),
        test_windows[:, :-1].contiguous(),
        test_windows[:, 1:].contiguous(),
    )


def _torchvision(name: str, data_dir: Path, download: bool) -> Dataset:
    import torchvision

    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    try:
        train = cls(str(data_dir), train=True, download=download)
        test = cls(str(data_dir), train=False, download=download)
    except RuntimeError as error:
        if "not found" in str(error).lower() or "corrupted" in str(error).lower():
            raise UsageError(
                f"dataset {name!r} not found under {data_dir}; run again with --download "
                f"(needs internet) or put torchvision's {_TORCHVISION[name]} files there"
            ) from None
        raise
    arrays = []
    for split in (train, test):
        data = np.asarray(split.data, dtype=np.float32) / 255.0
        data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)  # NCHW
        arrays += [data, np.asarray(split.targets)]
    return _standardise(arrays[0], arrays[2], arrays[1], arrays[3], DATASETS[name])


@functools.lru_cache(maxsize=4)
def _from_factory(spec: str) -> Dataset:
    """The dataset a file's factory returns.

    Raises:
        UsageError: a missing file or factory, a factory that raises, or returns anything
            but four tensors (samples of one shape, integer labels of their length).
    """
    import torch

    from initbench.core.models import describe_error, load_factory

    path, _, name = spec.rpartition(":")
    factory = load_factory(Path(path), name)
    try:
        value = factory()
    except Exception as error:
        raise UsageError(f"{spec} raised {describe_error(error)}") from error
    expected = "(x_train, y_train, x_test, y_test) tensors"
    if not (isinstance(value, tuple | list) and len(value) == 4):
        raise UsageError(f"{spec} must return {expected}, got a {type(value).__name__}")
    if not all(isinstance(t, torch.Tensor) for t in value):
        raise UsageError(f"{spec} must return {expected}")
    x_train, y_train, x_test, y_test = value
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.dim() < 2 or y.dim() != 1 or len(x) != len(y) or not len(x):
            raise UsageError(
                f"{spec}: x_{split} must be (n, *sample) and y_{split} (n,) labels, got "
                f"{list(x.shape)} and {list(y.shape)}"
            )
        if y.is_floating_point() or y.min() < 0:
            raise UsageError(f"{spec}: y_{split} must hold integer labels 0, 1, ...")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UsageError(f"{spec}: train and test samples differ in shape")
    classes = int(max(y_train.max(), y_test.max())) + 1
    dtype = str(x_train.dtype).removeprefix("torch.")
    info = DatasetInfo(spec, tuple(x_train.shape[1:]), classes, "a factory in a file", dtype=dtype)
    return Dataset(info, x_train, y_train.long(), x_test, y_test.long())


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False) -> Dataset:
    """Loads (and caches) a dataset by name.

    Args:
        name: one of :data:`DATASETS`, or ``path/to/file.py:FACTORY``.
        data_dir: where torchvision datasets live (default ``~/.cache/initbench/data``).
        download: let torchvision download a missing dataset.

    Raises:
        UsageError: unknown name, or a torchvision dataset missing and no download asked.
    """
    check_dataset_name(name)
    if is_factory(name):
        return _from_factory(name)
    if name == "digits":
        return _digits()
    if name == "mnist1d":
        return _mnist1d()
    if name == "chars":
        return _chars()
    return _torchvision(name, Path(data_dir or DEFAULT_DATA_DIR).expanduser(), download)
