"""initbench probe: per-module statistics of any nn.Module.

The statistics equal a hand-written computation (forward hooks kept here, plain torch ops,
gradients from torch.autograd.grad) on the same weights and batch; schemes re-initialize
the weights; bad input through the command line is one line, exit 2 and no folder; the
report page draws exactly its CSV, and the CSV is an aggregation of modules.parquet.
"""

import copy
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

import initbench
from initbench.core.errors import UsageError
from initbench.core.models import load_model
from initbench.core.rng import run_generator
from initbench.report import probe as probe_page
from initbench.report import report
from initbench.report.figures.base import read_data
from initbench.studies.probe import COLUMNS, probe_model
from tests.cli import assert_usage_error, run_all
from tests.test_report import _open, browser  # noqa: F401  (browser: a fixture)

KAIMING = "kaiming_normal[mode=fan_in,nonlinearity=matched]"
TRANSFORMER = """
from torch import nn


class Net(nn.Module):
    def __init__(self, width, depth):
        super().__init__()
        self.embed = nn.Linear(8, width)
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def make(width=16, depth=2):
    return Net(width, depth)


def broken(width=16):
    raise ValueError("width must be a power of 2\\nand more")


def not_a_model():
    return [nn.Linear(2, 2)]
"""


@pytest.fixture(scope="module")
def factory_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "nets.py"
    path.write_text(TRANSFORMER)
    return path


@pytest.fixture(scope="module")
def resnet():
    return torchvision.models.resnet18(num_classes=10)


@pytest.fixture(scope="module")
def vit():
    model = torchvision.models.vit_b_16(image_size=32, num_classes=10)
    with torch.no_grad():  # torchvision zeroes the head: no gradient would flow at all
        model.heads.head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    return model


def _reference(model, x, generator):
    """One seed by hand: a copy in train mode with dropout and attention in eval mode and
    in-place ops off, hooks on the leaves and on attention (not its out_proj)."""
    net = copy.deepcopy(model)
    net.train()
    for module in net.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
        if isinstance(module, nn.Dropout | nn.MultiheadAttention):
            module.eval()
    skipped = {
        id(child)
        for module in net.modules()
        if isinstance(module, nn.MultiheadAttention)
        for child in module.modules()
        if child is not module
    }
    calls, counts = [], {}

    def hook(name):
        def record(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            counts[name] = counts.get(name, 0) + 1
            calls.append((name, type(module).__name__, counts[name] - 1, module, out, out.clone()))

        return record

    for name, module in net.named_modules():
        leaf = not list(module.children()) or isinstance(module, nn.MultiheadAttention)
        if leaf and id(module) not in skipped:
            module.register_forward_hook(hook(name))
    y = net(x)
    cotangent = torch.randn(y.shape, generator=generator)
    outs = list({id(c[4]): c[4] for c in calls if c[4].requires_grad}.values())
    weights = {
        c[0]: [
            p
            for n, p in c[3].named_parameters()
            if (n.endswith("weight") or n.startswith("weight_"))
            and ("." not in n or n == "out_proj.weight")
        ]
        for c in calls
    }
    params = list({id(p): p for ws in weights.values() for p in ws}.values())
    grads = torch.autograd.grad(y, outs + params, cotangent, allow_unused=True)
    grad_of = {id(t): g for t, g in zip(outs + params, grads, strict=True)}
    rows = []
    for name, kind, call, _, out, value in calls:
        value = value.double()
        grad = grad_of.get(id(out))
        own = weights[name]
        flat = torch.cat([w.detach().double().flatten() for w in own]) if own else None
        rows.append(
            {
                "module": name,
                "kind": kind,
                "call": call,
                "out_mean": value.mean().item(),
                "out_var": _variance(value),
                "out_abs_max": value.abs().max().item(),
                "grad_out_var": math.nan if grad is None else _variance(grad),
                "weight_var": math.nan if flat is None else _variance(flat),
                "weight_grad_norm": math.sqrt(
                    sum(grad_of[id(w)].double().pow(2).sum().item() for w in own)
                )
                if own
                else math.nan,
            }
        )
    return pd.DataFrame(rows)


def _variance(tensor):
    tensor = tensor.double()
    return ((tensor - tensor.mean()) ** 2).mean().item()


def _assert_matches(found, expected):
    """Rows in the same order with the same names; statistics to float32 rounding."""
    assert list(found["order"]) == list(range(len(found)))
    assert list(zip(found["module"], found["kind"], found["call"], strict=True)) == list(
        zip(expected["module"], expected["kind"], expected["call"], strict=True)
    )
    error = np.abs(found["out_mean"].to_numpy() - expected["out_mean"].to_numpy())
    assert (error <= 1e-5 * expected["out_abs_max"].to_numpy()).all()
    for column in COLUMNS[6:]:
        np.testing.assert_allclose(
            found[column], expected[column], rtol=2e-4, atol=1e-12, err_msg=column
        )


def test_resnet18_rows_and_statistics_are_the_hand_written_ones(resnet):
    found = probe_model(resnet, (2, 3, 32, 32), device="cpu")
    assert list(found.columns) == COLUMNS
    generator = run_generator(0)  # as built: the generator draws the batch, then the cotangent
    x = torch.randn(2, 3, 32, 32, generator=generator)
    expected = _reference(resnet, x, generator)
    _assert_matches(found, expected)
    # the shared ReLU of a block is called twice; BatchNorm uses the batch's statistics
    relu = found[found["module"] == "layer1.0.relu"]
    assert list(relu["call"]) == [0, 1]
    assert found.loc[found["module"] == "bn1", "out_var"].item() == pytest.approx(1, abs=1e-3)
    assert found.loc[found["kind"] == "ReLU", "weight_var"].isna().all()


def test_vit_rows_and_statistics_are_the_hand_written_ones(vit):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    found = probe_model(vit, x)
    _assert_matches(found, _reference(vit, x, run_generator(0)))
    attention = found[found["kind"] == "MultiheadAttention"]
    assert len(attention) == 12 and not found["module"].str.contains("out_proj").any()
    assert attention["weight_grad_norm"].gt(0).all()


def test_a_user_transformer_the_same_batch_every_seed(factory_file):
    model = load_model(f"{factory_file}:make", {"width": 16})
    x = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(3))
    found = probe_model(model, x, seeds=2)
    for seed, rows in found.groupby("seed"):
        _assert_matches(rows.reset_index(drop=True), _reference(model, x, run_generator(seed)))
    first, second = (rows.reset_index(drop=True) for _, rows in found.groupby("seed"))
    pd.testing.assert_series_equal(first["out_var"], second["out_var"])  # same weights, batch
    assert not np.allclose(first["grad_out_var"], second["grad_out_var"])  # own cotangents
    assert (found["kind"] == "MultiheadAttention").sum() == 4


def test_outputs_of_any_form_and_modules_without_gradients():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.flat = nn.Flatten()
            self.linear = nn.Linear(12, 3)

        def forward(self, x):
            return {"logits": self.linear(self.flat(x)), "input": x}

    found = probe_model(Pair(), (2, 3, 4))
    flat, linear = found.itertuples()
    assert math.isnan(flat.grad_out_var) and math.isnan(flat.weight_var)  # before any weight
    assert linear.grad_out_var > 0 and linear.weight_grad_norm > 0
    frozen = nn.Sequential(nn.Linear(4, 4), nn.Tanh()).requires_grad_(False)
    assert probe_model(frozen, (2, 4))[["grad_out_var", "weight_grad_norm"]].isna().all().all()


class Recurrent(nn.Module):
    """Sequences through a Linear, a two-layer LSTM and a GRU, then a Linear readout."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.gru = nn.GRU(32, 24, batch_first=True)
        self.head = nn.Linear(24, 3)

    def forward(self, x):
        h, _ = self.gru(self.lstm(self.embed(x))[0])
        return self.head(h[:, -1])


def test_recurrent_layers_are_probed_with_every_gate_drawn():
    model, scheme = Recurrent(), "orthogonal[gain=unit]"
    found = probe_model(model, (4, 5, 6), scheme=scheme)
    net, generator = copy.deepcopy(model), run_generator(0)  # weights, batch, cotangent
    initbench.apply(net, scheme, generator=generator)
    x = torch.randn(4, 5, 6, generator=generator)
    _assert_matches(found, _reference(net, x, generator))
    # every gate block is orthogonal on its own: a (rows, cols) block's squares sum to
    # min(rows, cols). LSTM: 16 blocks of 32 x 16 or 32 x 32, a mean square of 1/32; GRU:
    # 3 blocks of 24 x 32 and 3 of 24 x 24, (6 x 24) / (3 x 24 x 32 + 3 x 24 x 24) = 1/28
    weights = found.set_index("module")["weight_var"]
    assert weights["lstm"] == pytest.approx(1 / 32, rel=1e-3)
    assert weights["gru"] == pytest.approx(1 / 28, rel=1e-3)
    assert found.set_index("module").loc[["lstm", "gru"], "weight_grad_norm"].gt(0).all()


def test_a_scheme_reinitializes_every_weight(resnet):
    found = probe_model(resnet, (2, 3, 32, 32), scheme=KAIMING, activation="relu", seeds=2)
    modules = dict(resnet.named_modules())
    weighted = found[found["kind"].isin(["Conv2d", "Linear"])].drop_duplicates(["seed", "module"])
    for row in weighted.itertuples():
        weight = modules[row.module].weight
        fan_in = weight[0].numel()
        # within 5 standard errors of the sample variance of n normal draws
        assert row.weight_var == pytest.approx(2 / fan_in, rel=5 * math.sqrt(2 / weight.numel()))
    conv1 = found[found["module"] == "conv1"].set_index("seed")["weight_var"]
    assert conv1[0] != conv1[1]  # each seed draws its own weights
    net = copy.deepcopy(resnet)
    initbench.apply(net, KAIMING, "relu", generator=run_generator(0))
    assert conv1[0] == pytest.approx(net.conv1.weight.var(correction=0).item(), rel=1e-5)
    built = probe_model(resnet, (2, 3, 32, 32))  # torchvision's own: fan_out, 7x smaller here
    assert built.loc[built["module"] == "conv1", "weight_var"].item() == pytest.approx(
        2 / (64 * 49), rel=0.1
    )
    with pytest.raises(UsageError, match=r"dirac.*fc\.weight"):
        probe_model(resnet, (2, 3, 32, 32), scheme="dirac")


BAD = {
    "unknown torchvision model": (["torchvision:resnet19"], "unknown torchvision model 'resnet19'"),
    "missing file": (["{dir}/missing.py:make"], "no such file: "),
    "missing factory": (["{nets}:build"], "has no 'build' (it defines Net, make, broken"),
    "factory raises": (["{nets}:broken"], "raised ValueError: width must be a power of 2"),
    "not a module": (["{nets}:not_a_model"], "returned a list, not an nn.Module"),
    "rejected shape": (
        ["{nets}:make", "--input", "2x5x7"],
        "the model rejects input of shape 2x5x7: mat1 and mat2 shapes cannot be multiplied",
    ),
    "pt not a tensor": (["{nets}:make", "--input", "{dir}/dict.pt"], "holds a dict, not a tensor"),
    "pt unreadable": (["{nets}:make", "--input", "{dir}/garbage.pt"], "cannot read "),
    "malformed shape": (["{nets}:make", "--input", "2x5xx8"], "--input must be a shape like"),
    "malformed model-arg": (["{nets}:make", "--model-arg", "width"], "--model-arg must be key="),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, factory_file):
    """Every bad input, and one good probe, through the command line, two at a time."""
    root = tmp_path_factory.mktemp("cli")
    torch.save({"x": torch.zeros(2)}, root / "dict.pt")
    (root / "garbage.pt").write_bytes(b"not a pickle")
    jobs = {
        name: [a.format(dir=root, nets=factory_file) for a in args] + ["--out", str(root / name)]
        for name, (args, _) in BAD.items()
    }
    jobs["good"] = [
        "torchvision:resnet18",
        "--input",
        "2x3x32x32",
        "--model-arg",
        "num_classes=10",
        "--seeds",
        "2",
        "--out",
        str(root / "good"),
    ]
    return root, run_all("probe", jobs, root)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli_runs, case):
    root, done = cli_runs
    assert_usage_error(done[case], BAD[case][1])
    assert not (root / case).exists()


def test_a_probe_folder_and_its_report_page(cli_runs):
    root, done = cli_runs
    assert done["good"].returncode == 0, done["good"].stderr
    folder = root / "good"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "probe" and meta["model_args"] == {"num_classes": 10}
    assert meta["seeds"] == 2 and meta["input_shape"] == [2, 3, 32, 32]
    printed = done["good"].stdout.splitlines()  # the page's findings, then where things are
    assert printed[:-1] == probe_page.findings(initbench.load(folder)).splitlines()
    assert printed[-1] == (
        f"module statistics in {folder / 'modules.parquet'}; "
        f"page in {folder / 'report' / 'index.html'}"
    )
    path = report(folder)
    modules = initbench.load(folder).tables["modules"]
    saved = read_data(folder / "report" / "figures", "modules")
    assert list(saved.columns) == probe_page.DATA_COLUMNS
    assert set(saved["kind_of_point"]) == {"measured"}
    # the CSV is each module call's mean, lowest and highest seed (to float32's 8 digits)
    for statistic in ("out_var", "weight_grad_norm"):
        by_call = modules.groupby(["order", "module"])[statistic].agg(["mean", "min", "max"])
        by_call = by_call.dropna().reset_index()
        rows = saved[saved["statistic"] == statistic].reset_index(drop=True)
        assert list(rows["module"]) == list(by_call["module"])
        for ours, theirs in (("value", "mean"), ("lo", "min"), ("hi", "max")):
            np.testing.assert_allclose(rows[ours], by_call[theirs], rtol=1e-7)
    # the figure draws exactly the CSV
    data = probe_page.figure_data(modules)
    marks = probe_page.extremes(probe_page.steps(modules, data))
    fig = probe_page.draw(data, marks)
    drawn = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines()}
    for statistic in ("out_var", "weight_grad_norm"):
        rows = saved[saved["statistic"] == statistic]
        line = drawn[f"measured|{statistic}"]
        np.testing.assert_array_equal(line.get_xdata(), rows["order"])
        np.testing.assert_allclose(line.get_ydata(), rows["value"], rtol=1e-7)
    # the arrows: the largest and smallest ratio between consecutive weighted or norm modules
    means = modules.groupby("order").agg(
        module=("module", "first"), out_var=("out_var", "mean"), weight_var=("weight_var", "first")
    )
    kinds = modules.groupby("order")["kind"].first()
    chosen = means[means["weight_var"].notna() | kinds.str.contains("Norm")]
    ratios = chosen["out_var"].to_numpy()[1:] / chosen["out_var"].to_numpy()[:-1]
    texts = {t.get_gid(): t for t in fig.axes[0].texts}
    for gid, index in (("growth", ratios.argmax()), ("drop", ratios.argmin())):
        order = chosen.index[index + 1]
        assert texts[gid].xy == pytest.approx((order, chosen["out_var"].iloc[index + 1]))
    # the page: the verdict in numbers, every module call in the table, no nan or inf
    html = path.read_text()
    assert "The output variance goes from" in html and "shrinks most at" in html
    assert html.count("<tr") == 1 + modules["order"].nunique()
    assert not re.search(r"\b(nan|inf)\b", html, re.IGNORECASE)


@pytest.mark.browser
@pytest.mark.parametrize("width", [390, 1400])
def test_the_probe_page_fits_the_screen(browser, cli_runs, width):  # noqa: F811
    root, _ = cli_runs
    path = root / "good" / "report" / "index.html"
    if not path.exists():
        report(root / "good")
    page, errors = _open(browser, path, width)
    assert errors == []
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a {width}px screen"
    scroll = page.eval_on_selector(".scroll", "e => e.scrollWidth - e.clientWidth")
    assert width > 600 or scroll > 0  # on a phone, the table scrolls inside its box
    page.close()
