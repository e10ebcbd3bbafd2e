"""The residual-era recipes: Fixup's scale factors and zeros, SkipInit's and ReZero's gates
that make every block the identity, ZerO's deterministic matrices, against their papers
and reference code."""

import math

import numpy as np
import pytest
import torch

from initbench import Grid, apply
from initbench.archs import get_arch
from initbench.core.activations import get_activation
from initbench.core.data import load_dataset
from initbench.core.fill import learning_rate_scales
from initbench.core.recipes.zero_hadamard import hadamard, matrix
from initbench.core.schemes import get_scheme
from initbench.sweeps.engine import compute_chunk, initialize_runs
from initbench.sweeps.grid import Cell, Run
from initbench.sweeps.train import train_stack

RELU = get_activation("relu")
CPU = torch.device("cpu")


def _stacked(scheme, arch, depth=3, width=32, seeds=(0,), grid=None):
    grid = grid or Grid(batch_size=16, image_size=4, tokens=4)
    arch = get_arch(arch)
    runs = [Run(Cell(get_scheme(scheme), RELU, arch, depth, width), s) for s in seeds]
    inputs = grid.cell_inputs(runs[0].cell)
    net = arch.stack(len(runs), depth, width, RELU, inputs)
    initialize_runs(net, runs, grid, inputs, None)
    return net, arch.parts(depth, width, RELU, inputs)


def weights_by_role(net, parts, run=0):
    found = {}
    for target, site in zip(parts.targets, parts.sites, strict=True):
        found.setdefault(site.role, []).append(target.view(net.param(target.param)[run]).detach())
    return found


def test_fixup_zeros_and_scales():
    """Fixup (Zhang et al. 2019, Section 3): the classification layer and each branch's
    last layer 0; He elsewhere, scaled by L^(-1/(2m-2)) = L^-1/2 in branches of m = 2
    layers (a gpt of 3 blocks: L = 6 branches); multipliers 1 and scalar biases 0, both
    trained."""
    scheme = get_scheme("fixup")
    net, parts = _stacked("fixup", "gpt[head_dim=8]", depth=3, width=64)
    w = weights_by_role(net, parts)
    for role in ("attn_out", "mlp_out", "readout"):
        assert all(torch.count_nonzero(t) == 0 for t in w[role]), role
    assert {s.branches for s in parts.sites} == {6}
    for role in ("query", "value", "mlp_in"):
        site = next(s for s in parts.sites if s.role == role)
        assert scheme.variance(site, RELU) == pytest.approx(2 / site.fan_in / 6)
        drawn = torch.cat([t.flatten() for t in w[role]])
        assert drawn.var().item() == pytest.approx(2 / site.fan_in / 6, rel=0.05)
    embedding = next(s for s in parts.sites if s.role == "embedding")
    assert scheme.variance(embedding, RELU) == pytest.approx(2 / 64)
    scales = learning_rate_scales(
        parts.settings, parts.setting_sites, parts.targets, parts.sites, scheme, "adam"
    )
    assert set(scales.values()) == {0.0}  # the skips stay; the gates and shifts train
    assert all(name.endswith(".skip") for name in scales)
    assert net.param("blocks.2.mlp_branch.gate")[0].item() == 1.0
    assert net.param("blocks.2.attn_branch.shift_out")[0].item() == 0.0
    # a one-layer branch (resmlp): only the zeros; nothing inside to scale
    net, parts = _stacked("fixup", "resmlp", depth=4)
    w = weights_by_role(net, parts)
    assert all(torch.count_nonzero(t) == 0 for t in w["mlp_out"] + w["readout"])
    assert w["embedding"][0].var().item() == pytest.approx(2 / 32, rel=0.1)


def test_frozen_and_trained_scalars():
    """A plain scheme's gates stay at 1 while training; Fixup's train."""
    grid = Grid(dataset="digits", train_steps=5, train_batch_size=16, optimizer="adam", lr=0.01)
    data = load_dataset("digits")
    arch = get_arch("resmlp")
    runs = [
        Run(Cell(get_scheme(s), RELU, arch, 3, 16), 0)
        for s in ("fixup", "kaiming_normal[mode=fan_in,nonlinearity=matched]")
    ]
    inputs = grid.cell_inputs(runs[0].cell)
    net = arch.stack(2, 3, 16, RELU, inputs)
    initialize_runs(net, runs, grid, inputs, data)
    train_stack(net, runs, data, grid, grid.lr)
    gates = net.param("blocks.0.branch.gate").detach()
    assert gates[0].item() != 1.0 and gates[1].item() == 1.0


@pytest.mark.parametrize("scheme", ["skipinit", "rezero"])
@pytest.mark.parametrize(
    "arch", ["resmlp", "resmlp[norm=layer]", "resnet", "transformer[head_dim=8]", "gpt[head_dim=8]"]
)
def test_gated_blocks_are_the_identity_at_initialization(scheme, arch):
    """SkipInit (De & Smith 2020) and ReZero (Bachlechner et al. 2020): alpha = 0 makes
    every block the identity, so the stream after every block is the stream that enters
    the first (its variance the input's), and the gate trains."""
    grid = Grid(batch_size=16, image_size=4, tokens=4)
    cell = Cell(get_scheme(scheme), RELU, get_arch(arch), 4, 16)
    records = compute_chunk([Run(cell, 0)], grid, CPU, None)
    pre_var = records.layers["pre_var"].to_numpy()
    np.testing.assert_allclose(pre_var, pre_var[0], rtol=1e-6)
    assert records.layers["theory_pre_var"].isna().all()  # the maps do not follow gates
    model = cell.arch.build(4, 16, RELU, grid.cell_inputs(cell))
    apply(
        model, cell.scheme, RELU, generator=torch.Generator().manual_seed(0), roles=cell.arch.roles
    )
    x = cell.arch.draw_inputs(16, grid.cell_inputs(cell), torch.Generator().manual_seed(1), CPU)
    streams = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: streams.append((i[0], o))) for b in model.blocks
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    entering = streams[0][0]
    for _, out in streams:
        assert torch.equal(out, entering)
    sites = cell.arch.parts(4, 16, RELU, grid.cell_inputs(cell)).setting_sites
    gate = next(s for s in sites if s.role == "gate")
    assert cell.scheme.setting(gate) == (0.0, 1.0)


def test_skipinit_and_rezero_differ_in_their_weights():
    site_scheme = {s: get_scheme(s) for s in ("skipinit", "rezero")}
    sites = _stacked("rezero", "resmlp")[1].sites
    variances = {s: [scheme.variance(x, RELU) for x in sites] for s, scheme in site_scheme.items()}
    assert variances["skipinit"][1] == pytest.approx(2 / 32)  # He
    assert variances["rezero"][1] == pytest.approx(2 / 64)  # Xavier, 32 in and out


def test_zero_is_deterministic_identities_and_hadamards():
    """ZerO (Zhao et al. 2021, Algorithms 1 and 2): the same weights at every seed;
    identity where m <= n, I H_p I / 2^(log2 p / 2) where m > n; each branch's last layer 0."""
    net, parts = _stacked("zero_hadamard", "gpt[head_dim=8]", depth=2, width=16, seeds=(0, 7))
    for name in net.names:
        assert torch.equal(net.param(name)[0], net.param(name)[1]), name
    w = weights_by_role(net, parts)
    assert torch.equal(w["query"][0], torch.eye(16))
    assert all(torch.count_nonzero(t) == 0 for t in w["attn_out"] + w["mlp_out"])
    up = w["mlp_in"][0]  # 64 x 16: p = 64
    assert torch.equal(up, (hadamard(64) / 8)[:, :16])
    embedding = w["embedding"][0]  # 16 x 16 characters of a vocabulary of the width
    assert torch.equal(embedding, torch.eye(16))
    h = hadamard(8)
    assert torch.equal(h @ h.T, 8 * torch.eye(8))
    assert torch.equal(matrix(3, 5), torch.eye(3, 5))
    assert matrix(5, 3).abs().unique().tolist() == pytest.approx([2**-1.5])
    net, parts = _stacked("zero_hadamard", "resnet", depth=2, width=8)
    conv = weights_by_role(net, parts)["embedding"][0]  # 8 x 8 x 3 x 3 (probe: 8 channels)
    assert torch.equal(conv[:, :, 1, 1], torch.eye(8)) and conv.abs().sum() == 8


def test_fixup_theory_holds_while_gates_keep_their_defaults():
    """Fixup leaves every scalar at its default at initialization: the residual map still
    predicts the stream (constant: every branch is 0)."""
    grid = Grid(batch_size=32)
    cell = Cell(get_scheme("fixup"), RELU, get_arch("resmlp"), 3, 32)
    layers = compute_chunk([Run(cell, 0)], grid, CPU, None).layers
    theory = layers["theory_pre_var"].to_numpy()
    assert np.isfinite(theory).all() and theory == pytest.approx([theory[0]] * 3)
    assert theory[0] == pytest.approx(2.0)  # He stem on unit-variance input
    assert math.isfinite(layers["pre_var"].iloc[-1])


def test_fixup_skips_a_plain_stack():
    cell = Cell(get_scheme("fixup"), RELU, get_arch("mlp"), 3, 16)
    cells = compute_chunk([Run(cell, 0)], Grid(batch_size=8), CPU, None).cells
    assert cells["reason"].iloc[0].startswith("not applicable: fixup needs residual branches")
