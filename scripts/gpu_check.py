"""GPU check, in one run: CPU and GPU numbers agree, and the GPU's speed as ratios.

Prints:

1. Agreement with ``--rng host`` (the same draws on both devices): the largest relative
   difference of each per-layer statistic, cpu against cuda (target: below 1e-3).
2. Agreement with ``--rng device`` (other draws, the same distributions): per scheme and
   layer, the mean over 24 seeds on cuda against the CPU's host draws, in standard errors
   (target: every gap below 4).
3. Three speed ratios: initbench's FLOP rate at widths 1024 and 2048 over the GPU's own
   float32 batched-matmul rate (TF32 off; target at least 50%); the 864-run grid of
   ``benchmarks/perf_ratio.py`` against the hand-written loop on the same GPU (target at
   least 20x) and against initbench on this machine's CPU (target at least 30x).
4. Training throughput (runs/s) on cuda.

Usage: ``python scripts/gpu_check.py`` from the repository root, on a machine with a GPU.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import initbench
from benchmarks.perf_ratio import (
    GRID,
    hand_written_loop,
    initbench_sweep,
    timed,
)
from initbench import Grid
from initbench.core.device import prepare_process
from initbench.sweeps.planning import matmul_flops

AGREEMENT = Grid(
    schemes=(
        "xavier_normal",
        "kaiming_normal[mode=fan_in,nonlinearity=matched]",
        "orthogonal",
        "normal[std=0.01]",
        "lsuv",
        "torch_default",
    ),
    activations=("tanh", "relu"),
    archs=("mlp", "cnn", "resmlp", "transformer"),
    depths=(5, 20),
    widths=(64,),
    seeds=2,
    batch_size=128,
)
DISTRIBUTION = Grid(
    schemes=("xavier_normal", "orthogonal[gain=matched]", "kaiming_normal"),
    activations=("tanh", "relu"),
    depths=(10,),
    widths=(128,),
    seeds=24,
)
WIDE = Grid(
    schemes=("kaiming_normal[mode=fan_in,nonlinearity=matched]",),
    activations=("relu",),
    depths=(20,),
    widths=(1024, 2048),
    seeds=16,
    batch_size=1024,
    histograms=False,
)
TRAIN = Grid(
    schemes=("xavier_normal", "kaiming_normal[mode=fan_in,nonlinearity=matched]"),
    activations=("relu", "tanh"),
    depths=(10, 30),
    widths=(128,),
    seeds=8,
    dataset="digits",
    train_steps=300,
    lr=0.003,
)
STATS = ("pre_var", "post_var", "grad_w_norm", "grad_h_var")


def sweep(
    grid: Grid, device: str, rng: str, tmp: str
) -> tuple[initbench.sweeps.store.Results, float]:
    start = time.perf_counter()
    path = initbench.sweep(
        grid, f"{tmp}/{len(list(Path(tmp).iterdir()))}", device=device, progress=False, rng=rng
    )
    return initbench.load(path), time.perf_counter() - start


def host_agreement(tmp: str) -> bool:
    cpu, _ = sweep(AGREEMENT, "cpu", "host", tmp)
    gpu, _ = sweep(AGREEMENT, "cuda", "host", tmp)
    a = cpu.layers.sort_values(["run_id", "layer"]).reset_index(drop=True)
    b = gpu.layers.sort_values(["run_id", "layer"]).reset_index(drop=True)
    assert (a["run_id"] == b["run_id"]).all()
    worst = {}
    for column in STATS:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        ok = np.isfinite(x) & np.isfinite(y) & (np.abs(x) > 1e-30)
        worst[column] = float(np.max(np.abs(x[ok] - y[ok]) / np.abs(x[ok])))
    passed = all(v < 1e-3 for v in worst.values())
    print(
        "1. rng host, cpu vs cuda, largest relative difference: "
        + ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
        + (" -> OK (< 1e-3)" if passed else " -> FAIL")
    )
    return passed


def device_agreement(tmp: str) -> bool:
    tables = {}
    for device, rng in (("cpu", "host"), ("cuda", "device")):
        results, _ = sweep(DISTRIBUTION, device, rng, tmp)
        tables[rng] = results.layers.merge(
            results.cells[["run_id", "scheme_id", "activation"]], on="run_id"
        )
    worst = {}
    for column in STATS:
        keys = ["scheme_id", "activation", "layer"]
        host, dev = (t.groupby(keys)[column].agg(["mean", "sem"]) for t in tables.values())
        gap = (host["mean"] - dev["mean"]).abs() / np.hypot(host["sem"], dev["sem"])
        worst[column] = float(gap.max())
    passed = all(v < 4 for v in worst.values())
    print(
        "2. rng device on cuda vs rng host on cpu, 24 seeds, largest gap of a layer's mean: "
        + ", ".join(f"{k} {v:.1f} SE" for k, v in worst.items())
        + (" -> OK (< 4 SE)" if passed else " -> FAIL")
    )
    return passed


def speed() -> list[bool]:
    cuda = torch.device("cuda")
    verdicts = []
    for width in WIDE.widths:
        part = Grid.from_dict({"widths": [width]}, WIDE)
        flops = part.flops_per_run(part.cells()[0]) * len(part.runs())
        seconds = timed(lambda p=part: initbench_sweep(p, cuda), cuda, repeat=3)
        peak = matmul_flops(cuda, width, 1.0, part.batch_size, part.seeds)
        ratio = flops / seconds / peak
        verdicts.append(ratio >= 0.5)
        print(
            f"3a. width {width}, depth 20: initbench {flops / seconds / 1e12:.1f} TFLOP/s, "
            f"batched matmul {peak / 1e12:.1f} TFLOP/s: {ratio:.0%} (target >= 50%)"
        )
    runs = len(GRID.runs())
    t_gpu = timed(lambda: initbench_sweep(GRID, cuda), cuda, repeat=2)
    t_loop = timed(lambda: hand_written_loop(GRID, cuda), cuda)
    t_cpu = timed(lambda: initbench_sweep(GRID, torch.device("cpu")), torch.device("cpu"))
    verdicts += [t_loop / t_gpu >= 20, t_cpu / t_gpu >= 30]
    print(
        f"3b. {runs}-run grid (widths 64-256): initbench on cuda {1000 * t_gpu / runs:.2f} ms/run, "
        f"hand-written loop on cuda {1000 * t_loop / runs:.2f} ms/run: {t_loop / t_gpu:.1f}x "
        "(target >= 20x)"
    )
    print(
        f"3c. the same grid with initbench on this machine's CPU ({torch.get_num_threads()} "
        f"threads) {1000 * t_cpu / runs:.2f} ms/run: cuda is {t_cpu / t_gpu:.1f}x faster "
        "(target >= 30x)"
    )
    return verdicts


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA GPU"
    prepare_process(deterministic=False)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        initbench_sweep(Grid.from_dict({"depths": [2], "widths": [16]}, GRID), torch.device("cuda"))
        passed = [host_agreement(tmp), device_agreement(tmp), *speed()]
        _, seconds = sweep(TRAIN, "cuda", "device", tmp)
        print(f"4. training: {len(TRAIN.runs()) / seconds:.1f} runs/s of 300 steps on cuda")
    print(f"{sum(passed)} of {len(passed)} targets met")


if __name__ == "__main__":
    main()
