"""Computing a chunk: runs of one shape, from their weights to their table rows.

:func:`compute_chunk` initializes the runs' stacked network, probes it, and (if the grid
trains) trains it; an executor decides where chunks run.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from initbench.archs import Inputs, Stacked
from initbench.core import theory
from initbench.core.data import Dataset
from initbench.core.device import free_memory, is_out_of_memory
from initbench.core.fill import finish_orthogonal
from initbench.core.rng import Stream, device_generator, run_generator
from initbench.core.roles import SETTING_DEFAULTS, Site
from initbench.initialize import fitter
from initbench.measure import histograms, jacobian
from initbench.measure.probe import ProbeResult, probe
from initbench.measure.statistics import STATISTICS
from initbench.sweeps.grid import Cell, Grid, Run
from initbench.sweeps.schema import (
    CURVE_COLUMNS,
    HIST_COLUMNS,
    SPECTRUM_COLUMNS,
    THEORY_COLUMNS,
    cell_rows,
)
from initbench.sweeps.store import RECORD_TABLES, Records

# the run's generator streams: weights (and biases), training's data order, a data-dependent
# scheme's fitting batch, the probe batch and cotangent (the same for every scheme: paired)


class Progress(Protocol):
    """What a chunk reports while it computes (a tqdm bar fits)."""

    def update(self, n: float) -> Any: ...

    def set_postfix_str(self, s: str) -> Any: ...


def compute_chunk(
    runs: Sequence[Run],
    grid: Grid,
    device: torch.device,
    dataset: Dataset | None,
    progress: Progress | None = None,
    rng: str = "host",
) -> Records:
    """Computes runs of one shape: init, probe, and (if the grid trains) training, drawing
    with the ``host`` or the ``device`` generators (:func:`initialize_runs`).

    Runs the scheme cannot take are ``skipped``; an out-of-memory error marks the chunk
    ``oom`` and any other error ``failed``, each with a reason, so the sweep goes on.
    """
    sites = grid.sites(runs[0].cell)
    todo, skipped, reasons = [], [], []
    for run in runs:
        reason = run.cell.scheme.not_applicable_to(sites)
        (skipped if reason else todo).append(run)
        if reason:
            reasons.append(f"not applicable: {reason}")
    records = Records(cell_rows(skipped, str(device), status="skipped", reason=reasons))
    if progress is not None and skipped:
        progress.update(len(skipped))
    if todo:
        try:
            records = records + _compute(todo, grid, device, dataset, sites, progress, rng)
        except Exception as error:
            oom = is_out_of_memory(error)
            if oom:
                free_memory(device)
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            records = records + failed_records(todo, device, reason, "oom" if oom else "failed")
    return records


def failed_records(
    runs: Sequence[Run], device: torch.device, reason: str, status: str = "failed"
) -> Records:
    """``cells`` rows marking ``runs`` failed (or oom) with a one-line reason; retried later."""
    return Records(cell_rows(runs, str(device), status=status, reason=reason[:500]))


def initialize_runs(
    net: Stacked,
    runs: Sequence[Run],
    grid: Grid,
    inputs: Inputs,
    dataset: Dataset | None,
    rng: str = "host",
) -> tuple[torch.Tensor, torch.Tensor, dict[int, str]]:
    """Draws each run's weights, biases, probe batch and cotangent, then fits
    data-dependent schemes on a batch of their own.

    Each run has its own generators, seeded from its seed: one draws the weights (model
    order), then the biases (when ``bias_var > 0``); another the probe batch (unless it is a
    dataset's), then the cotangent, so every scheme sees the same batch and cotangent at a
    seed (comparisons between schemes are paired; synthetic token ids have no pairs).
    With ``rng="host"`` they are CPU
    generators (the numbers are the same on every device); with ``"device"`` generators on
    the compute device (the same distributions, other numbers, no host copy).
    Runs draw in parallel threads when they draw on the CPU, and orthogonal weights take
    their QRs in one batch per shape. Pairs of probe samples (2i, 2i+1) get the grid's
    ``input_corr``. A data-dependent scheme fits on a batch drawn from its own stream and
    is measured on the probe batch like any other.

    Returns:
        The stacked probe batch ``(R, B, *sample)`` and cotangent ``(R, B, *outputs)``, and
        the runs whose scheme's fitter cannot differentiate the network (MetaInit's third
        derivatives through a batch norm), with the reason.
    """
    device = net.device
    draw_on = torch.device("cpu") if rng == "host" else device
    batch = grid.batch_size
    arch = runs[0].cell.arch
    out_sample = arch.output_sample(inputs, batch)
    host = None
    if draw_on != device:  # draw on the CPU, then copy: the same numbers everywhere
        host = {name: torch.empty(net.param(name).shape) for name in net.names}
    xs: list[torch.Tensor | None] = [None] * len(runs)
    cotangents: list[torch.Tensor | None] = [None] * len(runs)
    deferred: list[list] = [[] for _ in runs]

    def draw(r: int) -> None:
        run = runs[r]
        if rng == "host":
            weights, data = (run_generator(run.seed, s) for s in (Stream.WEIGHTS, Stream.INPUTS))
        else:
            weights, data = (
                device_generator(run.seed, device, s) for s in (Stream.WEIGHTS, Stream.INPUTS)
            )
        net.initialize(r, run.cell.scheme, weights, run.cell.bias_var, host, deferred[r])
        if dataset is None:
            x = arch.draw_inputs(batch, inputs, data, draw_on)
            xs[r] = correlate_pairs(x, grid.input_corr) if x.is_floating_point() else x
        cotangents[r] = torch.randn(batch, *out_sample, generator=data, device=draw_on)

    threads = torch.get_num_threads()
    shared = any(run.cell.scheme.global_rng for run in runs)  # sparse_ uses torch's own RNG
    if draw_on.type == "cpu" and threads > 1 and len(runs) > 1 and not shared:
        # one run per core: each thread's kernels single-threaded, or they fight for cores
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(draw, range(len(runs))))
                finish_orthogonal([d for items in deferred for d in items], pool, threads)
        finally:
            torch.set_num_threads(threads)
    else:
        for r in range(len(runs)):
            draw(r)
        finish_orthogonal([item for items in deferred for item in items])
    if host is not None:
        with torch.no_grad():
            for name, buffer in host.items():
                net.param(name).copy_(buffer)
    if dataset is None:
        x = torch.stack(xs).to(device)
    else:
        data = runs[0].cell.arch.data_sample(dataset.x_train[:batch]).to(device)
        x = data.unsqueeze(0).expand(len(runs), *data.shape)
    fitted: dict[str, list[int]] = {}  # each data-dependent scheme's runs
    for r, run in enumerate(runs):
        if run.cell.scheme.data_dependent:
            fitted.setdefault(run.cell.scheme.id, []).append(r)
    unfitted: dict[int, str] = {}
    if fitted:
        fit_x, fit_y = (t.to(device) for t in fit_batch(runs, grid, inputs, dataset))
        for fit in fitted.values():
            scheme = runs[fit[0]].cell.scheme
            try:
                fitter(scheme).fit_stack(net, fit_x, fit_y, fit, scheme)
            except RuntimeError as error:  # an op lacks the derivatives the fitter takes
                if is_out_of_memory(error):
                    raise
                reason = f"{scheme.id} cannot fit this network: {error}".splitlines()[0]
                unfitted.update(dict.fromkeys(fit, reason))
    return x, torch.stack(cotangents).to(device), unfitted


def correlate_pairs(x: torch.Tensor, corr: float) -> torch.Tensor:
    """Gives each pair of samples (2i, 2i+1) the correlation ``corr``, in place:
    ``x_{2i+1} = c x_{2i} + sqrt(1 - c^2) x_{2i+1}`` keeps every sample standard normal."""
    pairs = x.shape[0] // 2
    if pairs:
        x[1 : 2 * pairs : 2].mul_(math.sqrt(1 - corr * corr)).add_(x[0 : 2 * pairs : 2], alpha=corr)
    return x


def fit_batch(
    runs: Sequence[Run], grid: Grid, inputs: Inputs, dataset: Dataset | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each run's own batch for data-dependent schemes, ``(R, B, *sample)``, and its
    targets ``(R, B, ...)``: synthetic inputs (standard normal, or token ids) and random
    classes, or training samples after the probe batch and their labels, drawn from the
    run's fit stream."""
    xs, ys = [], []
    for run in runs:
        generator = run_generator(run.seed, Stream.FIT)
        arch = run.cell.arch
        if dataset is None:
            cpu = torch.device("cpu")
            xs.append(arch.draw_inputs(grid.batch_size, inputs, generator, cpu))
            targets = (grid.batch_size, *arch.output_sample(inputs, grid.batch_size)[:-1])
            ys.append(torch.randint(inputs.classes, targets, generator=generator))
            continue
        start = grid.batch_size if len(dataset.x_train) > 2 * grid.batch_size else 0
        index = start + torch.randperm(len(dataset.x_train) - start, generator=generator)
        index = index[: grid.batch_size]
        xs.append(arch.data_sample(dataset.x_train[index]))
        ys.append(dataset.y_train[index])
    return torch.stack(xs), torch.stack(ys)


def _compute(
    runs: Sequence[Run],
    grid: Grid,
    device: torch.device,
    dataset: Dataset | None,
    sites: list[Site],
    progress: Progress | None,
    rng: str = "host",
) -> Records:
    """One chunk of runs of one shape: initialize, probe, predict, (Jacobian), train."""
    cell0 = runs[0].cell
    inputs = grid.cell_inputs(cell0)
    label = f"{cell0.activation.id} {cell0.arch.id} d{cell0.depth} w{cell0.width}"
    if progress is not None:
        progress.set_postfix_str(f"{label}: probe", refresh=False)
    start = time.perf_counter()
    net = cell0.arch.stack(len(runs), cell0.depth, cell0.width, cell0.activation, inputs, device)
    x, cotangent, unfitted = initialize_runs(net, runs, grid, inputs, dataset, rng)
    result = probe(net, x, cotangent, hists=grid.histograms)
    probe_seconds = (time.perf_counter() - start) / len(runs)
    share = probe_share(grid, cell0)
    if progress is not None:
        progress.update(len(runs) * share)
    ids = [r.id for r in runs]
    predicted = _predictions(runs, grid, inputs, dataset, sites, result)
    columns = _probe_columns(runs, grid, inputs, result, predicted, rng) | {
        "probe_seconds": probe_seconds
    }
    spectra = pd.DataFrame(columns=SPECTRUM_COLUMNS)
    if grid.jacobian:
        values = jacobian.singular_values(net, x)
        columns.update(jacobian.summaries(values))
        spectra = _spectrum_rows(ids, values)
    curves = pd.DataFrame(columns=CURVE_COLUMNS)
    if grid.train_steps and dataset is not None:
        if progress is not None:
            progress.set_postfix_str(f"{label}: train", refresh=False)
        curves = _train(net, runs, dataset, grid, progress, share, columns, result.finite)
    records = Records(
        cell_rows(runs, str(device), **columns),
        _layer_rows(ids, cell0.depth, result.stats, predicted, net.layer_labels()),
        curves,
        _hist_rows(ids, result, cell0)
        if result.hists is not None
        else pd.DataFrame(columns=HIST_COLUMNS),
        spectra,
    )
    return _skip(records, runs, unfitted, device) if unfitted else records


def _skip(
    records: Records, runs: Sequence[Run], reasons: dict[int, str], device: torch.device
) -> Records:
    """The records with the runs of ``reasons`` (by index) ``skipped``: their rows dropped,
    their ``cells`` rows saying why."""
    dropped = {runs[r].id for r in reasons}
    kept = Records(
        *(
            frame[~frame["run_id"].isin(dropped)] if "run_id" in frame else frame
            for frame in (getattr(records, t) for t in RECORD_TABLES)
        )
    )
    skipped = [runs[r] for r in reasons]
    why = [f"not applicable: {reason}" for reason in reasons.values()]
    return kept + Records(cell_rows(skipped, str(device), status="skipped", reason=why))


Prediction = tuple[dict[str, list[float]], dict[str, float]]  # per layer, depth scales


def _predictions(
    runs: Sequence[Run],
    grid: Grid,
    inputs: Inputs,
    dataset: Dataset | None,
    sites: list[Site],
    result: ProbeResult,
) -> list[Prediction]:
    """Each run's mean-field prediction, for the input it saw (its second moment and its
    pairs' correlation)."""
    q0 = 1.0 if dataset is None else float(result.input_second_moment[0])
    c0 = grid.input_corr if dataset is None else float(result.input_corr[0])
    return [_theory(r.cell, tuple(sites), inputs, round(q0, 6), round(c0, 6)) for r in runs]


def _probe_columns(
    runs: Sequence[Run],
    grid: Grid,
    inputs: Inputs,
    result: ProbeResult,
    predicted: list[Prediction],
    rng: str,
) -> dict[str, Any]:
    """The ``cells`` columns the probe gives: status, end-to-end ratios, depth scales."""
    ok, stats, cell0 = result.finite, result.stats, runs[0].cell
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        var_ratio = stats["pre_var"][:, -1] / stats["pre_var"][:, 0]
        grad_ratio = stats["grad_w_norm"][:, 0] / stats["grad_w_norm"][:, -1]
    scales = [p[1] for p in predicted]
    # the measured correlation's sampling noise: B/2 pairs of N-unit cosines
    noise = 3 / math.sqrt(cell0.width * cell0.arch.positions(inputs) * max(grid.batch_size // 2, 1))
    return {
        "status": np.where(ok, "ok", "diverged"),
        "reason": np.where(ok, None, "non-finite activations or gradients at initialization"),
        "rng": rng,
        "var_ratio": var_ratio,
        "grad_ratio": grad_ratio,
        "input_corr": result.input_corr,
        "chi1": [s["chi1"] for s in scales],
        "xi_q": [s["xi_q"] for s in scales],
        "xi_c": [s["xi_c"] for s in scales],
        "xi_c_fit": [
            theory.fit_correlation_scale(stats["corr"][r], s["c_star"], noise)
            for r, s in enumerate(scales)
        ],
    }


def _layer_rows(
    ids: Sequence[str],
    depth: int,
    stats: dict[str, np.ndarray],
    predicted: list[Prediction],
    labels: list[tuple[str, str, int]] | None,
) -> pd.DataFrame:
    """The ``layers`` rows: every statistic of every run and layer, and its prediction;
    a model's layers are named by their module, its class and the call (``labels``)."""
    module, kind, call = zip(*labels, strict=True) if labels else ([None] * depth,) * 3
    return pd.DataFrame(
        {
            "run_id": np.repeat(ids, depth),
            "layer": np.tile(np.arange(1, depth + 1), len(ids)),
            "module": pd.array(np.tile(np.asarray(module, dtype=object), len(ids)), "string"),
            "kind": pd.array(np.tile(np.asarray(kind, dtype=object), len(ids)), "string"),
            "call": pd.array(np.tile(np.asarray(call, dtype=object), len(ids)), "Int64"),
            **{name: stats[name].reshape(-1) for name in STATISTICS},
            **{
                name: np.concatenate([p[0].get(name, [math.nan] * depth) for p in predicted])
                for name in THEORY_COLUMNS
            },
        }
    )


def _train(
    net: Stacked,
    runs: Sequence[Run],
    dataset: Dataset,
    grid: Grid,
    progress: Progress | None,
    share: float,
    columns: dict[str, Any],
    ok: np.ndarray,
) -> pd.DataFrame:
    """Trains the chunk's runs; adds their summaries (and divergence) to ``columns`` and
    returns their curves."""
    from initbench.sweeps.train import best_of, train_stack

    rates = grid.learning_rates
    step_share = len(runs) * (1 - share) / (grid.train_steps * len(rates))
    on_step = (lambda: progress.update(step_share)) if progress is not None else None
    state = [*net.parameters(), *net.buffers()]  # a model's BatchNorm statistics too
    initial = [t.detach().clone() for t in state]
    results = []
    for lr in rates:
        with torch.no_grad():  # every learning rate starts from the same initial state
            for t, t0 in zip(state, initial, strict=True):
                t.copy_(t0)
        results.append(train_stack(net, runs, dataset, grid, lr, on_step=on_step))
    trained, best = best_of(results)
    columns["train_lr"] = np.asarray(rates)[best]
    summary = trained.summaries(grid.target_accuracy, grid.train_steps * len(rates))
    columns.update(summary)
    diverged = ~np.isnan(summary["diverged_step"])
    columns["status"] = np.where(diverged, "diverged", columns["status"])
    columns["reason"] = np.where(
        diverged & ok,
        [f"non-finite training loss at step {s:.0f}" for s in summary["diverged_step"]],
        columns["reason"],
    )
    ids, n_steps = [r.id for r in runs], len(trained.steps)
    return pd.DataFrame(
        {
            "run_id": np.repeat(ids, n_steps),
            "step": np.tile(trained.steps, len(runs)),
            "train_loss": trained.train_loss.reshape(-1),
            "train_acc": trained.train_acc.reshape(-1),
            "test_loss": trained.test_loss.reshape(-1),
            "test_acc": trained.test_acc.reshape(-1),
        }
    )


def probe_share(grid: Grid, cell: Cell) -> float:
    """The probe's share of a run's work (the rest is training), for progress bars."""
    train_examples = grid.train_batch_size * grid.train_steps if grid.dataset else 0
    return grid.batch_size / (grid.batch_size + train_examples)


@functools.lru_cache(maxsize=4096)
def _theory(
    cell: Cell,
    sites: tuple[Site, ...],
    inputs: Inputs,
    second_moment: float,
    input_corr: float,
) -> Prediction:
    """A cell's per-layer predictions and depth scales (cached: seeds share them); none
    where its scheme moves a residual branch's scalar (a gate, skip or shift) from its
    default, which the mean-field maps do not follow."""
    act = cell.activation
    weights = [(s.shape, cell.scheme.variance(s, act)) for s in sites]
    parts = cell.arch.parts(cell.depth, cell.width, act, inputs)
    moved = any(
        (value := cell.scheme.setting(site)) is not None and value[0] != SETTING_DEFAULTS[site.role]
        for site in parts.setting_sites
    )
    if moved:
        weights = [(shape, math.nan) for shape, _ in weights]
    per_layer = cell.arch.theory(act, weights, cell.bias_var, inputs, second_moment, input_corr)
    q1 = per_layer.get("theory_pre_var", [1.0])[0]
    scales = cell.arch.depth_scales(act, weights, cell.bias_var, q1 if math.isfinite(q1) else 1.0)
    return per_layer, scales


def _spectrum_rows(run_ids: Sequence[str], values: torch.Tensor) -> pd.DataFrame:
    """The non-empty singular-value bins of every run."""
    counts, lo, hi = jacobian.histograms(values)
    run, index = np.nonzero(counts)
    return pd.DataFrame(
        {
            "run_id": np.asarray(run_ids)[run],
            "lo": lo[index],
            "hi": hi[index],
            "count": counts[run, index],
        }
    )


def _strings(labels: Sequence[str], codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``labels[codes]`` as a string column, taken in Arrow: no Python string per row."""
    taken = pa.array(list(labels), pa.large_string()).take(pa.array(codes))
    return pd.arrays.ArrowStringArray(taken)


def _hist_rows(run_ids: Sequence[str], result: ProbeResult, cell: Cell) -> pd.DataFrame:
    """One row per run, histogram layer and quantity (quantity by quantity, then run,
    then layer), with its non-empty bins' ``lo``, ``hi`` and ``count`` as lists."""
    bins = []
    for quantity, counts in result.hists.items():  # counts: (R, layers, bins)
        lo, hi = histograms.bin_ranges(cell.activation.bounds if quantity == "post" else None)
        run, layer, index = np.nonzero(counts)
        sizes = np.count_nonzero(counts, axis=2).ravel()
        bins.append((lo[index], hi[index], counts[run, layer, index], sizes))
    lo, hi, count, sizes = (np.concatenate(column) for column in zip(*bins, strict=True))
    ends = np.cumsum(sizes)[:-1]

    def lists(values: np.ndarray) -> pd.Series:  # an array per row: what pandas reads back
        return pd.Series(np.split(values, ends), dtype=object)

    quantities, layers = len(result.hists), len(result.hist_layers)
    run, layer = np.divmod(np.arange(len(run_ids) * layers), layers)
    return pd.DataFrame(
        {
            "run_id": _strings(run_ids, np.tile(run, quantities)),
            "layer": np.tile(np.asarray(result.hist_layers)[layer], quantities),
            "quantity": _strings(list(result.hists), np.repeat(np.arange(quantities), len(run))),
            "lo": lists(lo),
            "hi": lists(hi),
            "count": lists(count),
        }
    )
