"""Sweeps: plan the runs, compute them in stacked chunks, stream them to the store.

:func:`compute_chunk` turns runs of one shape into table rows (init -> probe -> train);
executors decide where chunks run: in this process (``local``) or as Ray tasks.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from initbench import __version__
from initbench.data import Dataset, load_dataset
from initbench.device import (
    device_info,
    free_memory,
    is_out_of_memory,
    limit_gpu_memory,
    prepare_process,
    resolve_device,
)
from initbench.errors import UsageError
from initbench.grid import Grid, Run
from initbench.models import StackedNet
from initbench.probe import LAYER_STATS, init_stack, probe, theory_columns
from initbench.store import Records, Store

EXECUTORS = ("local", "ray")
CHUNK_BYTES = {"cpu": 512 * 2**20, "cuda": 4 * 2**30}
MAX_CHUNK_RUNS = 64
BYTES_PER_ACTIVATION = 4 * 6  # float32 h, a, their gradients, and temporaries

CELL_COLUMNS = {
    "run_id": "string",
    "cell_id": "string",
    "scheme_id": "string",
    "scheme": "string",
    "gain": "string",
    "gain_value": "float64",
    "activation": "string",
    "arch": "string",
    "depth": "int64",
    "width": "int64",
    "seed": "int64",
    "status": "string",
    "reason": "string",
    "var_ratio": "float64",
    "grad_ratio": "float64",
    "steps_to_target": "float64",
    "train_loss_auc": "float64",
    "final_train_loss": "float64",
    "final_train_acc": "float64",
    "final_test_loss": "float64",
    "final_test_acc": "float64",
    "diverged_step": "float64",
    "probe_seconds": "float64",
    "train_seconds": "float64",
    "seconds_per_step": "float64",
    "device": "string",
}
LAYER_COLUMNS = ["run_id", "layer", *LAYER_STATS, "theory_pre_var", "theory_grad_h_var"]
CURVE_COLUMNS = ["run_id", "step", "train_loss", "train_acc", "test_loss", "test_acc"]


def _gain_columns(run: Run) -> tuple[str, float]:
    scheme, act = run.cell.scheme, run.cell.activation
    setting = scheme.params.get("gain", scheme.params.get("nonlinearity"))
    if setting is None:
        return "", math.nan
    if "gain" in scheme.params:
        from initbench.schemes import resolve_gain

        return str(setting), resolve_gain(setting, act)
    return str(setting), act.gain() if setting == "matched" else math.sqrt(2.0)


def _cell_rows(runs: Sequence[Run], device: torch.device, **columns: Any) -> pd.DataFrame:
    """``cells`` rows of ``runs``: identity columns, then ``columns`` (scalars or arrays)."""
    gains = [_gain_columns(r) for r in runs]
    values = {
        "run_id": [r.id for r in runs],
        "cell_id": [r.cell.id for r in runs],
        "scheme_id": [r.cell.scheme.id for r in runs],
        "scheme": [r.cell.scheme.name for r in runs],
        "gain": [g[0] for g in gains],
        "gain_value": [g[1] for g in gains],
        "activation": [r.cell.activation.id for r in runs],
        "arch": [r.cell.arch for r in runs],
        "depth": [r.cell.depth for r in runs],
        "width": [r.cell.width for r in runs],
        "seed": [r.seed for r in runs],
        "device": str(device),
    } | columns
    data = {}
    for column, dtype in CELL_COLUMNS.items():
        value = values.get(column, None if dtype == "string" else math.nan)
        if value is None or np.ndim(value) == 0:
            value = [value] * len(runs)
        data[column] = pd.array(value, dtype=dtype)
    return pd.DataFrame(data)


def _probe_inputs(
    grid: Grid, run: Run, dataset: Dataset | None
) -> tuple[tuple[int, ...] | None, torch.Tensor | None, int]:
    """Probe batch shape (or data batch) and the number of spatial positions."""
    cell = run.cell
    if dataset is None:
        side = grid.image_size if cell.arch == "cnn" else 0
        spatial = (side, side) if side else ()
        return (grid.batch_size, cell.width, *spatial), None, max(side, 1) ** 2
    data = dataset.inputs(dataset.x_train[: grid.batch_size], cell.arch)
    side = dataset.info.side if cell.arch == "cnn" else 1
    return None, data, side * side


def compute_chunk(
    runs: Sequence[Run], grid: Grid, device: torch.device, dataset: Dataset | None
) -> Records:
    """Computes runs of one shape: init, probe, and (if the grid trains) training.

    Runs the scheme cannot take are ``skipped``; an out-of-memory error marks the chunk
    ``oom`` and any other error ``failed``, each with a reason, so the sweep goes on.
    """
    cell0 = runs[0].cell
    shapes = grid.shapes(cell0)
    todo, skipped, reasons = [], [], []
    for run in runs:
        reason = run.cell.scheme.not_applicable(shapes[0])
        (skipped if reason else todo).append(run)
        if reason:
            reasons.append(f"not applicable: {reason}")
    parts = [_cell_rows(skipped, device, status="skipped", reason=reasons)] if skipped else []
    layers, curves = pd.DataFrame(columns=LAYER_COLUMNS), pd.DataFrame(columns=CURVE_COLUMNS)
    if todo:
        try:
            cells, layers, curves = _compute(todo, grid, device, dataset, shapes)
            parts.append(cells)
        except Exception as error:
            oom = is_out_of_memory(error)
            if oom:
                free_memory(device)
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            parts.append(failed_records(todo, device, reason, "oom" if oom else "failed").cells)
    return Records(pd.concat(parts, ignore_index=True), layers, curves)


def failed_records(
    runs: Sequence[Run], device: torch.device, reason: str, status: str = "failed"
) -> Records:
    """``cells`` rows marking ``runs`` failed (or oom) with a one-line reason; retried later."""
    return Records(_cell_rows(runs, device, status=status, reason=reason[:500]))


def _compute(
    runs: Sequence[Run],
    grid: Grid,
    device: torch.device,
    dataset: Dataset | None,
    shapes: list[tuple[int, ...]],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    cell0 = runs[0].cell
    in_features, out_features = grid.io_features(cell0.arch, cell0.width)
    probe_shape, data, spatial = _probe_inputs(grid, runs[0], dataset)
    start = time.perf_counter()
    net = StackedNet(
        len(runs),
        cell0.arch,
        cell0.depth,
        cell0.width,
        cell0.activation,
        in_features,
        out_features,
        device,
    )
    x, cotangent = init_stack(net, runs, probe_shape, data)
    result = probe(net, x, cotangent)
    probe_seconds = (time.perf_counter() - start) / len(runs)
    depth = cell0.depth
    ok = result.finite
    stats = result.stats
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        var_ratio = stats["pre_var"][:, -1] / stats["pre_var"][:, 0]
        grad_ratio = stats["grad_w_norm"][:, 0] / stats["grad_w_norm"][:, -1]
    columns: dict[str, Any] = {
        "status": np.where(ok, "ok", "diverged"),
        "reason": np.where(ok, None, "non-finite activations or gradients at initialization"),
        "var_ratio": var_ratio,
        "grad_ratio": grad_ratio,
        "probe_seconds": probe_seconds,
    }
    second_moment = 1.0 if data is None else float(result.input_second_moment[0])
    theory = [theory_columns(r.cell, shapes, second_moment, spatial) for r in runs]
    layers = pd.DataFrame(
        {
            "run_id": np.repeat([r.id for r in runs], depth),
            "layer": np.tile(np.arange(1, depth + 1), len(runs)),
            **{name: result.stats[name].reshape(-1) for name in LAYER_STATS},
            "theory_pre_var": np.concatenate([t[0] for t in theory]),
            "theory_grad_h_var": np.concatenate([t[1] for t in theory]),
        }
    )
    curves = pd.DataFrame(columns=CURVE_COLUMNS)
    if grid.train_steps and dataset is not None:
        from initbench.train import train_stack

        trained = train_stack(net, runs, dataset, grid)
        summary = trained.summaries(grid.target_accuracy, grid.train_steps)
        columns.update(summary)
        diverged = ~np.isnan(summary["diverged_step"])
        columns["status"] = np.where(diverged, "diverged", columns["status"])
        columns["reason"] = np.where(
            diverged & ok,
            [f"non-finite training loss at step {s:.0f}" for s in summary["diverged_step"]],
            columns["reason"],
        )
        n_steps = len(trained.steps)
        curves = pd.DataFrame(
            {
                "run_id": np.repeat([r.id for r in runs], n_steps),
                "step": np.tile(trained.steps, len(runs)),
                "train_loss": trained.train_loss.reshape(-1),
                "train_acc": trained.train_acc.reshape(-1),
                "test_loss": trained.test_loss.reshape(-1),
                "test_acc": trained.test_acc.reshape(-1),
            }
        )
    return _cell_rows(runs, device, **columns), layers, curves


def plan_chunks(runs: Sequence[Run], grid: Grid, device: torch.device) -> list[list[Run]]:
    """Groups runs by shape, then splits groups to fit the device's memory budget."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.cell.shape_key].append(run)
    budget = CHUNK_BYTES.get(device.type, CHUNK_BYTES["cpu"])
    chunks = []
    for group in groups.values():
        cell = group[0].cell
        side = grid.image_size if cell.arch == "cnn" else 1
        if cell.arch == "cnn" and grid.dataset is not None:
            from initbench.data import dataset_info

            side = dataset_info(grid.dataset).side
        batch = max(grid.batch_size, grid.train_batch_size if grid.train_steps else 0)
        per_run = BYTES_PER_ACTIVATION * batch * cell.width * side * side * (cell.depth + 1)
        per_run += 4 * 4 * sum(math.prod(s) for s in grid.shapes(cell))  # weights, grads, state
        size = int(max(1, min(MAX_CHUNK_RUNS, budget // max(per_run, 1))))
        chunks += [group[i : i + size] for i in range(0, len(group), size)]
    return chunks


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sweep(
    grid: Grid,
    out: str | Path,
    *,
    device: str = "auto",
    progress: bool = True,
    deterministic: bool = False,
    gpu_memory_fraction: float | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
) -> Path:
    """Runs every run of ``grid`` not already finished in ``out``, writing as it goes.

    Re-running with the same grid and folder resumes: finished runs (ok, diverged, skipped)
    are kept, failed and missing ones computed. An interrupt (Ctrl-C) keeps every chunk
    that finished.

    Args:
        executor: ``local`` (this process) or ``ray`` (Ray tasks; see
            :mod:`initbench.ray_executor`).
        ray_address: the Ray cluster to use; None starts Ray on this machine.

    Returns:
        The sweep folder.
    """
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if ray_address is not None and executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    runs = grid.runs()
    torch_device = resolve_device(device)
    dataset = load_dataset(grid.dataset, data_dir, download) if grid.dataset else None
    prepare_process(deterministic)
    if gpu_memory_fraction is not None:
        limit_gpu_memory(gpu_memory_fraction, torch_device)
    with contextlib.ExitStack() as stack:
        if executor == "ray":  # connect before touching the store: a bad address writes nothing
            from initbench import ray_executor

            stack.callback(ray_executor.disconnect, ray_executor.connect(ray_address))
        store = Store(out)
        meta = store.begin(
            grid.to_dict(),
            {
                "initbench": __version__,
                "git_commit": _git_commit(),
                "deterministic": deterministic,
                "gpu_memory_fraction": gpu_memory_fraction,
                "executor": executor,
                "runs": len(runs),
                "started": _now(),
            }
            | device_info(torch_device),
        )
        finished = store.finished_run_ids()
        todo = [r for r in runs if r.id not in finished]
        chunks = plan_chunks(todo, grid, torch_device)
        if executor == "ray":
            results = ray_executor.run_chunks(
                chunks,
                grid,
                torch_device,
                deterministic=deterministic,
                data_dir=data_dir,
            )
        else:
            results = (compute_chunk(c, grid, torch_device, dataset) for c in chunks)
        bar = _progress(len(runs), len(runs) - len(todo), progress, Path(out).name)
        try:
            with contextlib.closing(results):
                for records in results:
                    store.write(records)
                    bar.update(len(records.cells))
        except BaseException:  # an interrupt, a full disk: keep what finished, then re-raise
            bar.close()
            with contextlib.suppress(OSError):  # the error on its way out is the one to see
                _finish(store, meta, "interrupted")
            raise
        bar.close()
        _finish(store, meta, "finished")
        return Path(out)


def _finish(store: Store, meta: dict[str, Any], how: str) -> None:
    """Compacts the shards and stamps ``finished`` (or ``interrupted``) in the meta."""
    store.compact()
    meta = {k: v for k, v in meta.items() if k not in ("finished", "interrupted")}
    store.write_meta(meta | {how: _now()})


def _progress(total: int, done: int, enabled: bool, name: str):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=done,
        disable=not enabled,
        unit="run",
        desc=f"sweep {name}",
        dynamic_ncols=True,
    )
