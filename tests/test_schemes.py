import math

import pytest
import torch
from torch import nn

from initbench import apply, get_activation, get_arch, get_scheme
from initbench.archs import Inputs
from initbench.core.errors import UsageError
from initbench.core.schemes import FAMILIES, expand_schemes, fans, torch_initializers


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


def test_every_scheme_has_its_own_short_label():
    from initbench.core.schemes import short_label

    ids = [s.id for s in expand_schemes(["*"], gains=("unit", "matched", 1.5))]
    labels = [short_label(i) for i in ids]
    assert len(set(labels)) == len(ids)
    assert short_label("kaiming_normal[mode=fan_in,nonlinearity=matched]") == "KN in,g"
    assert short_label("xavier_uniform[gain=unit]") == "XU 1"
    assert short_label("orthogonal[gain=1.5]") == "orth 1.5"
    assert max(map(len, labels)) <= 16
