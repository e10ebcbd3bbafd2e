"""The dependencies are ranges; constraints.txt pins what the README's commands and CI test."""

import json
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    found = [re.fullmatch(r"([\w-]+)==(\S+)", line.strip()) for line in lines]
    return {m[1]: m[2] for m in found if m}


def test_every_pin_is_inside_the_range_the_package_asks_for():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {r.name: r.specifier for r in map(Requirement, project["dependencies"])}
    assert set(pins()) == {"torch", "torchvision"}
    for name, version in pins().items():
        assert not str(ranges[name]).startswith("=="), f"{name} is pinned in pyproject.toml"
        assert ranges[name].contains(version), f"{name}=={version} is outside {ranges[name]}"


def test_the_readme_ci_and_asv_install_with_the_constraints():
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines() if "pip install" in line and "venv" in line]
    assert len(commands) >= 2
    assert all("-c constraints.txt" in command for command in commands)
    assert "-c constraints.txt" in (ROOT / ".ci" / "run").read_text()
    asv = json.loads((ROOT / "asv.conf.json").read_text())
    assert all("constraints.txt" in command for command in asv["install_command"])
