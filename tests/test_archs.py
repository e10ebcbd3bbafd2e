"""Architectures as objects: the registry, the residual stream's theory, independence of
runs, and the code's shape (no architecture named outside its module, no import cycle)."""

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from initbench import Grid
from initbench.archs import ARCHS, get_arch, register_arch
from initbench.core.activations import get_activation
from initbench.core.errors import UsageError
from initbench.core.schemes import get_scheme
from initbench.sweeps.engine import compute_chunk
from initbench.sweeps.grid import Cell, Run

ROOT = Path(__file__).parents[1]
CPU = torch.device("cpu")
KAIMING = "kaiming_normal[mode=fan_in,nonlinearity=matched]"


def test_registry_ids_and_parameters():
    assert list(ARCHS) == ["mlp", "cnn", "resmlp", "resnet", "transformer", "gpt"]
    assert get_arch("resmlp").id == "resmlp"
    assert get_arch("resmlp[norm=layer,alpha=0.5]").id == "resmlp[norm=layer,alpha=0.5]"
    assert get_arch("resmlp[alpha=1]") == get_arch("resmlp")  # defaults are not spelled
    with pytest.raises(ValueError, match="already registered"):
        register_arch("mlp", "initbench.archs.mlp:MLP", "again")
    for bad, message in (
        ("rnn", "unknown arch 'rnn'"),
        ("resmlp[norm=batch]", "norm must be one of none, layer"),
        ("resmlp[depth=3]", "takes parameters"),
        ("transformer[head_dim=0]", "positive integer"),
    ):
        with pytest.raises(UsageError, match=message):
            get_arch(bad)


@pytest.mark.parametrize("arch", ["resmlp", "resmlp[norm=layer]"])
def test_residual_stream_follows_its_mean_field_map(arch):
    """ReLU + Kaiming: without norm the stream's variance doubles every block
    (q_l = q_{l-1} + 2 q_{l-1} / 2); with LayerNorm it grows by 1 (q_l = q_{l-1} + 1).

    The band: at width N a ReLU net's log-variance wanders like a random walk with
    Var[log q_l] ~ 5 l / N (Hanin & Nica 2019); the mean of 8 seeds must sit within 3 of
    its standard errors, sqrt(5 l / N / 8), of the theory at every block.
    """
    width, depth, seeds = 512, 10, 8
    grid = Grid(batch_size=256)
    cell = Cell(get_scheme(KAIMING), get_activation("relu"), get_arch(arch), depth, width)
    records = compute_chunk([Run(cell, s) for s in range(seeds)], grid, CPU, None)
    layers = records.layers
    theory = layers.groupby("layer")["theory_pre_var"].first().to_numpy()
    if arch == "resmlp":
        assert theory == pytest.approx([2.0 ** (layer + 1) for layer in range(1, depth + 1)])
    else:
        assert theory == pytest.approx([2.0 + layer for layer in range(1, depth + 1)])
    deviation = np.log(layers["pre_var"] / layers["theory_pre_var"]).groupby(layers["layer"]).mean()
    band = 3 * np.sqrt(5 * deviation.index.to_numpy() / width / seeds)
    assert (deviation.abs().to_numpy() < band).all(), (deviation, band)
    gradients = np.log(layers["grad_h_var"] / layers["theory_grad_h_var"]).groupby(layers["layer"])
    assert (gradients.mean().abs().to_numpy() < band).all()


@pytest.mark.parametrize("arch", ["resnet", "transformer[head_dim=8]"])
def test_a_run_does_not_depend_on_its_neighbours(arch):
    grid = Grid(batch_size=16, image_size=4, tokens=4)
    act = get_activation("gelu")

    def run(scheme, seed):
        return Run(Cell(get_scheme(scheme), act, get_arch(arch), 3, 16), seed)

    alone = run("xavier_uniform[gain=matched]", 3)
    others = [run(s, seed) for s in (KAIMING, "orthogonal[gain=unit]", "lsuv") for seed in (0, 3)]
    a = compute_chunk([alone], grid, CPU, None).layers.set_index("layer")
    mixed = compute_chunk([*others[:3], alone, *others[3:]], grid, CPU, None).layers
    b = mixed[mixed["run_id"] == alone.id].set_index("layer")
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)


ARCH_NAMES = set(ARCHS)


def _python_files(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def test_no_code_outside_the_archs_package_branches_on_an_architecture_name():
    found = []
    for path in _python_files("initbench"):
        if "archs" in path.relative_to(ROOT / "initbench").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                parts = [node.left, *node.comparators]
                for part in parts:
                    values = (
                        part.elts if isinstance(part, ast.Tuple | ast.List | ast.Set) else [part]
                    )
                    for value in values:
                        if isinstance(value, ast.Constant) and value.value in ARCH_NAMES:
                            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_the_import_graph_has_no_cycle():
    modules = {}
    for path in _python_files("initbench"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported = set()
        tree = ast.parse(path.read_text())
        typing_only = {  # `if TYPE_CHECKING:` imports never run
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
            for n in ast.walk(block)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        modules[name] = {m for m in imported if m.startswith("initbench")}
    # a module depends on the modules it imports; importing a submodule imports its package
    graph = {
        name: {m for m in deps if m in modules and m != name} for name, deps in modules.items()
    }
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node, trail):
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle.extend([*trail, node, dep])
                return True
            if dep not in state and visit(dep, [*trail, node]):
                return True
        state[node] = 2
        return False

    for name in graph:
        if name not in state and visit(name, []):
            break
    assert not cycle, " -> ".join(cycle)


def test_every_architecture_lists_the_weights_a_scheme_initializes():
    inputs_grid = Grid(image_size=4, tokens=3)
    for name in ARCHS:
        arch = get_arch(name)
        inputs = inputs_grid.inputs(arch, 8)
        shapes = [s.shape for s in arch.weight_sites(2, 8, get_activation("relu"), inputs)]
        model = arch.build(2, 8, get_activation("relu"), inputs)
        from initbench.initialize import apply

        applied = apply(
            model, KAIMING, "relu", generator=torch.Generator().manual_seed(0), roles=arch.roles
        )
        assert len(applied.initialized) == len(shapes)
        kept = ("normalization gain", "a residual branch's scalar")
        assert all(
            why.startswith(kept) or p.endswith(".bias") for p, why in applied.left.items()
        ), applied.left
        assert math.prod(shapes[0]) > 0
