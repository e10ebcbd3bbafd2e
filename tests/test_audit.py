"""``initbench audit`` and ``initbench.audit``: every weight of a model as built against
the distribution a recipe intends for it; the planted faults flagged, and nothing else."""

import math

import pytest
import torch

import initbench
from initbench.core.models import load_factory
from tests.cli import assert_usage_error, run_all

NANOGPT = '''
import math

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.c_attn, self.attn.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)


class GPT(nn.Module):
    def __init__(self, vocab, d, layers):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(vocab, d)
        self.transformer.wpe = nn.Embedding(16, d)
        self.transformer.h = nn.ModuleList(Block(d) for _ in range(layers))
        self.transformer.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)


def make(init="gpt2", faults="", layers=2, vocab=256, d=32):
    """GPT-2's init (nanoGPT's _init_weights), or Megatron's (cut at 3 std, readout
    d^-1/2), with faults: mlp_scale (the mlps' c_proj left at 0.02), untouched (h.0's
    c_fc left as its constructor drew it), no_cut (wte from trunc_normal_(std=0.02, a=-2,
    b=2): cut at 100 std)."""
    model = GPT(vocab, d, layers)
    faults = faults.split("+")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            if p.dim() < 2:
                continue
            std = 0.02 / math.sqrt(2 * layers) if name.endswith("c_proj.weight") else 0.02
            if init == "megatron" and name == "lm_head.weight":
                std = d**-0.5
            if "mlp_scale" in faults and name.endswith("mlp.c_proj.weight"):
                std = 0.02
            if "untouched" in faults and name == "transformer.h.0.mlp.c_fc.weight":
                continue
            if "no_cut" in faults and name == "transformer.wte.weight":
                nn.init.trunc_normal_(p, std=0.02, a=-2, b=2)
            elif init == "megatron":
                nn.init.trunc_normal_(p, std=std, a=-3 * std, b=3 * std)
            else:
                nn.init.normal_(p, std=std)
    return model


def broken():
    raise RuntimeError("no such checkpoint")
'''
PLANTED = [  # gpt2 with the mlp_scale and untouched faults
    "transformer.h.0.mlp.c_fc.weight",
    "transformer.h.0.mlp.c_proj.weight",
    "transformer.h.1.mlp.c_proj.weight",
]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "nanogpt.py"
    path.write_text(NANOGPT)
    return path


def build(nets, **args):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_factory(nets, "make")(**args)


def test_measured_moments_and_gpt2s_intended_stds(nets):
    layers = 3
    model = build(nets, layers=layers)
    table = initbench.audit(model, "gpt2").table.set_index("param")
    for name, param in model.named_parameters():
        assert table.loc[name, "std"] == pytest.approx(torch.std(param.double()).item(), rel=1e-9)
        assert table.loc[name, "mean"] == pytest.approx(param.double().mean().item(), abs=1e-12)
    weights = table[table["intended"] != ""]
    residual = weights.index.str.endswith("c_proj.weight")
    assert residual.sum() == 2 * layers
    assert (weights.loc[residual, "role"].str.fullmatch("attn_out|mlp_out")).all()
    assert weights.loc[residual, "intended_std"].tolist() == pytest.approx(
        [0.02 / math.sqrt(2 * layers)] * (2 * layers)
    )
    assert weights.loc[~residual, "intended_std"].tolist() == pytest.approx(
        [0.02] * (~residual).sum()
    )
    assert weights.loc["transformer.wpe.weight", "role"] == "position"
    assert weights.loc["lm_head.weight", "role"] == "readout"
    assert not table["off"].any()


def test_the_planted_faults_and_only_them(nets):
    found = initbench.audit(build(nets, faults="mlp_scale+untouched+no_cut"), "gpt2")
    assert sorted(found.off) == PLANTED  # a cut at 100 std is a plain normal, as gpt2 intends
    table = found.table.set_index("param")
    assert table.loc["transformer.h.0.mlp.c_proj.weight", "ratio"] == pytest.approx(2, rel=0.1)
    untouched = table.loc["transformer.h.0.mlp.c_fc.weight"]
    assert untouched["constructor_draw"] and "constructor's draw" in untouched["findings"]
    assert untouched["bound"] == pytest.approx(math.sqrt(3), rel=0.02)  # U(+-1/sqrt(fan_in))
    assert untouched["std"] == pytest.approx(1 / math.sqrt(3 * 32), rel=0.05)
    assert found.off[0] == "transformer.h.0.mlp.c_fc.weight"  # the furthest first
    assert len(found.findings()) == 3


def test_a_truncation_that_cuts_nothing_where_the_recipe_cuts(nets):
    assert initbench.audit(build(nets, init="megatron"), "megatron").off == []
    found = initbench.audit(build(nets, init="megatron", faults="no_cut"), "megatron")
    assert found.off == ["transformer.wte.weight"]
    row = found.table.set_index("param").loc["transformer.wte.weight"]
    assert row["intended_bound"] == pytest.approx(3.04, abs=0.01)  # 3 std of the normal
    assert row["bound"] > 3.5 and 0.8 < row["ratio"] < 1.25


def test_without_a_recipe_the_best_match(nets):
    for init, best in (("gpt2", "gpt2"), ("megatron", "megatron[std=0.02]")):
        found = initbench.audit(build(nets, init=init))
        assert found.best_match and found.scheme == best and found.off == []
        assert next(iter(found.scores)) == best


def test_roles_given_by_pattern(nets):
    # c_fc told to be an mlp's output: gpt2 then intends 0.02/sqrt(2L) for it
    found = initbench.audit(build(nets), "gpt2", {"*.mlp.c_fc.weight": "mlp_out"})
    assert sorted(found.off) == [
        "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.1.mlp.c_fc.weight",
    ]
    assert (
        found.table.set_index("param").loc["transformer.h.0.mlp.c_fc.weight", "role"] == "mlp_out"
    )


BAD = {
    "factory raises": (["{nets}:broken"], "raised RuntimeError: no such checkpoint"),
    "role matches nothing": (
        ["{nets}:make", "--role", "*.w2.weight=mlp_out"],
        "role pattern '*.w2.weight' matches no weight",
    ),
    "unknown recipe": (["{nets}:make", "--recipe", "gpt3"], "unknown scheme 'gpt3'"),
}
GOOD = {
    "faulty": ["{nets}:make", "--recipe", "gpt2", "--model-arg", "faults=mlp_scale+untouched"],
    "right": ["{nets}:make", "--recipe", "gpt2"],
    "no cut": [
        "{nets}:make",
        "--recipe",
        "megatron",
        "--model-arg",
        "init=megatron",
        "--model-arg",
        "faults=no_cut",
    ],
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, nets):
    root = tmp_path_factory.mktemp("cli")
    jobs = {
        name: [a.format(nets=nets) for a in args] + ["--out", str(root / name)]
        for name, args in {**{k: v[0] for k, v in BAD.items()}, **GOOD}.items()
    }
    return root, run_all("audit", jobs, root)


def off_lines(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("off: ")]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli_runs, case):
    root, done = cli_runs
    assert_usage_error(done[case], BAD[case][1])
    assert not (root / case).exists()


def test_exit_1_with_a_line_per_fault_and_the_page(cli_runs):
    root, done = cli_runs
    faulty = done["faulty"]
    assert faulty.returncode == 1, faulty.stderr
    lines = off_lines(faulty)
    assert sorted(line.split()[1] for line in lines) == PLANTED
    assert "3 of 11 weights off" in faulty.stdout.splitlines()[-1]
    page = (root / "faulty" / "report" / "index.html").read_text()
    assert all(name in page for name in PLANTED) and "Findings" in page
    assert (root / "faulty" / "params.parquet").is_file()
    cut = done["no cut"]
    assert cut.returncode == 1, cut.stderr
    assert [line.split()[1] for line in off_lines(cut)] == ["transformer.wte.weight"]


def test_exit_0_when_built_right(cli_runs):
    root, done = cli_runs
    right = done["right"]
    assert right.returncode == 0, right.stderr
    assert off_lines(right) == [] and "0 of 11 weights off" in right.stdout
    assert "Every weight is within tolerance" in (root / "right/report/index.html").read_text()
    assert initbench.load(root / "right").tables["params"]["off"].sum() == 0
