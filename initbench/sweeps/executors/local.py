"""The ``local`` executor: chunks compute one after another in this process."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from initbench.core.data import Dataset
from initbench.sweeps.engine import Progress, compute_chunk
from initbench.sweeps.grid import Grid, Run
from initbench.sweeps.store import Records


class LocalExecutor:
    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

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
    ) -> Iterator[Records]:
        for chunk in chunks:
            yield compute_chunk(chunk, grid, device, dataset, progress, rng)
