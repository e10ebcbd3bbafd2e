"""Interrupts, kills, full disks, read-only folders and bad grids: nothing finished is lost."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import initbench
from initbench import Grid, cli
from initbench.core import folders
from initbench.core.errors import UsageError
from initbench.sweeps import store

# 8 chunks of about a second each on 2 cores: long enough to stop in the middle
SLOW_ARGS = [
    "--schemes",
    "xavier_normal,kaiming_normal[mode=fan_in,nonlinearity=matched],orthogonal",
    "--activations",
    "tanh,relu",
    "--depths",
    "10,20,30,40",
    "--widths",
    "256",
    "--seeds",
    "4",
    "--gains",
    "matched",
]
SLOW_RUNS = 3 * 2 * 4 * 4
SMALL = Grid(
    schemes=("xavier_normal", "orthogonal"),
    activations=("tanh", "relu"),
    depths=(2, 3),
    widths=(8,),
    seeds=2,
    batch_size=16,
)


def _start_sweep(out):
    env = os.environ | {"INITBENCH_DEBUG": ""}
    cmd = [sys.executable, "-m", "initbench.cli", "sweep", *SLOW_ARGS, "--out", str(out)]
    return subprocess.Popen(
        [*cmd, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_a_finished_chunk(process, out, timeout=120):
    deadline = time.monotonic() + timeout
    while not list((out / "shards").glob("*.cells.parquet")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no chunk finished in time"
        time.sleep(0.05)


def _resume_and_check(out):
    done = subprocess.run(
        [sys.executable, "-m", "initbench.cli", "sweep", *SLOW_ARGS, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    results = initbench.load(out)
    assert len(results.cells) == SLOW_RUNS and results.cells["run_id"].is_unique
    assert set(results.cells["status"]) == {"ok"}
    assert not results.layers.duplicated(["run_id", "layer"]).any()
    assert len(results.layers) == results.cells["depth"].sum()


def test_sigint_stops_cleanly_after_flushing_finished_runs(tmp_path):
    out = tmp_path / "s"
    process = _start_sweep(out)
    _wait_for_a_finished_chunk(process, out)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("initbench: interrupted;")
    assert "Traceback" not in stderr
    meta = json.loads((out / "meta.json").read_text())
    assert "interrupted" in meta and "finished" not in meta
    assert not list((out / "shards").glob("*.parquet"))  # flushed into the tables
    kept = initbench.load(out).cells
    assert 0 < len(kept) < SLOW_RUNS
    _resume_and_check(out)
    assert "finished" in json.loads((out / "meta.json").read_text())


def test_sigkill_loses_nothing_written_and_resume_completes(tmp_path):
    out = tmp_path / "s"
    process = _start_sweep(out)
    _wait_for_a_finished_chunk(process, out)
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    kept = initbench.load(out).cells  # readable straight from the shards
    assert 0 < len(kept) < SLOW_RUNS and kept["run_id"].is_unique
    _resume_and_check(out)
    resumed = initbench.load(out).cells.set_index("run_id")
    before = kept.set_index("run_id")
    assert resumed.loc[before.index, "var_ratio"].equals(before["var_ratio"])


def _main(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["initbench", *args])
    monkeypatch.setenv("INITBENCH_DEBUG", "")
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def _failing_writes(after, code):
    real, calls = folders.atomic_write_bytes, []

    def write(path, data):
        calls.append(path)
        if len(calls) > after:
            raise OSError(code, os.strerror(code), str(path))
        return real(path, data)

    return write


def test_disk_full_while_writing_is_one_line_and_the_store_stays_readable(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "s"
    monkeypatch.setattr(folders, "atomic_write_bytes", _failing_writes(5, errno.ENOSPC))

    def compact_on_a_full_disk(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store.Store, "compact", compact_on_a_full_disk)
    args = ["sweep", "--schemes", "xavier_normal,orthogonal", "--depths", "2,3", "--widths", "8"]
    args += ["--seeds", "2", "--out", str(out), "--no-progress"]
    code, err = _main(monkeypatch, capsys, *args)
    assert code == 1
    assert err == [f"initbench: error: cannot write to {out}: No space left on device"]
    partial = initbench.load(out).cells  # the chunks written before the disk filled
    assert 0 < len(partial) < 32 and partial["run_id"].is_unique
    monkeypatch.undo()
    code, err = _main(monkeypatch, capsys, *args)
    assert code == 0
    assert len(initbench.load(out).cells) == 32


def test_read_only_output_folder_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    api, command = tmp_path / "api", tmp_path / "cli"
    for out in (api, command):
        out.mkdir()
        out.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: refuse the way a read-only mount does
        monkeypatch.setattr(folders, "atomic_write_bytes", _failing_writes(0, errno.EROFS))
    with pytest.raises(UsageError, match=r"cannot write to .*api: "):
        initbench.sweep(SMALL, api, device="cpu", progress=False)
    code, err = _main(monkeypatch, capsys, "sweep", "--depths", "2", "--out", str(command))
    assert code == 2 and len(err) == 1 and err[0].startswith("initbench: error: cannot write to")


@pytest.mark.parametrize(
    "toml, message",
    [
        ("depths = [1, 2\n", "is not valid TOML"),
        ('seeds = "three"\n', "seeds must be an integer, got 'three'"),
        ("seeds = 2.5\n", "seeds must be an integer"),
        ("depths = 5\n", "depths must be a list"),
        ('lr = "fast"\n', "lr must be a number, got 'fast'"),
        ("widths = [1_000_000]\n", "widths must be between 1 and 65536"),
        ("batch_size = -3\n", "batch_size must be positive"),
        ("[grid]\nactivations = []\n", "activations is empty"),
        ("momentum = 1.5\n", "momentum must be in [0, 1)"),
    ],
)
def test_bad_config_files(tmp_path, monkeypatch, capsys, toml, message):
    config = tmp_path / "grid.toml"
    config.write_text(toml)
    code, err = _main(monkeypatch, capsys, "sweep", "--config", str(config), "--out", "x")
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_a_grid_of_days_needs_yes(tmp_path, monkeypatch, capsys):
    args = ["sweep", "--depths", "2000", "--widths", "8192", "--out", str(tmp_path / "s")]
    code, err = _main(monkeypatch, capsys, *args, "--device", "cpu")
    assert code == 2 and len(err) == 1
    runs = len(Grid(depths=(2000,), widths=(8192,)).runs())
    assert f"this grid has {runs} runs, about" in err[0] and "days on cpu" in err[0]
    assert "pass --yes" in err[0]
    assert not (tmp_path / "s").exists()
