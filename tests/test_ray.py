import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

import initbench
from initbench import Grid
from initbench.core.errors import UsageError
from initbench.sweeps.engine import compute_chunk
from initbench.sweeps.planning import plan_chunks
from initbench.sweeps.store import Store

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

GRID = Grid(
    schemes=("xavier_normal", "kaiming_normal[mode=fan_in,nonlinearity=matched]", "orthogonal"),
    activations=("tanh", "relu"),
    depths=(2, 4),
    widths=(16,),
    seeds=2,
    batch_size=32,
)
TIMING = ["probe_seconds", "train_seconds", "seconds_per_step"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the module; sweeps reuse it."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _sorted(frame, keys):
    return frame.sort_values(keys).reset_index(drop=True)


def test_ray_gives_the_same_rows_as_local(tmp_path, local_ray):
    local = initbench.load(initbench.sweep(GRID, tmp_path / "l", device="cpu", progress=False))
    remote = initbench.load(
        initbench.sweep(GRID, tmp_path / "r", device="cpu", progress=False, executor="ray")
    )
    assert remote.meta["executor"] == "ray"
    pd.testing.assert_frame_equal(
        _sorted(local.cells, "run_id").drop(columns=TIMING),
        _sorted(remote.cells, "run_id").drop(columns=TIMING),
        rtol=1e-5,
    )
    pd.testing.assert_frame_equal(
        _sorted(local.layers, ["run_id", "layer"]),
        _sorted(remote.layers, ["run_id", "layer"]),
        rtol=1e-5,
    )


def test_raising_tasks_and_dead_workers_fail_their_runs_then_resume(tmp_path, local_ray):
    from initbench.sweeps.executors.ray import RayExecutor

    def flaky(runs, grid, device, dataset):
        if runs[0].cell.depth == 4 and runs[0].cell.activation.name == "tanh":
            raise ValueError("bad chunk")
        if runs[0].cell.depth == 4:
            os._exit(3)  # the worker process dies mid-task
        return compute_chunk(runs, grid, device, dataset)

    cpu = torch.device("cpu")
    store = Store(tmp_path / "s")
    store.begin(GRID.to_dict(), {})
    with RayExecutor(compute=flaky) as executor:
        for records in executor.run(plan_chunks(GRID.runs(), GRID, cpu), GRID, cpu):
            store.write(records)
    store.compact()
    cells = initbench.load(tmp_path / "s").cells.set_index("run_id")
    assert len(cells) == len(GRID.runs())
    deep = cells[cells["depth"] == 4]
    assert set(deep["status"]) == {"failed"}
    assert set(deep.loc[deep["activation"] == "tanh", "reason"]) == {"ValueError: bad chunk"}
    assert deep.loc[deep["activation"] == "relu", "reason"].str.contains("Worker").all()
    assert set(cells.loc[cells["depth"] == 2, "status"]) == {"ok"}

    initbench.sweep(GRID, tmp_path / "s", device="cpu", progress=False, executor="ray")
    again = initbench.load(tmp_path / "s").cells.set_index("run_id")
    assert set(again["status"]) == {"ok"} and again.index.is_unique
    shallow = cells["depth"] == 2  # finished runs were not recomputed
    assert again.loc[shallow[shallow].index, "probe_seconds"].equals(
        cells.loc[shallow, "probe_seconds"]
    )


def test_ray_executor_without_ray_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError, match=r"pip install 'initbench\[ray\]'"):
        initbench.sweep(GRID, tmp_path / "s", device="cpu", executor="ray")
    code = (
        "import sys; sys.modules['ray'] = None; from initbench.cli import main; "
        f"sys.argv = ['initbench', 'sweep', '--executor', 'ray', '--out', '{tmp_path / 'c'}']; "
        "main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "initbench: error: the ray executor needs Ray: pip install 'initbench[ray]' "
        "(or use --executor local)"
    ]


def test_an_unreachable_cluster_is_one_line_and_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "s"
    args = ["sweep", "--executor", "ray", "--ray-address", "127.0.0.1:1", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "initbench.cli", *args, "--depths", "2", "--widths", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"INITBENCH_DEBUG": ""},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "initbench: error: cannot reach a Ray cluster at '127.0.0.1:1'; "
        "start one with 'ray start --head' or check --ray-address"
    ]
    assert not out.exists()
