import math

import pytest
import torch
from torch import nn

from initbench import apply, get_activation, get_arch, get_scheme
from initbench.archs import Inputs
from initbench.core.errors import UsageError
from initbench.core.roles import fans
from initbench.core.schemes import FAMILIES, expand_schemes, torch_initializers


def _mlp(depth, width, activation, d_in, classes):
    return get_arch("mlp").build(depth, width, get_activation(activation), Inputs((d_in,), classes))


LINEAR = (400, 600)
CONV = (64, 48, 3, 3)


def test_registry_covers_every_torch_initializer():
    covered: set[str] = set()
    for name in FAMILIES:
        for scheme in expand_schemes([name]):
            covered.update(scheme.covers)
    missing = sorted(set(torch_initializers()) - covered)
    assert not missing, f"torch.nn.init exposes initializers initbench does not cover: {missing}"
    assert {"xavier_normal_", "kaiming_uniform_", "orthogonal_", "trunc_normal_"} <= covered


ALL_SCHEMES = [s.id for s in expand_schemes(["*"], ["unit", "matched", 1.7])]


@pytest.mark.parametrize("scheme_id", ALL_SCHEMES)
@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu[negative_slope=0.2]", "gelu"])
@pytest.mark.parametrize("shape", [LINEAR, CONV], ids=["linear", "conv"])
def test_weight_moments_match_closed_form(scheme_id, activation, shape):
    scheme, act = get_scheme(scheme_id), get_activation(activation)
    if scheme.not_applicable(shape) or scheme.moments is None:
        pytest.skip("not applicable or no closed form")
    w = torch.empty(shape)
    scheme.init(w, act, torch.Generator().manual_seed(0))
    mean, var = scheme.moments(shape, act)
    n = w.numel()
    # sampling error of the mean and variance, generous: 6 standard errors
    # float32 rounding, and 6 standard errors of the sample mean and variance
    assert w.mean().item() == pytest.approx(mean, rel=1e-6, abs=6 * math.sqrt(var / n) + 1e-9)
    assert w.var(correction=0).item() == pytest.approx(var, rel=6 * math.sqrt(3 / n), abs=1e-9)


def test_variances_by_formula():
    act = get_activation("relu")
    fan_in, fan_out = fans(LINEAR)[0], fans(LINEAR)[1]
    assert (fan_in, fan_out) == (600, 400)
    assert get_scheme("kaiming_normal[mode=fan_in,nonlinearity=matched]").moments(LINEAR, act)[
        1
    ] == pytest.approx(2 / 600)
    assert get_scheme("kaiming_normal[mode=fan_out,nonlinearity=matched]").moments(LINEAR, act)[
        1
    ] == pytest.approx(2 / 400)
    assert get_scheme("xavier_uniform[gain=unit]").moments(LINEAR, act)[1] == pytest.approx(
        2 / 1000
    )
    assert get_scheme("torch_default").moments(LINEAR, act)[1] == pytest.approx(1 / 1800)
    assert get_scheme("uniform[a=0,b=1]").moments(LINEAR, act) == (0.5, pytest.approx(1 / 12))


@pytest.mark.parametrize(
    "activation, gain",
    [
        ("tanh", 5 / 3),
        ("relu", math.sqrt(2)),
        ("leaky_relu", math.sqrt(2 / (1 + 0.01**2))),
        ("leaky_relu[negative_slope=0.2]", math.sqrt(2 / (1 + 0.2**2))),
        ("sigmoid", 1.0),
        ("identity", 1.0),
        ("selu", 0.75),
    ],
)
def test_tutorial_gain_table(activation, gain):
    assert get_activation(activation).gain() == pytest.approx(gain)


def test_quadrature_gain_preserves_second_moment_for_gelu():
    act = get_activation("gelu")
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert (act.gain() ** 2 * act.fn(z).pow(2).mean()).item() == pytest.approx(1.0, rel=0.01)


def test_torch_default_is_what_nn_linear_does():
    torch.manual_seed(3)
    layer = nn.Linear(70, 30)
    w = torch.empty(30, 70)
    get_scheme("torch_default").init(w, get_activation("relu"), torch.Generator().manual_seed(3))
    assert torch.equal(w, layer.weight.detach())


def test_explicit_ids_and_patterns():
    ids = [s.id for s in expand_schemes(["xavier*"], ["unit", "matched", "1.5"])]
    assert ids == [
        "xavier_uniform[gain=unit]",
        "xavier_uniform[gain=matched]",
        "xavier_uniform[gain=1.5]",
        "xavier_normal[gain=unit]",
        "xavier_normal[gain=matched]",
        "xavier_normal[gain=1.5]",
    ]
    assert [s.id for s in expand_schemes(["normal[std=0.05]"])] == ["normal[std=0.05]"]
    assert get_scheme("normal[std=0.05]").moments(LINEAR, get_activation("relu"))[1] == (
        pytest.approx(0.0025)
    )
    for bad in (
        "nope*",
        "normal[sd=1]",
        "uniform[a=1,b=0]",
        "normal[std=x]",
        "xavier_normal[gain=-1]",
    ):
        with pytest.raises(UsageError):
            expand_schemes([bad])


def test_apply_to_a_torchvision_model():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    with pytest.raises(UsageError, match=r"dirac cannot initialize fc\.weight: .*2-D"):
        apply(model, "dirac", "relu")
    applied = apply(model, "dirac", "relu", generator=torch.Generator(), fallback=True)
    assert applied.fallback == ["fc.weight"]  # the readout is 2-D: torch's default instead
    conv = model.conv1.weight
    assert conv[0, 0, 3, 3] == 1 and conv.sum() == min(conv.shape[0], conv.shape[1])
    applied = apply(model, "kaiming_normal[mode=fan_out,nonlinearity=matched]", "relu")
    assert applied.fallback == [] and len(applied.initialized) == 21  # 20 convs and fc
    assert applied.biases == ["fc.bias"] and model.fc.bias.abs().sum() == 0
    assert applied.left["bn1.weight"].startswith("normalization gain")
    std = model.layer1[0].conv1.weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)


RECURRENT = [
    (nn.LSTM, 4, {"proj_size": 24}),
    (nn.GRU, 3, {}),
    (nn.RNN, 1, {"nonlinearity": "relu"}),
]


def _recurrent_fans(module):
    """Each gate block's (fan_in, fan_out) as docs/concepts.md states the convention:
    ``hidden_size`` rows; columns: the input (``input_size`` for layer 0, the directions'
    outputs above), or the recurrent state (``proj_size`` if any, else ``hidden_size``);
    LSTM's projection ``weight_hr`` maps ``hidden_size`` to ``proj_size``."""
    hidden, out = module.hidden_size, module.proj_size or module.hidden_size
    directions = 2 if module.bidirectional else 1
    gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
    fans = {}
    for layer in range(module.num_layers):
        for suffix in ("", "_reverse")[:directions]:
            inputs = module.input_size if layer == 0 else directions * out
            for kind, fan_in in (("ih", inputs), ("hh", out)):
                for g in range(gates):
                    rows = f"[{g * hidden}:{(g + 1) * hidden}]"
                    fans[f"weight_{kind}_l{layer}{suffix}{rows}"] = (fan_in, hidden)
            if module.proj_size:
                fans[f"weight_hr_l{layer}{suffix}"] = (hidden, out)
    return fans


def _blocks(module):
    params = dict(module.named_parameters())
    blocks = {}
    for name in _recurrent_fans(module):
        param, _, rows = name.partition("[")
        start, _, stop = rows.rstrip("]").partition(":")
        weight = params[param]
        blocks[name] = weight[int(start) : int(stop)] if rows else weight
    return blocks


@pytest.mark.parametrize(("cls", "gates", "extra"), RECURRENT, ids=["lstm", "gru", "rnn"])
def test_apply_fills_every_gate_of_a_recurrent_layer_with_its_own_fans(cls, gates, extra):
    module = cls(48, 64, num_layers=2, bidirectional=True, batch_first=True, **extra)
    fans = _recurrent_fans(module)
    generator = torch.Generator().manual_seed(0)
    # kaiming_normal: std = gain / sqrt(fan) of the block's own fans (He et al. 2015)
    for mode, which in (("fan_in", 0), ("fan_out", 1)):
        applied = apply(
            module, f"kaiming_normal[mode={mode},nonlinearity=matched]", "relu", generator=generator
        )
        assert applied.initialized == list(fans) and applied.left == {}
        assert len([n for n in fans if "[" in n]) == 2 * 2 * 2 * gates
        for name, block in _blocks(module).items():
            expected = math.sqrt(2 / fans[name][which])
            # the sample std of n normal draws: relative standard error 1 / sqrt(2n)
            assert block.std().item() == pytest.approx(
                expected, rel=5 / math.sqrt(2 * block.numel())
            )
    # xavier_uniform: U(+-sqrt(6 / (fan_in + fan_out))) per block (Glorot & Bengio 2010); a
    # whole stacked matrix would count gates x hidden_size rows as its fan_out
    apply(module, "xavier_uniform[gain=unit]", generator=generator)
    for name, block in _blocks(module).items():
        bound = math.sqrt(6 / sum(fans[name]))
        assert 0.98 * bound < block.abs().max().item() <= bound
    # orthogonal: each block is orthogonal on its own (Saxe et al. 2014)
    apply(module, "orthogonal[gain=unit]", generator=generator)
    for block in _blocks(module).values():
        small = block @ block.T if block.shape[0] <= block.shape[1] else block.T @ block
        torch.testing.assert_close(small, torch.eye(len(small)), atol=1e-5, rtol=0)
    # both biases of every layer and direction: zeroed, or drawn from N(0, bias_var)
    applied = apply(module, "xavier_normal[gain=unit]", bias_var=0.04, generator=generator)
    biases = [name for name, _ in module.named_parameters() if name.startswith("bias")]
    assert applied.biases == biases and len(biases) == 2 * 2 * 2
    drawn = torch.cat([getattr(module, name) for name in biases])
    assert drawn.std().item() == pytest.approx(0.2, rel=5 / math.sqrt(2 * drawn.numel()))
    apply(module, "xavier_normal[gain=unit]", generator=generator)
    assert all(getattr(module, name).abs().sum() == 0 for name in biases)


def test_apply_fills_an_embedding_with_torchs_fans_of_its_table():
    """``Embedding(num, dim).weight`` is ``(num, dim)``: torch's fan_in is dim (its columns),
    fan_out num (its rows), as for a Linear's ``(out, in)``."""
    embedding = nn.Embedding(500, 64)
    generator = torch.Generator().manual_seed(0)
    for mode, fan in (("fan_in", 64), ("fan_out", 500)):
        apply(
            embedding,
            f"kaiming_normal[mode={mode},nonlinearity=matched]",
            "relu",
            generator=generator,
        )
        assert embedding.weight.std().item() == pytest.approx(math.sqrt(2 / fan), rel=0.02)


def test_apply_rejects_what_cannot_apply():
    model = _mlp(2, 16, "relu", 16, 4)
    with pytest.raises(UsageError, match=r"dirac cannot initialize 0\.weight: .*3/4/5-D"):
        apply(model, "dirac")
    with pytest.raises(UsageError, match="data"):
        apply(model, "lsuv")


def test_lsuv_gives_unit_variance_outputs():
    model = _mlp(6, 64, "tanh", 32, 10)
    x = torch.randn(512, 32, generator=torch.Generator().manual_seed(0))
    apply(model, "lsuv", "tanh", data=x, generator=torch.Generator().manual_seed(0))
    outs = []
    for layer in model:
        if isinstance(layer, nn.Linear):
            layer.register_forward_hook(lambda m, i, o: outs.append(o))
    model(x)
    assert [o.var().item() for o in outs] == pytest.approx([1.0] * 7, abs=1e-3)


def test_lsuv_leaves_a_recurrent_layers_gates_orthogonal():
    model = nn.Sequential(nn.Linear(8, 16), nn.LSTM(16, 16, batch_first=True))
    x = torch.randn(64, 5, 8, generator=torch.Generator().manual_seed(0))
    apply(model, "lsuv", data=x, generator=torch.Generator().manual_seed(0))
    assert model[0](x).var(correction=0).item() == pytest.approx(1.0, abs=1e-3)
    for weight in (model[1].weight_ih_l0, model[1].weight_hh_l0):
        for block in weight.detach().split(16):  # no hook sees a gate: its draw is kept
            torch.testing.assert_close(block @ block.T, torch.eye(16), atol=1e-5, rtol=0)


def test_every_scheme_has_its_own_short_label():
    from initbench.core.schemes import short_label

    ids = [s.id for s in expand_schemes(["*"], gains=("unit", "matched", 1.5))]
    labels = [short_label(i) for i in ids]
    assert len(set(labels)) == len(ids)
    assert short_label("kaiming_normal[mode=fan_in,nonlinearity=matched]") == "KN in,g"
    assert short_label("xavier_uniform[gain=unit]") == "XU 1"
    assert short_label("orthogonal[gain=1.5]") == "orth 1.5"
    assert max(map(len, labels)) <= 16
