"""initbench's probe speed as ratios measured in one run.

1. Against a hand-written per-run loop in the tutorial's style (``nn.Sequential`` +
   ``initialize_weights`` + forward hooks + ``.item()`` per layer) on the same grid.
2. Against the machine's own matmul throughput (batch x width times width x width) at
   width 1024, depth 20.

Beside each width's speedup it prints the best any probe could do there: the loop's time
over (drawing every run's weights with torch.nn.init, which both sides pay, plus the grid's
matmul FLOPs at the machine's matmul rate).

Usage: ``python benchmarks/perf_ratio.py [--device cpu|cuda] [--quick]``
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn

import initbench
from initbench.device import prepare_process, resolve_device, run_generator, synchronize
from initbench.grid import Grid
from initbench.planning import plan_chunks

LOOP_GRID = Grid(
    schemes=(
        "xavier_normal",
        "kaiming_normal[mode=fan_in,nonlinearity=matched]",
        "orthogonal[gain=matched]",
        "normal[std=0.01]",
    ),
    activations=("relu", "tanh"),
    depths=(5, 10, 20, 50),
    widths=(64, 128, 256),
    seeds=3,
    batch_size=256,
)


def initialize_weights(model: nn.Module, cell) -> None:
    """The tutorial's pattern: walk the modules and init each layer by its type."""
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            cell.scheme.init(layer.weight.data, cell.activation, None)
            nn.init.zeros_(layer.bias.data)


def probe_one(cell, seed: int, batch: int, device: torch.device) -> list[float]:
    """One run: build, init, forward with hooks, backward, ``.item()`` per statistic."""
    torch.manual_seed(seed)
    model = cell.arch.build(cell.depth, cell.width, cell.activation, LOOP_GRID.cell_inputs(cell))
    initialize_weights(model, cell)
    model.to(device)
    linears = [m for m in model if isinstance(m, nn.Linear)][:-1]
    pre: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: pre.append(o)) for layer in linears]
    out = model(torch.randn(batch, cell.width, device=device))
    for hook in hooks:
        hook.remove()
    stats: list[float] = []
    for h in pre:
        h.retain_grad()
        a = cell.activation.fn(h)
        stats += [h.mean().item(), h.var().item(), a.mean().item(), a.var().item()]
        stats.append((h <= 0).all(0).float().mean().item())
    out.backward(torch.randn_like(out))
    for layer, h in zip(linears, pre, strict=True):
        stats += [layer.weight.grad.norm().item(), h.grad.var().item()]
    return stats


def hand_written_loop(grid: Grid, device: torch.device) -> None:
    """What a user writes without initbench: one model at a time, a host sync per value."""
    for run in grid.runs():
        probe_one(run.cell, run.seed, grid.batch_size, device)


def timed(fn, device: torch.device, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def initbench_sweep(grid: Grid, device: torch.device) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        initbench.sweep(grid, f"{tmp}/s", device=str(device), progress=False)


def draw_weights(grid: Grid, device: torch.device) -> None:
    """Only what both sides must do before any matmul: every run's torch.nn.init draws."""
    for chunk in plan_chunks(grid.runs(), grid, device):
        cell = chunk[0].cell
        inputs = grid.cell_inputs(cell)
        net = cell.arch.stack(len(chunk), cell.depth, cell.width, cell.activation, inputs, device)
        for r, run in enumerate(chunk):
            net.initialize(r, run.cell.scheme, run_generator(run.seed))


def matmul_gflops(batch: int, width: int, device: torch.device, seconds: float = 2.0) -> float:
    a = torch.randn(batch, width, device=device)
    w = torch.randn(width, width, device=device)
    for _ in range(3):
        a @ w
    n, start = 0, time.perf_counter()
    synchronize(device)
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ w
        n += 10
        synchronize(device)
    return 2 * batch * width * width * n / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer depths, for a smoke test")
    args = parser.parse_args()
    device = resolve_device(args.device)
    prepare_process(deterministic=False)  # what initbench.sweep sets: the loop gets it too
    loop_grid = LOOP_GRID
    if args.quick:
        loop_grid = Grid.from_dict({"depths": [5], "widths": [64]}, LOOP_GRID)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"grid: {len(loop_grid.runs())} runs, widths {loop_grid.widths}, depths {loop_grid.depths}"
    )
    initbench_sweep(Grid.from_dict({"depths": [2], "widths": [16]}, loop_grid), device)  # warm-up
    for width in loop_grid.widths:
        grid = Grid.from_dict({"widths": [width]}, loop_grid)
        t_loop = timed(lambda g=grid: hand_written_loop(g, device), device)
        t_ib = timed(lambda g=grid: initbench_sweep(g, device), device)
        t_draw = timed(lambda g=grid: draw_weights(g, device), device)
        t_flops = sum(map(grid.flops_per_run, grid.cells())) * grid.seeds
        t_flops /= matmul_gflops(grid.batch_size, width, device, seconds=0.5) * 1e9
        print(
            f"width {width:>4}: hand-written loop {t_loop:7.2f} s, initbench {t_ib:6.2f} s, "
            f"speedup {t_loop / t_ib:5.2f}x  (drawing weights {t_draw:5.2f} s, matmuls at peak "
            f"{t_flops:5.2f} s: no probe beats {t_loop / (t_draw + t_flops):4.2f}x)"
        )
    total_loop = timed(lambda: hand_written_loop(loop_grid, device), device)
    total_ib = timed(lambda: initbench_sweep(loop_grid, device), device)
    print(f"whole grid: speedup {total_loop / total_ib:.2f}x over the hand-written loop")

    width, depth, batch = (256, 5, 256) if args.quick else (1024, 20, 256)
    big = Grid(
        schemes=("kaiming_normal[mode=fan_in,nonlinearity=matched]",),
        activations=("relu",),
        depths=(depth,),
        widths=(width,),
        seeds=8,
        batch_size=batch,
    )
    flops = big.flops_per_run(big.cells()[0]) * len(big.runs())
    t_big = timed(lambda: initbench_sweep(big, device), device, repeat=3)
    achieved = flops / t_big / 1e9
    peak = matmul_gflops(batch, width, device)
    print(
        f"width {width}, depth {depth}, batch {batch}: initbench {achieved:.1f} GFLOP/s, "
        f"matmul {peak:.1f} GFLOP/s, ratio {achieved / peak:.0%}"
    )


if __name__ == "__main__":
    main()
