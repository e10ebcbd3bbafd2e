"""Nothing lost: no command writes over another's folder, a damaged store is named in one
line and repaired, Ctrl-C leaves the previous report whole, write errors are one line."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import initbench
from initbench import cli
from initbench.core import folders
from initbench.core.errors import UsageError
from initbench.report import publish, report
from initbench.sweeps.check import check_folder
from tests.cli import assert_usage_error, run_cli
from tests.test_robustness import SMALL

GRID = SMALL  # and the same grid as flags:
SWEEP_ARGS = ["--schemes", "xavier_normal,orthogonal", "--depths", "2,3", "--widths", "8"]
SWEEP_ARGS += ["--seeds", "2", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("swept")
    initbench.sweep(GRID, root / "s", device="cpu", progress=False)
    report(root / "s")
    return root / "s"


@pytest.fixture
def sweep_copy(swept, tmp_path):
    shutil.copytree(swept, tmp_path / "s")
    return tmp_path / "s"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def main(monkeypatch, capsys, *args) -> tuple[int, list[str], str]:
    """``initbench ARGS`` in this process: exit code, stderr lines, stdout."""
    monkeypatch.setattr(sys, "argv", ["initbench", *args])
    monkeypatch.setenv("INITBENCH_DEBUG", "")
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err.strip().splitlines(), captured.out


# ---- no command writes over another's folder ------------------------------------------------


@pytest.mark.parametrize("where", ["itself", "its parent", "inside it"])
def test_publish_refuses_to_write_over_its_input(sweep_copy, monkeypatch, capsys, where):
    out = {"itself": sweep_copy, "its parent": sweep_copy.parent}.get(where, sweep_copy / "site")
    before = snapshot(sweep_copy)
    code, err, _ = main(monkeypatch, capsys, "publish", str(sweep_copy), "--out", str(out))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("initbench: error: --out") and "would write over its input" in err[0]
    assert snapshot(sweep_copy) == before
    assert not (sweep_copy / "site").exists()


def test_no_command_writes_into_a_folder_of_another_kind(sweep_copy, tmp_path, monkeypatch, capsys):
    other = tmp_path / "other"
    shutil.copytree(sweep_copy, other)
    before = snapshot(other)
    for args, kind in (
        (["publish", str(sweep_copy), "--out", str(other)], "site"),
        (["report", str(sweep_copy), "--out", str(other)], "report"),
        (["phase", "--depths", "2", "--out", str(other)], "phase"),
        (["reproduce", "he2015", "--out", str(other)], "reproduce"),
    ):
        code, err, _ = main(monkeypatch, capsys, *args)
        assert code == 2 and err == [
            f"initbench: error: {other} holds a sweep, not a {kind}: choose another --out"
        ], err
    with pytest.raises(UsageError, match="holds a sweep, not a probe"):
        folders.claim(other, "probe")
    assert snapshot(other) == before
    stray = tmp_path / "notes"
    stray.mkdir()
    (stray / "todo.txt").write_text("mine")
    code, err, _ = main(monkeypatch, capsys, "publish", str(sweep_copy), "--out", str(stray))
    assert code == 2 and "is not empty and holds no site" in err[0]
    assert (stray / "todo.txt").read_text() == "mine"


def test_report_is_a_report_folder_and_cannot_be_reported(sweep_copy, monkeypatch, capsys):
    code, err, _ = main(monkeypatch, capsys, "report", str(sweep_copy / "report"))
    assert code == 2 and err == [
        f"initbench: error: {sweep_copy / 'report'} is a report: give initbench report its "
        "results folder"
    ]


def test_publish_replaces_its_own_site_whole(sweep_copy, tmp_path):
    site = tmp_path / "site"
    publish([sweep_copy], site)
    (site / "stale.txt").write_text("from before")
    publish([sweep_copy], site)
    assert not (site / "stale.txt").exists()
    assert initbench.load(site).kind == "site"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no building left


# ---- a damaged store -------------------------------------------------------------------------


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_table_is_one_line_for_every_command_then_repaired(
    sweep_copy, monkeypatch, capsys
):
    truncate(sweep_copy / "cells.parquet")
    before = snapshot(sweep_copy)
    for args in (
        ["sweep", *SWEEP_ARGS, "--out", str(sweep_copy)],
        ["report", str(sweep_copy)],
        ["publish", str(sweep_copy), "--out", str(sweep_copy.parent / "site")],
    ):
        code, err, _ = main(monkeypatch, capsys, *args)
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith(f"initbench: error: {sweep_copy / 'cells.parquet'} is damaged")
        assert f"initbench check {sweep_copy} --repair" in err[0]
    assert snapshot(sweep_copy) == before
    code, err, out = main(monkeypatch, capsys, "check", str(sweep_copy))
    assert code == 1 and f"damaged: {sweep_copy / 'cells.parquet'} does not read" in out
    assert snapshot(sweep_copy) == before
    code, err, out = main(monkeypatch, capsys, "check", str(sweep_copy), "--repair")
    assert code == 0 and f"removed {sweep_copy / 'cells.parquet'}" in out
    assert not (sweep_copy / "layers.parquet").exists()  # indexed by the removed cells
    code, err, _ = main(monkeypatch, capsys, "sweep", *SWEEP_ARGS, "--out", str(sweep_copy))
    assert code == 0, err
    health = check_folder(sweep_copy)
    assert not health.damaged and "32 finished (32 ok), 0 failed, 0 to compute" in health.lines()[0]


def test_a_damaged_shard_takes_its_chunk_and_nothing_else(sweep_copy, monkeypatch, capsys):
    shards = sweep_copy / "shards"
    shards.mkdir()
    kept = initbench.load(sweep_copy).cells
    for table in ("cells", "layers"):
        shutil.copy(sweep_copy / f"{table}.parquet", shards / f"0001-1-00001.{table}.parquet")
    truncate(shards / "0001-1-00001.layers.parquet")
    (shards / "0002-1-00001.layers.parquet").write_bytes(b"an interrupted write")
    health = check_folder(sweep_copy)
    assert health.damaged and len(health.problems) == 1
    assert "1 files of interrupted chunks, ignored" in "\n".join(health.lines())
    code, _, out = main(monkeypatch, capsys, "check", str(sweep_copy), "--repair")
    assert code == 0 and out.count("removed") == 2
    assert sorted(p.name for p in shards.iterdir()) == ["0002-1-00001.layers.parquet"]
    assert initbench.load(sweep_copy).cells.equals(kept)


def test_check_counts_what_is_left_to_do(sweep_copy):
    cells = initbench.load(sweep_copy).cells
    lines = check_folder(sweep_copy).lines()
    assert (
        lines[0] == f"{sweep_copy}: a sweep of 32 runs: 32 finished (32 ok), 0 failed, 0 to compute"
    )
    assert f"  cells.parquet: {len(cells)} rows" in lines and lines[-1] == f"{sweep_copy}: whole"


# ---- write errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["reproduce", "he2015", "--out", "/proc/nope"],
        ["phase", "--depths", "2", "--out", "/proc/nope"],
    ],
)
def test_an_output_that_cannot_be_written_is_one_line_exit_2(args, monkeypatch, capsys):
    code, err, _ = main(monkeypatch, capsys, *args)
    assert code == 2 and err == [
        "initbench: error: cannot write to /proc/nope: No such file or directory"
    ], err


def test_a_report_that_cannot_be_written_is_one_line_and_the_old_one_stays(
    sweep_copy, monkeypatch, capsys
):
    code, err, _ = main(monkeypatch, capsys, "report", str(sweep_copy), "--out", "/proc/nope/r")
    assert code == 2 and len(err) == 1 and err[0].startswith("initbench: error: cannot write to"), (
        err
    )
    before = snapshot(sweep_copy)
    real = folders.atomic_write_bytes

    def read_only(path, data):
        if path.name == "index.html":
            raise OSError(30, "Read-only file system", str(path))
        return real(path, data)

    monkeypatch.setattr(folders, "atomic_write_bytes", read_only)
    from initbench.report import pages

    monkeypatch.setattr(pages, "atomic_write_bytes", read_only)
    code, err, _ = main(monkeypatch, capsys, "report", str(sweep_copy))
    assert code == 2 and len(err) == 1 and "Read-only file system" in err[0], err
    assert snapshot(sweep_copy) == before


# ---- Ctrl-C ----------------------------------------------------------------------------------


def _interrupt_at(monkeypatch, module, name: str, how: str) -> None:
    """Makes ``module.name`` deliver a Ctrl-C when called: as a signal, or one that lands in
    a finalizer (where Python cannot raise it)."""
    real = getattr(module, name)

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)

    def interrupted(*args, **kwargs):
        if how == "signal":
            signal.raise_signal(signal.SIGINT)
        else:
            Finalized()  # collected at once: the KeyboardInterrupt is "ignored" in __del__
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)


@pytest.mark.parametrize(
    "moment",
    [
        "initbench.report.sweep:classify",
        "initbench.report.figures.layers:save",
        "initbench.report.sweep:cell_tables",
        "initbench.report.sweep:write_page",
        "initbench.core.folders:write_meta",
    ],
)
@pytest.mark.parametrize("how", ["signal", "in a finalizer"])
def test_ctrl_c_during_report_is_one_line_exit_130_and_the_old_report_stays(
    sweep_copy, monkeypatch, capsys, moment, how
):
    import importlib

    module, _, name = moment.partition(":")
    before = snapshot(sweep_copy)
    _interrupt_at(monkeypatch, importlib.import_module(module), name, how)
    code, err, out = main(monkeypatch, capsys, "report", str(sweep_copy))
    assert code == 130 and err == ["initbench: interrupted"], err
    assert "report in" not in out
    if how == "signal":
        assert snapshot(sweep_copy) == before
    else:  # the interrupt could not stop the work: the new report is whole
        assert folders.read_meta(sweep_copy / "report") == {"kind": "report", "of": "sweep"}
        assert set(snapshot(sweep_copy)) == set(before)
    assert not [p for p in sweep_copy.iterdir() if p.name.startswith(".")]


def test_ctrl_c_during_the_swap_waits_for_it(sweep_copy, monkeypatch, capsys):
    _interrupt_at(monkeypatch, folders, "_swap", "signal")
    code, err, _ = main(monkeypatch, capsys, "report", str(sweep_copy))
    assert code == 130 and err == ["initbench: interrupted"], err
    assert folders.read_meta(sweep_copy / "report") == {"kind": "report", "of": "sweep"}
    assert not [p for p in sweep_copy.iterdir() if p.name.startswith(".")]


def test_ctrl_c_of_a_real_report_process_leaves_the_old_report(sweep_copy):
    before = snapshot(sweep_copy)
    env = os.environ | {"INITBENCH_DEBUG": ""}
    for delay in (0.3, 1.5, 3.0):
        process = subprocess.Popen(
            [sys.executable, "-m", "initbench.cli", "report", str(sweep_copy)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
        if process.returncode == 0:  # it finished first: the new report is whole
            assert out.startswith("report in") and not err
            before = snapshot(sweep_copy)
            continue
        assert process.returncode == 130 and err.splitlines() == ["initbench: interrupted"], (
            delay,
            process.returncode,
            out,
            err,
        )
        assert snapshot(sweep_copy) == before


def test_ctrl_c_inside_exec_code_still_exits_130(tmp_path):
    """CPython remembers a Ctrl-C that interrupted exec'd code even when it is caught; under
    ``python -m`` that turned exit 130 into death by SIGINT."""
    (tmp_path / "interrupted_in_exec.py").write_text(
        "import initbench.cli as cli\n"
        "def interrupted(debug):\n"
        "    try:\n"
        "        exec('raise KeyboardInterrupt')\n"
        "    except KeyboardInterrupt:\n"
        "        cli._interrupted.set()\n"
        "    return 0\n"
        "cli._run = interrupted\n"
        "cli.main()\n"
    )
    env = os.environ | {"PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "interrupted_in_exec"], capture_output=True, text=True, env=env
    )
    assert (done.returncode, done.stderr) == (130, "initbench: interrupted\n")


def test_ctrl_c_while_compacting_keeps_every_finished_run(tmp_path, monkeypatch, capsys):
    from initbench.sweeps import store

    out = tmp_path / "s"
    calls = []
    real = store._fsync

    def fsync_then_interrupt(path):
        real(path)
        calls.append(path)
        if len(calls) == 2:  # layers compacted, curves written but not in place, the rest not
            raise KeyboardInterrupt

    monkeypatch.setattr(store, "_fsync", fsync_then_interrupt)
    code, err, _ = main(monkeypatch, capsys, "sweep", *SWEEP_ARGS, "--out", str(out))
    assert code == 130 and len(err) == 1 and err[0].startswith("initbench: interrupted;"), err
    assert len(initbench.load(out).cells) == 32 and not check_folder(out).damaged
    monkeypatch.undo()
    code, err, _ = main(monkeypatch, capsys, "sweep", *SWEEP_ARGS, "--out", str(out))
    assert code == 0, err
    results = initbench.load(out)
    assert len(results.cells) == 32 and not results.layers.duplicated(["run_id", "layer"]).any()
    assert not (out / "shards").exists()


# ---- failures that used to pass in silence ---------------------------------------------------


def test_a_sweep_whose_every_run_fails_exits_1_with_the_first_reason(tmp_path, monkeypatch, capsys):
    from initbench.sweeps import engine

    def broken(*args, **kwargs):
        raise RuntimeError("the kernel is broken")

    monkeypatch.setattr(engine, "_compute", broken)
    code, err, _ = main(monkeypatch, capsys, "sweep", *SWEEP_ARGS, "--out", str(tmp_path / "s"))
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("initbench: error: all 32 runs failed; the first: RuntimeError: the ")


def test_a_sweep_whose_some_runs_fail_says_how_many_and_retries_them(tmp_path, monkeypatch, capsys):
    from initbench.sweeps import engine

    real = engine._compute

    def relu_is_broken(todo, *args, **kwargs):
        if todo[0].cell.activation.id == "relu":
            raise RuntimeError("relu is broken")
        return real(todo, *args, **kwargs)

    monkeypatch.setattr(engine, "_compute", relu_is_broken)
    out = tmp_path / "s"
    code, err, stdout = main(monkeypatch, capsys, "sweep", *SWEEP_ARGS, "--out", str(out))
    assert code == 0 and stdout == f"results in {out}\n"
    assert err == [
        f"initbench: 16 of 32 runs in {out} failed (the first: RuntimeError: relu is broken); "
        "running the sweep again retries them"
    ]
    monkeypatch.setattr(engine, "_compute", real)
    code, err, _ = main(monkeypatch, capsys, "sweep", *SWEEP_ARGS, "--out", str(out))
    assert code == 0 and err == []
    assert set(initbench.load(out).cells["status"]) == {"ok"}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: initbench.Grid(depths=(0,)), "depths must be between 1 and"),
        (lambda: initbench.Grid(seeds=0), "seeds must be positive"),
        (lambda: initbench.Grid(schemes=("normal[std=-1]",)), "normal needs a std >= 0"),
        (lambda: initbench.Grid(schemes=("trunc_normal[std=0]",)), "trunc_normal needs a std > 0"),
        (lambda: initbench.Grid(schemes=("normal[std=inf]",)), "needs a finite std"),
        (lambda: initbench.Grid(activations=("swish2",)), "unknown activation"),
    ],
)
def test_a_grid_is_checked_where_it_is_made(make, message):
    with pytest.raises(UsageError, match=message):
        make()


def test_a_head_size_that_does_not_divide_the_width_is_refused():
    grid = initbench.Grid(archs=("transformer[head_dim=7]",), widths=(64,), depths=(2,))
    with pytest.raises(UsageError, match="heads of 7 units do not divide width 64"):
        grid.runs()
    small = initbench.Grid(archs=("transformer[head_dim=7]",), widths=(7, 5, 14), depths=(2,))
    arch = small.cells()[0].arch
    assert [arch.heads(w) for w in (5, 7, 14)] == [1, 1, 2]


def test_a_toml_string_where_a_list_belongs_is_refused(tmp_path, monkeypatch, capsys):
    config = tmp_path / "grid.toml"
    config.write_text('depths = "3"\n')
    code, err, _ = main(monkeypatch, capsys, "sweep", "--config", str(config), "--out", "x")
    assert code == 2 and err == [
        "initbench: error: depths must be a list, got '3' (write depths = [3])"
    ]


def test_version_is_the_package_version():
    from importlib.metadata import version

    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout == f"initbench {version('initbench')}\n"
    assert version("initbench") == initbench.__version__


def test_a_sweep_leaves_no_empty_folder(swept):
    assert sorted(p.name for p in swept.iterdir() if p.is_dir()) == ["report"]


def test_default_folder_names_have_no_stray_punctuation():
    from initbench.core.models import model_name

    assert model_name("resmlp[norm=layer]") == "resmlp-norm-layer"
    assert model_name("resmlp[norm=layer,alpha=0.5]") == "resmlp-norm-layer-alpha-0.5"
    assert model_name("path/to/nets.py:make") == "nets-make"
    assert model_name("torchvision:resnet18") == "resnet18"


def test_usage_errors_stay_one_line(tmp_path):
    assert_usage_error(run_cli("check", str(tmp_path / "missing")), "is not a folder")
