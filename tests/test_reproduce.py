"""initbench reproduce: every classic result reproduces on this machine, with its page."""

import json
from pathlib import Path

import pytest

from initbench.report.figures.base import read_data
from initbench.reproduce import REPRODUCTIONS
from tests.cli import run_cli

KEYS = {
    "name",
    "claim",
    "citation",
    "expected",
    "how",
    "measured",
    "interval",
    "passed",
    "seconds",
    "setting",
    "details",
    "figures",
    "sweeps",
    "full",
}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "all"
    done = run_cli("reproduce", "--all", "--out", str(out), "--no-progress", timeout=1800)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("name", list(REPRODUCTIONS))
def test_each_result_reproduces_and_says_how(reproduced, name):
    record = json.loads((reproduced / name / "reproduce.json").read_text())
    assert set(record) == KEYS
    assert record["passed"], record
    lo, hi = record["interval"]
    assert lo <= record["measured"] <= hi
    page = (reproduced / name / "report" / "index.html").read_text()
    assert "Reproduced." in page and record["citation"] in page
    for path, _, _ in record["figures"]:  # every figure the page shows exists, with its data
        assert (reproduced / name / path).exists(), path
        folder, figure = (reproduced / name / path).parent, Path(path).stem
        assert len(read_data(folder, figure)), path


def test_the_overview_lists_every_result(reproduced):
    page = (reproduced / "report" / "index.html").read_text()
    assert f"{len(REPRODUCTIONS)} of {len(REPRODUCTIONS)} reproduced" in page
    for name in REPRODUCTIONS:
        assert f'href="../{name}/report/index.html"' in page


@pytest.mark.parametrize(
    "args, message",
    [
        (["bogus"], "unknown reproduction 'bogus'"),
        ([], "name one reproduction, or pass --all"),
        (["he2015", "--all"], "name one reproduction, or pass --all"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path):
    done = run_cli("reproduce", *args, "--out", str(tmp_path / "x"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"initbench: error: {message}" + done.stderr.strip().split(message, 1)[1]
    ]
    assert not (tmp_path / "x").exists()
