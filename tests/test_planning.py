"""Chunks and the time estimate: the chunks' work adds up to the grid's, and the estimate
extrapolates timed chunks exactly when their times follow its model."""

import numpy as np
import torch

from initbench import Grid
from initbench.sweeps.planning import Estimate, chunk_work, pilot_size, plan_chunks

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
    estimate.finished("part", chunks[0][0].id, 30.0)
    assert not estimate.pilot_done("part")
    estimate.finished("part", chunks[1][0].id, 1.0)
    assert estimate.pilot_done("part")
    estimate.plan("short", chunks[2:5], GRID)
    for chunk in chunks[2:5]:
        estimate.finished("short", chunk[0].id, 1.0)
    assert not estimate.pilot_done("short")  # it stops at pilot_size's cap instead
