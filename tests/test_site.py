"""A published site: its aggregated store against the raw runs, its index against that
store, presets with parts, and the published atlas."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import initbench
from initbench.measure.statistics import STATISTICS
from initbench.report import publish, report
from initbench.report.site import LAYER_BITS, keep_bits
from initbench.report.sweep import verdicts_of
from initbench.sweeps.presets import PRESETS, Preset
from tests.cli import run_cli

ROOT = Path(__file__).parents[1]
ATLAS = ROOT / "results" / "atlas"
KEYS = ["activation", "arch", "depth", "width", "bias_var", "scheme_id"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    grid = initbench.Grid(
        schemes=("xavier_normal", "normal[std=0.01]", "eye"),
        activations=("tanh", "relu"),
        depths=(3, 5),
        widths=(12,),
        seeds=3,
        batch_size=32,
    )
    initbench.sweep(grid, root / "probe", device="cpu", progress=False)
    trained = initbench.Grid.from_dict(
        {"depths": [3], "dataset": "digits", "train_steps": 20, "eval_every": 10}, grid
    )
    initbench.sweep(trained, root / "trained", device="cpu", progress=False)
    publish([root / "probe", root / "trained"], root / "out")
    return root


def test_store_means_and_intervals_are_those_of_the_runs(site):
    raw = initbench.load(site / "probe")
    stored = initbench.load(site / "out")
    assert stored.kind == "site"
    layers = stored.layers[stored.layers["sweep"] == "probe"].set_index([*KEYS, "layer"])
    ok = raw.cells[raw.cells["status"] == "ok"].set_index("run_id")
    checked = 0
    for (scheme, activation, depth), runs in ok.groupby(["scheme_id", "activation", "depth"]):
        values = np.stack(
            [
                raw.layers[raw.layers["run_id"] == r].sort_values("layer")["pre_var"]
                for r in runs.index
            ]
        )  # (seeds, layers)
        n = len(values)
        mean = values.mean(0)
        half = stats.t.ppf(0.975, n - 1) * values.std(0, ddof=1) / math.sqrt(n)
        for layer in range(depth):
            row = layers.loc[(activation, "mlp", depth, 12, 0.0, scheme, layer + 1)]
            kept = 2.0**-LAYER_BITS  # the site keeps 12 mantissa bits
            np.testing.assert_allclose(row["pre_var_mean"], mean[layer], rtol=kept)
            np.testing.assert_allclose(row["pre_var_lo"], mean[layer] - half[layer], rtol=kept)
            np.testing.assert_allclose(row["pre_var_hi"], mean[layer] + half[layer], rtol=kept)
            checked += 1
    assert checked == len(layers) == 4 * 2 * (3 + 5)  # 4 scheme ids x 2 activations
    assert {f"{s}_{e}" for s in STATISTICS for e in ("mean", "lo", "hi")} <= set(layers.columns)


def test_store_verdicts_are_the_report_verdicts(site):
    stored = initbench.load(site / "out").cells
    for name in ("probe", "trained"):
        verdicts, _ = verdicts_of(initbench.load(site / name))
        mine = stored[stored["sweep"] == name].set_index(KEYS).sort_index()
        theirs = verdicts.set_index(KEYS).sort_index()
        for column in ("signal", "gradients", "training", "recommended", "note", "group"):
            assert (mine[column].fillna("") == theirs[column].fillna("")).all(), column
    acc = stored.loc[stored["sweep"] == "trained", ["final_train_acc_mean", "final_test_acc"]]
    assert acc.notna().all().all()


def test_index_is_drawn_from_the_store(site):
    text = (site / "out" / "index.html").read_text()
    cells = initbench.load(site / "out").cells
    for name in ("probe", "trained"):
        table = text.split(f'id="matrix-{name}"')[1].split("</table>")[0]
        recommended = cells[(cells["sweep"] == name) & cells["recommended"]]
        assert table.count('<td class="rec">★') == len(recommended)
        rows = recommended.groupby(KEYS[:-1]).size()  # each row's answer: its ★ schemes
        assert table.count('<span class="use">★') == len(rows)
        assert table.count("<tr data-") == len(cells[cells["sweep"] == name].groupby(KEYS[:-1]))
    # re-rendered from the store alone: the same page
    (site / "out" / "index.html").unlink()
    report(site / "out")
    again = (site / "out" / "index.html").read_text()
    assert again == text


def test_publishing_the_same_results_again_writes_the_same_bytes(site, tmp_path):
    publish([site / "probe", site / "trained"], tmp_path / "again")
    first = {p.relative_to(site / "out"): p for p in (site / "out").rglob("*") if p.is_file()}
    again = {p.relative_to(tmp_path / "again"): p for p in (tmp_path / "again").rglob("*")}
    again = {k: p for k, p in again.items() if p.is_file()}
    assert set(first) == set(again) and len(first) > 20
    differ = [str(k) for k in first if first[k].read_bytes() != again[k].read_bytes()]
    assert not differ
    suffixes = {p.suffix for p in first.values()}
    assert ".svg" not in suffixes and ".png" in suffixes


def test_a_preset_with_parts_sweeps_each_part_into_its_folder(tmp_path, monkeypatch):
    part = initbench.Grid(
        schemes=("xavier_normal[gain=unit]",),
        activations=("tanh",),
        depths=(2,),
        widths=(8,),
        seeds=1,
    )
    tiny = Preset(
        "tiny", "a tiny preset", {"a": part, "b": part.__class__.from_dict({"depths": [3]}, part)}
    )
    monkeypatch.setitem(PRESETS, "tiny", tiny)
    from typer.testing import CliRunner

    from initbench.cli import app

    done = CliRunner().invoke(app, ["sweep", "--preset", "tiny", "--out", str(tmp_path / "t")])
    assert done.exit_code == 0, done.output
    assert "2 runs in 2 parts" in done.output
    for name in ("a", "b"):
        meta = json.loads((tmp_path / "t" / name / "meta.json").read_text())
        assert (meta["preset"], meta["part"]) == ("tiny", name) and meta["seconds"] > 0
    assert initbench.preset("atlas") is PRESETS["atlas"]


def test_the_api_sweeps_a_preset_with_parts_like_the_command(tmp_path, monkeypatch, capsys):
    part = initbench.Grid(
        schemes=("xavier_normal[gain=unit]",),
        activations=("tanh",),
        depths=(2,),
        widths=(8,),
        seeds=1,
    )
    deeper = initbench.Grid.from_dict({"depths": [3]}, part)
    monkeypatch.setitem(PRESETS, "tiny", Preset("tiny", "two parts", {"a": part, "b": deeper}))
    out = initbench.sweep(initbench.preset("tiny"), tmp_path / "t", device="cpu")
    assert "2 runs in 2 parts" in capsys.readouterr().out
    for name in ("a", "b"):
        meta = json.loads((out / name / "meta.json").read_text())
        assert (meta["preset"], meta["part"]) == ("tiny", name)


def test_the_api_refuses_a_large_grid_without_yes(tmp_path):
    big = initbench.Grid(depths=tuple(range(2, 100)), widths=(1024, 2048), seeds=20)
    with pytest.raises(initbench.core.errors.UsageError, match="pass --yes"):
        initbench.sweep(big, tmp_path / "big", device="cpu")
    assert not (tmp_path / "big").exists()


def test_the_atlas_part_is_the_atlas_on_a_smaller_grid():
    whole, part = PRESETS["atlas"], PRESETS["atlas-cpu"]
    assert part.whole == "atlas"
    for name, grid in part.parts.items():
        full = whole.parts[name].to_dict()
        mine = grid.to_dict()
        differ = {k for k in full if full[k] != mine[k]}
        assert differ <= {"depths", "widths"}
        assert set(mine["depths"]) <= set(full["depths"]) and set(mine["widths"]) <= set(
            full["widths"]
        )


@pytest.mark.skipif(not (ATLAS / "meta.json").exists(), reason="results/atlas not published")
def test_published_atlas_is_small_and_loads():
    atlas = initbench.load(ATLAS)
    assert atlas.kind == "site"
    files = [p for p in ATLAS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20  # du -sh results/atlas
    figures = [p for p in files if p.parent.name == "figures"]
    assert figures and all(p.suffix == ".png" or p.name == "data.csv.gz" for p in figures)
    entries = [e for e in atlas.meta["entries"] if e["kind"] == "sweep"]
    assert {e["preset"] for e in entries} == {"atlas-cpu"}
    assert {e["part"] for e in entries} == set(PRESETS["atlas-cpu"].parts)
    for entry in entries:
        grid = PRESETS["atlas-cpu"].parts[entry["part"]]
        assert entry["runs"] == len(grid.runs())
        assert entry["seconds"] > 0
    text = (ATLAS / "index.html").read_text()
    assert "initbench sweep --preset atlas --out work/atlas --device cuda" in text


def test_publish_cli_writes_a_site_that_loads(site, tmp_path):
    out = tmp_path / "cli-site"
    done = run_cli("publish", str(site / "probe"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert len(initbench.load(out).cells) == len(verdicts_of(initbench.load(site / "probe"))[0])
    shutil.rmtree(out)


def test_sites_layers_are_float32_and_keyed(site):
    layers = pd.read_parquet(site / "out" / "layers.parquet")
    assert (
        layers.dtypes[[c for c in layers.columns if c.endswith(("_mean", "_lo", "_hi"))]]
        == "float32"
    ).all()
    assert not layers.duplicated(["sweep", *KEYS, "layer"]).any()
    numbers = layers.select_dtypes("float32").to_numpy().ravel()
    low = numbers[np.isfinite(numbers)].view(np.uint32) & np.uint32((1 << 23 - LAYER_BITS) - 1)
    assert numbers.size and not low.any()  # only the kept mantissa bits


def test_keeping_bits_rounds_to_nearest():
    frame = pd.DataFrame({"x": np.array([1 + 2**-13, 1 + 2**-11 + 2**-14, -3.0, np.inf], "f4")})
    kept = keep_bits(frame, bits=12)["x"].to_numpy()
    assert list(kept) == [1 + 2**-12, 1 + 2**-11, -3.0, np.inf]


def test_a_cells_command_recomputes_its_numbers(tmp_path, monkeypatch):
    """The command a matrix row carries sweeps that one cell again (a preset's part, or a
    grid of options) and gets the numbers the sweep stored for it."""
    import shlex

    from typer.testing import CliRunner

    from initbench.cli import app
    from initbench.report.tables import matrix

    part = initbench.Grid(
        schemes=("xavier_normal", "eye"),
        activations=("tanh", "relu"),
        depths=(2, 4),
        widths=(8,),
        seeds=2,
        batch_size=16,
    )
    monkeypatch.setitem(
        PRESETS, "tiny", Preset("tiny", "two parts", {"a": part, "b": part.__class__()})
    )
    monkeypatch.chdir(tmp_path)
    custom = initbench.Grid.from_dict({"lr": 0.5, "input_corr": 0.25, "histograms": False}, part)
    runner = CliRunner()
    for name, sweep, grid in (
        ("part", ["--preset", "tiny", "--part", "a"], part),
        ("custom", custom.options(), custom),
    ):
        done = runner.invoke(app, ["sweep", *sweep, "--out", name, "--device", "cpu"])
        assert done.exit_code == 0, done.output
        swept = initbench.load(tmp_path / name)
        assert swept.meta["grid"] == grid.to_dict()
        _, rows = matrix(*verdicts_of(swept), swept.meta["grid"])
        row = next(r for r in rows if r["keys"]["activation"] == "relu" and r["keys"]["depth"] == 4)
        command = shlex.split(row["command"])
        if name == "part":
            assert command[2:6] == ["--preset", "tiny", "--part", "a"]
        shutil.rmtree(tmp_path / "cell", ignore_errors=True)
        done = runner.invoke(app, [*command[1:], "--device", "cpu"])
        assert done.exit_code == 0, done.output
        again = initbench.load(tmp_path / "cell")
        want = swept.cells[(swept.cells["activation"] == "relu") & (swept.cells["depth"] == 4)]
        assert sorted(again.cells["run_id"]) == sorted(want["run_id"])
        ids = sorted(want["run_id"])
        pd.testing.assert_frame_equal(
            again.cells.set_index("run_id").loc[ids, ["var_ratio", "grad_ratio"]],
            want.set_index("run_id").loc[ids, ["var_ratio", "grad_ratio"]],
        )
        layers = swept.layers[swept.layers["run_id"].isin(ids)]
        pd.testing.assert_frame_equal(
            again.layers.sort_values(["run_id", "layer"]).reset_index(drop=True),
            layers.sort_values(["run_id", "layer"]).reset_index(drop=True),
        )


def test_part_needs_a_preset_with_that_part():
    from tests.cli import assert_usage_error

    assert_usage_error(run_cli("sweep", "--preset", "atlas", "--part", "nope"), "no part 'nope'")
    assert_usage_error(run_cli("sweep", "--preset", "full", "--part", "mlp"), "--part needs")


def test_every_grid_field_is_an_option_of_the_sweep_command():
    """So that every sweep's cells have a command that recomputes them."""
    import inspect

    from initbench.cli import sweep

    grid = initbench.Grid(depths=(3,), lrs=(0.1, 0.01), eval_every=7, histograms=False)
    assert set(grid.to_dict()) <= set(inspect.signature(sweep).parameters)
    want = ["--depths", "3", "--no-histograms", "--lrs", "0.1,0.01", "--eval-every", "7"]
    assert grid.options() == want
