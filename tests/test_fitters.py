"""GradInit and MetaInit: each lowers its own objective on its own batch (the run's fit
stream, never the probe batch), a stacked network fits as its plain module does, and a
network whose derivatives a fitter cannot take is skipped with the reason."""

import pytest
import torch

from initbench import Grid, apply
from initbench.archs import get_arch
from initbench.core.activations import get_activation
from initbench.core.rng import Stream, run_generator
from initbench.core.schemes import get_scheme
from initbench.initialize import fitter, metainit
from initbench.initialize.scales import stacked_objective
from initbench.sweeps.engine import compute_chunk, fit_batch, initialize_runs
from initbench.sweeps.grid import Cell, Run

TANH = get_activation("tanh")
CPU = torch.device("cpu")


def _net(scheme, arch="resmlp", depth=3, width=16, seeds=(0, 1), grid=None):
    grid = grid or Grid(batch_size=32, tokens=4)
    arch = get_arch(arch)
    runs = [Run(Cell(get_scheme(scheme), TANH, arch, depth, width), s) for s in seeds]
    inputs = grid.cell_inputs(runs[0].cell)
    net = arch.stack(len(runs), depth, width, TANH, inputs)
    for r, run in enumerate(runs):
        net.initialize(r, run.cell.scheme, run_generator(run.seed))
    return net, runs, grid, inputs


@pytest.mark.parametrize("scheme", ["gradinit[steps=8]", "metainit[steps=8]"])
@pytest.mark.parametrize("arch", ["resmlp", "gpt[head_dim=8]"])
def test_each_fitter_lowers_its_own_objective(scheme, arch):
    net, runs, grid, inputs = _net(scheme, arch)
    x, y = fit_batch(runs, grid, inputs, None)
    trace = fitter(get_scheme(scheme)).fit_stack(net, x, y, [0, 1], get_scheme(scheme))
    assert len(trace) == 8 + 1  # the budget its id records, and the end
    if scheme.startswith("metainit"):  # the gradient quotient, of the scales kept
        assert trace[-1] < trace[0] and trace[-1] <= min(trace[:-1]), trace
        scales, loss = stacked_objective(net, x, y)  # the written weights, scales at 1
        written = metainit.quotient(scales, loss, x.shape[1])[[0, 1]].mean().item()
        assert written == pytest.approx(trace[-1], rel=1e-4)
    else:  # a lower loss after the first step, the gradient's norm within its bound
        (norm, after), (last_norm, last_after) = trace[0], trace[-1]
        assert last_after < after and last_norm <= max(norm, 1.0), trace


@pytest.mark.parametrize("scheme", ["gradinit[steps=3]", "metainit[steps=3]"])
def test_a_fitter_never_sees_the_probe_batch(scheme, monkeypatch):
    """The fitter gets the run's fit stream (and its random classes), and what it fits
    does not change with the probe batch."""
    seen = []
    module = fitter(get_scheme(scheme))
    real = module.fit_stack

    def watch(net, x, y, runs, chosen):
        seen.append((x.clone(), y.clone()))
        return real(net, x, y, runs, chosen)

    monkeypatch.setattr(module, "fit_stack", watch)
    fitted = []
    for corr in (0.5, 0.0):
        grid = Grid(batch_size=16, input_corr=corr)
        net, runs, _, inputs = _net(scheme, grid=grid)
        probe_x, _, _ = initialize_runs(net, runs, grid, inputs, None)
        fitted.append({name: net.param(name).detach().clone() for name in net.names})
        x, y = seen[-1]
        generator = run_generator(runs[1].seed, Stream.FIT)
        assert torch.equal(x[1], torch.randn(16, 16, generator=generator))
        assert torch.equal(y[1], torch.randint(16, (16,), generator=generator))
        assert not torch.equal(x, probe_x)
    for name in fitted[0]:
        assert torch.equal(fitted[0][name], fitted[1][name]), name


@pytest.mark.parametrize("scheme", ["gradinit[steps=4]", "metainit[steps=4]"])
def test_a_stacked_network_fits_as_its_plain_module(scheme):
    net, runs, grid, inputs = _net(scheme, "mlp", seeds=(3,))
    x, y = fit_batch(runs, grid, inputs, None)
    fitter(get_scheme(scheme)).fit_stack(net, x, y, [0], get_scheme(scheme))
    model = get_arch("mlp").build(3, 16, TANH, inputs)
    apply(
        model,
        scheme,
        TANH,
        generator=run_generator(3),
        data=x[0],
        labels=y[0],
        roles=get_arch("mlp").roles,
    )
    for name, param in model.named_parameters():
        torch.testing.assert_close(net.param(name)[0], param.detach(), rtol=1e-4, atol=1e-6)


def test_a_network_the_fitter_cannot_differentiate_is_skipped():
    """MetaInit's third derivatives through a batch norm do not exist in torch: the run is
    skipped with the reason, its neighbours computed."""
    grid = Grid(batch_size=8, image_size=4)
    cells = [
        Cell(get_scheme(s), TANH, get_arch("resnet"), 2, 8)
        for s in ("metainit[steps=2]", "gradinit[steps=2]")
    ]
    records = compute_chunk([Run(c, 0) for c in cells], grid, CPU, None)
    status = dict(zip(records.cells["scheme_id"], records.cells["status"], strict=True))
    assert status == {"metainit[steps=2]": "skipped", "gradinit[steps=2]": "ok"}
    reason = records.cells.set_index("scheme_id").loc["metainit[steps=2]", "reason"]
    assert reason.startswith("not applicable: metainit[steps=2] cannot fit this network")
    assert set(records.layers["run_id"]) == {Run(cells[1], 0).id}
