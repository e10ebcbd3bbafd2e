import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import initbench
from initbench.errors import UsageError
from initbench.report import publish, report
from initbench.report.tables import interval, ranking
from initbench.schema import CELL_COLUMNS
from initbench.store import Store

SCIPY_T975_2 = 4.302652729911275  # t quantile, 2 degrees of freedom


def _made_up_store(root: Path) -> Path:
    """Three seeds of three schemes at depth 11, with known ratios."""
    rows = []
    ratios = {"good": [1.0, 2.0, 0.5], "vanish": [2.0**-20] * 3, "bad": [np.nan] * 3}
    for scheme, values in ratios.items():
        for seed, ratio in enumerate(values):
            rows.append(
                {
                    "run_id": f"{scheme}|relu|mlp|d11|w8|s{seed}",
                    "cell_id": f"{scheme}|relu|mlp|d11|w8",
                    "scheme_id": scheme,
                    "scheme": scheme,
                    "activation": "relu",
                    "arch": "mlp",
                    "depth": 11,
                    "width": 8,
                    "seed": seed,
                    "status": "diverged" if scheme == "bad" else "ok",
                    "var_ratio": ratio,
                    "grad_ratio": 1.0,
                }
            )
    cells = pd.DataFrame(rows)
    for column, dtype in CELL_COLUMNS.items():
        if column not in cells:
            cells[column] = pd.NA if dtype == "string" else np.nan
    cells = cells[list(CELL_COLUMNS)].astype(CELL_COLUMNS)
    layers = pd.DataFrame(
        [
            {
                "run_id": r,
                "layer": layer,
                "pre_var": 1.0,
                "grad_w_norm": 1.0,
                "theory_pre_var": 1.0,
                "post_var": 0.5,
                "pre_mean": 0.0,
                "post_mean": 0.3,
                "dead_frac": 0.0,
                "sat_frac": np.nan,
                "grad_h_var": 1.0,
                "theory_grad_h_var": 1.0,
            }
            for r in cells.loc[cells.status == "ok", "run_id"]
            for layer in range(1, 12)
        ]
    )
    store = Store(root)
    store.begin({"seeds": 3, "train_steps": 0}, {"runs": 10})
    cells.to_parquet(root / "cells.parquet")
    layers.to_parquet(root / "layers.parquet")
    return root


def test_ranking_numbers_intervals_and_counts(tmp_path):
    cells = initbench.load(_made_up_store(tmp_path / "s")).cells
    (table,) = ranking(cells, trained=False)
    frame = table.frame.set_index("scheme")
    assert list(frame.index) == ["good", "vanish", "bad"]
    # |log2 ratio| / (depth - 1): good seeds give 0, 0.1, 0.1
    assert frame.at["good", "var_drift"] == pytest.approx(0.2 / 3)
    half = SCIPY_T975_2 * np.std([0, 0.1, 0.1], ddof=1) / math.sqrt(3)
    assert frame.at["good", "var_drift_ci"] == pytest.approx(half)
    assert frame.at["vanish", "var_drift"] == pytest.approx(2.0)
    assert frame.at["bad", "diverged"] == 3 and frame.at["bad", "ok"] == 0
    assert math.isnan(frame.at["bad", "var_drift"])
    assert table.verdict.startswith("Best: good")
    assert "vanish vanishes" in table.verdict and "bad diverges" in table.verdict
    assert interval(pd.Series([1.0]))[1] != interval(pd.Series([1.0]))[1]  # NaN for one seed


def test_report_says_what_is_missing_and_refuses_non_sweeps(tmp_path):
    page = report(_made_up_store(tmp_path / "s"))
    html = page.read_text()
    assert "1 of 10 runs are missing" in html
    assert (page.parent / "tables" / "table_01.csv").exists()
    with pytest.raises(UsageError, match="not a sweep folder"):
        report(tmp_path)
    empty = tmp_path / "empty"
    Store(empty).begin({"seeds": 1}, {"runs": 4})
    with pytest.raises(UsageError, match="no finished runs"):
        report(empty)


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    grid = initbench.Grid(
        schemes=(
            "xavier_normal",
            "kaiming_normal[mode=fan_in,nonlinearity=matched]",
            "normal[std=0.01]",
        ),
        activations=("tanh", "relu"),
        depths=(3, 6),
        widths=(16,),
        seeds=2,
        dataset="digits",
        train_steps=20,
        eval_every=10,
    )
    initbench.sweep(grid, root / "s", device="cpu", progress=False)
    return report(root / "s")


def test_report_files(real_report):
    figures = sorted(p.name for p in (real_report.parent / "figures").glob("*.png"))
    kinds = {name.split("_")[0] for name in figures}
    assert {"pre", "grad", "drift", "convergence", "steps"} <= kinds
    assert all(
        (real_report.parent / "figures" / f.replace(".png", ".svg")).exists() for f in figures
    )
    html = real_report.read_text()
    assert "http://" not in html and "https://" not in html  # no CDN, works offline
    assert html.count('class="verdict"') >= len(figures) + 4


def test_publish_links_sweeps_and_asv(tmp_path, real_report):
    asv = tmp_path / "asv_html"
    asv.mkdir()
    (asv / "index.html").write_text("<html>asv</html>")
    index = publish([real_report.parent.parent], tmp_path / "site", asv_html=asv)
    text = index.read_text()
    assert 'href="s/index.html"' in text and 'href="asv/index.html"' in text
    assert (tmp_path / "site" / "s" / "index.html").exists()


@pytest.mark.browser
def test_page_in_a_real_browser(real_report):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(real_report.as_uri())
        page.wait_for_load_state("load")
        assert errors == []
        widths = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
        )
        assert widths and all(w > 0 for w in widths)
        tables = page.query_selector_all("table.sortable")
        assert len(tables) == 4  # tanh and relu x depth 3 and 6
        rows = tables[0].query_selector_all("tbody tr")
        assert len(rows) == 4  # xavier unit, xavier matched, kaiming, normal
        header = tables[0].query_selector_all("thead th")[1]  # scheme column
        header.click()
        names = [
            r.query_selector_all("td")[1].inner_text()
            for r in tables[0].query_selector_all("tbody tr")
        ]
        assert names == sorted(names)
        header.click()
        names = [
            r.query_selector_all("td")[1].inner_text()
            for r in tables[0].query_selector_all("tbody tr")
        ]
        assert names == sorted(names, reverse=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(real_report.parent / "screenshot.png"), full_page=False)
        browser.close()
