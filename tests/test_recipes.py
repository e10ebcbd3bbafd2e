"""The transformer recipes against the constants of their papers and reference code: each
weight's distribution by role, block and depth, the schemes they draw with, where they do
not apply, and how equivalence groups and the mean-field theory see them."""

import math

import numpy as np
import pytest
import torch

from initbench import Grid
from initbench.archs import get_arch
from initbench.core.activations import get_activation
from initbench.core.roles import Site
from initbench.core.schemes import FAMILIES, get_scheme
from initbench.sweeps.engine import compute_chunk
from initbench.sweeps.grid import Cell, Run

GELU = get_activation("gelu")
D, L = 64, 4  # the gpt below: width 64 (4 heads of 16), 4 blocks, 128 characters
GPT = "gpt[head_dim=16]"
RECIPES = ("gpt2", "megatron", "mitchell", "depth_init", "small_init_emb", "mimetic", "deepnorm")


def _net(scheme, arch=GPT, seed=0):
    """A stacked gpt of one run drawn with ``scheme``, and its parts."""
    arch = get_arch(arch)
    inputs = Grid(dataset="chars").inputs(arch, D)
    parts = arch.parts(L, D, GELU, inputs)
    net = arch.stack(1, L, D, GELU, inputs)
    net.initialize(0, get_scheme(scheme), torch.Generator().manual_seed(seed))
    return net, parts


def stds(scheme, arch=GPT):
    """Each weight's role, block, and the std of its plain scheme's closed form."""
    _, parts = _net(scheme, arch)
    out = []
    for site in parts.sites:
        plain = get_scheme(scheme).at(site)
        out.append((site.role, site.block, math.sqrt(plain.moments(site.shape, GELU)[1])))
    return out


def std_of(table, role, block=None):
    found = {s for r, b, s in table if r == role and (block is None or b == block)}
    assert len(found) == 1, (role, block, found)
    return found.pop()


def drawn(scheme, role, block=0, arch=GPT):
    """The drawn entries of the first weight of a role in a block."""
    net, parts = _net(scheme, arch)
    for target, site in zip(parts.targets, parts.sites, strict=True):
        if site.role == role and site.block in (block, None):
            return target.view(net.param(target.param)[0]).detach()
    raise AssertionError(role)


def test_gpt2_stds_are_nanogpts():
    """nanoGPT's GPT._init_weights: N(0, 0.02^2), c_proj N(0, (0.02 / sqrt(2 n_layer))^2)."""
    table = stds("gpt2")
    for role in ("embedding", "position", "query", "key", "value", "mlp_in", "readout"):
        assert std_of(table, role) == pytest.approx(0.02)
    for role in ("attn_out", "mlp_out"):
        assert std_of(table, role) == pytest.approx(0.02 / math.sqrt(2 * L))
    out = drawn("gpt2", "attn_out", 2)
    assert out.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.05)
    assert get_scheme("gpt2").at(Site("attn_out", (D, D), 0, L)).id == "normal[std=0.00707107]"


@pytest.mark.parametrize("std", [0.02, 0.006])
def test_megatron_is_olmos_full_megatron(std):
    """olmo/initialization.py: in_module and emb at init_std, out_module at
    init_std / sqrt(2 n_layers), final_out at d_model^-0.5; trunc_normal_ at +-3 std."""
    scheme = get_scheme(f"megatron[std={std}]")
    table = stds(f"megatron[std={std}]")
    expected = {"query": std, "mlp_in": std, "embedding": std, "position": std}
    expected |= {"attn_out": std / math.sqrt(2 * L), "mlp_out": std / math.sqrt(2 * L)}
    expected["readout"] = D**-0.5
    for role, value in expected.items():
        site = Site(role, (D, D), 0, L, D)
        plain = scheme.at(site)
        assert plain.name == "trunc_normal" and plain.params["std"] == pytest.approx(value)
        assert (plain.params["a"], plain.params["b"]) == pytest.approx((-3 * value, 3 * value))
    for role, value in expected.items():
        # the truncation at 3 std keeps 98.9% of the variance
        assert std_of(table, role) == pytest.approx(value * math.sqrt(0.97333), rel=1e-4)


def test_mitchell_is_olmos():
    """olmo: 1/sqrt(d) cut at 3 std; attn_out 1/sqrt(2 d (l+1)), ff_out
    1/sqrt(2 d_hidden (l+1)) (OLMo's test_olmo_block_init_mitchell)."""
    scheme = get_scheme("mitchell")
    for layer in (0, 3):
        attn = scheme.at(Site("attn_out", (D, D), layer, L, D)).params["std"]
        assert attn == pytest.approx(1 / math.sqrt(2 * D * (layer + 1)))
        mlp = scheme.at(Site("mlp_out", (D, 4 * D), layer, L, D)).params["std"]
        assert mlp == pytest.approx(1 / math.sqrt(2 * 4 * D * (layer + 1)))
    for role, shape in (("query", (D, D)), ("mlp_in", (4 * D, D)), ("readout", (128, D))):
        assert scheme.at(Site(role, shape, 0, L, D)).params["std"] == pytest.approx(D**-0.5)
    assert scheme.at(Site("embedding", (128, D), None, L, D)).params["std"] == D**-0.5
    entries = drawn("mitchell", "mlp_out", 3)
    bound = 3 / math.sqrt(2 * 4 * D * 4)
    assert entries.abs().max().item() <= bound + 1e-7


@pytest.mark.parametrize("enabled", ["true", "false"])
def test_depth_init_is_torchtitans(enabled):
    """torchtitan llama3: weight_init_std = 0.02 / (2 (layer_id + 1))^0.5 with depth_init,
    0.02 / (2 n_layers)^0.5 without; wq, wk, wv, w1 at 0.02; tok_embeddings N(0, 1);
    output trunc_normal_(dim^-0.5, +-3 std)."""
    scheme = get_scheme(f"depth_init[enabled={enabled}]")
    for layer in range(L):
        wo = scheme.at(Site("attn_out", (D, D), layer, L, D))
        w2 = scheme.at(Site("mlp_out", (D, 4 * D), layer, L, D))
        expected = 0.02 / math.sqrt(2 * (layer + 1) if enabled == "true" else 2 * L)
        assert wo.params["std"] == pytest.approx(expected) == w2.params["std"]
        assert wo.id == f"trunc_normal[std={expected:g}]"  # torch's cut at +-2, absolute
    assert scheme.at(Site("query", (D, D), 0, L, D)).id == "trunc_normal[std=0.02]"
    assert scheme.at(Site("embedding", (128, D), None, L, D)).id == "normal[std=1]"
    readout = scheme.at(Site("readout", (128, D), None, L, D))
    assert readout.params == pytest.approx({"std": 0.125, "a": -0.375, "b": 0.375})


def test_deepnorm_alpha_and_beta_for_n_layers():
    """DeepNet, Figure 2 (decoder-only, N layers): alpha = (2N)^1/4, beta = (8N)^-1/4;
    xavier_normal_(gain=beta) on ffn, v_proj, out_proj, gain 1 on q_proj, k_proj."""
    scheme = get_scheme("deepnorm")
    for blocks, alpha, beta in ((4, 8**0.25, 32**-0.25), (18, 36**0.25, 144**-0.25)):
        for role in ("value", "attn_out", "mlp_in", "mlp_out"):
            plain = scheme.at(Site(role, (D, D), 0, blocks, D))
            assert plain.id == f"xavier_normal[gain={beta:g}]"
        assert scheme.at(Site("query", (D, D), 0, blocks, D)).id == "xavier_normal[gain=unit]"
        assert scheme.setting(Site("skip", (), 0, blocks, D)) == (pytest.approx(alpha), 0.0)
        assert scheme.setting(Site("gate", (), 0, blocks, D)) is None
    assert pytest.approx((1.681793, 0.420448)) == (8**0.25, 32**-0.25)
    net, _ = _net("deepnorm", "gpt[head_dim=16,norm=post]")
    assert net.param("blocks.2.mlp_branch.skip").item() == pytest.approx(8**0.25)
    assert net.param("blocks.2.mlp_branch.gate").item() == 1.0


def test_t_fixup_scales_by_nine_n_to_the_minus_quarter():
    """Huang et al. 2020: decoder (9N)^-1/4, encoder 0.67 N^-1/4, on v, w, the mlps and
    the embeddings (N(0, d^-1)); Xavier elsewhere."""
    decoder, encoder = get_scheme("t_fixup"), get_scheme("t_fixup[stack=encoder]")
    site = Site("value", (D, D), 0, L, D)
    xavier = 2 / (D + D)
    assert decoder.variance(site, GELU) == pytest.approx(xavier * (9 * L) ** -0.5)
    assert encoder.variance(site, GELU) == pytest.approx(xavier * 0.67**2 * L**-0.5)
    embedding = Site("embedding", (128, D), None, L, D)
    assert decoder.variance(embedding, GELU) == pytest.approx((9 * L) ** -0.5 / D)
    assert decoder.variance(Site("query", (D, D), 0, L, D), GELU) == pytest.approx(xavier)
    entries = drawn("t_fixup", "mlp_in", 1)
    assert entries.var().item() == pytest.approx(2 / (5 * D) * 36**-0.5, rel=0.05)


def test_small_init_emb():
    """SmallInit: std sqrt(2 / (5 d)) (GPT-NeoX's small_init_init_method); embeddings
    U(+-1e-4) (BlinkDL's SmallInitEmb)."""
    table = stds("small_init_emb")
    assert std_of(table, "embedding") == pytest.approx(1e-4 / math.sqrt(3))
    for role in ("query", "attn_out", "mlp_in", "mlp_out", "readout"):
        assert std_of(table, role) == pytest.approx(math.sqrt(2 / (5 * D)))
    assert drawn("small_init_emb", "embedding").abs().max().item() <= 1e-4


def test_spectral_std_is_fan_in_to_the_minus_half_times_the_aspect():
    """Yang, Simon & Bernstein 2023: std = fan_in^-1/2 min(1, sqrt(fan_out / fan_in))."""
    scheme = get_scheme("spectral")
    for shape, std in (
        ((D, D), D**-0.5),
        ((4 * D, D), D**-0.5),  # fan_out > fan_in: min(1, 2) = 1
        ((D, 4 * D), (4 * D) ** -0.5 * 0.5),
        ((10, 256), 256**-0.5 * math.sqrt(10 / 256)),
    ):
        assert scheme.variance(Site("hidden", shape), GELU) == pytest.approx(std**2)
    w = torch.empty(D, 4 * D)
    scheme.init(w, GELU, torch.Generator().manual_seed(0))
    assert w.std().item() == pytest.approx((4 * D) ** -0.5 * 0.5, rel=0.03)


def test_mimetic_attention_products():
    """Trockman & Kolter 2023: W_q^T W_k = 0.7 Z + 0.7 I and W_out W_v = 0.4 Z - 0.4 I
    with one head (Z of variance 1/d); per head, W_q^T W_k of rank head_dim."""
    net, _ = _net("mimetic", "gpt[head_dim=64]")  # one head: the products are exact
    w = {
        n: net.param(f"blocks.1.attn.{n}.weight")[0].detach().double()
        for n in ("query", "key", "value", "out")
    }
    for product, alpha, beta in (
        (w["query"].T @ w["key"], 0.7, 0.7),
        (w["out"] @ w["value"], 0.4, -0.4),
    ):
        diagonal = torch.diagonal(product)
        assert diagonal.mean().item() == pytest.approx(beta, abs=4 * alpha / D)
        off = product - torch.diag(diagonal)
        assert (off.square().sum() / (D * D - D)).sqrt().item() == pytest.approx(
            alpha / D**0.5, rel=0.05
        )
    net, _ = _net("mimetic")  # 4 heads of 16
    q, k = (net.param(f"blocks.0.attn.{n}.weight")[0].detach() for n in ("query", "key"))
    for h in range(4):
        head = q[16 * h : 16 * (h + 1)].T @ k[16 * h : 16 * (h + 1)]
        assert torch.linalg.matrix_rank(head).item() == 16
    a, b = _net("mimetic", seed=3)[0], _net("mimetic", seed=3)[0]
    assert torch.equal(a.param("blocks.0.attn.key.weight"), b.param("blocks.0.attn.key.weight"))


@pytest.mark.parametrize(
    "scheme, arch, reason",
    [
        ("gpt2", "mlp", "gpt2 needs residual branches"),
        ("mimetic", "resmlp", "mimetic needs attention"),
        ("deepnorm", "resnet", "deepnorm needs attention"),
    ],
)
def test_a_recipe_that_does_not_apply_is_skipped_with_its_reason(scheme, arch, reason):
    grid = Grid(batch_size=8, image_size=4)
    cell = Cell(get_scheme(scheme), GELU, get_arch(arch), 2, 16)
    cells = compute_chunk([Run(cell, 0)], grid, torch.device("cpu"), None).cells
    assert cells["status"].tolist() == ["skipped"]
    assert cells["reason"].iloc[0].startswith(f"not applicable: {reason} (")


def test_recipes_group_only_where_every_weight_is_drawn_alike():
    """depth_init on and off draw the same weights in one block, not in four; gpt2 and
    normal[std=0.02] differ on the residual projections."""
    grid = Grid(
        schemes=("depth_init", "gpt2", "normal[std=0.02]"),
        activations=("gelu",),
        archs=("gpt[head_dim=16]",),
        depths=(1, 4),
        widths=(D,),
    )
    signature = dict(grid.weight_signatures().itertuples(index=False))

    def cell(scheme, depth):
        return signature[f"{scheme}|gelu|gpt[head_dim=16]|d{depth}|w{D}"]

    assert cell("depth_init[enabled=true]", 1) == cell("depth_init[enabled=false]", 1)
    assert cell("depth_init[enabled=true]", 4) != cell("depth_init[enabled=false]", 4)
    assert cell("gpt2", 4) != cell("normal[std=0.02]", 4)


def test_recipe_theory_follows_each_weights_variance():
    """gpt2 on a residual mlp: the mean-field stream uses each block's variance (the
    0.02 / sqrt(2 L) of its one layer), NaN where a recipe has no closed form."""
    grid = Grid(batch_size=64)
    cell = Cell(get_scheme("gpt2"), get_activation("relu"), get_arch("resmlp[norm=layer]"), 4, 128)
    layers = compute_chunk([Run(cell, 0)], grid, torch.device("cpu"), None).layers
    branch = 128 * (0.02**2 / 8) * 0.5  # fan_in Var(w) E[relu(z)^2], z ~ N(0, 1)
    stem = 128 * 0.02**2
    np.testing.assert_allclose(layers["theory_pre_var"], stem + branch * np.arange(1, 5), rtol=1e-5)
    mimetic = get_scheme("mimetic")
    assert math.isnan(mimetic.variance(Site("query", (D, D), 0, L, D, 1), GELU))


def test_every_recipe_has_its_paper_and_a_doc():
    for name in (*RECIPES, "t_fixup", "spectral"):
        family = FAMILIES[name]
        assert family.paper and family.doc and family.short, name
