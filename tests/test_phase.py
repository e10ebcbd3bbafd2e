"""Phase diagrams: the sweep over (sigma_w^2, sigma_b^2), its figures' drawn values, the
predicted lines, and bad input."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import initbench
from initbench.report.figures.base import read_data
from initbench.report.phase import critical_point, heatmap_figure, measurements, prediction
from initbench.studies.phase import parse_values, phase

NODES, WEIGHTS = np.polynomial.hermite.hermgauss(80)


def test_values_parse_as_ranges_or_lists():
    assert parse_values("1:2:3", "x") == (1.0, 1.5, 2.0)
    assert parse_values("0.5,2", "x") == (0.5, 2.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sigma-w2", ""], "--sigma-w2 has no points"),
        (["--sigma-w2", "1:2:0"], "the count must be between 1 and 200"),
        (["--sigma-b2", "-0.1"], "--sigma-b2 must be variances >= 0"),
        (["--sigma-w2", "a:b"], "--sigma-w2 must be start:stop:count or a comma list"),
        (["--activation", "swish"], "unknown activation 'swish'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    done = subprocess.run(
        [sys.executable, "-m", "initbench.cli", "phase", *args, "--out", str(tmp_path / "p")],
        capture_output=True,
        text=True,
        env=os.environ | {"INITBENCH_DEBUG": ""},
        timeout=120,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert not (tmp_path / "p").exists()


def test_the_critical_line_matches_an_independent_quadrature():
    line = prediction("tanh", np.linspace(1.0, 3.0, 60), 0.05)

    def chi1(sigma_w2):
        q = 1.0
        for _ in range(2000):
            q = sigma_w2 * np.sum(WEIGHTS * np.tanh(np.sqrt(2 * q) * NODES) ** 2) / np.sqrt(np.pi)
            q += 0.05
        slope = (1 - np.tanh(np.sqrt(2 * q) * NODES) ** 2) ** 2
        return sigma_w2 * np.sum(WEIGHTS * slope) / np.sqrt(np.pi)

    lo, hi = 1.0, 3.0
    for _ in range(40):  # bisection on chi1 = 1
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if chi1(mid) < 1 else (lo, mid)
    assert critical_point(line) == pytest.approx((lo + hi) / 2, abs=0.01)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase") / "p"
    phase(
        "tanh",
        (0.5, 1.5, 3.0),
        (0.0, 0.1),
        (4, 8),
        out,
        width=32,
        seeds=2,
        device="cpu",
        progress=False,
        dataset="digits",
        train_steps=20,
        batch_size=64,
    )
    initbench.report.report(out)
    return out


def test_heatmaps_draw_the_measurements(folder):
    results = initbench.load(folder)
    assert results.kind == "phase" and results.meta["phase"]["sigma_b2"] == [0.0, 0.1]
    table = measurements(results)
    cells = results.cells[results.cells["status"] == "ok"]
    for b in (0.0, 0.1):
        rows = table[table["bias_var"] == b]
        line = prediction("tanh", np.linspace(0.5, 3.0, 120), b)
        fig = heatmap_figure(rows, line, b, "tanh")
        meshes = {a.get_gid(): a for ax in fig.axes for a in ax.collections if a.get_gid()}
        accuracy = meshes["heatmap|final_test_acc"].get_array().reshape(2, 3)  # depth x sigma_w2
        for i, depth in enumerate((4, 8)):
            for j, s in enumerate((0.5, 1.5, 3.0)):
                mask = (cells["depth"] == depth) & (cells["bias_var"] == b)
                mask &= cells["scheme_id"].str.contains(f"scale={s:g},")
                assert accuracy[i, j] == pytest.approx(cells.loc[mask, "final_test_acc"].mean())
        trainable = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "trainable"]
        assert np.allclose(trainable[0].get_ydata(), np.clip(6 * line["xi_c"], 1e-3, 1e6))
        saved = read_data(folder / "report" / "figures", f"phase_b{b:g}")
        measured = saved[(saved["kind"] == "measured") & (saved["statistic"] == "final_test_acc")]
        for row in measured.itertuples():
            mask = (cells["depth"] == row.depth) & (cells["bias_var"] == b)
            mask &= cells["scheme_id"].str.contains(f"scale={row.sigma_w2:g},")
            assert row.value == pytest.approx(cells.loc[mask, "final_test_acc"].mean())
    page = (folder / "report" / "index.html").read_text()
    assert "chi1 = 1 at sigma_w^2 = " in page and math.isfinite(
        critical_point(prediction("tanh", np.linspace(0.5, 3.0, 120), 0.1))
    )
