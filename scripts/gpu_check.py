"""GPU check: a small sweep on cuda agrees with the CPU run, and runs/second on each.

Usage: ``python scripts/gpu_check.py`` on a machine with a CUDA GPU.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

import initbench
from initbench import Grid

PROBE = Grid(
    schemes=(
        "xavier_normal",
        "kaiming_normal[mode=fan_in,nonlinearity=matched]",
        "orthogonal",
        "normal[std=0.01]",
        "lsuv",
        "torch_default",
    ),
    activations=("tanh", "relu"),
    archs=("mlp", "cnn"),
    depths=(5, 20),
    widths=(64,),
    seeds=2,
    batch_size=128,
)
THROUGHPUT = Grid(
    schemes=("xavier*", "kaiming_normal", "orthogonal"),
    activations=("tanh", "relu"),
    depths=(10, 50),
    widths=(256, 1024),
    seeds=4,
)
TRAIN = Grid(
    schemes=("xavier_normal", "kaiming_normal[mode=fan_in,nonlinearity=matched]"),
    activations=("relu",),
    depths=(30,),
    widths=(128,),
    seeds=3,
    dataset="digits",
    train_steps=300,
    lr=0.003,
)


def run(grid: Grid, device: str, tmp: str, name: str) -> tuple[initbench.store.Results, float]:
    start = time.perf_counter()
    path = initbench.sweep(grid, f"{tmp}/{name}-{device}", device=device, progress=False)
    return initbench.load(path), time.perf_counter() - start


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA GPU"
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        cpu, _ = run(PROBE, "cpu", tmp, "probe")
        gpu, _ = run(PROBE, "cuda", tmp, "probe")
        a = cpu.layers.sort_values(["run_id", "layer"]).reset_index(drop=True)
        b = gpu.layers.sort_values(["run_id", "layer"]).reset_index(drop=True)
        assert (a["run_id"] == b["run_id"]).all()
        worst = {}
        for column in ("pre_var", "post_var", "grad_w_norm", "grad_h_var"):
            x, y = a[column].to_numpy(), b[column].to_numpy()
            ok = np.isfinite(x) & np.isfinite(y) & (np.abs(x) > 1e-30)
            worst[column] = float(np.max(np.abs(x[ok] - y[ok]) / np.abs(x[ok])))
        print("probe agreement, max relative difference cpu vs cuda:", worst)
        assert all(v < 1e-3 for v in worst.values()), "GPU probe disagrees with CPU"
        print("probe agreement: OK (rtol 1e-3)")
        for grid, name in ((THROUGHPUT, "throughput"), (TRAIN, "train")):
            n = len(grid.runs())
            _, t_cpu = run(grid, "cpu", tmp, name)
            results, t_gpu = run(grid, "cuda", tmp, name)
            print(
                f"{name}: {n} runs, cpu {n / t_cpu:.1f} runs/s, cuda {n / t_gpu:.1f} runs/s, "
                f"speedup {t_cpu / t_gpu:.1f}x"
            )
        acc = results.cells.groupby("scheme")["final_test_acc"].mean()
        print("depth-30 relu on digits, mean final test accuracy (cuda):", acc.round(3).to_dict())


if __name__ == "__main__":
    main()
