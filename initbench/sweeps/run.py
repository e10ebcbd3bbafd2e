"""The sweep: plan a grid's runs, compute them with an executor, stream rows to the store."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from initbench import __version__
from initbench.core.data import load_dataset
from initbench.core.device import (
    describe_device,
    device_info,
    limit_gpu_memory,
    prepare_process,
    resolve_device,
    resolve_rng,
)
from initbench.core.errors import RunsFailed, UsageError
from initbench.core.fmt import duration
from initbench.core.folders import now
from initbench.sweeps.executors import get_executor
from initbench.sweeps.grid import Grid
from initbench.sweeps.planning import Estimate, estimate_seconds, pilot_size, plan_chunks
from initbench.sweeps.presets import Preset
from initbench.sweeps.store import FINISHED, Store, read_table

LARGE_GRID_SECONDS = 12 * 3600  # sweeps estimated longer than this need yes=True


def sweep(
    grid: Grid | Preset,
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
    kind: str = "sweep",
    about: dict[str, Any] | None = None,
    rng: str = "auto",
    yes: bool = False,
) -> Path:
    """Runs every run of ``grid`` not already finished in ``out``, writing as it goes.

    Re-running with the same grid and folder resumes: finished runs (ok, diverged, skipped)
    are kept, failed and missing ones computed. An interrupt (Ctrl-C) keeps every chunk
    that finished. When some runs fail, a line on stderr says how many and the first reason.
    This is what ``initbench sweep`` runs: a preset with parts (the atlas) sweeps each part
    into ``out/PART``, and a grid estimated at more than 12 hours needs ``yes``.

    Args:
        grid: what to run: a grid, or a preset (:func:`~initbench.sweeps.presets.preset`).
        out: the sweep folder (of a preset with parts: the folder of the part folders).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        progress: print the run count and time estimate, and show a progress bar (runs
            done, with progress inside each chunk).
        deterministic: deterministic kernels.
        gpu_memory_fraction: cap this process's share of the GPU's memory.
        data_dir: where torchvision datasets live.
        download: let torchvision download a missing dataset.
        executor: ``local`` (this process) or ``ray`` (Ray tasks; see
            :mod:`initbench.sweeps.executors.ray`).
        ray_address: the Ray cluster to use; None starts Ray on this machine.
        kind: what the folder holds, for ``initbench report`` (``sweep``, ``phase``, ...).
        about: more values for ``meta.json`` (what a ``phase`` sweep spans, ...).
        rng: ``host`` (each run's CPU generator: the same numbers on every device),
            ``device`` (generators on the compute device) or ``auto`` (device on GPUs).
        yes: run a grid estimated at more than 12 hours.

    Returns:
        The sweep folder.

    Raises:
        UsageError: bad input, a large grid without ``yes``, or an ``out`` that holds other
            results or cannot be written.
        DamagedStore: a table of ``out`` does not read (see ``initbench check``).
        RunsFailed: not one run of a part finished (the message gives the first reason).
    """
    out = Path(out)
    torch_device = resolve_device(device)
    parts = _parts(grid, out, about)
    total = left = 0.0
    to_run = []
    for folder, (part, _) in parts.items():
        runs = len(part.runs())
        finished = len(Store(folder).finished_run_ids()) if (folder / "meta.json").exists() else 0
        total, left = total + runs, left + runs - finished
        to_run.append((part, runs - finished))
    seconds = sum(estimate_seconds(p, torch_device, n, measure=False) for p, n in to_run)
    if seconds > LARGE_GRID_SECONDS:  # even the slowest device might take that long: measure
        seconds = sum(estimate_seconds(p, torch_device, n) for p, n in to_run)
    where = describe_device(torch_device)
    if seconds > LARGE_GRID_SECONDS and not yes:
        raise UsageError(
            f"this grid has {total:,.0f} runs, about {duration(seconds)} on {where} at its "
            "matmul rate; pass --yes to run it, or narrow it (--depths, --widths, --seeds)"
        )
    if progress:
        to_go = f", {left:,.0f} to go" if left < total else ""
        parted = f" in {len(parts)} parts" if len(parts) > 1 else ""
        print(f"sweep {out}: {total:,.0f} runs{parted}{to_go} on {where}; timing the first ones")
    estimate = Estimate(torch_device)
    options = {
        "device": device,
        "progress": progress,
        "deterministic": deterministic,
        "gpu_memory_fraction": gpu_memory_fraction,
        "data_dir": data_dir,
        "download": download,
        "executor": executor,
        "ray_address": ray_address,
        "kind": kind,
        "rng": rng,
        "estimate": estimate,
    }
    for folder, (part, extra) in parts.items():  # each part's first chunks
        _sweep_folder(part, folder, about=extra, pilot=True, **options)
    seconds, timed = estimate.seconds_left(), estimate.runs_timed
    if seconds is not None and seconds > LARGE_GRID_SECONDS and not yes:
        raise UsageError(
            f"this grid has {total:,.0f} runs, about {duration(seconds)} on {where} as its "
            f"first {timed:,} took; pass --yes to run the rest, or narrow it"
        )
    if progress and seconds is not None:
        print(f"sweep {out}: about {duration(seconds)} left, as the first {timed:,} runs took")
    for folder, (part, extra) in parts.items():
        _sweep_folder(part, folder, about=extra, pilot=False, **options)
    return out


def _parts(
    grid: Grid | Preset, out: Path, about: dict[str, Any] | None
) -> dict[Path, tuple[Grid, dict[str, Any] | None]]:
    """Each folder to sweep, its grid and its extra meta: one for a grid or a one-grid
    preset, ``out/PART`` for each part of a preset with parts."""
    if isinstance(grid, Grid):
        return {out: (grid, about)}
    if grid.single:
        return {out: (grid.parts[grid.name], about)}
    return {
        out / name: (part, (about or {}) | {"preset": grid.name, "part": name})
        for name, part in grid.parts.items()
    }


def _sweep_folder(
    grid: Grid,
    out: Path,
    *,
    device: str,
    progress: bool,
    deterministic: bool,
    gpu_memory_fraction: float | None,
    data_dir: str | Path | None,
    download: bool,
    executor: str,
    ray_address: str | None,
    kind: str,
    about: dict[str, Any] | None,
    rng: str,
    estimate: Estimate,
    pilot: bool,
) -> None:
    """One folder's sweep (see :func:`sweep`): its first chunks (``pilot``), or the rest
    (less what the pilot tried, failed or not: a failed run is retried by the next
    session), each chunk timed into ``estimate``. The pilot leaves its chunks as shards
    and the folder stamped ``interrupted``, with the seconds it took."""
    began = time.perf_counter()
    runs = grid.runs()
    torch_device = resolve_device(device)
    rng = resolve_rng(rng, torch_device)
    chosen = get_executor(executor, ray_address)
    dataset = load_dataset(grid.dataset, data_dir, download) if grid.dataset else None
    prepare_process(deterministic)
    if gpu_memory_fraction is not None:
        limit_gpu_memory(gpu_memory_fraction, torch_device)
    with chosen:  # connects before the store is touched: a bad address writes nothing
        store = Store(out)
        earlier = store.read_meta() if Path(out).is_dir() else None
        if earlier and earlier.get("rng", rng) != rng:
            raise UsageError(
                f"{out} was swept with --rng {earlier['rng']}: resume it with --rng "
                f"{earlier['rng']} (another generator gives other numbers)"
            )
        meta = store.begin(
            grid.to_dict(),
            {
                "kind": kind,
                **(about or {}),
                "initbench": __version__,
                "git_commit": _git_commit(),
                "deterministic": deterministic,
                "gpu_memory_fraction": gpu_memory_fraction,
                "executor": executor,
                "rng": rng,
                "runs": len(runs),
                "started": now(),
            }
            | device_info(torch_device),
        )
        store.write_weights(grid.weight_signatures())
        finished = store.finished_run_ids()
        todo = [r for r in runs if r.id not in finished and r.id not in estimate.tried]
        chunks = plan_chunks(todo, grid, torch_device)
        estimate.plan(str(out), chunks, grid)
        bar = _progress(len(runs), len(runs) - len(todo), progress, Path(out).name)
        if pilot:
            chunks = chunks[: pilot_size(len(chunks))]  # the most it times
        results = chosen.run(
            chunks,
            grid,
            torch_device,
            dataset=dataset,
            deterministic=deterministic,
            data_dir=data_dir,
            progress=bar,
            rng=rng,
        )
        done = bar.n
        last = time.perf_counter()
        try:
            with contextlib.closing(results):
                for records in results:
                    store.write(records)
                    done += len(records.cells)
                    worked = records.cells["status"].isin(["ok", "diverged"]).any()
                    first = records.cells["run_id"].iloc[0]
                    estimate.finished(str(out), first, _since(last) if worked else None)
                    estimate.tried.update(records.cells["run_id"])
                    last = time.perf_counter()
                    # whole runs, whatever the chunk reported on the way
                    bar.update(done - bar.n)
                    if pilot and executor == "local" and estimate.pilot_done(str(out)):
                        break  # (Ray's chunks in flight are left to finish, not cancelled)
                    if not pilot:
                        left = duration(estimate.seconds_left() or 0.0)
                        bar.set_description_str(f"sweep {Path(out).name}, about {left} left", False)
        except BaseException:  # an interrupt, a full disk: keep what finished, then re-raise
            bar.close()
            with contextlib.suppress(OSError):  # the error on its way out is the one to see
                _finish(store, meta, "interrupted", time.perf_counter() - began)
            raise
        bar.close()
        if pilot:
            _finish(store, meta, "interrupted", time.perf_counter() - began, compact=False)
            return
        _finish(store, meta, "finished", time.perf_counter() - began)
        _check_outcome(store, [r.id for r in runs])


def _since(start: float) -> float:
    return time.perf_counter() - start


def _check_outcome(store: Store, run_ids: list[str]) -> None:
    """Raises :class:`RunsFailed` when not one of ``run_ids`` finished; when only some
    failed, says on stderr how many and the first reason."""
    cells = read_table(store.root, "cells", columns=["run_id", "status", "reason"])
    mine = cells[cells["run_id"].isin(run_ids)]
    failed = mine[~mine["status"].isin(FINISHED)]
    if not len(failed):
        return
    first = failed["reason"].iloc[0]
    if len(failed) == len(mine):
        raise RunsFailed(f"all {len(mine):,} runs failed; the first: {first}; nothing was measured")
    print(
        f"initbench: {len(failed):,} of {len(mine):,} runs in {store.root} failed (the first: "
        f"{first}); running the sweep again retries them",
        file=sys.stderr,
    )


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


def _finish(
    store: Store, meta: dict[str, Any], how: str, seconds: float, compact: bool = True
) -> None:
    """Compacts the shards (unless not ``compact``) and stamps ``finished`` (or
    ``interrupted``) in the meta, with ``seconds``: the time spent computing, over every
    session of a resumed sweep."""
    if compact:
        store.compact()
    meta = {k: v for k, v in meta.items() if k not in ("finished", "interrupted")}
    seconds += float(meta.get("seconds", 0.0))
    store.write_meta(meta | {how: now(), "seconds": round(seconds, 3)})


def _progress(total: int, done: int, enabled: bool, name: str):
    """A progress bar on stderr; in a log (not a terminal) a line every 30 s at most."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(
        mininterval=0.1 if sys.stderr.isatty() else 30.0,
        total=total,
        initial=done,
        disable=not enabled,
        unit="run",
        desc=f"sweep {name}",
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total} runs [{elapsed}]{postfix}",
    )
