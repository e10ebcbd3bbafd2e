"""Planning a sweep: chunks of runs that compute together, and how long the grid takes."""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from initbench.core.device import synchronize
from initbench.sweeps.grid import Grid, Run

CPU_CHUNK_BYTES = 512 * 2**20  # the memory of one chunk on the CPU
GPU_MEMORY_SHARE = 0.25  # of the GPU's free memory, for one chunk
MAX_CHUNK_RUNS = {"cpu": 64, "cuda": 512}  # more runs per chunk: fewer kernel launches per run
BYTES_PER_ACTIVATION = 4 * 6  # float32 h, a, their gradients, and temporaries
EFFICIENCY = 0.35  # a sweep's FLOP rate over the matmul rate, measured on small widths
# what a chunk costs beyond its FLOPs, in FLOPs, until a sweep's own timed chunks fit it:
# a layer pass (forward, backward, update: its kernel launches) and a layer of one run
# (its statistics, histogram samples and weight draws), each about 0.4 ms at 80 GFLOP/s
# on 2 CPU cores (fitted on the quick and default presets); on a GPU they are worth about
# 100 times as many FLOPs
OVERHEAD_FLOPS = {"cpu": (3e7, 3e7), "cuda": (3e9, 3e9)}
# before the sweep prints its estimate, each part times two chunks and 10 seconds of
# them, or a tenth of its chunks if that comes first
PILOT_CHUNKS, PILOT_SECONDS, PILOT_SHARE = 2, 10.0, 0.1


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
        per_run += (
            4 * 4 * sum(math.prod(s.shape) for s in grid.sites(cell))
        )  # weights, grads, state
        size = int(max(1, min(most, budget // max(per_run, 1))))
        chunks += [group[i : i + size] for i in range(0, len(group), size)]
    random.Random(0).shuffle(chunks)  # any first chunks are a sample of the grid: see Estimate
    return chunks


def pilot_size(chunks: int) -> int:
    """The most of a part's (shuffled) chunks timed before the estimate."""
    return min(chunks, max(PILOT_CHUNKS, round(PILOT_SHARE * chunks)))


class Estimate:
    """The time a sweep has left, from the chunks it has timed so far.

    A chunk's work has three parts: its FLOPs, its layer passes (each a round of kernel
    launches) and its run-layers (each run's statistics and draws, layer by layer). Their
    costs are fitted to the timed chunks by non-negative least squares once there are
    four (before, :data:`OVERHEAD_FLOPS` weighs them); each part's seconds per unit of
    work is its own timed chunks' (a part not timed yet takes every part's). Chunks run in
    a shuffled order (:func:`plan_chunks`), so the first ones are a sample of the grid,
    on this machine as loaded as it is. The sweep's first chunk, which pays for warming
    up, counts only while it is alone.
    """

    def __init__(self, device: torch.device) -> None:
        self.prior = np.array([1.0, *OVERHEAD_FLOPS.get(device.type, OVERHEAD_FLOPS["cpu"])])
        self.pending: dict[str, dict[str, tuple[np.ndarray, int]]] = {}
        self.timed: list[tuple[str, np.ndarray, float]] = []  # part, work, seconds
        self.runs_timed = 0
        self.tried: set[str] = set()  # the run ids computed, finished or not
        self._chunk_of: dict[str, str] = {}

    def plan(self, part: str, chunks: Sequence[Sequence[Run]], grid: Grid) -> None:
        """Sets ``part``'s chunks still to compute."""
        self.pending[part] = {}
        for chunk in chunks:
            key = chunk[0].id
            self.pending[part][key] = (np.array(chunk_work(chunk, grid)), len(chunk))
            self._chunk_of.update((run.id, key) for run in chunk)

    def finished(self, part: str, run_id: str, seconds: float | None) -> None:
        """The chunk of ``run_id`` is done: it took ``seconds`` (None: it failed, and its
        time says nothing of the work)."""
        found = self.pending[part].pop(self._chunk_of[run_id], None)
        if found is not None and seconds is not None:
            self.timed.append((part, found[0], seconds))
            self.runs_timed += found[1]

    def pilot_done(self, part: str) -> bool:
        """Whether ``part`` has timed enough chunks for its estimate."""
        mine = [seconds for name, _, seconds in self._rows() if name == part]
        return len(mine) >= PILOT_CHUNKS and sum(mine) >= PILOT_SECONDS

    def _rows(self) -> list[tuple[str, np.ndarray, float]]:
        return self.timed[1:] if len(self.timed) > 1 else self.timed

    def weights(self) -> np.ndarray:
        """The cost of a FLOP, a layer pass and a run-layer, up to a common factor: fitted
        to the timed chunks, or the prior until four are timed."""
        rows = self._rows()
        if len(rows) < 4:
            return self.prior
        work = np.array([w for _, w, _ in rows])
        scale = work.max(axis=0)
        scale[scale == 0] = 1.0
        fitted = nonnegative_least_squares(work / scale, np.array([s for *_, s in rows]))
        return fitted / scale if fitted.any() else self.prior

    def seconds_left(self) -> float | None:
        """The remaining chunks' time; None before any chunk is timed."""
        if not self.timed:
            return None
        weights = self.weights()
        work: dict[str, float] = defaultdict(float)
        spent: dict[str, float] = defaultdict(float)
        for part, chunk, seconds in self._rows():
            work[part] += float(weights @ chunk)
            spent[part] += seconds
        pooled = sum(spent.values()) / max(sum(work.values()), 1e-30)
        left = 0.0
        for part, chunks in self.pending.items():
            rate = spent[part] / work[part] if work.get(part) else pooled
            left += rate * sum(float(weights @ chunk) for chunk, _ in chunks.values())
        return left


def nonnegative_least_squares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``argmin |a x - b|`` over ``x >= 0`` for a few columns: the least-squares solution on
    each subset of the columns, the best of those that are non-negative (the optimum is
    one of them). Exact, and without importing ``scipy.optimize`` (most of a second)."""
    best, best_residual = np.zeros(a.shape[1]), float(np.sum(b**2))
    for size in range(1, a.shape[1] + 1):
        for columns in itertools.combinations(range(a.shape[1]), size):
            x = np.linalg.lstsq(a[:, columns], b, rcond=None)[0]
            residual = float(np.sum((a[:, columns] @ x - b) ** 2))
            if (x >= 0).all() and residual < best_residual:
                best = np.zeros(a.shape[1])
                best[list(columns)] = x
                best_residual = residual
    return best


def chunk_work(chunk: Sequence[Run], grid: Grid) -> tuple[float, float, float]:
    """A chunk's FLOPs (probe and training), its layer passes (its probe's and every
    training step's, each one batched pass for all its runs) and its run-layers."""
    cell = chunk[0].cell
    steps = grid.train_steps * len(grid.learning_rates)
    flops = 6.0 * (grid.batch_size + grid.train_batch_size * steps) * grid.macs_per_sample(cell)
    return flops * len(chunk), float(cell.depth * (1 + steps)), float(cell.depth * len(chunk))


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


SLOWEST_RATE = 1e9  # FLOP/s: slower than any device's float32 matmuls


def estimate_seconds(
    grid: Grid, device: torch.device, runs: int | None = None, *, measure: bool = True
) -> float:
    """A rough wall time for ``runs`` of the grid (default all): its FLOPs at a fraction of
    the device's measured matmul rate; ``measure=False``: at :data:`SLOWEST_RATE`, a time
    no device exceeds, without the fifth of a second the measurement takes."""
    share = 1.0 if runs is None else runs / max(len(grid.runs()), 1)
    rate = matmul_flops(device) if measure else SLOWEST_RATE
    return grid.total_flops() * share / (EFFICIENCY * rate)
