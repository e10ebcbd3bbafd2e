"""Planning a sweep: chunks of runs that compute together, and how long the grid takes."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence

import torch

from initbench.core.device import synchronize
from initbench.sweeps.grid import Grid, Run

CPU_CHUNK_BYTES = 512 * 2**20  # the memory of one chunk on the CPU
GPU_MEMORY_SHARE = 0.25  # of the GPU's free memory, for one chunk
MAX_CHUNK_RUNS = {"cpu": 64, "cuda": 512}  # more runs per chunk: fewer kernel launches per run
BYTES_PER_ACTIVATION = 4 * 6  # float32 h, a, their gradients, and temporaries
EFFICIENCY = 0.35  # a sweep's FLOP rate over the matmul rate, measured on small widths


def plan_chunks(runs: Sequence[Run], grid: Grid, device: torch.device) -> list[list[Run]]:
    """Groups runs by shape, then splits groups to fit the device's memory budget."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.cell.shape_key].append(run)
    budget = chunk_bytes(device)
    most = MAX_CHUNK_RUNS.get(device.type, MAX_CHUNK_RUNS["cpu"])
    chunks = []
    for group in groups.values():
        cell = group[0].cell
        inputs = grid.cell_inputs(cell)
        batch = max(grid.batch_size, grid.train_batch_size if grid.train_steps else 0)
        activations = cell.arch.activation_elements(cell.depth, cell.width, inputs)
        per_run = BYTES_PER_ACTIVATION * batch * activations
        per_run += 4 * 4 * sum(math.prod(s) for s in grid.shapes(cell))  # weights, grads, state
        size = int(max(1, min(most, budget // max(per_run, 1))))
        chunks += [group[i : i + size] for i in range(0, len(group), size)]
    return chunks


def chunk_bytes(device: torch.device) -> int:
    """The memory one chunk may take: a share of the GPU's free memory, or a fixed budget."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(GPU_MEMORY_SHARE * free)
    return CPU_CHUNK_BYTES


def matmul_flops(
    device: torch.device, width: int = 256, seconds: float = 0.2, batch: int = 256, runs: int = 1
) -> float:
    """This device's float32 matmul rate (FLOP/s) on ``batch x width`` by ``width x width``
    products, ``runs`` of them in one batched matmul."""
    stack = (runs,) if runs > 1 else ()
    a = torch.randn(*stack, batch, width, device=device)
    w = torch.randn(*stack, width, width, device=device)
    a @ w
    synchronize(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ w
        n += 10
        synchronize(device)
    return 2 * runs * batch * width * width * n / (time.perf_counter() - start)


def estimate_seconds(grid: Grid, device: torch.device, runs: int | None = None) -> float:
    """A rough wall time for ``runs`` of the grid (default all): its FLOPs at a fraction of
    the device's measured matmul rate."""
    share = 1.0 if runs is None else runs / max(len(grid.runs()), 1)
    return grid.total_flops() * share / (EFFICIENCY * matmul_flops(device))
