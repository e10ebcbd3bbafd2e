"""initbench coord: how every module's output scales with width (mup's coord check).

Slopes match theory where it is exact (fan-in scaled weights keep every Linear output
width-stable; a fixed std makes the first layer's variance grow like width and the second's
like width^2), one slope and its interval equal numpy's and scipy's fits, a user factory's
records equal a hand-written training loop, bad input through the command line is one line,
exit 2 and no folder, and the report page draws exactly its CSV, an aggregation of
coords.parquet.
"""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

import initbench
from initbench.core.rng import Stream, run_generator
from initbench.report import coord as coord_page
from initbench.report import report
from initbench.report.figures.base import read_data
from initbench.studies.coord import COLUMNS, SLOPE_COLUMNS, coord_check, fit_slopes, width_verdict
from tests.cli import assert_usage_error, run_all
from tests.test_report import _open, browser  # noqa: F401  (browser: a fixture)

KAIMING = "kaiming_normal[mode=fan_in,nonlinearity=matched]"
WIDTHS = [32, 64, 128, 256]
SEEDS = 32  # the readout's 10 outputs make its variance noisy: many seeds pin its slope
NETS = """
from torch import nn


def make(width, depth=2, classes=3):
    layers = [nn.Linear(width, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


def tokens(width):
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 2))


def fixed(depth=2):
    return nn.Linear(4, 4)
"""


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "nets.py"
    path.write_text(NETS)
    return path


def _step0_linear(scheme):
    records, slopes = coord_check(
        "mlp", WIDTHS, steps=0, seeds=SEEDS, scheme=scheme, depth=2, batch=16
    )
    rows = slopes[(slopes["kind"] == "Linear") & (slopes["statistic"] == "out_var")]
    return records, rows.reset_index(drop=True)


def test_fan_in_scaled_weights_keep_every_linear_output_width_stable():
    records, linear = _step0_linear(KAIMING)
    assert list(records.columns) == COLUMNS and set(records["step"]) == {0}
    assert list(linear["module"]) == ["0", "2", "4"]  # two hidden layers and the readout
    assert (linear["points"] == len(WIDTHS) * SEEDS).all()
    for row in linear.itertuples():
        assert abs(row.slope) + row.ci <= 0.1, row  # the whole interval within 0.1 of 0
        assert row.verdict == "width-stable"


def test_a_fixed_std_grows_the_variance_like_width_then_width_squared():
    records, linear = _step0_linear("normal[std=0.05]")
    first, second = linear.iloc[0], linear.iloc[1]
    assert abs(first["slope"] - 1) + first["ci"] <= 0.1, first  # Var = 0.05^2 * width
    assert abs(second["slope"] - 2) + second["ci"] <= 0.15, second  # and * width / 2 again
    assert first["verdict"] == f"grows like width^{first['slope']:.2g}"
    rows = records[records["module"] == "0"]
    ratio = rows["out_var"] / (0.05**2 * rows["width"])  # unit-variance inputs of width dims
    assert ratio.mean() == pytest.approx(1, abs=0.02)


def test_one_slope_and_its_interval_against_numpy_and_scipy():
    records, slopes = coord_check("mlp", [16, 32, 64], steps=1, seeds=3, depth=2, batch=8)
    assert list(slopes.columns) == SLOPE_COLUMNS
    rows = records[(records["module"] == "2") & (records["step"] == 1)]
    x, y = np.log(rows["width"]), np.log(rows["out_abs_mean"])
    fit = slopes.set_index(["module", "step", "statistic"]).loc[("2", 1, "out_abs_mean")]
    assert fit["slope"] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-9)
    line = stats.linregress(x, y)
    assert fit["ci"] == pytest.approx(stats.t.ppf(0.975, len(rows) - 2) * line.stderr, rel=1e-9)
    assert fit["points"] == 9 and fit["verdict"] == width_verdict(fit["slope"])
    # points that are 0, NaN or inf are skipped and counted out
    broken = rows.copy()
    broken.iloc[:3, broken.columns.get_loc("out_abs_mean")] = [0.0, math.nan, math.inf]
    refit = fit_slopes(broken).set_index("statistic").loc["out_abs_mean"]
    assert refit["points"] == 6
    assert refit["slope"] == pytest.approx(np.polyfit(x[3:], y[3:], 1)[0], rel=1e-9)
    lonely = fit_slopes(rows[rows["width"] == 16]).set_index("statistic").loc["out_var"]
    assert math.isnan(lonely["slope"]) and lonely["verdict"].startswith("no fit")


def test_the_verdict_rule():
    assert width_verdict(0.1) == width_verdict(-0.1) == "width-stable"
    assert width_verdict(0.5234) == "grows like width^0.52"
    assert width_verdict(-0.5) == "shrinks like width^-0.5"
    assert width_verdict(1.0) == "grows like width^1"


def _by_hand(make, width, seed, shape, steps, optimizer, loss_of):
    """The records of one copy, from a training loop written here."""
    torch.manual_seed(seed)
    net = make(width=width)
    draw = run_generator(seed, Stream.TRAINING)
    x = torch.randn(shape, generator=draw)
    step_of = optimizer(net.parameters(), lr=1e-2)
    rows, labels = [], None
    for step in range(steps + 1):
        outputs = []
        h = x
        for name, module in net.named_children():
            h = module(h)
            value = h.detach().double()
            outputs.append((step, name, value.var(correction=0).item(), value.abs().mean().item()))
        rows += outputs
        if step < steps:
            if labels is None and h.dim() == 2:
                labels = torch.randint(h.shape[1], h.shape[:1], generator=draw)
            step_of.zero_grad()
            loss_of(h, labels).backward()
            step_of.step()
    return pd.DataFrame(rows, columns=["step", "module", "out_var", "out_abs_mean"])


@pytest.mark.parametrize(
    ("factory", "inputs", "optimizer", "loss_of"),
    [
        ("make", "8xw", torch.optim.Adam, lambda h, y: F.cross_entropy(h, y)),
        ("tokens", "4x3xw", torch.optim.SGD, lambda h, y: h.square().mean() / 2),  # (B, T, 2)
    ],
)
def test_a_user_factory_equals_a_hand_written_loop(nets, factory, inputs, optimizer, loss_of):
    records, slopes = coord_check(
        f"{nets}:{factory}",
        [8, 16],
        steps=2,
        seeds=2,
        optimizer=optimizer.__name__.lower(),
        lr=1e-2,
        inputs=inputs,
    )
    assert sorted(set(records["width"])) == [8, 16] and set(records["step"]) == {0, 1, 2}
    namespace: dict = {}
    exec(NETS, namespace)
    for (width, seed), rows in records.groupby(["width", "seed"]):
        shape = tuple(width if s == "w" else int(s) for s in inputs.split("x"))
        expected = _by_hand(namespace[factory], width, seed, shape, 2, optimizer, loss_of)
        assert list(rows["module"]) == list(expected["module"])
        for column in ("out_var", "out_abs_mean"):
            np.testing.assert_allclose(rows[column], expected[column], rtol=1e-5, err_msg=column)
    last = records[(records["order"] == records["order"].max()) & (records["seed"] == 0)]
    assert last["out_var"].nunique() == len(last)  # every step moved the readout
    assert len(slopes) == records.groupby(["step", "module"]).ngroups * 2
    deeper, _ = coord_check(
        f"{nets}:make", [8, 16], steps=0, seeds=1, inputs="8xw", model_args={"depth": 3}
    )
    assert deeper["module"].nunique() == 7


BAD = {
    "unknown arch": (["mlpx"], "unknown arch 'mlpx'"),
    "torchvision": (["torchvision:resnet18"], "torchvision models take no width"),
    "one width": (["mlp", "--widths", "64,64"], "at least 2 distinct widths, got [64]"),
    "zero width": (["mlp", "--widths", "0,64"], "widths must be at least 1, got 0"),
    "no width parameter": (["{nets}:fixed", "--input", "4x4"], "takes no width parameter"),
    "factory without input": (["{nets}:make"], "needs --input"),
    "rejected shape": (
        ["{nets}:make", "--input", "4x5", "--widths", "8,16"],
        "the model rejects input of shape 4x5: mat1 and mat2 shapes cannot be multiplied",
    ),
    "unknown scheme": (["mlp", "--scheme", "foo"], "unknown scheme 'foo'"),
    "scheme refuses a weight": (["mlp", "--scheme", "dirac"], "dirac cannot initialize 0.weight"),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, nets):
    """Every bad input, and one good check, through the command line, two at a time."""
    root = tmp_path_factory.mktemp("cli")
    jobs = {}
    jobs["good"] = [  # first: the longest
        "mlp",
        "--widths",
        "16,32,64",
        "--steps",
        "2",
        "--depth",
        "3",
        "--batch",
        "16",
        "--lr",
        "0.01",
        "--out",
        str(root / "good"),
    ]
    for name, (args, _) in BAD.items():
        jobs[name] = [a.format(nets=nets) for a in args] + ["--out", str(root / name)]
    return root, run_all("coord", jobs, root)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli_runs, case):
    root, done = cli_runs
    assert_usage_error(done[case], BAD[case][1])
    assert not (root / case).exists()


def test_a_coord_folder_and_its_report_page(cli_runs):
    root, done = cli_runs
    assert done["good"].returncode == 0, done["good"].stderr
    folder = root / "good"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "coord" and meta["widths"] == [16, 32, 64] and meta["depth"] == 3
    assert meta["input_shapes"]["32"] == [16, 32] and meta["optimizer"] == "adam"
    results = initbench.load(folder)
    printed = done["good"].stdout.splitlines()  # the page's findings, then where things are
    assert printed[:-1] == coord_page.findings(results).splitlines()
    assert printed[-1] == (
        f"coordinates and slopes in {folder}; page in {folder / 'report' / 'index.html'}"
    )
    coords, slopes = results.tables["coords"], results.tables["slopes"]
    pd.testing.assert_frame_equal(slopes, fit_slopes(coords))
    path = report(folder)
    saved = read_data(folder / "report" / "figures", "coords")
    assert list(saved.columns) == coord_page.DATA_COLUMNS
    # the CSV: mean, lowest and highest seed per step, module call and width (float32's digits)
    mine = (
        coords.groupby(["step", "order", "module", "width"])["out_abs_mean"]
        .agg(["mean", "min", "max"])
        .reset_index()
    )
    assert len(saved) == len(mine) == 3 * 7 * 3  # steps, module calls, widths
    assert list(saved["module"].astype(str)) == list(mine["module"])
    for ours, theirs in (("value", "mean"), ("lo", "min"), ("hi", "max")):
        np.testing.assert_allclose(saved[ours], mine[theirs], rtol=1e-7)
    # the figure draws exactly the CSV: a line and a band per step and module call
    fig = coord_page.draw(coord_page.figure_data(coords), 2, "adam")
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines()}
    bands = {band.get_gid(): band for ax in fig.axes for band in ax.collections}
    assert len(lines) == len(bands) == 3 * 7
    for (step, order), rows in saved.groupby(["step", "order"]):
        line = lines[f"mean|{step}|{order}"]
        np.testing.assert_array_equal(line.get_xdata(), rows["width"])
        np.testing.assert_allclose(line.get_ydata(), rows["value"], rtol=1e-7)
        edge = bands[f"band|{step}|{order}"].get_paths()[0].vertices[:, 1]
        np.testing.assert_allclose(
            np.unique(edge), np.unique(np.r_[rows["lo"], rows["hi"]]), rtol=1e-7
        )
    # the page: a verdict at init and after training, every slope in the table, no nan or inf
    html = path.read_text()
    assert "At init " in html and "After 2 adam steps " in html
    assert html.count("<tr") == 1 + len(slopes)
    assert not re.search(r"\b(nan|inf)\b", html, re.IGNORECASE)


@pytest.mark.browser
def test_the_coord_page_fits_a_phone(browser, cli_runs):  # noqa: F811
    root, _ = cli_runs
    path = root / "good" / "report" / "index.html"
    if not path.exists():
        report(root / "good")
    page, errors = _open(browser, path, 390)
    assert errors == []
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a 390px screen"
    assert page.eval_on_selector(".scroll", "e => e.scrollWidth - e.clientWidth") > 0
    page.close()
