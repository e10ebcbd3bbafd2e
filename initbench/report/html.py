"""HTML pages: one self-contained page per sweep, and a site that joins several."""

from __future__ import annotations

import importlib
import warnings
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pandas as pd

from initbench import folders
from initbench.errors import UsageError
from initbench.folders import atomic_write_bytes
from initbench.report import fmt
from initbench.report.classify import (
    CELL_KEYS,
    SETTLED,
    SETTLED_LIMIT,
    THRESHOLD,
    classify,
    equivalence_groups,
)
from initbench.report.figures import SECTIONS, Context, all_figures
from initbench.report.tables import cell_tables, matrix
from initbench.store import Results, load

# what writes the page of each kind of results folder (meta.json's "kind")
PAGES = {
    "sweep": "initbench.report.html:sweep_page",
    "probe": "initbench.report.modules:page",
    "coord": "initbench.report.coord:page",
    "phase": "initbench.report.phase:page",
    "reproduce": "initbench.report.reproduce:page",
    "reproductions": "initbench.report.reproduce:overview",
    "site": "initbench.report.site:site_page",
}
VERDICT_COLUMNS = [
    *CELL_KEYS,
    "scheme_id",
    "signal",
    "gradients",
    "training",
    "recommended",
    "group",
]


def env() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("initbench.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["number"] = fmt.number
    environment.filters["duration"] = fmt.duration
    return environment


def write_page(template: str, out: Path, **context) -> Path:
    """Renders a page template into ``out/index.html`` (whole or not at all), stamped with
    the time (unless ``context`` has ``generated``)."""
    context.setdefault("generated", datetime.now(UTC).isoformat(timespec="seconds"))
    path = out / "index.html"
    atomic_write_bytes(path, env().get_template(template).render(**context).encode())
    return path


def report(results_dir: str | Path | Results, out: str | Path | None = None, **options) -> Path:
    """Writes the report of a results folder: ``index.html``, figures (PNG, SVG and the
    CSV each draws), tables (CSV, Markdown, HTML) and ``verdicts.csv``.

    The report is built beside ``out`` and swapped in whole: an error or Ctrl-C leaves the
    previous one as it was. A site's page is its own ``index.html``, rewritten in place.

    Args:
        results_dir: a folder written by ``initbench sweep`` (or ``probe``, ``coord``,
            ``phase``, ``reproduce``, ``publish``), or that folder already loaded.
        out: where to write (default ``results_dir/report``); a new or empty folder, or
            an earlier report.
        options: for the page of the folder's kind (a sweep's: ``classified``, its
            classification when the caller has it already).

    Returns:
        The path of the HTML page.

    Raises:
        UsageError: not a results folder, one with no finished runs, or an ``out`` that
            holds something other than a report.
    """
    results = results_dir if isinstance(results_dir, Results) else load(results_dir)
    if results.kind == "report":
        raise UsageError(f"{results.path} is a report: give initbench report its results folder")
    if results.kind not in PAGES:
        raise UsageError(f"{results.path} holds results of an unknown kind {results.kind!r}")
    module, _, function = PAGES[results.kind].partition(":")
    page = getattr(importlib.import_module(module), function)
    with warnings.catch_warnings():  # NaN and zero variances are expected in failing cells
        warnings.simplefilter("ignore", RuntimeWarning)
        if results.kind == "site" and (
            out is None or Path(out).resolve() == results.path.resolve()
        ):
            return page(results, results.path, **options)
        out = Path(out) if out else results.path / "report"
        with folders.replacing(out, "report") as building:
            written = page(results, building, **options)
            folders.write_meta(building, {"kind": "report", "of": results.kind})
        return out / written.relative_to(building)


def verdicts_of(results: Results) -> tuple[pd.DataFrame, bool]:
    """The classification of a sweep, and whether it trained."""
    grid = results.meta.get("grid", {})
    trained = bool(grid.get("train_steps")) and not results.curves.empty
    groups = equivalence_groups(results.cells, grid)
    verdicts = classify(results.cells, results.layers, trained, groups)
    return verdicts, trained


def sweep_page(
    results: Results, out: Path, classified: tuple[pd.DataFrame, bool] | None = None
) -> Path:
    """A sweep's page; ``classified`` is :func:`verdicts_of`'s result when known."""
    cells = results.cells
    if cells.empty:
        raise UsageError(f"{results.path} holds no finished runs yet: run the sweep first")
    figures_dir, tables_dir = out / "figures", out / "tables"
    for folder in (figures_dir, tables_dir):
        folder.mkdir(parents=True, exist_ok=True)
    grid = results.meta.get("grid", {})
    verdicts, trained = classified or verdicts_of(results)
    verdicts = verdicts.copy()  # figures fill in missing bias variances: the caller's stays
    ordered = [*VERDICT_COLUMNS, *(c for c in verdicts.columns if c not in VERDICT_COLUMNS)]
    verdicts[ordered].to_csv(out / "verdicts.csv", index=False)

    tables = cell_tables(verdicts, trained)
    for table in tables:
        table.frame.to_csv(tables_dir / f"{table.id}.csv", index=False)
        (tables_dir / f"{table.id}.md").write_text(
            f"### {table.title}\n\n{table.view.to_markdown(index=False)}\n\n{table.verdict}\n"
        )
        (tables_dir / f"{table.id}.html").write_text(_table_html(table.view))
    ctx = Context(
        cells,
        results.layers,
        results.curves,
        results.hists,
        verdicts,
        trained,
        float(grid.get("target_accuracy", 0.8)),
    )
    figures = all_figures(ctx, figures_dir, int(grid.get("train_steps") or 0))
    columns, rows = matrix(verdicts, trained)
    expected = int(results.meta.get("runs", len(cells)))
    return write_page(
        "sweep.html.j2",
        out,
        title=f"initbench: {results.path.name}",
        meta=results.meta,
        status=cells["status"].value_counts().to_dict(),
        missing=expected - len(cells),
        expected=expected,
        columns=columns,
        rows=rows,
        tables=[
            {"id": t.id, "title": t.title, "verdict": t.verdict, "html": _table_html(t.view)}
            for t in tables
        ],
        sections=[
            (key, name, [f for f in figures if f.section == key])
            for key, name in SECTIONS.items()
            if any(f.section == key for f in figures)
        ],
        trained=trained,
        summary=summary(cells, results.meta),
        threshold=f"{2**THRESHOLD:.0f}",
        settled=f"{2**SETTLED:.2g}",
        settled_limit=f"{2**SETTLED_LIMIT:.0f}",
        target=fmt.percent(float(grid.get("target_accuracy", 0.8))),
    )


def _table_html(view: pd.DataFrame) -> str:
    return view.to_html(index=False, classes="sortable", border=0, escape=True)


def summary(cells: pd.DataFrame, meta: dict) -> list[tuple[str, str]]:
    """The page's "about this sweep" lines."""
    grid = meta.get("grid", {})
    bias = sorted(cells["bias_var"].dropna().unique()) if "bias_var" in cells else []
    lines = [
        ("runs", f"{len(cells):,} of {int(meta.get('runs', len(cells))):,}"),
        ("schemes", str(cells["scheme_id"].nunique())),
        ("activations", ", ".join(sorted(cells["activation"].unique()))),
        ("archs", ", ".join(sorted(cells["arch"].unique()))),
        ("depths", ", ".join(map(str, sorted(cells["depth"].unique())))),
        ("widths", ", ".join(map(str, sorted(cells["width"].unique())))),
        ("bias variances", ", ".join(f"{b:g}" for b in bias) or "0"),
        ("seeds", str(grid.get("seeds", cells["seed"].nunique()))),
        ("probe input", grid.get("dataset") or "standard normal"),
        (
            "training",
            f"{grid.get('train_steps')} {grid.get('optimizer')} steps, lr {grid.get('lr')}, "
            f"target {fmt.percent(float(grid.get('target_accuracy', 0.8)))}"
            if grid.get("train_steps")
            else "none (probe only)",
        ),
    ]
    return lines + provenance(meta)


def provenance(meta: dict) -> list[tuple[str, str]]:
    """The "about" lines every page ends with: device, versions, date and compute time."""
    lines = [
        ("device", f"{meta.get('device')} ({meta.get('device_name')})"),
        ("versions", f"torch {meta.get('torch')}, initbench {meta.get('initbench')}"),
        ("date", str(meta.get("finished") or meta.get("started"))),
    ]
    seconds = meta.get("seconds")
    if seconds is None and meta.get("started") and meta.get("finished"):
        elapsed = datetime.fromisoformat(meta["finished"]) - datetime.fromisoformat(meta["started"])
        seconds = elapsed.total_seconds()
    if seconds is not None:
        lines.append(("compute time", fmt.duration(float(seconds))))
    return lines
