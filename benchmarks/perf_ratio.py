"""initbench's probe speed as ratios measured in one run, of the user's default (``initbench
sweep`` with its default statistics: histograms, correlations and effective rank on), of
the engine without histograms, and of the engine computing only the loop's statistics
(means, variances, dead units and gradient norms: "variances alone").

1. Against a hand-written per-run loop in the tutorial's style (``nn.Sequential`` +
   ``initialize_weights`` + forward hooks + ``.item()`` per statistic) on the same grid.
2. Against the bound: the time no probe of the default statistics can beat. Drawing every
   run's weights with ``torch.nn.init`` on the CPU generator (which any probe must do: the
   numbers are the same on every device), one run after another, divided by the cores
   (runs draw independently); plus the matmuls every probe of these numbers computes
   (forward, input gradients, weight gradients for their norms, and the effective rank's
   Gram matrix) at this machine's batched-matmul rate on the grid's own shapes; plus each
   hidden layer's activation and its vector-Jacobian product, timed through autograd on
   the same shapes. It prints the fraction of that bound initbench reaches (bound time /
   initbench time).
3. Against the machine's matmul rate at width 1024, depth 20.

With ``--device cuda`` it also times the grid on the CPU (all cores) and prints the GPU's
speedup over it and over the hand-written loop on the GPU.

Usage: ``python benchmarks/perf_ratio.py [--device cpu|cuda] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import tempfile
import time

import torch
from torch import nn

import initbench
from initbench.core.device import prepare_process, resolve_device, synchronize
from initbench.core.rng import run_generator
from initbench.measure.statistics import STATISTICS
from initbench.sweeps.grid import Grid
from initbench.sweeps.planning import matmul_flops, plan_chunks

Bound = tuple[float, float, float, float]  # seconds: drawing, matmuls, of which Grams, activations

REPEAT = 5  # the loop and initbench's sweeps: the best of, interleaved

# the statistics the loop computes: what "variances alone" keeps
LOOP_STATISTICS = (
    "pre_mean",
    "pre_var",
    "post_mean",
    "post_var",
    "dead_frac",
    "grad_w_norm",
    "grad_h_var",
)

GRID = Grid(  # 6 initializers x 4 activations x 4 depths x 3 widths x 3 seeds = 864 runs
    schemes=(
        "xavier_normal[gain=unit]",
        "xavier_normal[gain=matched]",
        "kaiming_normal[mode=fan_in,nonlinearity=matched]",
        "orthogonal[gain=matched]",
        "normal[std=0.01]",
        "torch_default",
    ),
    activations=("relu", "tanh", "sigmoid", "gelu"),
    depths=(5, 10, 20, 50),
    widths=(64, 128, 256),
    seeds=3,
    batch_size=256,
    histograms=False,  # timed with and without (the default: histograms on)
)


def initialize_weights(model: nn.Module, run) -> None:
    """The tutorial's pattern: walk the modules and init each layer by its type."""
    generator = run_generator(run.seed)
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            run.cell.scheme.init(layer.weight.data, run.cell.activation, generator)
            nn.init.zeros_(layer.bias.data)


def probe_one(run, grid: Grid, device: torch.device) -> list[float]:
    """One run: build, init, forward with hooks, backward, ``.item()`` per statistic."""
    cell = run.cell
    model = cell.arch.build(cell.depth, cell.width, cell.activation, grid.cell_inputs(cell))
    initialize_weights(model, run)
    model.to(device)
    linears = [m for m in model if isinstance(m, nn.Linear)][:-1]
    pre: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: pre.append(o)) for layer in linears]
    out = model(torch.randn(grid.batch_size, cell.width, device=device))
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
        probe_one(run, grid, device)


def initbench_sweep(grid: Grid, device: torch.device) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        initbench.sweep(grid, f"{tmp}/s", device=str(device), progress=False)


def draw_weights(grid: Grid) -> None:
    """The bound's drawing: every run's weights with torch.nn.init, one after another on
    the CPU generator (what the loop does, and what any probe of these numbers must do)."""
    for chunk in plan_chunks(grid.runs(), grid, torch.device("cpu")):
        cell = chunk[0].cell
        inputs = grid.cell_inputs(cell)
        net = cell.arch.stack(len(chunk), cell.depth, cell.width, cell.activation, inputs)
        for r, run in enumerate(chunk):
            net.initialize(r, run.cell.scheme, run_generator(run.seed))


def timed(fn, device: torch.device, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def variances_alone():
    """initbench computing only the loop's statistics (the others NaN), no histograms."""
    saved = dict(STATISTICS)
    for name, statistic in saved.items():
        if name not in LOOP_STATISTICS:
            STATISTICS[name] = dataclasses.replace(statistic, compute=lambda layer: layer.nan())
    try:
        yield
    finally:
        STATISTICS.update(saved)


def gram_flops(grid: Grid) -> float:
    """The matmul FLOPs of the effective rank: the batch's Gram matrix at each hidden layer
    it is computed at (``2 x batch x width x min(batch, width)``)."""
    batch = grid.batch_size
    ranked = STATISTICS["eff_rank"].at or (lambda depth: range(depth))
    layers = sum(
        2 * batch * c.width * min(batch, c.width) * len(ranked(c.depth)) for c in grid.cells()
    )
    return layers * grid.seeds


def bound_flops(grid: Grid) -> float:
    """The matmul FLOPs every probe of the default statistics computes: forward, input
    gradients and weight gradients (``Grid.flops_per_run``), and the effective rank's
    Gram matrices."""
    return sum(map(grid.flops_per_run, grid.cells())) * grid.seeds + gram_flops(grid)


def activation_seconds(part: Grid, runs: int, device: torch.device) -> float:
    """The element-wise work every probe does on one width's part of the grid: each hidden
    layer's activation and its vector-Jacobian product, timed through autograd (one call
    each way per chunk and layer) on a chunk of ``runs`` runs' ``(runs, batch, width)``
    tensors."""
    by_activation: dict[str, list] = {}
    for cell in part.cells():
        by_activation.setdefault(cell.activation.id, []).append(cell)
    seconds = 0.0
    for cells in by_activation.values():
        h = torch.randn(runs, part.batch_size, cells[0].width, device=device, requires_grad=True)
        cotangent = torch.randn_like(h)
        fn = cells[0].activation.fn
        layer = timed(lambda fn=fn, h=h, g=cotangent: torch.autograd.grad(fn(h), h, g), device, 5)
        seconds += layer * sum(c.depth for c in cells) * part.seeds / runs
    return seconds


def bound(grid: Grid, device: torch.device) -> Bound:
    """The bound's parts (seconds): drawing, one run after another, over the cores; the
    FLOPs at the batched-matmul rate of the grid's own shapes (its chunks' runs at once),
    and of those the effective rank's Gram matrices; and the activations' element-wise
    kernels on the same shapes."""
    draw = timed(lambda: draw_weights(grid), torch.device("cpu")) / torch.get_num_threads()
    seconds = grams = activations = 0.0
    for width in grid.widths:
        part = Grid.from_dict({"widths": [width]}, grid)
        runs = max(len(chunk) for chunk in plan_chunks(part.runs(), part, device))
        rate = matmul_flops(device, width, 0.5, grid.batch_size, runs)
        seconds += bound_flops(part) / rate
        grams += gram_flops(part) / rate
        activations += activation_seconds(part, runs, device)
    return draw, seconds, grams, activations


def floor(grid: Grid, device: torch.device) -> float:
    """initbench's own floor: its drawing and the stacked forward and backward passes
    alone, no statistics, no rows, no store (seconds)."""
    from initbench.sweeps.engine import initialize_runs

    def run() -> None:
        for chunk in plan_chunks(grid.runs(), grid, device):
            cell = chunk[0].cell
            inputs = grid.cell_inputs(cell)
            net = cell.arch.stack(
                len(chunk), cell.depth, cell.width, cell.activation, inputs, device
            )
            x, cotangent, _ = initialize_runs(net, chunk, grid, inputs, None)
            with torch.enable_grad():
                out = net(x)
                weights = [net.param(n) for n in net.names if n.endswith("weight")]
                torch.autograd.grad(out, weights, grad_outputs=cotangent)

    return timed(run, device)


def measure(grid: Grid, device: torch.device) -> tuple[float, ...]:
    """Seconds of the loop, of initbench with its default statistics, without histograms
    and with variances alone, of the bound's parts (:func:`bound`), and of initbench's own
    floor."""
    # one untimed sweep first: every variant then finds the same caches warm (the cells'
    # mean-field predictions, which the loop does not compute, the subsample's positions)
    initbench_sweep(Grid.from_dict({"histograms": True}, grid), device)

    def variances() -> None:
        with variances_alone():
            initbench_sweep(grid, device)

    variants = (
        lambda: hand_written_loop(grid, device),
        lambda: initbench_sweep(Grid.from_dict({"histograms": True}, grid), device),
        lambda: initbench_sweep(grid, device),
        variances,
    )
    best = [float("inf")] * len(variants)
    for _ in range(REPEAT):  # interleaved: a drift of the machine's speed hits all four
        best = [min(b, timed(fn, device)) for b, fn in zip(best, variants, strict=True)]
    t_loop, t_default, t_bare, t_variances = best
    return (t_loop, t_default, t_bare, t_variances, *bound(grid, device), floor(grid, device))


def report_line(label: str, runs: int, times: tuple[float, ...]) -> None:
    t_loop, t_default, t_bare, t_variances, draw, matmuls, grams, activations, least = times
    limit = draw + matmuls + activations
    pad = " " * len(label)
    print(
        f"{label}: hand-written loop {1000 * t_loop / runs:6.1f} ms/run; bound "
        f"{1000 * limit / runs:5.1f} ms/run (drawing {draw:5.2f} s + matmuls {matmuls:5.2f} s "
        f"+ activations {activations:5.2f} s): no probe beats {t_loop / limit:4.2f}x the loop"
    )
    for name, t in (
        ("initbench (default statistics)", t_default),
        ("initbench (no histograms)", t_bare),
        ("initbench (variances alone)", t_variances),
    ):
        print(
            f"{pad}  {name:<31} {1000 * t / runs:6.1f} ms/run, speedup {t_loop / t:5.2f}x, "
            f"reaches {limit / t:4.0%} of the bound"
        )
    print(
        f"{pad}  the default statistics cost {t_default / t_variances - 1:+.0%} over variances "
        f"alone (the effective rank's Gram matrices at the batched-matmul rate: "
        f"{grams / t_variances:+.0%}), histograms {t_default / t_bare - 1:+.0%} over none; "
        f"the floor (drawing in "
        f"parallel, forward and backward without statistics) {1000 * least / runs:5.1f} ms/run "
        f"= {least / limit:4.0%} of the bound's time"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a small grid, for a smoke test")
    args = parser.parse_args()
    device = resolve_device(args.device)
    prepare_process(deterministic=False)  # what initbench.sweep sets: the loop gets it too
    grid = GRID
    if args.quick:
        grid = Grid.from_dict({"depths": [5], "widths": [64], "activations": ["relu"]}, GRID)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"grid: {len(grid.runs())} runs, widths {grid.widths}, depths {grid.depths}")
    initbench_sweep(Grid.from_dict({"depths": [2], "widths": [16]}, grid), device)  # warm-up
    totals = [0.0] * 9
    for width in grid.widths:
        part = Grid.from_dict({"widths": [width]}, grid)
        times = measure(part, device)
        report_line(f"width {width:>4}", len(part.runs()), times)
        totals = [a + b for a, b in zip(totals, times, strict=True)]
    report_line("whole grid", len(grid.runs()), tuple(totals))
    t_loop, t_ib = totals[0], totals[1]  # the loop and initbench with its defaults
    if device.type == "cuda":
        default = Grid.from_dict({"histograms": True}, grid)
        t_cpu = timed(lambda: initbench_sweep(default, torch.device("cpu")), torch.device("cpu"))
        print(
            f"whole grid on the GPU (default statistics): {t_loop / t_ib:.1f}x the "
            "hand-written loop on the GPU, "
            f"{t_cpu / t_ib:.1f}x initbench on this machine's CPU ({torch.get_num_threads()} "
            "threads)"
        )
    width, depth = (256, 5) if args.quick else (1024, 20)
    big = Grid(
        schemes=("kaiming_normal[mode=fan_in,nonlinearity=matched]",),
        activations=("relu",),
        depths=(depth,),
        widths=(width,),
        seeds=8,
        batch_size=256,
    )
    flops = bound_flops(big)
    peak = matmul_flops(device, width, 1.0, batch=256, runs=8)
    for name, histograms in (("default statistics", True), ("no histograms", False)):
        part = Grid.from_dict({"histograms": histograms}, big)
        achieved = flops / timed(lambda part=part: initbench_sweep(part, device), device, repeat=3)
        print(
            f"width {width}, depth {depth}, batch 256, {name}: initbench "
            f"{achieved / 1e9:.1f} GFLOP/s of the probe's matmuls (and the Gram), batched "
            f"matmul {peak / 1e9:.1f} GFLOP/s, ratio {achieved / peak:.0%}"
        )


if __name__ == "__main__":
    main()
