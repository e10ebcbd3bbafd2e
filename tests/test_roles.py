"""Weights by role: every architecture names the role and block of each weight, any other
module gets them from its layers' types and names, and recipes read them as sites."""

import json

import pytest
import torch
from torch import nn

from initbench import Grid
from initbench.archs import ARCHS, get_arch
from initbench.archs.base import network_parts
from initbench.core.activations import get_activation
from initbench.core.roles import ROLES, Site
from initbench.core.schemes import get_scheme
from initbench.core.targets import init_targets
from tests.cli import run_cli

RELU = get_activation("relu")


def _parts(arch_id, depth=2, width=16):
    arch = get_arch(arch_id)
    inputs = Grid(image_size=4, tokens=3).inputs(arch, width)
    return arch.parts(depth, width, RELU, inputs)


def test_list_archs_shows_every_role_without_torch():
    done = run_cli("list", "archs", "--json")
    assert done.returncode == 0, done.stderr
    listed = {row["name"]: row for row in json.loads(done.stdout)}
    assert set(listed) == set(ARCHS)
    for row in listed.values():
        roles = [r for v in row["roles"].values() for r in (v if isinstance(v, list) else [v])]
        assert roles and set(roles) <= set(ROLES), row
    attention = listed["transformer"]["roles"]["blocks.*.self_attn.in_proj_weight"]
    assert attention == ["query", "key", "value"]
    assert listed["gpt"]["roles"]["*.gate"] == "gate"


@pytest.mark.parametrize(
    "arch, roles, blocks",
    [
        ("mlp", ["embedding", "hidden", "readout"], [None] * 3),
        ("cnn", ["embedding", "hidden", "readout"], [None] * 3),
        ("resmlp", ["embedding", "mlp_out", "mlp_out", "readout"], [None, 0, 1, None]),
        ("resnet", ["embedding", "mlp_out", "mlp_out", "readout"], [None, 0, 1, None]),
        (
            "transformer",
            ["embedding"]
            + ["query", "key", "value", "attn_out", "mlp_in", "mlp_out"] * 2
            + ["readout"],
            [None] + [0] * 6 + [1] * 6 + [None],
        ),
        (
            "gpt[head_dim=8]",
            ["embedding", "position"]
            + ["query", "key", "value", "attn_out", "mlp_in", "mlp_out"] * 2
            + ["readout"],
            [None, None] + [0] * 6 + [1] * 6 + [None],
        ),
    ],
)
def test_each_architecture_knows_its_roles_and_blocks(arch, roles, blocks):
    parts = _parts(arch)
    assert [s.role for s in parts.sites] == roles
    assert [s.block for s in parts.sites] == blocks
    residual = not arch.startswith(("mlp", "cnn"))
    assert {s.blocks for s in parts.sites} == {2 if residual else 0}
    assert {s.width for s in parts.sites} == {16}


class _NanoBlock(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.attn = nn.Module()
        self.attn.c_attn, self.attn.c_proj = nn.Linear(n, 3 * n), nn.Linear(n, n)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(n, 4 * n), nn.Linear(4 * n, n)


class _Nano(nn.Module):
    """nanoGPT's parameter names."""

    def __init__(self, n=8, vocab=11, layers=3):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, n), nn.Embedding(5, n)
        self.h = nn.ModuleList(_NanoBlock(n) for _ in range(layers))
        self.lm_head = nn.Linear(n, vocab, bias=False)


def test_any_module_gets_roles_from_its_layers_names():
    targets = init_targets(_Nano())
    assert [(t.param, t.role, t.block) for t in targets[:6]] == [
        ("wte.weight", "embedding", None),
        ("wpe.weight", "position", None),
        ("h.0.attn.c_attn.weight", "hidden", 0),  # a fused projection: no single role
        ("h.0.attn.c_proj.weight", "attn_out", 0),
        ("h.0.mlp.c_fc.weight", "mlp_in", 0),
        ("h.0.mlp.c_proj.weight", "mlp_out", 0),
    ]
    assert (targets[-1].role, targets[-1].block) == ("readout", None)
    assert {t.block for t in targets[2:-1]} == {0, 1, 2}
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    encoder = nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoder(layer, 2), nn.Linear(8, 3))
    roles = [(t.role, t.block) for t in init_targets(encoder)]
    block = [("query", 0), ("key", 0), ("value", 0), ("attn_out", 0), ("mlp_in", 0)]
    assert roles[:7] == [("embedding", None), *block, ("mlp_out", 0)]
    assert roles[-1] == ("readout", None)
    lstm = nn.LSTM(4, 6, num_layers=2)
    gates = [t.role for t in init_targets(lstm)]  # four gates' blocks per weight
    assert gates == ["hidden"] * 4 + ["recurrent"] * 4 + ["hidden"] * 4 + ["recurrent"] * 4


def test_torchvision_blocks_are_its_residual_blocks():
    torchvision = pytest.importorskip("torchvision")
    parts = network_parts(torchvision.models.resnet18(num_classes=10), None, None)
    assert parts.sites[0].blocks == 8  # layer1..layer4, two BasicBlocks each
    assert parts.sites[0].role == "embedding" and parts.sites[-1].role == "readout"


def test_a_plain_scheme_is_the_same_at_every_site():
    scheme = get_scheme("xavier_normal[gain=unit]")
    site = Site("attn_out", (8, 32), 3, 4, 8)
    assert scheme.at(site) is scheme
    assert (site.fan_in, site.fan_out) == (32, 8)
    assert scheme.variance(site, RELU) == pytest.approx(2 / 40)
    assert scheme.lr_scale(site, "adam") == 1.0 and scheme.setting(site) is None


def test_plain_schemes_draw_what_torch_draws_in_model_order():
    """A run's weights are torch.nn.init's draws, weight after weight, from its generator:
    the numbers stored results were computed with."""
    parts = _parts("transformer[head_dim=8]", depth=2, width=16)
    net = get_arch("transformer[head_dim=8]").stack(
        1, 2, 16, RELU, Grid(tokens=3).inputs(get_arch("transformer"), 16)
    )
    net.initialize(0, get_scheme("xavier_uniform[gain=matched]"), torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)
    for target, site in zip(parts.targets, parts.sites, strict=True):
        expected = torch.empty(site.shape)
        torch.nn.init.xavier_uniform_(expected, RELU.gain(), generator=generator)
        assert torch.equal(target.view(net.param(target.param)[0]), expected), target.name
