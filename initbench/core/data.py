"""Datasets: embedded ones that need no download, and torchvision's with explicit download.

``digits`` (scikit-learn, 8x8 images, shipped in the package) is the default. ``mnist1d`` is
generated offline by the ``mnist1d`` package (1-D signals: mlp, resmlp and transformer). ``mnist``,
``fashion_mnist`` and ``cifar10`` load through torchvision from ``data_dir`` and download
only when asked. Inputs are standardised with training-set statistics, per channel.
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


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    sample: tuple[int, ...]  # one sample: (C, H, W) images, (C, L) 1-D signals
    classes: int
    source: str

    @property
    def features(self) -> int:
        return math.prod(self.sample)


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("digits", (1, 8, 8), 10, "scikit-learn load_digits (shipped, no download)"),
        DatasetInfo("mnist1d", (1, 40), 10, "mnist1d make_dataset (generated offline)"),
        DatasetInfo("mnist", (1, 28, 28), 10, "torchvision MNIST"),
        DatasetInfo("fashion_mnist", (1, 28, 28), 10, "torchvision FashionMNIST"),
        DatasetInfo("cifar10", (3, 32, 32), 10, "torchvision CIFAR10"),
    )
}
_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def check_dataset_name(name: str) -> DatasetInfo:
    """The dataset's description, or a UsageError listing the known names."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass(frozen=True)
class Dataset:
    """Standardised tensors: images ``(N, C, H, W)`` (1-D data: ``(N, C, L)``), int labels.
    Each architecture turns samples into its own layout (``Arch.data_sample``)."""

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
def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False) -> Dataset:
    """Loads (and caches) a dataset by name.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: where torchvision datasets live (default ``~/.cache/initbench/data``).
        download: let torchvision download a missing dataset.

    Raises:
        UsageError: unknown name, or a torchvision dataset missing and no download asked.
    """
    check_dataset_name(name)
    if name == "digits":
        return _digits()
    if name == "mnist1d":
        return _mnist1d()
    return _torchvision(name, Path(data_dir or DEFAULT_DATA_DIR).expanduser(), download)
