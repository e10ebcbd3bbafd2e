"""Chunks and the time estimate: the chunks' work adds up to the grid's, and the estimate
extrapolates timed chunks exactly when their times follow its model."""

import numpy as np
import pytest
import torch

from initbench import Grid
from initbench.sweeps.planning import (
    Estimate,
    chunk_work,
    nonnegative_least_squares,
    pilot_size,
    plan_chunks,
)

CPU = torch.device("cpu")
GRID = Grid(
    schemes=("xavier_normal", "orthogonal", "lsuv"),
    activations=("tanh", "relu"),
    depths=(2, 5, 10),
    widths=(16, 32),
    seeds=3,
    train_steps=4,
    dataset="digits",
)


def test_chunks_hold_every_run_once_in_a_fixed_shuffled_order():
    chunks = plan_chunks(GRID.runs(), GRID, CPU)
    ids = [run.id for chunk in chunks for run in chunk]
    assert sorted(ids) == sorted(run.id for run in GRID.runs())
    assert all(len({run.cell.shape_key for run in chunk}) == 1 for chunk in chunks)
    assert [c[0].id for c in chunks] == [c[0].id for c in plan_chunks(GRID.runs(), GRID, CPU)]
    shapes = [chunk[0].cell.shape_key for chunk in chunks]
    in_grid_order = list(dict.fromkeys(run.cell.shape_key for run in GRID.runs()))
    assert sorted(shapes) == sorted(in_grid_order) and shapes != in_grid_order


def test_the_chunks_work_adds_up_to_the_grids_flops():
    chunks = plan_chunks(GRID.runs(), GRID, CPU)
    flops = sum(chunk_work(chunk, GRID)[0] for chunk in chunks)
    assert abs(flops - GRID.total_flops()) <= 1e-9 * GRID.total_flops()
    chunk = chunks[0]
    _, passes, run_layers = chunk_work(chunk, GRID)
    assert passes == chunk[0].cell.depth * (1 + GRID.train_steps)
    assert run_layers == chunk[0].cell.depth * len(chunk)


@pytest.mark.parametrize("seed", range(20))
def test_nonnegative_least_squares_equals_scipys(seed):
    from scipy.optimize import nnls

    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, (8, 3))
    b = a @ rng.normal(0, 1, 3) + rng.normal(0, 0.1, 8)  # some true weights negative
    np.testing.assert_allclose(nonnegative_least_squares(a, b), nnls(a, b)[0], atol=1e-9)


def test_the_estimate_is_exact_when_chunk_times_follow_its_model():
    whole = plan_chunks(GRID.runs(), GRID, CPU)  # split unevenly: runs and passes not in step
    chunks = [piece for c in whole for piece in (c[:4], c[4:])]
    cost = np.array([2e-11, 4e-4, 1e-4])  # the machine: 50 GFLOP/s, 0.4 ms a pass, ...

    def seconds(chunk):
        return float(cost @ chunk_work(chunk, GRID))

    estimate = Estimate(CPU)
    estimate.plan("part", chunks, GRID)
    assert estimate.seconds_left() is None
    first = 8  # a warm-up (left out once others are timed), then enough to fit the costs
    estimate.finished("part", chunks[0][0].id, 10 * seconds(chunks[0]))
    for chunk in chunks[1:first]:
        estimate.finished("part", chunk[-1].id, seconds(chunk))
    assert estimate.runs_timed == sum(map(len, chunks[:first]))
    np.testing.assert_allclose(estimate.weights(), cost, rtol=1e-6)
    truth = sum(map(seconds, chunks[first:]))
    assert abs(estimate.seconds_left() - truth) < 1e-6 * truth


def test_each_part_has_its_own_rate_and_an_untimed_part_takes_the_pooled_one():
    chunks = plan_chunks(GRID.runs(), GRID, CPU)
    estimate = Estimate(CPU)
    work = [float(estimate.prior @ chunk_work(c, GRID)) for c in chunks]  # the prior weights
    estimate.plan("slow", chunks[:2], GRID)
    estimate.plan("fast", chunks[2:4], GRID)
    estimate.plan("new", chunks[4:6], GRID)
    estimate.plan("warm-up", chunks[6:7], GRID)
    estimate.finished("warm-up", chunks[6][0].id, 99.0)
    alone = 99.0 / work[6] * sum(work[:6])  # alone, the warm-up chunk counts
    assert abs(estimate.seconds_left() - alone) < 1e-9 * alone
    estimate.finished("slow", chunks[0][0].id, 3e-10 * work[0])
    estimate.finished("fast", chunks[2][0].id, 1e-10 * work[2])
    pooled = (3e-10 * work[0] + 1e-10 * work[2]) / (work[0] + work[2])
    truth = 3e-10 * work[1] + 1e-10 * work[3] + pooled * (work[4] + work[5])
    assert abs(estimate.seconds_left() - truth) < 1e-9 * truth


def test_the_pilot_times_two_chunks_and_ten_seconds_or_a_tenth_of_the_chunks():
    assert [pilot_size(n) for n in (1, 3, 10, 100, 1000)] == [1, 2, 2, 10, 100]
    chunks = plan_chunks(GRID.runs(), GRID, CPU)
    estimate = Estimate(CPU)
    estimate.plan("part", chunks, GRID)
    estimate.finished("part", chunks[0][0].id, 30.0)  # the warm-up: it does not count
    estimate.finished("part", chunks[1][0].id, 1.0)
    assert not estimate.pilot_done("part")
    estimate.finished("part", chunks[2][0].id, 9.5)
    assert estimate.pilot_done("part")
    estimate.plan("short", chunks[3:6], GRID)
    for chunk in chunks[3:6]:
        estimate.finished("short", chunk[0].id, 1.0)
    assert not estimate.pilot_done("short")  # it stops at pilot_size's cap instead


SMALL = Grid(
    schemes=("xavier_normal", "orthogonal", "normal[std=0.01]"),
    activations=("tanh", "relu"),
    depths=(2, 3, 4),
    widths=(8,),
    seeds=2,
    batch_size=16,
)


def counting(monkeypatch, fail_depth=None):
    """Every run id the local executor computes, in order; runs of ``fail_depth`` fail."""
    from initbench.sweeps.engine import failed_records
    from initbench.sweeps.executors import local

    computed, real = [], local.compute_chunk

    def compute(chunk, grid, device, *args, **kwargs):
        computed.extend(run.id for run in chunk)
        if chunk[0].cell.depth == fail_depth:
            return failed_records(chunk, device, "RuntimeError: broken on purpose")
        return real(chunk, grid, device, *args, **kwargs)

    monkeypatch.setattr(local, "compute_chunk", compute)
    return computed


def test_the_pilot_and_the_rest_compute_every_run_once(tmp_path, monkeypatch, capsys):
    import json

    import initbench

    computed = counting(monkeypatch, fail_depth=3)
    initbench.sweep(SMALL, tmp_path / "s", device="cpu")
    out = capsys.readouterr().out
    assert sorted(computed) == sorted(run.id for run in SMALL.runs())  # failed ones too: once
    assert "timing the first ones" in out and "left, as the first" in out
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert "finished" in meta and "interrupted" not in meta and meta["seconds"] > 0
    assert not (tmp_path / "s" / "shards").exists()


def test_a_grid_too_long_for_its_first_chunks_is_refused_and_they_are_kept(
    tmp_path, monkeypatch, capsys
):
    import initbench
    from initbench.core.errors import UsageError
    from initbench.sweeps import run

    monkeypatch.setattr(
        run, "estimate_seconds", lambda *args, **kwargs: 0.0
    )  # the matmul rate agrees
    monkeypatch.setattr(run, "LARGE_GRID_SECONDS", 1e-6)
    computed = counting(monkeypatch)
    with pytest.raises(UsageError, match=r"as its first \d+ took; pass --yes"):
        initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False)
    piloted = list(computed)
    assert 0 < len(piloted) < len(SMALL.runs())
    assert len(initbench.load(tmp_path / "s").cells) == len(piloted)
    initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False, yes=True)
    assert sorted(computed) == sorted(run.id for run in SMALL.runs())  # the pilot's, kept


def test_a_grid_that_no_device_takes_hours_over_is_not_timed_on_the_matmuls(tmp_path, monkeypatch):
    """The large-grid guard measures the matmul rate only where even the slowest rate
    would pass the limit (a fifth of a second a sweep saves)."""
    import initbench
    from initbench.sweeps import planning

    def refuse(*args, **kwargs):
        raise AssertionError("the matmul rate was measured")

    monkeypatch.setattr(planning, "matmul_flops", refuse)
    initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False)
    assert planning.estimate_seconds(SMALL, None, measure=False) < 1.0
