"""The report page: what it says, what it refuses, the published site, and a real browser."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import initbench
from initbench.core import fmt
from initbench.core.errors import UsageError
from initbench.report import publish, report
from initbench.report.classify import failing
from initbench.report.sweep import verdicts_of
from initbench.report.tables import cell_tables, column_label, matrix
from initbench.sweeps.schema import CELL_COLUMNS, LAYER_COLUMNS
from initbench.sweeps.store import Store

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "results" / "example"


def _made_up_store(root: Path) -> Path:
    """Three seeds of three schemes at depth 11 (one vanishes, one diverges), 10 of 12 runs."""
    rows, layers = [], []
    halving = {"good": 1.0, "vanish": 0.25, "bad": 1.0}
    for scheme, factor in halving.items():
        for seed in range(3):
            run_id = f"{scheme}|relu|mlp|d11|w8|s{seed}"
            rows.append(
                {
                    "run_id": run_id,
                    "cell_id": run_id.rsplit("|", 1)[0],
                    "scheme_id": scheme,
                    "scheme": scheme,
                    "activation": "relu",
                    "arch": "mlp",
                    "depth": 11,
                    "width": 8,
                    "bias_var": 0.0,
                    "seed": seed,
                    "status": "diverged" if scheme == "bad" else "ok",
                    "reason": "non-finite activations or gradients at initialization"
                    if scheme == "bad"
                    else None,
                }
            )
            for layer in range(1, 12):
                value = factor ** (layer - 1) * (1 + 0.01 * seed)
                layers.append(
                    {"run_id": run_id, "layer": layer, "pre_var": value, "grad_h_var": 1.0}
                )
    cells = pd.DataFrame(rows)
    for column, dtype in CELL_COLUMNS.items():
        if column not in cells:
            cells[column] = pd.NA if dtype == "string" else np.nan
    cells = cells[list(CELL_COLUMNS)].astype(CELL_COLUMNS)
    layers = pd.DataFrame(layers)
    layers["eff_rank"] = 6.0  # many directions: no rank collapse
    for column in LAYER_COLUMNS:
        if column not in layers:
            layers[column] = 0.5
    store = Store(root)
    store.begin({"seeds": 3, "train_steps": 0}, {"runs": 12})
    cells.to_parquet(root / "cells.parquet")
    layers[LAYER_COLUMNS].to_parquet(root / "layers.parquet")
    return root


def test_report_says_what_is_missing_and_refuses_non_sweeps(tmp_path):
    page = report(_made_up_store(tmp_path / "s"))
    html = page.read_text()
    assert "3 of 12 runs are missing" in html
    verdicts = pd.read_csv(page.parent / "verdicts.csv.gz").set_index("scheme_id")
    assert verdicts.loc["vanish", "signal"] == "vanishing"
    assert verdicts.loc["bad", "signal"] == "exploding"
    assert verdicts["recommended"].to_dict() == {"good": True, "vanish": False, "bad": False}
    with pytest.raises(UsageError, match="not a sweep folder"):
        report(tmp_path)
    empty = tmp_path / "empty"
    Store(empty).begin({"seeds": 1}, {"runs": 4})
    with pytest.raises(UsageError, match="no finished runs"):
        report(empty)


def test_verdicts_table_has_the_documented_columns_and_one_row_per_scheme_and_cell():
    verdicts = pd.read_csv(EXAMPLE / "report" / "verdicts.csv.gz")
    columns = [
        "activation",
        "arch",
        "depth",
        "width",
        "bias_var",
        "scheme_id",
        "signal",
        "gradients",
        "predicted",
        "failure",
        "training",
        "recommended",
        "group",
    ]
    assert list(verdicts.columns[: len(columns)]) == columns
    cells = initbench.load(EXAMPLE).cells
    assert len(verdicts) == cells.groupby(["activation", "depth", "scheme_id"]).ngroups
    assert set(verdicts["signal"].dropna()) <= {"stable", "critical", "vanishing", "exploding"}
    assert set(verdicts["gradients"].dropna()) <= {"stable", "vanishing", "exploding"}
    assert set(verdicts["predicted"].dropna()) <= {"trains", "fails"}
    assert set(verdicts["training"].dropna()) <= {"trains", "stalls", "diverges"}


def test_no_scheme_is_both_recommended_and_failing_on_the_default_preset():
    results = initbench.load(EXAMPLE)
    assert results.meta["grid"] == initbench.preset("default").parts["mlp"].to_dict()
    verdicts, trained = verdicts_of(results)
    assert trained
    assert not (verdicts["recommended"] & failing(verdicts, trained)).any()
    # every cell of the default preset has an answer
    assert verdicts.groupby(["activation", "depth"])["recommended"].any().all()


def test_lsuv_is_measured_on_the_probe_batch_not_the_batch_it_was_fitted_on(tmp_path):
    grid = initbench.Grid(
        schemes=("lsuv",), activations=("tanh",), depths=(6,), widths=(64,), seeds=2
    )
    results = initbench.load(initbench.sweep(grid, tmp_path / "s", device="cpu", progress=False))
    pre_var = results.layers["pre_var"].to_numpy()
    # fitted to unit variance on its own batch: on the probe batch within sampling noise of
    # 1 (B * N = 16384 values: a few percent), but not 1 to 1e-6 as on the fit batch
    deviation = np.abs(pre_var - 1)
    assert deviation.max() < 0.1
    assert deviation.mean() > 1e-3


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
        train_steps=40,
        eval_every=10,
        target_accuracy=0.5,
    )
    initbench.sweep(grid, root / "s", device="cpu", progress=False)
    return report(root / "s")


def test_report_files(real_report):
    figures = real_report.parent / "figures"
    names = sorted(p.stem for p in figures.glob("*.png"))
    kinds = {name.split("_")[0] for name in names}
    assert kinds == {
        "signal",
        "gradients",
        "units",
        "rank",
        "correlation",
        "hist",
        "accuracy",
        "loss",
        "steps",
    }
    drawn = set(pd.read_csv(figures / "data.csv.gz")["figure"])
    for name in names:  # every figure ships the data it draws, and nothing else
        assert (figures / f"{name}.png").exists() and name in drawn
    assert {p.suffix for p in figures.iterdir()} == {".png", ".gz"}
    html = real_report.read_text()
    # every table's numbers, one file: its rows are the table's, in the page's order
    saved = pd.read_csv(real_report.parent / "tables.csv.gz")
    tables = cell_tables(*verdicts_of(initbench.load(real_report.parent.parent)))
    assert list(dict.fromkeys(saved["table"])) == [t.id for t in tables]
    for table in tables:
        rows = saved[saved["table"] == table.id].drop(columns="table").reset_index(drop=True)
        assert list(rows["members"]) == list(table.frame["members"])
        np.testing.assert_allclose(rows["signal_change"], table.frame["signal_change"], rtol=1e-7)
        assert f'id="{table.id}"' in html
    assert "http://" not in html and "https://" not in html  # no CDN, works offline
    assert html.count('class="verdict"') == len(names)
    for word in ("nan", "inf", "NaN"):
        texts = [line for line in html.split(">") if f" {word}" in line or f">{word}<" in line]
        assert not texts, texts


def test_publish_compares_sweeps_and_links_asv(tmp_path, real_report):
    asv = tmp_path / "asv_html"
    asv.mkdir()
    (asv / "index.html").write_text("<html>asv</html>")
    index = publish([real_report.parent.parent, EXAMPLE], tmp_path / "site", asv_html=asv)
    text = index.read_text()
    assert 'href="s/index.html"' in text and 'href="example/index.html"' in text
    assert text.count('class="matrix"') == 2 and 'href="asv/index.html"' in text
    assert (tmp_path / "site" / "s" / "index.html").exists()


def test_publish_checks_every_input_before_writing(tmp_path):
    with pytest.raises(UsageError, match="is not a folder"):
        publish([EXAMPLE, tmp_path / "missing"], tmp_path / "site")
    assert not (tmp_path / "site").exists()


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _open(browser, path, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(r.url) if not r.url.startswith("file:") else None)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors


@pytest.mark.browser
def test_page_in_a_real_browser(browser, real_report):
    page, errors = _open(browser, real_report, 1400)
    assert errors == []
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    for img in page.query_selector_all("img"):
        img.scroll_into_view_if_needed()
    page.wait_for_function(
        "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    )
    # the answer matrix: every activation and depth a row, every scheme a column
    rows = page.eval_on_selector_all(
        "table.matrix tbody th.row a", "e => e.map(x => x.textContent)"
    )
    cells = initbench.load(real_report.parent.parent).cells
    expected = {f"{a}, mlp depth {d}, width 16" for a in ("tanh", "relu") for d in (3, 6)}
    assert set(rows) == expected
    header = " ".join(page.eval_on_selector_all("table.matrix th.col", "e => e.map(x => x.title)"))
    for scheme in cells["scheme_id"].unique():
        assert scheme in header
    labels = page.eval_on_selector_all("table.matrix td", "e => e.map(x => x.textContent)")
    assert any(label.startswith("★") for label in labels)
    # sorting a table by scheme
    table = page.query_selector("table.sortable")
    header_cell = table.query_selector_all("thead th")[0]
    header_cell.click()
    names = [
        r.query_selector_all("td")[0].inner_text() for r in table.query_selector_all("tbody tr")
    ]
    assert names == sorted(names)
    page.close()


@pytest.mark.browser
@pytest.mark.parametrize("width", [390, 1400])
def test_pages_fit_the_screen(browser, real_report, tmp_path, width):
    index = publish([real_report.parent.parent], tmp_path / "site")
    for path in (real_report, index):
        page, errors = _open(browser, path, width)
        assert errors == []
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path.name} is {overflow}px wider than a {width}px screen"
        page.screenshot(path=str(tmp_path / f"{path.parent.name}_{width}.png"), full_page=True)
        page.close()


@pytest.mark.browser
def test_a_link_with_filters_opens_that_view_and_its_csv_holds_the_rows_shown(
    browser, real_report, tmp_path
):
    page, errors = _open(browser, real_report, 1400)
    page.select_option('form.filters select[name="activation"]', "relu")
    assert "matrix.activation=relu" in page.url  # the filter is in the URL
    link = page.url
    page.close()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(link)
    rows = page.query_selector_all("table.matrix tbody tr")
    shown = [r for r in rows if r.is_visible()]
    assert shown and len(shown) < len(rows)
    assert all(r.get_attribute("data-activation") == "relu" for r in shown)
    with page.expect_download() as download:
        page.click("form.filters a.csv")
    saved = pd.read_csv(download.value.path(), dtype=str, keep_default_na=False)
    assert list(saved["activation"]) == ["relu"] * len(shown)
    assert list(saved["depth"]) == [r.get_attribute("data-depth") for r in shown]
    swept = initbench.load(real_report.parent.parent)
    columns, matrix_rows = matrix(*verdicts_of(swept), swept.meta["grid"])
    assert list(saved.columns[6:-1]) == columns
    relu = [r for r in matrix_rows if r["keys"]["activation"] == "relu"]
    for got, row in zip(saved.itertuples(index=False), relu, strict=True):  # label, warning
        want = [e["label"] + (f" ⚠ {e['note']}" if e["note"] else "") for e in row["entries"]]
        assert list(got[6:-1]) == want
        assert got.recommended == "; ".join(row["recommended"])
        assert got.command == row["command"] and got.command.startswith("initbench sweep ")
    # a row's evidence is one click away: its network's signal figure, unfolded (the tanh
    # ones are folded when the page opens)
    page.select_option('form.filters select[name="activation"]', "tanh")
    figure = page.query_selector("#fig-signal_mlp_w16_tanh")
    assert not figure.is_visible()
    page.query_selector("table.matrix tbody tr:not([hidden]) th.row a").click()
    assert figure.is_visible() and "fig-signal_mlp_w16_tanh" in page.url
    assert errors == []
    page.close()


def _answer_on_first_screen(page) -> list[str]:
    """The recommendations a reader sees on opening the page, without scrolling sideways:
    each matrix row's "use" line that lies wholly inside the first screen."""
    return page.eval_on_selector_all(
        "table.matrix tbody tr:not([hidden]) th.row .use",
        """e => e.filter(u => { const r = u.getBoundingClientRect();
              return r.width > 0 && r.left >= 0 && r.right <= innerWidth && r.bottom <= innerHeight;
            }).map(u => u.textContent)""",
    )


@pytest.mark.browser
def test_the_first_screen_shows_the_answer(browser, real_report):
    page, errors = _open(browser, real_report, 1400)
    shown = _answer_on_first_screen(page)
    _, rows = matrix(*verdicts_of(initbench.load(real_report.parent.parent)))
    want = [
        "★ " + ", ".join(map(column_label, r["recommended"]))
        if r["recommended"]
        else "no scheme passes"
        for r in rows
    ]
    assert shown and shown == want[: len(shown)]
    assert any(text.startswith("★ ") for text in shown)
    assert errors == []
    page.close()


@pytest.mark.browser
def test_every_figures_legend_text_is_10_px_or_more_at_page_width(browser, real_report):
    from initbench.report.figures.base import DPI, LEGEND_POINTS

    page, _ = _open(browser, real_report, 1400)
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    for img in page.query_selector_all("figure img"):
        img.scroll_into_view_if_needed()
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    scales = page.eval_on_selector_all(
        "figure img", "e => e.map(i => i.getBoundingClientRect().width / i.naturalWidth)"
    )
    assert scales and min(scales) * LEGEND_POINTS * DPI / 72 >= 10, min(scales)
    page.close()


@pytest.mark.browser
@pytest.mark.parametrize("width", [390, 1400])
def test_published_atlas_in_a_real_browser(browser, width):
    """results/atlas opens from disk with no errors and no network, fits the screen, and
    its filters narrow every matrix to the chosen cells."""
    atlas = ROOT / "results" / "atlas" / "index.html"
    if not atlas.exists():
        pytest.skip("results/atlas not published")
    page, errors = _open(browser, atlas, width)
    assert errors == []
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    form = page.query_selector("form.filters")
    table = page.query_selector(f"#{form.get_attribute('data-matrix')}")
    rows = table.query_selector_all("tbody tr")
    depth = rows[0].get_attribute("data-depth")
    form.query_selector('select[name="depth"]').select_option(depth)
    shown = [r for r in rows if r.is_visible()]
    assert shown and all(r.get_attribute("data-depth") == depth for r in shown)
    assert len(shown) < len(rows)
    assert form.query_selector(".count").inner_text() == f"{len(shown)} of {len(rows)} cells"
    page.close()
    # every part's page opens on its answer at 1400 px: a row's recommendations on the first
    # screen; on a phone, on the screen that shows the matrix, without scrolling sideways
    for part in sorted(atlas.parent.glob("*/index.html")):
        page, errors = _open(browser, part, width)
        if width < 1400:
            page.query_selector("table.matrix").scroll_into_view_if_needed()
        assert errors == [] and any(t.startswith("★ ") for t in _answer_on_first_screen(page))
        page.close()


def test_example_meta_is_the_default_preset():
    meta = json.loads((EXAMPLE / "meta.json").read_text())
    assert meta["kind"] == "sweep" and "finished" in meta


def test_a_failure_modes_number_is_the_one_the_rule_compares():
    from initbench.report.tables import mode_value

    row = pd.Series(
        {
            "gradients_change": -20.0,
            "separation_last": 0.042,
            "rank_last": 1.2,
            "dead_last": 0.95,
        }
    )
    assert mode_value(row, "gradients vanishing") == fmt.factor(-20.0)
    assert mode_value(row, "correlation collapse") == f"{fmt.percent(0.042)} kept"
    assert mode_value(row, "rank collapse") == fmt.number(1.2)
    assert mode_value(row, "dead units") == fmt.percent(0.95)
