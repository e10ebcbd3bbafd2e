"""The public API (what ``initbench`` exports and what the command line calls) has
Google-style docstrings: a summary, ``Args:`` naming every parameter, ``Returns:`` for
what it returns (ruff's docstring rules check their form across the package)."""

import importlib
import inspect
import re

import pytest

import initbench

CLI_CALLS = [
    "initbench.sweeps.run:sweep",
    "initbench.sweeps.grid:read_toml",
    "initbench.sweeps.presets:get_preset",
    "initbench.studies.probe:probe_folder",
    "initbench.studies.audit:audit_folder",
    "initbench.studies.coord:coord_folder",
    "initbench.studies.coord:parse_widths",
    "initbench.core.models:model_name",
    "initbench.studies.phase:phase",
    "initbench.studies.phase:phase_grid",
    "initbench.studies.phase:parse_values",
    "initbench.reproduce:reproduce",
    "initbench.reproduce:reproduce_all",
    "initbench.report.pages:report",
    "initbench.report.site:publish",
    "initbench.report.probe:findings",
    "initbench.report.coord:findings",
    "initbench.sweeps.check:check_folder",
    "initbench.sweeps.check:repair_folder",
]


def api() -> dict[str, object]:
    found = {f"initbench.{name}": getattr(initbench, name) for name in initbench.__all__}
    found.pop("initbench.__version__")
    for target in CLI_CALLS:
        module, _, name = target.partition(":")
        found[target] = getattr(importlib.import_module(module), name)
    return found


def sections(doc: str) -> dict[str, str]:
    """Google-style sections of a docstring: header -> its indented body."""
    parts = re.split(r"^\s*(Args|Returns|Raises|Yields|Attributes):\s*$", doc, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.parametrize("name, obj", sorted(api().items()), ids=lambda v: str(v))
def test_public_api_has_google_style_docstrings(name, obj):
    doc = inspect.getdoc(obj)
    assert doc and doc.split("\n", 1)[0].strip(), f"{name} has no docstring"
    if inspect.isclass(obj):
        return
    found = sections(doc)
    params = [
        p.name
        for p in inspect.signature(obj).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if params:
        assert "Args" in found, f"{name}: no Args section"
        listed = set(re.findall(r"^\s{0,8}(\w+)(?: \([^)]*\))?:", found["Args"], flags=re.M))
        assert set(params) <= listed, f"{name}: Args misses {sorted(set(params) - listed)}"
    returns = inspect.signature(obj).return_annotation
    if returns not in (None, "None", inspect.Signature.empty):
        assert "Returns" in found, f"{name}: no Returns section"


def test_the_walk_reads_sections():
    doc = "Does it.\n\nArgs:\n    x: the x.\n    y (int): the y.\n\nReturns:\n    The sum."
    assert set(sections(doc)) == {"Args", "Returns"}
    assert "x:" in sections(doc)["Args"]
