import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import initbench
from initbench import Grid
from initbench.core.errors import UsageError
from initbench.measure import histograms
from initbench.sweeps import engine
from initbench.sweeps.executors import local
from initbench.sweeps.schema import CELL_COLUMNS, HIST_COLUMNS, LAYER_COLUMNS, SCHEMA_VERSION
from tests.cli import run_cli

SMALL = Grid(
    schemes=("xavier_normal", "kaiming_normal[mode=fan_in,nonlinearity=matched]", "dirac"),
    activations=("tanh", "relu"),
    depths=(2, 3),
    widths=(16,),
    seeds=2,
    batch_size=32,
)


def test_sweep_writes_the_documented_schema(tmp_path):
    out = initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False)
    results = initbench.load(out)
    runs = SMALL.runs()
    assert len(results.cells) == len(runs) == 2 * 4 * 2 * 2
    assert list(results.cells.columns) == list(CELL_COLUMNS)
    assert list(results.layers.columns) == LAYER_COLUMNS
    assert list(results.hists.columns) == HIST_COLUMNS
    assert results.cells["run_id"].is_unique
    assert (results.cells["status"] == "skipped").sum() == 2 * 2 * 2  # dirac on an mlp
    ok = results.cells[results.cells["status"] == "ok"]
    assert len(results.layers) == (ok["depth"]).sum()
    # histograms at the layers the report draws, up to five, first to last
    hist_layers = results.hists.groupby("run_id")["layer"].unique().map(sorted)
    depths = ok.set_index("run_id")["depth"]
    assert set(hist_layers.index) == set(depths.index)
    for run_id, layers in hist_layers.items():
        assert layers == histograms.layers(depths[run_id])
    # the file: one row per run, histogram layer and quantity, each of every sampled value
    stored = pq.read_table(out / "hists.parquet").to_pandas()
    assert len(stored) == sum(len(histograms.layers(d)) for d in depths) * 3
    assert stored["count"].map(sum).eq(SMALL.batch_size * 16).all()  # 32 x 16 < SAMPLE
    assert (stored["lo"].map(len) == stored["count"].map(len)).all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["grid"] == SMALL.to_dict()
    assert {"torch", "device", "started", "finished", "git_commit"} <= set(meta)
    assert not list((out / "shards").glob("*"))  # compacted
    docs = (Path(__file__).parents[1] / "docs" / "results.md").read_text()
    for column in [*CELL_COLUMNS, *LAYER_COLUMNS, *HIST_COLUMNS]:
        assert f"`{column}`" in docs, f"docs/results.md does not document {column}"


def test_a_schema_4_sweep_is_upgraded_and_resumed_and_an_older_one_refused(tmp_path):
    """A folder of schema 4 (histograms one row per bin) gets its histograms grouped into
    lists, and its sweep goes on without recomputing; an older schema is refused."""
    out = initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False)
    before = initbench.load(out)
    before.hists.to_parquet(out / "hists.parquet", index=False)  # as schema 4 stored it
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps(meta | {"schema_version": 4}))
    assert len(initbench.load(out).hists) == len(before.hists)  # read as it is
    initbench.sweep(SMALL, out, device="cpu", progress=False)
    after = initbench.load(out)
    assert after.meta["schema_version"] == SCHEMA_VERSION
    pd.testing.assert_frame_equal(after.hists, before.hists)
    pd.testing.assert_frame_equal(after.cells, before.cells)  # nothing recomputed
    assert (
        len(pq.read_table(out / "hists.parquet"))
        == before.hists.groupby(["run_id", "layer", "quantity"]).ngroups
    )
    (out / "meta.json").write_text(json.dumps(meta | {"schema_version": 3}))
    with pytest.raises(UsageError, match=r"older initbench \(results schema 3"):
        initbench.sweep(SMALL, out, device="cpu", progress=False)


def test_hist_rows_read_back_one_row_per_bin_in_order():
    """The lists of every run, layer and quantity, read back, are the non-empty bins in
    order; a layer whose counts are all zero has no rows."""
    from types import SimpleNamespace

    from initbench.core.activations import get_activation
    from initbench.sweeps.store import one_row_per_bin

    counts = {
        "pre": np.arange(2 * 2 * 68).reshape(2, 2, 68) % 3,
        "post": np.zeros((2, 2, 100), dtype=np.int64),
        "grad_h": np.eye(2, 68, dtype=np.int64)[None].repeat(2, 0),
    }
    result = SimpleNamespace(hists=counts, hist_layers=[1, 4])
    cell = SimpleNamespace(activation=get_activation("tanh"))
    rows = engine._hist_rows(["a", "b"], result, cell)
    assert len(rows) == 3 * 2 * 2
    table = pa.Table.from_pandas(rows, preserve_index=False)
    read = one_row_per_bin(pq.read_table(_parquet(table)))
    expected = []
    for quantity, c in counts.items():
        lo, hi = histograms.bin_ranges(cell.activation.bounds if quantity == "post" else None)
        for r, run_id in enumerate("ab"):
            for i, layer in enumerate([1, 4]):
                for b in np.flatnonzero(c[r, i]):
                    expected.append((run_id, layer, quantity, lo[b], hi[b], c[r, i, b]))
    expected = pd.DataFrame(expected, columns=HIST_COLUMNS)
    pd.testing.assert_frame_equal(read, expected, check_dtype=False)


def _parquet(table):
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return pa.BufferReader(sink.getvalue())


def test_interrupted_sweep_resumes_without_recomputing(tmp_path, monkeypatch):
    calls = []
    real = local.compute_chunk

    def flaky(chunk, *args):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(chunk, *args)

    monkeypatch.setattr(local, "compute_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False)
    partial = initbench.load(tmp_path / "s").cells
    done = sum(calls[:2])
    assert len(partial) == done
    calls.clear()
    initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False)
    assert sum(calls) == len(SMALL.runs()) - done
    full = initbench.load(tmp_path / "s")
    assert full.cells["run_id"].is_unique and len(full.cells) == len(SMALL.runs())
    calls.clear()
    initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False)
    assert calls == []  # nothing left to compute


def test_resume_result_equals_uninterrupted(tmp_path, monkeypatch):
    initbench.sweep(SMALL, tmp_path / "a", device="cpu", progress=False)
    real, calls = local.compute_chunk, []

    def stop_once(chunk, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(chunk, *args)

    monkeypatch.setattr(local, "compute_chunk", stop_once)
    with pytest.raises(KeyboardInterrupt):
        initbench.sweep(SMALL, tmp_path / "b", device="cpu", progress=False)
    initbench.sweep(SMALL, tmp_path / "b", device="cpu", progress=False)
    key = ["run_id"]
    cols = ["run_id", "status", "var_ratio", "grad_ratio"]
    a = initbench.load(tmp_path / "a").cells[cols].sort_values(key).reset_index(drop=True)
    b = initbench.load(tmp_path / "b").cells[cols].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_failed_runs_are_recorded_and_retried(tmp_path, monkeypatch):
    real = engine._compute

    def broken(runs, *args):
        if runs[0].cell.activation.name == "tanh":
            raise RuntimeError("boom")
        return real(runs, *args)

    monkeypatch.setattr(engine, "_compute", broken)
    initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False)
    cells = initbench.load(tmp_path / "s").cells
    failed = cells[cells["status"] == "failed"]
    assert len(failed) == 3 * 2 * 2 and set(failed["reason"]) == {"RuntimeError: boom"}
    monkeypatch.setattr(engine, "_compute", real)
    initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False)
    cells = initbench.load(tmp_path / "s").cells
    assert "failed" not in set(cells["status"]) and cells["run_id"].is_unique


def test_out_folder_with_another_grid_is_refused(tmp_path):
    initbench.sweep(SMALL, tmp_path / "s", device="cpu", progress=False)
    other = Grid.from_dict({"seeds": 3}, SMALL)
    with pytest.raises(UsageError, match=r"different grid.*seeds"):
        initbench.sweep(other, tmp_path / "s", device="cpu", progress=False)


def test_toml_config_round_trip(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text('schemes = ["xavier*"]\ndepths = [3, 7]\nseeds = 4\ngains = ["unit", 2.0]\n')
    grid = Grid.from_toml(config)
    assert grid.depths == (3, 7) and grid.seeds == 4 and grid.gains == ("unit", "2.0")
    assert Grid.from_dict(grid.to_dict()) == grid


def test_a_derived_grid_has_its_own_cells():
    base = Grid(schemes=("zeros",), activations=("relu",), depths=(2,), widths=(8,), seeds=1)
    assert [c.id for c in base.cells()] == ["zeros|relu|mlp|d2|w8"]
    derived = Grid.from_dict({"depths": [3, 4], "widths": [16]}, base)
    assert [c.id for c in derived.cells()] == ["zeros|relu|mlp|d3|w16", "zeros|relu|mlp|d4|w16"]
    assert [c.id for c in base.cells()] == ["zeros|relu|mlp|d2|w8"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--schemes", "nope*"], "no scheme matches 'nope*'"),
        (["--activations", "swish"], "unknown activation 'swish'"),
        (["--archs", "rnn"], "unknown arch 'rnn'"),
        (["--schemes", ""], "schemes is empty"),
        (["--depths", "0"], "depths must be between 1"),
        (["--widths", "-4"], "widths must be between 1"),
        (["--seeds", "0"], "seeds must be positive"),
        (["--batch-size", "0"], "batch_size must be positive"),
        (["--depths", "two"], "depths must be an integer"),
        (["--config", "missing.toml"], "config file 'missing.toml' not found"),
        (["--config", "bad.toml"], "is not valid TOML"),
        (["--config", "wrongkey.toml"], "unknown grid key 'depth'"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--device", "cuda:7"], "device 'cuda:7'"),
        (["--train-steps", "5"], "training needs a dataset"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--out", "afile"], "is a file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "bad.toml").write_text("depths = [1, 2\n")
    (tmp_path / "wrongkey.toml").write_text("depth = 3\n")
    (tmp_path / "afile").write_text("x")
    result = run_cli(
        "sweep", "--no-progress", "--depths", "2", "--widths", "8", *args, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_sweep_and_list(tmp_path):
    result = run_cli(
        "sweep",
        "--schemes",
        "orthogonal,normal[std=0.01]",
        "--depths",
        "2",
        "--widths",
        "8",
        "--seeds",
        "1",
        "--out",
        str(tmp_path / "s"),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    cells = pd.read_parquet(tmp_path / "s" / "cells.parquet")
    assert sorted(cells["scheme_id"].unique()) == [
        "normal[std=0.01]",
        "orthogonal[gain=matched]",
        "orthogonal[gain=unit]",
    ]
    listing = json.loads(run_cli("list", "presets", "--json").stdout)
    assert {p["name"] for p in listing} >= {"quick", "default", "full"}
    schemes = json.loads(run_cli("list", "schemes", "--json").stdout)
    assert (
        "xavier_normal[gain=matched]"
        in schemes[[s["name"] for s in schemes].index("xavier_normal")]["variants"]
    )
