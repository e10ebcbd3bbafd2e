"""Where a sweep's chunks compute: every executor yields each chunk's rows as it finishes.

An executor is a context manager (it connects and disconnects) with one method,
``run(chunks, grid, device, ...)``; :func:`get_executor` builds one by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import torch

from initbench.core.data import Dataset
from initbench.core.errors import UsageError
from initbench.sweeps.engine import Progress
from initbench.sweeps.grid import Grid, Run
from initbench.sweeps.store import Records

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(
        self,
        chunks: Sequence[Sequence[Run]],
        grid: Grid,
        device: torch.device,
        *,
        dataset: Dataset | None,
        deterministic: bool,
        data_dir: str | Path | None,
        progress: Progress | None,
        rng: str,
    ) -> Iterator[Records]: ...


def get_executor(name: str, address: str | None = None) -> Executor:
    """``local`` (this process) or ``ray`` (Ray tasks, on this machine or at ``address``)."""
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise UsageError("--ray-address needs --executor ray")
    if name == "ray":
        from initbench.sweeps.executors.ray import RayExecutor

        return RayExecutor(address)
    from initbench.sweeps.executors.local import LocalExecutor

    return LocalExecutor()
