"""muP and u-muP: their per-layer variances and learning-rate multipliers against Table 3
of Tensor Programs V and graphcore's unit_scaling, muP at its base width is He's
initialization, and a sweep trains with the multipliers as a plain loop does."""

import numpy as np
import pytest
import torch

from initbench import Grid, apply, param_groups
from initbench.archs import get_arch
from initbench.core.activations import get_activation
from initbench.core.data import load_dataset
from initbench.core.errors import UsageError
from initbench.core.fill import learning_rate_scales
from initbench.core.rng import run_generator
from initbench.core.schemes import get_scheme
from initbench.sweeps.engine import initialize_runs
from initbench.sweeps.grid import Cell, Run
from initbench.sweeps.train import batch_order, make_optimizer, train_stack

RELU = get_activation("relu")
KAIMING = "kaiming_normal[mode=fan_in,nonlinearity=matched]"


def _parts(arch, width, depth=3, dataset=None):
    arch = get_arch(arch)
    return arch.parts(depth, width, RELU, Grid(dataset=dataset).inputs(arch, width))


def _table(scheme, parts, optimizer):
    scales = learning_rate_scales(
        parts.settings, parts.setting_sites, parts.targets, parts.sites, scheme, optimizer
    )
    return [
        (site.role, scheme.variance(site, RELU), scales.get(target.param, 1.0))
        for target, site in zip(parts.targets, parts.sites, strict=True)
    ]


def test_mup_variances_and_learning_rates_are_table_3():
    """Tensor Programs V, Table 3: input weights var 1/fan_in, Adam lr 1, SGD lr fan_out;
    hidden var 1/fan_in, Adam lr 1/fan_in, SGD lr 1; output var 1/fan_in^2, lr 1/fan_in
    (relative to base width b = 64, at width w = 256, He's gain 2 for ReLU)."""
    scheme = get_scheme("mup[base_width=64]")
    parts = _parts("mlp", 256, dataset="digits")  # 64 pixels in, 10 classes out
    b, w = 64, 256
    adam, sgd = _table(scheme, parts, "adam"), _table(scheme, parts, "sgd")
    assert [r for r, _, _ in adam] == ["embedding", "hidden", "hidden", "readout"]
    assert adam[0][1:] == pytest.approx((2 / 64, 1.0)) and sgd[0][2] == pytest.approx(w / b)
    for (_, var, lr_adam), (_, _, lr_sgd) in zip(adam[1:3], sgd[1:3], strict=True):
        assert (var, lr_adam, lr_sgd) == pytest.approx((2 / w, b / w, 1.0))
    assert adam[3][1:] == pytest.approx((2 / w * b / w, b / w))
    assert sgd[3][2] == pytest.approx(b / w)
    # an embedding table's fan-in is the width: its variance stays the base width's
    gpt = _parts("gpt", 256, dataset="chars")
    table = next(s for s in gpt.sites if s.role == "embedding")
    assert table.lookup and scheme.variance(table, RELU) == pytest.approx(2 / b)


def test_mup_at_its_base_width_is_he():
    """At width = base_width every multiplier is 1 and every variance He's: the same
    draws, and one equivalence group."""
    grid = Grid(
        schemes=("mup[base_width=64]", KAIMING), activations=("relu",), depths=(3,), widths=(64,)
    )
    signatures = grid.weight_signatures()["weights"].tolist()
    assert signatures[0] == signatures[1]
    parts = _parts("mlp", 64)
    assert {lr for _, _, lr in _table(get_scheme("mup[base_width=64]"), parts, "adam")} == {1.0}
    nets = []
    for scheme in ("mup[base_width=64]", KAIMING):
        net = get_arch("mlp").stack(1, 3, 64, RELU, Grid().inputs(get_arch("mlp"), 64))
        net.initialize(0, get_scheme(scheme), torch.Generator().manual_seed(5))
        nets.append(net)
    for name in nets[0].names:
        torch.testing.assert_close(nets[0].param(name), nets[1].param(name), rtol=0, atol=0)


def test_u_mup_folds_unit_scaling_into_weights_and_learning_rates():
    """unit_scaling's lr_scale_func_adam: weights fan_in^-1/2 with an output multiplier of
    fan_in^-1/2 (effective lr 1/fan_in, var 1/fan_in), the readout's output 1/fan_in (var
    1/fan_in^2, lr 1/fan_in), embedding tables unscaled (var 1, lr width^-1/2)."""
    scheme = get_scheme("u_mup")
    adam = _table(scheme, _parts("mlp", 256, dataset="digits"), "adam")
    assert adam[0][1:] == pytest.approx((1 / 64, 1 / 64))  # 64 pixels in
    assert adam[1][1:] == pytest.approx((1 / 256, 1 / 256))
    assert adam[3][1:] == pytest.approx((1 / 256**2, 1 / 256))
    gpt = _parts("gpt", 256, dataset="chars")
    table = _table(scheme, gpt, "adam")[0]
    assert table == ("embedding", 1.0, pytest.approx(256**-0.5))


def test_mup_needs_the_networks_width():
    model = get_arch("mlp").build(2, 16, RELU, Grid().inputs(get_arch("mlp"), 16))
    with pytest.raises(UsageError, match="width"):
        apply(model, "mup", roles=get_arch("mlp").roles)
    apply(model, "mup", roles=get_arch("mlp").roles, width=16)


def test_a_sweep_trains_mup_at_its_multipliers():
    """Stacked training with muP's multipliers equals Adam on the plain module with
    initbench.param_groups."""
    grid = Grid(dataset="digits", train_steps=6, train_batch_size=32, optimizer="adam", lr=0.01)
    data = load_dataset("digits")
    arch = get_arch("mlp")
    cell = Cell(get_scheme("mup[base_width=16]"), RELU, arch, 3, 64)
    runs = [Run(cell, 0), Run(Cell(get_scheme(KAIMING), RELU, arch, 3, 64), 0)]
    inputs = grid.cell_inputs(cell)
    net = arch.stack(2, 3, 64, RELU, inputs)
    initialize_runs(net, runs, grid, inputs, data)
    scales = net.lr_scales([r.cell.scheme for r in runs], "adam")
    assert scales["2.weight"].flatten().tolist() == [0.25, 1.0]
    stacked = train_stack(net, runs, data, grid, grid.lr)
    x = arch.data_sample(data.x_train)
    for r, run in enumerate(runs):
        model = arch.build(3, 64, RELU, inputs)
        apply(model, run.cell.scheme, RELU, generator=run_generator(0), roles=arch.roles, width=64)
        groups = param_groups(model, run.cell.scheme, grid.lr, "adam", roles=arch.roles, width=64)
        optimizer = make_optimizer(groups, grid, grid.lr)
        order = batch_order(0, len(x), grid.train_steps, grid.train_batch_size)
        for step in range(grid.train_steps):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                model(x[order[step]]), data.y_train[order[step]]
            )
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            out = model(arch.data_sample(data.x_test))
            test_loss = torch.nn.functional.cross_entropy(out, data.y_test).item()
        assert stacked.test_loss[r, -1] == pytest.approx(test_loss, rel=1e-4)
    assert not np.isclose(stacked.test_loss[0, -1], stacked.test_loss[1, -1])
