import gzip
import struct

import numpy as np
import pytest
import torch

import initbench
from initbench import Grid
from initbench.archs import get_arch
from initbench.core.activations import get_activation
from initbench.core.data import load_dataset
from initbench.core.device import resolve_device
from initbench.core.errors import UsageError
from initbench.core.rng import run_generator
from initbench.core.schemes import get_scheme
from initbench.initialize import apply, param_groups
from initbench.sweeps.engine import compute_chunk, initialize_runs
from initbench.sweeps.grid import Cell, Run
from initbench.sweeps.train import batch_order, make_optimizer, train_stack
from tests.test_model_arch import nets  # noqa: F401  (a fixture: the models' file)

CPU = resolve_device("cpu")


def _runs(schemes, depth=3, width=16, seeds=(0, 1), act="relu", arch="mlp"):
    return [
        Run(Cell(get_scheme(s), get_activation(act), get_arch(arch), depth, width), seed)
        for s in schemes
        for seed in seeds
    ]


@pytest.mark.parametrize(
    "optimizer, arch",
    [
        ("sgd", "mlp"),
        ("adam", "mlp"),
        ("sgd", "cnn"),
        ("adam", "resmlp[norm=layer]"),
        ("sgd", "resnet"),
        ("adam", "transformer[head_dim=8]"),
        ("sgd", "{nets}:mlp[input=64]"),  # models: under vmap,
        ("sgd", "{nets}:cnn[input=1x8x8]"),  # with BatchNorm's running statistics,
        ("adam", "{nets}:rows[input=1x8x8]"),  # one run after another (an LSTM)
    ],
)
def test_stacked_ensemble_equals_training_each_run_alone(optimizer, arch, nets):  # noqa: F811
    arch = arch.format(nets=nets)
    grid = Grid(
        dataset="digits",
        train_steps=12,
        train_batch_size=32,
        eval_every=4,
        optimizer=optimizer,
        lr=0.01,
    )
    data = load_dataset("digits")
    runs = _runs(["xavier_normal[gain=matched]", "orthogonal[gain=unit]"], arch=arch)
    model_arch = runs[0].cell.arch
    inputs = grid.cell_inputs(runs[0].cell)
    net = model_arch.stack(len(runs), 3, 16, get_activation("relu"), inputs)
    initialize_runs(net, runs, grid, inputs, data)
    stacked = train_stack(net, runs, data, grid, grid.lr)
    x_train = model_arch.data_sample(data.x_train)
    for r, run in enumerate(runs):
        model = model_arch.build(3, 16, get_activation("relu"), inputs)
        generator = run_generator(run.seed)
        apply(model, run.cell.scheme, "relu", generator=generator, fallback=True)
        groups = param_groups(model, run.cell.scheme, grid.lr, optimizer, roles=model_arch.roles)
        optimizer_ = make_optimizer(groups, grid, grid.lr)
        order = batch_order(run.seed, len(x_train), grid.train_steps, grid.train_batch_size)
        losses = []
        for step in range(grid.train_steps):  # the tutorial's loop
            model.train()
            optimizer_.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                model(x_train[order[step]]), data.y_train[order[step]]
            )
            loss.backward()
            optimizer_.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            out = model(model_arch.data_sample(data.x_test))
            test_loss = torch.nn.functional.cross_entropy(out, data.y_test).item()
            test_acc = (out.argmax(1) == data.y_test).float().mean().item()
        assert stacked.test_loss[r, -1] == pytest.approx(test_loss, rel=1e-4)
        assert stacked.test_acc[r, -1] == pytest.approx(test_acc, abs=1e-6)
        assert stacked.train_loss[r, -1] == pytest.approx(np.mean(losses[-4:]), rel=1e-4)


def test_same_seed_gives_identical_curves(tmp_path):
    grid = Grid(
        schemes=("kaiming_normal",),
        activations=("relu",),
        depths=(4,),
        widths=(16,),
        seeds=2,
        dataset="digits",
        train_steps=20,
        eval_every=5,
    )
    a = initbench.load(initbench.sweep(grid, tmp_path / "a", device="cpu", progress=False))
    b = initbench.load(initbench.sweep(grid, tmp_path / "b", device="cpu", progress=False))
    cols = ["run_id", "step", "train_loss", "test_loss", "test_acc"]
    assert len(a.curves) == 4 * 2 * 5  # 4 kaiming variants x 2 seeds x 5 logs (0, 5, ..., 20)
    assert (
        a.curves[cols]
        .sort_values(cols[:2])
        .reset_index(drop=True)
        .equals(b.curves[cols].sort_values(cols[:2]).reset_index(drop=True))
    )


def test_kaiming_learns_where_xavier_stalls_at_depth_30():
    """He et al. 2015, Fig. 3, with the default preset's training settings."""
    default = initbench.preset("default").parts["mlp"]
    grid = Grid.from_dict(
        {
            "schemes": [
                "kaiming_normal[mode=fan_in,nonlinearity=matched]",
                "xavier_normal[gain=unit]",
            ],
            "activations": ["relu"],
            "depths": [30],
            "seeds": 2,
        },
        default,
    )
    records = compute_chunk(grid.runs(), grid, CPU, load_dataset("digits"))
    acc = records.cells.groupby("scheme")["final_test_acc"].mean()
    assert acc["kaiming_normal"] > 0.8
    assert acc["xavier_normal"] < 0.2  # chance is 0.1


def test_divergence_is_recorded_with_its_step():
    grid = Grid(dataset="digits", train_steps=30, eval_every=10, lr=50.0, momentum=0.9)
    records = compute_chunk(
        _runs(["kaiming_normal"], depth=4, width=32, seeds=(0,)), grid, CPU, load_dataset("digits")
    )
    cells = records.cells
    assert (cells["status"] == "diverged").all()
    assert cells["diverged_step"].between(1, 30).all()
    assert cells["reason"].str.contains("non-finite training loss").all()


def test_out_of_memory_marks_runs_oom_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from initbench.sweeps import engine

    real = engine._compute

    def oom_for_tanh(runs, *args):
        if runs[0].cell.activation.name == "tanh":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 5.59 GiB")
        return real(runs, *args)

    monkeypatch.setattr(engine, "_compute", oom_for_tanh)
    grid = Grid(
        schemes=("orthogonal",), activations=("tanh", "relu"), depths=(2,), widths=(8,), seeds=1
    )
    cells = initbench.load(
        initbench.sweep(grid, tmp_path / "s", device="cpu", progress=False)
    ).cells
    assert set(cells.loc[cells.activation == "tanh", "status"]) == {"oom"}
    assert set(cells.loc[cells.activation == "relu", "status"]) == {"ok"}


def test_embedded_datasets_need_no_download():
    digits = load_dataset("digits")
    assert (
        digits.x_train.shape[1:] == (1, 8, 8) and len(digits.x_train) + len(digits.x_test) == 1797
    )
    assert abs(
        digits.x_train.mean().item()
    ) < 1e-5 and digits.x_train.std().item() == pytest.approx(1, abs=1e-3)
    m1d = load_dataset("mnist1d")
    assert m1d.x_train.shape[1:] == (1, 40) and m1d.y_train.max().item() == 9
    with pytest.raises(UsageError, match="1-D"):
        get_arch("cnn").data_sample(m1d.x_train)
    with pytest.raises(UsageError, match="1-D"):
        Grid(archs=("cnn",), dataset="mnist1d").runs()


def _write_idx(path, array, magic):
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        fh.write(array.tobytes())


def test_torchvision_mnist_loads_local_files_and_refuses_to_download(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("t10k", 20)):
        _write_idx(
            raw / f"{split}-images-idx3-ubyte.gz",
            rng.integers(0, 255, (n, 28, 28), dtype=np.uint8),
            2051,
        )
        _write_idx(
            raw / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8), 2049
        )
    # torchvision reads the uncompressed files
    for gz in raw.glob("*.gz"):
        with gzip.open(gz) as fh:
            (raw / gz.stem).write_bytes(fh.read())
    mnist = load_dataset("mnist", tmp_path)
    assert mnist.x_train.shape == (60, 1, 28, 28) and mnist.x_test.shape == (20, 1, 28, 28)
    with pytest.raises(UsageError, match="--download"):
        load_dataset("fashion_mnist", tmp_path / "empty")


def test_several_learning_rates_keep_each_runs_best_one():
    """With ``lrs``, every run ends as it would have trained alone at its best rate."""
    base = dict(dataset="digits", train_steps=30, eval_every=10, batch_size=32)
    runs = _runs(["xavier_normal[gain=matched]", "normal[std=0.01]"], depth=4, act="tanh")
    data = load_dataset("digits")
    alone = {}
    for lr in (0.001, 0.3):
        cells = compute_chunk(runs, Grid(lr=lr, **base), CPU, data).cells
        alone[lr] = cells.set_index("run_id")
    both = compute_chunk(runs, Grid(lrs=(0.001, 0.3), **base), CPU, data).cells.set_index("run_id")
    for run in runs:
        scores = {
            lr: -1.0
            if cells.loc[run.id, "status"] == "diverged"
            else cells.loc[run.id, "final_test_acc"]
            for lr, cells in alone.items()
        }
        best = max(scores, key=lambda lr: (scores[lr], -lr))
        assert both.loc[run.id, "train_lr"] == best
        assert both.loc[run.id, "final_test_acc"] == pytest.approx(
            alone[best].loc[run.id, "final_test_acc"], abs=1e-6
        )
    assert set(both["train_lr"]) == {0.001, 0.3}  # each rate wins somewhere: a real choice


def test_learning_rates_must_be_positive():
    with pytest.raises(UsageError, match="learning rates must be positive"):
        Grid(lrs=(0.1, -1.0))
