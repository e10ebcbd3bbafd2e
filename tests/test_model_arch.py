"""Any nn.Module as an architecture of a sweep.

A model's layers are its watched module calls; their rows equal forward hooks on a plain
copy with the same weights, batch and cotangent (``tests/test_modelprobe.py``'s
reference); runs stacked under vmap give the numbers of runs computed one by one; the
verdicts classify the model's schemes; bad input is one line and exit code 2.
"""

import math

import numpy as np
import pytest
import torch

import initbench
from initbench import Grid
from initbench.archs import check_arch_id, get_arch, parse_model_id
from initbench.core.activations import get_activation
from initbench.core.errors import UsageError
from initbench.core.rng import Stream, run_generator
from initbench.core.schemes import get_scheme
from initbench.measure.probe import probe
from initbench.report.classify import CELL_KEYS, classify
from initbench.sweeps.engine import initialize_runs
from initbench.sweeps.grid import Cell, Run
from initbench.sweeps.presets import cell_command
from tests.cli import assert_usage_error, run_all, run_cli
from tests.test_modelprobe import _reference

RESNET = "torchvision:resnet18"
FACTORIES = """
import torch
from torch import nn


class Rows(nn.Module):
    \"\"\"An LSTM over an image's rows, then a Linear readout.\"\"\"

    def __init__(self, hidden):
        super().__init__()
        self.lstm = nn.LSTM(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.head(self.lstm(x.flatten(1, 2))[0][:, -1])


class Gated(nn.Module):
    \"\"\"A branch taken by the input's values: data-dependent control flow.\"\"\"

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(64, 32)
        self.second = nn.Linear(32, 10)

    def forward(self, x):
        h = self.first(x.flatten(1))
        if h.mean() > -1e9:
            h = torch.relu(h)
        return self.second(h)


def mlp(width=16, classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, classes))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def rows(hidden=16):
    return Rows(hidden)


def gated():
    return Gated()


class Tokens(nn.Module):
    \"\"\"Token ids through an Embedding and an LSTM, the last step's state classified.\"\"\"

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.lstm = nn.LSTM(16, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.lstm(self.embed(x))[0][:, -1])


def tokens():
    return Tokens()


def sequences():
    \"\"\"Sequences of 6 token ids; the class: whether the last is below 10.\"\"\"
    x = torch.randint(0, 20, (512, 6), generator=torch.Generator().manual_seed(0))
    y = (x[:, -1] < 10).long()
    return x[:384], y[:384], x[384:], y[384:]


def not_data():
    return [1, 2]


def broken():
    raise ValueError("no model here\\nsecond line")
"""


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    path = tmp_path_factory.mktemp("factories") / "nets.py"
    path.write_text(FACTORIES)
    return path


def test_model_ids_parse_without_building_and_count_one_size():
    assert parse_model_id("mlp") is None
    assert parse_model_id(f"{RESNET}[num_classes=10, input=3x16x16]") == (
        RESNET,
        {"num_classes": "10", "input": "3x16x16"},
    )
    assert check_arch_id(f"{RESNET}[num_classes=10]") == RESNET
    for bad in ("foo:bar", "nets.txt:make", "torchvision:", "torchvision:resnet18[x]"):
        with pytest.raises(UsageError):
            parse_model_id(bad)
    grid = Grid(archs=(RESNET, "mlp"), depths=(2, 3), widths=(8, 16), activations=("relu",))
    # a model has one size, a registered arch every depth and width: 1 + 4 sizes
    assert grid.run_count() == len(initbench.expand_schemes(["*"], grid.gains)) * 5 * 3


def test_a_model_has_its_own_depth_width_and_layers(nets):
    grid = Grid(archs=(f"{nets}:mlp[width=24,input=1x8x8]",), activations=("relu",), seeds=1)
    cells = grid.cells()
    # Flatten (64 values), Linear (24), ReLU (24), Linear (10): 4 layers, the widest 64
    assert {(c.depth, c.width) for c in cells} == {(4, 64)}
    arch = cells[0].arch
    assert arch.id == f"{nets}:mlp[width=24,input=1x8x8]" and get_arch(arch.id) == arch
    trace = arch.trace(grid.cell_inputs(cells[0]), grid.batch_size)
    assert [(layer.module, layer.kind, layer.shape) for layer in trace.layers] == [
        ("0", "Flatten", (64,)),
        ("1", "Linear", (24,)),
        ("2", "ReLU", (24,)),
        ("3", "Linear", (10,)),
    ]
    assert trace.output == (10,) and trace.macs == 64 * 24 + 24 * 10


@pytest.mark.parametrize(
    ("factory", "stackable"),
    [("mlp", True), ("cnn", True), ("rows", False), ("gated", False)],
)
def test_runs_compute_together_where_vmap_takes_the_model(nets, factory, stackable):
    arch = get_arch(f"{nets}:{factory}[input=1x8x8]")
    inputs = Grid(archs=(arch.id,)).cell_inputs(Cell(get_scheme("orthogonal"), None, arch, 1, 1))
    assert arch.stackable(inputs) is stackable


def _chunk(arch_id, schemes, seeds, grid, stacked):
    """Stats of a chunk of runs of one model, its runs stacked under vmap or one by one."""
    arch = get_arch(arch_id)
    act = get_activation("relu")
    inputs = grid.inputs(arch, 1)
    depth, width = arch.sizes([1], [1], inputs, grid.batch_size)[0]
    runs = [
        Run(Cell(get_scheme(s), act, arch, depth, width), seed) for s in schemes for seed in seeds
    ]
    net = arch.stack(len(runs), depth, width, act, inputs)
    net.stacked = stacked
    x, cotangent, _ = initialize_runs(net, runs, grid, inputs, None)
    return net, probe(net, x, cotangent, hists=True)


@pytest.fixture(scope="module")
def resnet_sweep(tmp_path_factory):
    """The README's command on resnet18, at a small batch and image size."""
    out = tmp_path_factory.mktemp("sweeps") / "resnet"
    done = run_cli(
        "sweep",
        "--archs",
        RESNET,
        "--schemes",
        "kaiming*,xavier*",
        "--seeds",
        "3",
        "--activations",
        "relu",
        "--batch-size",
        "16",
        "--image-size",
        "16",
        "--no-progress",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    return initbench.load(out)


def test_resnet18_rows_are_forward_hooks_on_the_same_weights(resnet_sweep):
    results = resnet_sweep
    assert (results.cells["status"] == "ok").all() and len(results.cells) == 12 * 3
    arch = get_arch(RESNET)
    layers = results.layers.set_index("run_id")
    schemes = list(dict.fromkeys(results.cells["scheme_id"]))
    # each scheme at one seed, every seed in turn
    seeds = [schemes.index(scheme) % 3 for scheme in results.cells["scheme_id"]]
    chosen = results.cells[results.cells["seed"].to_numpy() == np.asarray(seeds)]
    assert len(chosen) == 12
    for run in chosen.itertuples():
        model = arch.build(0, 0, None, None)  # as built (seed 0), then drawn as the run was
        initbench.apply(model, run.scheme_id, "relu", generator=run_generator(run.seed))
        generator = run_generator(run.seed, Stream.INPUTS)  # the batch, then the cotangent
        x = torch.randn(16, 3, 16, 16, generator=generator)
        x[1::2] = 0.5 * x[0::2] + math.sqrt(1 - 0.25) * x[1::2]  # the input pairs' correlation
        expected = _reference(model, x, generator)
        found = layers.loc[run.run_id].sort_values("layer")
        assert list(found["layer"]) == list(range(1, 61))
        labels = zip(found["module"], found["kind"], found["call"], strict=True)
        assert list(labels) == list(
            zip(expected["module"], expected["kind"], expected["call"], strict=True)
        )
        np.testing.assert_allclose(found["pre_var"], expected["out_var"], rtol=1e-4)
        np.testing.assert_allclose(found["post_var"], expected["out_var"], rtol=1e-4)
        np.testing.assert_allclose(found["grad_h_var"], expected["grad_out_var"], rtol=5e-4)
        np.testing.assert_allclose(
            found["grad_w_norm"], expected["weight_grad_norm"], rtol=1e-3
        )  # NaN on both sides for the modules without weights


def test_resnet18_verdicts_classify_every_scheme(resnet_sweep):
    results = resnet_sweep
    verdicts = classify(results.cells, results.layers, trained=False)
    assert len(verdicts) == 12 and (verdicts["note"] == "").all()
    assert set(verdicts["predicted"]) <= {"trains", "fails"} and verdicts["recommended"].any()
    # every convolution feeds a BatchNorm, so only conv1's output (the first layer) and
    # fc's (the last) feel the weights' scale; fan_out draws the same normals as fan_in
    # at a variance 3 x 49 / (64 x 49) as large for conv1 and 512 / 1000 for fc: its
    # signal changes by log2(64 / 3) + log2(512 / 1000) = 3.45 bits more
    change = verdicts.set_index("scheme_id")["signal_change"]
    kaiming = "kaiming_normal[mode={},nonlinearity=matched]"
    more = change[kaiming.format("fan_out")] - change[kaiming.format("fan_in")]
    assert more == pytest.approx(math.log2(64 / 3) + math.log2(512 / 1000), abs=0.01)
    # a row's command recomputes it: the model's own depth and width are not options
    command = cell_command(results.meta["grid"], verdicts.iloc[0][CELL_KEYS].to_dict())
    assert f"--archs {RESNET}" in command and "--depths" not in command


def test_stacked_runs_equal_runs_computed_one_by_one():
    grid = Grid(archs=(RESNET,), batch_size=16, image_size=16, activations=("relu",))
    schemes, seeds = ["kaiming_normal", "orthogonal[gain=unit]"], (0, 1)
    together, stacked = _chunk(RESNET, schemes, seeds, grid, stacked=True)
    alone, one_by_one = _chunk(RESNET, schemes, seeds, grid, stacked=False)
    for name in together.names:  # the same weights
        assert torch.equal(together.param(name), alone.param(name))
    for name, values in stacked.stats.items():
        # forward statistics to float32 rounding; backward ones through BatchNorm's
        # backward on 16 samples of 1 x 1 pixels (layer4), which amplifies rounding
        forward = {"pre_mean": 1e-4, "pre_var": 1e-4, "post_var": 1e-4, "corr": 1e-3}
        rtol = forward.get(name, 1e-4 if name == "eff_rank" else 1e-2)
        np.testing.assert_allclose(values, one_by_one.stats[name], rtol=rtol, atol=1e-6)
    for quantity, counts in stacked.hists.items():
        assert np.abs(counts - one_by_one.hists[quantity]).sum() <= 0.01 * counts.sum()


@pytest.mark.parametrize("factory", ["mlp", "rows"])
def test_lsuv_fits_a_stacked_model_as_it_fits_the_model(nets, factory):
    arch_id = f"{nets}:{factory}[input=1x8x8]"
    grid = Grid(archs=(arch_id,), batch_size=32, activations=("relu",))
    net, _ = _chunk(arch_id, ["lsuv"], (0, 1), grid, stacked=factory == "mlp")
    arch = get_arch(arch_id)
    for seed in (0, 1):
        model = arch.build(0, 0, None, None)
        fit = torch.randn(32, 1, 8, 8, generator=run_generator(seed, Stream.FIT))
        initbench.apply(model, "lsuv", "relu", generator=run_generator(seed), data=fit)
        for name, value in model.named_parameters():
            torch.testing.assert_close(net.param(name)[seed], value, rtol=1e-5, atol=1e-6)
    if factory == "mlp":  # each Linear's output has unit variance on the fit batch
        x = torch.randn(32, 64, generator=run_generator(0, Stream.FIT))
        hidden = x @ net.param("1.weight")[0].T
        assert hidden.var(correction=0).item() == pytest.approx(1, abs=1e-3)


BAD = {  # through the command line: one line, exit code 2, no folder
    "factory raises": (["{nets}:broken"], [], "raised ValueError: no model here"),
    "forward fails": (
        ["{nets}:mlp[input=2x5x7]"],
        [],
        "rejects input of shape 256x2x5x7: mat1 and mat2 shapes cannot be multiplied",
    ),
    "not a dataset": (
        ["{nets}:mlp[input=64]"],
        ["--dataset", "{nets}:not_data"],
        "must return (x_train, y_train, x_test, y_test) tensors, got a list",
    ),
}
REFUSED = {  # through the API: the line each says
    "unknown torchvision model": ({"archs": ("torchvision:resnet19",)}, "unknown torchvision"),
    "no sample shape": ({"archs": ("{nets}:mlp",)}, "needs one sample's shape (or a dataset)"),
    "not a model source": ({"archs": ("nets.txt:make",)}, "a model arch is torchvision:NAME"),
    "missing file": ({"archs": ("missing.py:make",)}, "no such file: missing.py"),
    "bad input shape": ({"archs": ("{nets}:mlp[input=3xx2]",)}, "input must be a shape like"),
    "wrong outputs to train": (
        {"archs": ("{nets}:mlp[classes=3,input=64]",), "dataset": "digits", "train_steps": 5},
        "outputs 3 values per sample; training on digits needs 10 class scores",
    ),
    "dataset of another size": (
        {"archs": ("{nets}:mlp[input=65]",), "dataset": "digits"},
        "a dataset sample of shape 1x8x8 has 64 values, input 65 65",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_model_that_cannot_be_swept_is_refused_in_one_line(nets, case):
    values, message = REFUSED[case]
    archs = tuple(arch.format(nets=nets) for arch in values["archs"])
    with pytest.raises(UsageError) as refused:
        Grid(**(values | {"archs": archs})).runs()
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, nets):
    root = tmp_path_factory.mktemp("cli")
    jobs = {
        name: [
            *("--archs", *(a.format(nets=nets) for a in archs)),
            *(a.format(nets=nets) for a in extra),
            *("--out", str(root / name), "--schemes", "orthogonal", "--seeds", "1"),
        ]
        for name, (archs, extra, _) in BAD.items()
    }
    return root, run_all("sweep", jobs, root)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli_runs, case):
    root, done = cli_runs
    assert_usage_error(done[case], BAD[case][2])
    assert not (root / case).exists()


def test_a_model_trains_on_token_ids_from_a_dataset_factory(nets, tmp_path):
    done = run_cli(
        "sweep",
        "--archs",
        f"{nets}:tokens",
        "--dataset",
        f"{nets}:sequences",
        "--schemes",
        "xavier_uniform[gain=unit],orthogonal[gain=unit]",
        "--activations",
        "tanh",
        "--seeds",
        "2",
        "--batch-size",
        "32",
        "--train-steps",
        "60",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--no-progress",
        "--out",
        str(tmp_path / "tokens"),
    )
    assert done.returncode == 0, done.stderr
    results = initbench.load(tmp_path / "tokens")
    assert (results.cells["status"] == "ok").all() and len(results.cells) == 4
    # Embedding (16 units per token), LSTM (16), Linear (2 classes)
    layers = results.layers.drop_duplicates("layer")
    assert list(layers["kind"]) == ["Embedding", "LSTM", "Linear"]
    assert set(results.cells["depth"]) == {3} and set(results.cells["width"]) == {16}
    # the class is the last token's: every run learns it
    assert results.cells["final_test_acc"].min() > 0.9
    start = results.curves[results.curves["step"] == 0]["test_acc"]
    assert start.max() < 0.75
