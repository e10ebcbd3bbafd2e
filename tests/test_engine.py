"""The engine's drawing: batched orthogonal QRs, parallel drawing and both generators."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import initbench
from initbench import Grid
from initbench.core.errors import UsageError
from initbench.core.fill import Deferred, finish_orthogonal

SHAPES = [(64, 64), (32, 128), (128, 32), (16, 4 * 3 * 3)]


def deferred_fills(seed: int, gain: float) -> tuple[list[Deferred], list[torch.Tensor]]:
    """Deferred fills and, for each, what ``torch.nn.init.orthogonal_`` draws from the
    same generator state."""
    items, expected = [], []
    for i, shape in enumerate(SHAPES * 3):
        reference = torch.empty(shape)
        torch.nn.init.orthogonal_(reference, gain, torch.Generator().manual_seed(seed + i))
        part = torch.empty(shape)
        normal = torch.empty(shape).normal_(0, 1, generator=torch.Generator().manual_seed(seed + i))
        items.append(Deferred(part, normal, gain))
        expected.append(reference)
    return items, expected


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_batched_orthogonal_equals_orthogonal_(workers):
    items, expected = deferred_fills(seed=11, gain=1.7)
    if workers == 1:
        finish_orthogonal(items)
    else:
        with ThreadPoolExecutor(workers) as pool:
            finish_orthogonal(items, pool, workers)
    for item, reference in zip(items, expected, strict=True):
        torch.testing.assert_close(item.part, reference, atol=2e-6, rtol=1e-5)
        rows, cols = item.part.shape
        gram = item.part @ item.part.T if rows <= cols else item.part.T @ item.part
        torch.testing.assert_close(gram, 1.7**2 * torch.eye(min(rows, cols)), atol=1e-4, rtol=0)


GRID = Grid(
    schemes=("orthogonal[gain=matched]", "kaiming_normal[mode=fan_in,nonlinearity=matched]"),
    activations=("tanh",),
    archs=("mlp", "cnn"),
    depths=(6,),
    widths=(32,),
    seeds=3,
    batch_size=64,
)


def layers(path) -> np.ndarray:
    table = initbench.load(path).layers.sort_values(["run_id", "layer"])
    return table[["pre_var", "post_var", "grad_w_norm", "grad_h_var"]].to_numpy()


def test_parallel_drawing_gives_the_numbers_of_one_thread(tmp_path):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = layers(initbench.sweep(GRID, tmp_path / "one", device="cpu", progress=False))
        torch.set_num_threads(3)
        parallel = layers(initbench.sweep(GRID, tmp_path / "three", device="cpu", progress=False))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(parallel, alone, rtol=1e-5)


def test_each_rng_is_recorded_and_resume_keeps_it(tmp_path):
    grid = Grid.from_dict({"archs": ["mlp"], "seeds": 1}, GRID)
    host = initbench.sweep(grid, tmp_path / "host", device="cpu", progress=False)
    device = initbench.sweep(grid, tmp_path / "device", device="cpu", progress=False, rng="device")
    assert json.loads((host / "meta.json").read_text())["rng"] == "host"  # auto on a CPU
    assert json.loads((device / "meta.json").read_text())["rng"] == "device"
    assert set(initbench.load(device).cells["rng"]) == {"device"}
    assert not np.allclose(layers(host), layers(device))  # another stream: other numbers
    with pytest.raises(UsageError, match="--rng device"):
        initbench.sweep(grid, device, device="cpu", progress=False, rng="host")


def test_device_rng_draws_the_same_distributions_as_the_host_rng(tmp_path):
    """Per layer, the mean over 40 seeds of each statistic agrees between the two
    generators within 4 standard errors (other numbers, same distributions)."""
    grid = Grid(
        schemes=("xavier_normal", "orthogonal[gain=matched]"),
        activations=("tanh",),
        depths=(8,),
        widths=(48,),
        seeds=40,
        batch_size=64,
    )
    tables = {}
    for rng in ("host", "device"):
        path = initbench.sweep(grid, tmp_path / rng, device="cpu", progress=False, rng=rng)
        tables[rng] = initbench.load(path).layers.merge(
            initbench.load(path).cells[["run_id", "scheme"]], on="run_id"
        )
    for column in ("post_var", "grad_h_var", "grad_w_norm"):
        stats = {
            rng: table.groupby(["scheme", "layer"])[column].agg(["mean", "sem"])
            for rng, table in tables.items()
        }
        gap = (stats["host"]["mean"] - stats["device"]["mean"]).abs()
        error = np.hypot(stats["host"]["sem"], stats["device"]["sem"])
        assert (gap < 4 * error).all(), (column, (gap / error).max())
        assert (error < 0.2 * stats["host"]["mean"].abs()).all()  # the test has power


def test_every_scheme_sees_the_same_probe_batch_and_cotangent_at_a_seed():
    """Paired comparisons: the batch and cotangent come from their own stream, so schemes
    that use up different amounts of the weights' stream still share them."""
    from initbench.sweeps.engine import initialize_runs

    grid = Grid(
        schemes=("uniform[a=-0.05,b=0.05]", "orthogonal", "sparse", "xavier_normal"),
        activations=("tanh",),
        depths=(3,),
        widths=(16,),
        seeds=2,
        batch_size=8,
    )
    runs = grid.runs()
    cell = runs[0].cell
    inputs = grid.cell_inputs(cell)
    for rng in ("host", "device"):
        net = cell.arch.stack(len(runs), cell.depth, cell.width, cell.activation, inputs)
        x, cotangent, _ = initialize_runs(net, runs, grid, inputs, None, rng)
        for r, run in enumerate(runs):
            first = next(i for i, other in enumerate(runs) if other.seed == run.seed)
            assert torch.equal(x[r], x[first]) and torch.equal(cotangent[r], cotangent[first])
        assert not torch.equal(x[0], x[1])  # seeds 0 and 1 differ
