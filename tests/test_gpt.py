"""The gpt arch and the character task: text that ships with Python, next-character loss
in bits per character, a decoder that trains on it as its plain module does."""

import math
import socket
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from initbench import Grid, apply, param_groups
from initbench.archs import get_arch
from initbench.core.activations import get_activation
from initbench.core.data import CHARS_CONTEXT, CHARS_MODULES, DATASETS, load_dataset
from initbench.core.errors import UsageError
from initbench.core.rng import run_generator
from initbench.core.schemes import get_scheme
from initbench.sweeps.engine import initialize_runs
from initbench.sweeps.grid import Cell, Run
from initbench.sweeps.train import batch_order, scaled_step, train_stack
from tests.cli import assert_usage_error, run_cli

GELU = get_activation("gelu")


def test_the_character_task_loads_without_a_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(socket, "socket", refuse)
    load_dataset.cache_clear()
    data = load_dataset("chars")
    load_dataset.cache_clear()
    assert DATASETS["chars"].kind == "text" and DATASETS["chars"].classes == 128
    assert data.x_train.dtype == data.y_train.dtype == torch.int64
    assert data.x_train.shape[1:] == data.y_test.shape[1:] == (CHARS_CONTEXT,)
    # the targets are the next characters: a window shifted by one
    assert torch.equal(data.x_train[:, 1:], data.y_train[:, :-1])
    assert int(data.x_train.min()) >= 0 and int(data.x_train.max()) < 128
    # a fixed split: the last tenth of each module's 64-character windows is the test set
    root = Path(sysconfig.get_paths()["stdlib"])
    windows = [(len((root / f"{m}.py").read_text()) - 1) // CHARS_CONTEXT for m in CHARS_MODULES]
    held_out = [max(1, round(n * 0.1)) for n in windows]
    assert len(data.x_test) == sum(held_out)
    assert len(data.x_train) == sum(windows) - sum(held_out)
    first = (root / f"{CHARS_MODULES[0]}.py").read_text()[: CHARS_CONTEXT + 1]
    assert "".join(map(chr, data.x_train[0].tolist())) == first[:-1]


@pytest.mark.parametrize("arch, dataset", [("mlp", "chars"), ("gpt", "digits")])
def test_text_goes_to_the_gpt_only(arch, dataset, tmp_path):
    with pytest.raises(UsageError, match="takes"):
        Grid(archs=(arch,), dataset=dataset).cells()
    result = run_cli("sweep", "--archs", arch, "--dataset", dataset, "--out", str(tmp_path / "x"))
    assert_usage_error(result, f"dataset {dataset!r} is")


def test_a_tied_readout_is_the_token_embedding():
    arch = get_arch("gpt[tie=true,head_dim=8]")
    inputs = Grid(dataset="chars").inputs(arch, 16)
    model = arch.build(2, 16, GELU, inputs)
    assert model.head.weight is model.wte.weight
    parts = arch.parts(2, 16, GELU, inputs)
    assert [t.param for t in parts.targets][:2] == ["wte.weight", "wpe.weight"]
    assert "readout" not in {s.role for s in parts.sites}
    assert arch.output_sample(inputs, 1) == (CHARS_CONTEXT, 128)


def test_the_gpt_trains_on_characters_as_its_plain_module_does():
    """Stacked training equals the tutorial's loop on the plain module (next-character
    cross-entropy), the loss is in bits per character, from about log2(128) = 7 at
    initialization, and the branch scalars stay where they start."""
    grid = Grid(dataset="chars", train_steps=8, train_batch_size=8, eval_every=4, optimizer="adam")
    grid = Grid.from_dict({"lr": 0.003}, grid)
    data = load_dataset("chars")
    arch = get_arch("gpt[head_dim=8]")
    cell = Cell(get_scheme("normal[std=0.02]"), GELU, arch, 2, 16)
    runs = [Run(cell, 0), Run(cell, 1)]
    inputs = grid.cell_inputs(cell)
    net = arch.stack(len(runs), 2, 16, GELU, inputs)
    initialize_runs(net, runs, grid, inputs, data)
    stacked = train_stack(net, runs, data, grid, grid.lr)
    assert stacked.test_loss[:, 0] == pytest.approx(7.0, abs=0.05)
    gates = net.param("blocks.1.mlp_branch.gate")
    assert torch.equal(gates, torch.ones_like(gates))
    for r, run in enumerate(runs):
        model = arch.build(2, 16, GELU, inputs)
        apply(model, cell.scheme, GELU, generator=run_generator(run.seed), roles=arch.roles)
        optimizer = torch.optim.Adam(param_groups(model, cell.scheme, grid.lr, roles=arch.roles))
        order = batch_order(run.seed, len(data.x_train), grid.train_steps, grid.train_batch_size)
        for step in range(grid.train_steps):
            model.train()
            optimizer.zero_grad()
            logits = model(data.x_train[order[step]])
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), data.y_train[order[step]].flatten()
            )
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(data.x_test)
            nats = torch.nn.functional.cross_entropy(logits.flatten(0, 1), data.y_test.flatten())
            right = (logits.argmax(-1) == data.y_test).float().mean()
        assert stacked.test_loss[r, -1] == pytest.approx(nats.item() / math.log(2), rel=1e-4)
        assert stacked.test_acc[r, -1] == pytest.approx(right.item(), abs=1e-5)
        assert model.blocks[1].mlp_branch.gate.item() == 1.0


def test_a_scaled_step_is_a_scaled_learning_rate():
    """SGD with momentum: a step scaled by 1/2 per run is a learning rate halved; a scale
    of 0 keeps the parameter."""
    start = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    grads = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(1))
    scale = torch.tensor([0.5, 0.0, 1.0]).view(3, 1)
    p = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    expected = []
    for lr in (0.05, 0.0, 0.1):
        q = torch.nn.Parameter(start[len(expected)].clone())
        alone = torch.optim.SGD([q], lr=lr, momentum=0.9)
        for g in grads[:, len(expected)]:
            q.grad = g.clone()
            alone.step()
        expected.append(q.detach())
    for g in grads:
        p.grad = g.clone()
        scaled_step(optimizer, {p: scale})
    np.testing.assert_allclose(p.detach(), torch.stack(expected), rtol=1e-6, atol=1e-7)
    assert torch.equal(p.detach()[1], start[1])
