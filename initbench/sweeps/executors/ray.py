"""The ``ray`` executor: chunks run as Ray tasks; the driver writes their rows as they return.

Each task gets the grid as plain values and its run ids, rebuilds the runs, and calls a
compute function (:func:`~initbench.sweeps.engine.compute_chunk` by default) on one CPU, or one
GPU when the device is cuda. A task that raises, or whose worker dies, gives ``failed``
rows with the reason; the sweep goes on and a re-run retries them.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from initbench.core.data import Dataset
from initbench.core.errors import UsageError
from initbench.sweeps.engine import Progress
from initbench.sweeps.grid import Grid, Run
from initbench.sweeps.store import Records

Compute = Callable[..., Records]


def import_ray() -> Any:
    """Ray, or a UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            "the ray executor needs Ray: pip install 'initbench[ray]' (or use --executor local)"
        ) from None
    return ray


@functools.lru_cache(maxsize=8)
def _grid(grid_json: str) -> tuple[Grid, dict[str, Run]]:
    """A task's grid, and its runs by id: built once per worker process and grid."""
    grid = Grid.from_dict(json.loads(grid_json))
    return grid, {run.id: run for run in grid.runs()}


@functools.lru_cache(maxsize=2)
def _dataset(name: str | None, data_dir: str | None) -> Any:
    from initbench.core.data import load_dataset

    return load_dataset(name, data_dir, False) if name else None


def _task(
    grid_json: str,
    run_ids: Sequence[str],
    device: str,
    deterministic: bool,
    data_dir: str | None,
    compute: Compute | None,
    rng: str = "host",
) -> Records:
    """Body of one Ray task: set up this worker like the local executor, then compute."""
    import ray

    from initbench.core.device import prepare_process
    from initbench.sweeps.engine import compute_chunk

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    prepare_process(deterministic)
    grid, runs_by_id = _grid(grid_json)
    runs = [runs_by_id[run_id] for run_id in run_ids]
    dataset = _dataset(grid.dataset, data_dir)
    if compute is not None:  # a test's stand-in
        return compute(runs, grid, torch.device(device), dataset)
    return compute_chunk(runs, grid, torch.device(device), dataset, rng=rng)


def connect(address: str | None) -> bool:
    """Connects to the Ray cluster at ``address`` (``HOST:PORT``, ``ray://HOST:PORT`` or
    ``auto``), or starts Ray on this machine (one task per CPU core) when None.

    Returns:
        True if this call connected (then :func:`disconnect` ends it); False if this
        process was already connected.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address not in (None, "auto"):
        _check_reachable(address)
    local = {"include_dashboard": False, "logging_level": "ERROR"}
    try:
        ray.init(address=address, **({} if address else local))
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UsageError(f"cannot connect to Ray at {address!r}: {error}") from None
    return True


def disconnect(connected: bool) -> None:
    if connected:
        import_ray().shutdown()


def _check_reachable(address: str) -> None:
    """Fails in seconds, not after Ray's minute of retries, when nothing listens there."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "localhost", int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise UsageError(
            f"cannot reach a Ray cluster at {address!r}; start one with 'ray start --head' "
            "or check --ray-address"
        ) from None


class RayExecutor:
    """Chunks as Ray tasks, at most twice the cluster's slots in flight.

    Args:
        address: the Ray cluster (None: start Ray on this machine).
        compute: the function each task calls with ``(runs, grid, device, dataset)``;
            :func:`~initbench.sweeps.engine.compute_chunk` by default.
    """

    def __init__(self, address: str | None = None, compute: Compute | None = None) -> None:
        self.address, self.compute = address, compute
        self._connected = False

    def __enter__(self) -> RayExecutor:
        self._connected = connect(self.address)
        return self

    def __exit__(self, *exc: object) -> None:
        disconnect(self._connected)

    def run(
        self,
        chunks: Sequence[Sequence[Run]],
        grid: Grid,
        device: torch.device,
        *,
        dataset: Dataset | None = None,
        deterministic: bool = False,
        data_dir: str | Path | None = None,
        progress: Progress | None = None,
        rng: str = "host",
    ) -> Iterator[Records]:
        """Computes ``chunks`` as Ray tasks and yields each one's records as it finishes
        (progress advances as chunks return: tasks report nothing while they run). Each
        worker loads the dataset itself, from ``data_dir``."""
        from initbench.sweeps.engine import failed_records

        ray = import_ray()
        slots = ray.cluster_resources().get("GPU" if device.type == "cuda" else "CPU", 1)
        options = {"num_cpus": 1, "max_retries": 0}
        if device.type == "cuda":
            options["num_gpus"] = 1
        task = ray.remote(**options)(_task)
        grid_json = json.dumps(grid.to_dict(), sort_keys=True)
        dir_name = str(data_dir) if data_dir is not None else None
        todo = list(chunks)[::-1]
        pending: dict[Any, Sequence[Run]] = {}
        in_flight = max(2, 2 * int(slots))  # bounds results waiting in the object store
        try:
            while todo or pending:
                while todo and len(pending) < in_flight:
                    chunk = todo.pop()
                    args = [r.id for r in chunk], str(device), deterministic, dir_name
                    pending[task.remote(grid_json, *args, self.compute, rng)] = chunk
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                chunk = pending.pop(ready)
                try:
                    records = ray.get(ready)
                except ray.exceptions.RayError as error:
                    records = failed_records(chunk, device, _reason(error))
                if progress is not None:
                    progress.update(len(chunk))
                yield records
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def _reason(error: BaseException) -> str:
    """The first line of what went wrong in a task, without Ray's traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
