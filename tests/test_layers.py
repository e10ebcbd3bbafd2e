"""The package's layers (docs/architecture.md): each module imports only from its own layer
and those below it, and no modules import each other in a circle, not even for type
checking."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "initbench"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def documented_layers() -> list[str]:
    """The layers, lowest first, as docs/architecture.md lists them (``1. `core/` ...``)."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\d+\. `([a-z_]+)(?:/|\.py)`", section, flags=re.M)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every initbench module that ``path`` imports, anywhere in the file (functions and
    ``TYPE_CHECKING`` blocks included), and those named to ``importlib``."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: relative import"
            base = node.module or ""
            for alias in node.names:  # a submodule, or a name defined in the module
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = re.fullmatch(r"(initbench(?:\.\w+)+)(?::\w+)?", node.value)
            if match:
                names.add(match.group(1))
    return {name for name in names if name.startswith("initbench")}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The module a dotted import name refers to (a name imported from a module is that
    module), or None for the package's root."""
    while name not in MODULES or name == "initbench":
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def layer_of(module: str, layers: list[str]) -> int:
    top = module.split(".")[1] if "." in module else "initbench"
    return layers.index(top)


def edges() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        targets = {resolve(name) for name in imported(path)} - {None, module}
        graph[module] = {t for t in targets if t != "initbench"}
    return graph


def test_the_documented_layers_cover_the_package():
    layers = documented_layers()
    assert layers[0] == "core" and "cli" in layers
    tops = {m.split(".")[1] for m in MODULES if "." in m}
    assert tops == set(layers)


def test_no_module_imports_from_a_layer_above_its_own():
    layers = documented_layers()
    upward = [
        f"{module} imports {target}"
        for module, targets in edges().items()
        if module != "initbench"
        for target in targets
        if layer_of(target, layers) > layer_of(module, layers)
    ]
    assert upward == []


def test_no_import_circle():
    graph = edges()
    graph.pop("initbench", None)
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_walk_sees_imports_in_functions_and_type_checking(tmp_path):
    source = tmp_path / "x.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from initbench.archs.base import Stacked\n"
        "def f():\n    from initbench.sweeps import store\n"
        "TARGET = 'initbench.archs.mlp:MLP'\n"
    )
    found = {resolve(name) for name in imported(source)}
    assert {"initbench.archs.base", "initbench.sweeps.store", "initbench.archs.mlp"} <= found


@pytest.mark.parametrize("module", ["initbench.core.schemes", "initbench.report.site"])
def test_resolve_names_modules(module):
    assert resolve(f"{module}.anything") == module


def test_the_report_reads_results_without_loading_torch():
    """Every page module imports without torch: the report reads results folders, it does
    not rebuild networks or schemes (a phase page's mean-field curve loads it on use)."""
    import subprocess
    import sys

    code = (
        "import sys; from initbench.report.pages import pages; known = pages(); "
        "print(sorted(known), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("]")[-1].strip() == "False", out.stdout
    assert "'sweep'" in out.stdout and "'site'" in out.stdout and "'coord'" in out.stdout
