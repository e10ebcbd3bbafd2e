"""Every figure draws exactly the tidy data it saves, and that data is what the store holds.

For each figure kind: the values read back from the matplotlib artists equal the figure's
CSV, and the CSV equals an aggregation of the store written here independently. The store
has values far below 1 (a vanishing ReLU net), values of exactly 0 (float32 underflow of
normal[std=0.01]), and non-finite runs (constant weights of 2 on a 16-layer ReLU net).
"""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

import initbench
from initbench import Grid
from initbench.measure.statistics import drawn, layer_figures
from initbench.report import report
from initbench.report.figures import hists, layers, training
from initbench.report.figures.base import Context, choose_groups, read_data
from initbench.report.sweep import verdicts_of

SCHEMES = (
    "kaiming_normal[mode=fan_in,nonlinearity=matched]",
    "xavier_normal[gain=unit]",
    "normal[std=0.01]",
    "constant[val=2]",
)
GRID = Grid(
    schemes=SCHEMES,
    activations=("relu", "tanh"),
    depths=(4, 16),
    widths=(16,),
    seeds=2,
    batch_size=32,
    dataset="digits",
    train_steps=10,
    eval_every=5,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures") / "s"
    initbench.sweep(GRID, root, device="cpu", progress=False)
    report(root)
    results = initbench.load(root)
    verdicts, trained = verdicts_of(results)
    ctx = Context(
        results.cells, results.layers, results.curves, results.hists, verdicts, trained, 0.8
    )
    return root, results, ctx


def test_the_store_has_the_cases_the_figures_must_get_right(store):
    _, results, _ = store
    cells = results.cells.set_index("run_id")
    diverged = cells[cells["status"] == "diverged"]
    assert set(diverged["scheme_id"]) == {"constant[val=2]"} and set(diverged["depth"]) == {16}
    merged = results.layers.merge(results.cells[["run_id", "scheme_id"]], on="run_id")
    assert (merged.loc[merged["scheme_id"] == "normal[std=0.01]", "pre_var"] == 0).any()


def _axes(fig):
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def _lines(ax, prefix):
    return {
        line.get_gid().split("|", 1)[1]: line
        for line in ax.get_lines()
        if (line.get_gid() or "").startswith(prefix + "|")
    }


def _independent_layers(results, column, relative):
    """Per (activation, depth, scheme, layer): mean over the ok seeds of the finite log2
    ratios (or plain values), computed run by run."""
    cells = results.cells[results.cells["status"] == "ok"].set_index("run_id")
    out = {}
    for run_id, rows in results.layers.groupby("run_id"):
        if run_id not in cells.index:
            continue
        cell = cells.loc[run_id]
        values = rows.sort_values("layer")[column].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            if relative == "first":
                values = np.log2(values / values[0])
            elif relative == "last":
                values = np.log2(values / values[-1])
        for layer, value in enumerate(values, start=1):
            key = (cell["activation"], int(cell["depth"]), cell["scheme_id"], layer)
            out.setdefault(key, []).append(value)
    result = {}
    for key, values in out.items():
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            result[key] = float(np.mean(finite))
        elif any(v == -math.inf for v in values):
            result[key] = -math.inf
        else:
            result[key] = math.nan
    return result


def assert_text_is_legible(fig):
    """No text smaller than the figure's legend (at page width: 10 px; test_report)."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from initbench.report.figures.base import LEGEND_POINTS

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    assert sizes and min(sizes) >= LEGEND_POINTS, min(sizes)
    plt.close(fig)


def facet(ctx, activation):
    """The figure keys and verdict rows of one activation's network (one per activation)."""
    facets = {keys["activation"]: (keys, rows) for keys, rows in ctx.facets()}
    assert set(facets) == {"relu", "tanh"}
    return facets[activation]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("stat", layer_figures(), ids=lambda s: s.name)
def test_per_layer_figures_draw_their_data_and_the_data_is_the_store(store, stat, activation):
    root, results, ctx = store
    keys, rows = facet(ctx, activation)
    groups, _ = choose_groups(rows)
    table = layers.data(ctx, stat, keys, groups)
    assert set(table["activation"]) == {activation}
    saved = read_data(root / "report" / "figures", f"{stat.name}_mlp_w16_{activation}")
    pd.testing.assert_frame_equal(
        saved.drop(columns="members"),
        table.drop(columns="members").reset_index(drop=True),
        check_dtype=False,
    )
    measured = table[table["kind"] == "measured"]
    statistic = drawn(stat, activation)  # drawn at the layers it is computed at, no others
    for (depth, _), rows_ in measured.groupby(["depth", "scheme_id"]):
        computed = statistic.at(depth) if statistic.at else range(1, depth + 1)
        assert sorted(rows_["layer"]) == sorted(computed)
    if stat.name == "units":  # the statistic depends on the activation
        independent = {}
        for activation, column in (("relu", "dead_frac"), ("tanh", "sat_frac")):
            found = _independent_layers(results, column, None)
            independent |= {k: v for k, v in found.items() if k[0] == activation}
    else:
        independent = _independent_layers(results, drawn(stat, "relu").column, stat.relative)
    for row in measured.itertuples():
        expected = independent[(row.activation, row.depth, row.scheme_id, row.layer)]
        if not math.isfinite(expected):
            assert row.value == expected or (math.isnan(expected) and math.isnan(row.value))
        else:
            assert row.value == pytest.approx(expected, rel=1e-9, abs=1e-12)
    fig = layers.draw(ctx, stat, keys, table, groups)
    fig.canvas.draw()  # tick labels exist once drawn
    assert_text_is_legible(fig)
    axes = _axes(fig)
    zero_rows = 0
    for (activation, depth, scheme), rows_ in measured.groupby(
        ["activation", "depth", "scheme_id"]
    ):
        ax = axes[f"{activation}, depth {depth}"]
        line = _lines(ax, "measured")[scheme]
        finite = rows_[np.isfinite(rows_["value"])]
        np.testing.assert_array_equal(line.get_xdata(), finite["layer"].to_numpy())
        np.testing.assert_array_equal(line.get_ydata(), finite["value"].to_numpy())
        zeros = rows_[np.isneginf(rows_["value"])]
        if len(zeros):
            zero_rows += len(zeros)
            marks = [
                m
                for m in ax.get_lines()
                if m.get_gid() == "zero" and m.get_color() == line.get_color()
            ]
            assert sorted(np.concatenate([m.get_xdata() for m in marks])) == sorted(zeros["layer"])
    theory = table[table["kind"] == "theory"]
    for (activation, depth, scheme), rows_ in theory.groupby(["activation", "depth", "scheme_id"]):
        line = _lines(axes[f"{activation}, depth {depth}"], "theory")[scheme]
        np.testing.assert_allclose(line.get_ydata(), rows_["value"].to_numpy())
    if stat.name == "signal" and activation == "relu":
        # values far below 1 are drawn as they are (the old report drew them at 1)
        vanishing = measured[
            (measured["scheme_id"] == "xavier_normal[gain=unit]")
            & (measured["activation"] == "relu")
            & (measured["depth"] == 16)
        ]
        assert vanishing["value"].iloc[-1] < -10
        assert zero_rows > 0  # normal[std=0.01] underflows to exactly 0
        # the diverged runs are not drawn
        assert not (measured["scheme_id"] == "constant[val=2]").all()
        assert "constant[val=2]" not in set(
            measured.loc[
                (measured["activation"] == "relu") & (measured["depth"] == 16), "scheme_id"
            ]
        )


def test_histograms_draw_their_data_and_the_data_is_the_store(store):
    root, results, ctx = store
    for activation in ("relu", "tanh"):
        keys, rows = facet(ctx, activation)
        deepest = rows[
            (rows["activation"] == activation) & (rows["depth"] == 16) & (rows["note"] == "")
        ]
        groups = list(dict.fromkeys(deepest["group"]))
        table = hists.data(ctx, keys, activation, groups)
        saved = read_data(root / "report" / "figures", f"hist_mlp_w16_{activation}_d16")
        assert len(saved) == len(table)
        np.testing.assert_allclose(saved["value"], table["value"])
        # independent: each shown layer's stored counts, summed over seeds, as shares
        cells = results.cells[
            (results.cells["activation"] == activation)
            & (results.cells["depth"] == 16)
            & (results.cells["status"] == "ok")
        ]
        for (scheme, quantity, layer), shown in table.groupby(["scheme_id", "statistic", "layer"]):
            runs = cells.loc[cells["scheme_id"] == scheme, "run_id"]
            stored = results.hists[
                results.hists["run_id"].isin(runs)
                & (results.hists["quantity"] == quantity)
                & (results.hists["layer"] == layer)
            ]
            assert shown["value"].sum() == pytest.approx(1.0)
            total = stored["count"].sum()
            if quantity != "post" or activation == "relu":  # magnitude bins: fold the sign
                zero = stored.loc[(stored["lo"] <= 0) & (stored["hi"] >= 0), "count"].sum() / total
                assert shown.loc[shown["hi"] <= 1e-38, "value"].sum() == pytest.approx(zero)
                big = (
                    stored.loc[
                        stored["lo"].abs().clip(upper=stored["hi"].abs()) >= 1, "count"
                    ].sum()
                    / total
                )
                big_shown = shown.loc[shown["lo"] >= 1, "value"].sum()
                assert big_shown == pytest.approx(big)
            else:  # tanh outputs: 25 linear bins, the outer ones hold the saturated values
                edge = stored.loc[stored["hi"] <= -0.92, "count"].sum() / total
                assert shown.loc[shown["hi"] <= -0.92 + 1e-9, "value"].sum() == pytest.approx(edge)
        fig = hists.draw(ctx, table, groups, "t")
        fig.canvas.draw()
        assert_text_is_legible(fig)
        drawn = {}
        for ax in fig.axes:
            for line in ax.get_lines():
                if (line.get_gid() or "").startswith("hist|"):
                    drawn[line.get_gid()] = line
        for (scheme, quantity, layer), shown in table.groupby(["scheme_id", "statistic", "layer"]):
            line = drawn[f"hist|{scheme}|{quantity}|{layer}"]
            x, y = line.get_xdata(), line.get_ydata()
            share = y[::2] * (x[1::2] - x[::2])  # each drawn bin: density times its width
            linear = quantity == "post" and activation == "tanh"
            regular = shown if linear else shown[(shown["lo"] >= 1e-8) & (shown["hi"] <= 1e8)]
            np.testing.assert_allclose(share, regular["value"].to_numpy(), atol=1e-12)
        if activation == "relu":  # half of a ReLU's outputs are exactly 0: a bar of their own
            bars = [
                p
                for ax in fig.axes
                for p in ax.patches
                if (p.get_gid() or "").startswith("special|")
            ]
            assert bars


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_training_figures_draw_their_data_and_the_data_is_the_store(store, activation):
    root, results, ctx = store
    keys, rows = facet(ctx, activation)
    groups, _ = choose_groups(rows)
    cells = results.cells[results.cells["status"].isin(["ok", "diverged"])]
    merged = results.curves.merge(
        cells[["run_id", "activation", "depth", "scheme_id"]], on="run_id"
    )
    for name, (column, _, _) in training.CURVES.items():
        table = training.curve_data(ctx, column, keys, groups)
        saved = read_data(root / "report" / "figures", f"{name}_mlp_w16_{activation}")
        np.testing.assert_allclose(saved["value"], table["value"])
        for row in table.itertuples():
            runs = merged[
                (merged["activation"] == row.activation)
                & (merged["depth"] == row.depth)
                & (merged["scheme_id"] == row.scheme_id)
                & (merged["step"] == row.layer)
            ]
            assert row.value == pytest.approx(runs[column].mean(), nan_ok=True)
            assert row.lo == pytest.approx(runs[column].min(), nan_ok=True)
        fig = training.draw_curves(ctx, name, keys, table, groups)
        fig.canvas.draw()
        assert_text_is_legible(fig)
        axes = _axes(fig)
        for (activation, depth, scheme), rows_ in table.groupby(
            ["activation", "depth", "scheme_id"]
        ):
            line = _lines(axes[f"{activation}, depth {depth}"], "measured")[scheme]
            finite = rows_[np.isfinite(rows_["value"])]
            np.testing.assert_array_equal(line.get_ydata(), finite["value"].to_numpy())
    table = training.steps_data(ctx, keys, groups)
    for row in table.itertuples():
        runs = cells[
            (cells["activation"] == row.activation)
            & (cells["depth"] == row.depth)
            & (cells["scheme_id"] == row.scheme_id)
        ]
        assert row.value == np.median(runs["steps_to_target"].fillna(math.inf))
    fig = training.draw_steps(ctx, keys, table, groups, budget=10)
    bars = {
        p.get_gid(): p
        for ax in fig.axes
        for p in ax.patches
        if (p.get_gid() or "").startswith("bar|")
    }
    for row in table.itertuples():
        bar = bars[f"bar|{row.scheme_id}|{row.activation}|{row.depth}"]
        expected = row.value if math.isfinite(row.value) else 10 * 1.05  # never: to the budget
        assert bar.get_width() == pytest.approx(expected)


def test_every_recommended_group_is_drawn_however_many_there_are():
    from initbench.report.figures.base import MAX_GROUPS

    count = MAX_GROUPS + 3
    rows = pd.DataFrame(
        {
            "group": [f"g{i}" for i in range(count + 2)],
            "note": "",
            "recommended": [True] * count + [False, False],
            "signal": "stable",
            "signal_change": np.linspace(0, 1, count + 2),
        }
    )
    drawn_groups, folded = choose_groups(rows)
    assert drawn_groups == [f"g{i}" for i in range(count)]
    assert folded == [f"g{count}", f"g{count + 1}"]
    from initbench.report.figures.base import _palette

    assert len(set(_palette(len(drawn_groups)))) == len(drawn_groups)  # a colour each


def test_histogram_tick_labels_do_not_print_over_each_other():
    """The bars of exact zeros and of vanished values (below 1e-8) get labels left of the
    decades; a decade's label near theirs goes, at a panel's size (2.9 in)."""
    import matplotlib.pyplot as plt

    from initbench.report.figures.hists import _log_ticks

    column = pd.DataFrame(
        {"lo": [-1e-38, 1e-30, 0.1], "hi": [1e-38, 1e-9, 1.0], "value": [0.2, 0.3, 0.5]}
    )
    for left in (-8.0, -7.5, -6.0):
        fig, ax = plt.subplots(figsize=(2.9, 1.6))
        _log_ticks(ax, column, left, 2.0)
        fig.subplots_adjust(left=0, right=1)
        fig.canvas.draw()
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert {"0", "<1e-8"} <= {t.get_text() for t in labels}
        boxes = sorted((t.get_window_extent() for t in labels), key=lambda box: box.x0)
        for a, b in itertools.pairwise(boxes):
            assert a.x1 <= b.x0, (left, [t.get_text() for t in labels])
        plt.close(fig)
