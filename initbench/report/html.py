"""HTML pages: one self-contained page per sweep, and a site that joins several."""

from __future__ import annotations

import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pandas as pd

from initbench.errors import UsageError
from initbench.report import plots
from initbench.report.tables import display, ranking
from initbench.store import load


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("initbench.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = lambda v: f"{v:.4g}" if isinstance(v, float) else v
    return env


def report(results_dir: str | Path, out: str | Path | None = None) -> Path:
    """Writes tables (CSV, Markdown, HTML), figures (PNG, SVG) and ``index.html``.

    Args:
        results_dir: a sweep folder.
        out: where to write (default ``results_dir/report``).

    Returns:
        The path of the HTML page.

    Raises:
        UsageError: not a sweep folder, or a store with no runs.
    """
    with warnings.catch_warnings():  # NaN and zero variances are expected in failing cells
        warnings.simplefilter("ignore", RuntimeWarning)
        return _report(results_dir, out)


def _report(results_dir: str | Path, out: str | Path | None) -> Path:
    results = load(results_dir)
    if results.cells.empty:
        raise UsageError(f"{results_dir} holds no finished runs yet: run the sweep first")
    out = Path(out) if out else results.path / "report"
    figures_dir = out / "figures"
    tables_dir = out / "tables"
    for folder in (figures_dir, tables_dir):
        folder.mkdir(parents=True, exist_ok=True)
    grid = results.meta.get("grid", {})
    trained = bool(grid.get("train_steps")) and not results.curves.empty
    cells = results.cells
    expected = int(results.meta.get("runs", len(cells)))
    missing = expected - len(cells)

    tables = ranking(cells, trained)
    table_views = []
    for index, table in enumerate(tables):
        view = display(table.frame)
        stem = f"table_{index + 1:02d}"
        table.frame.to_csv(tables_dir / f"{stem}.csv", index=False)
        (tables_dir / f"{stem}.md").write_text(
            f"### {table.title}\n\n{view.to_markdown(index=False)}\n\n{table.verdict}\n"
        )
        html = view.to_html(index=False, classes="sortable", border=0, escape=True)
        (tables_dir / f"{stem}.html").write_text(html)
        table_views.append(
            {"title": table.title, "verdict": table.verdict, "html": html, "id": stem}
        )

    figures = []
    figures += plots.per_layer(cells, results.layers, figures_dir, "pre_var", "theory_pre_var")
    figures += plots.per_layer(cells, results.layers, figures_dir, "grad_w_norm", None)
    figures += plots.drift_heatmap(cells, figures_dir)
    if trained:
        figures += plots.convergence(
            cells, results.curves, figures_dir, float(grid.get("target_accuracy", 0.8))
        )
    status = cells["status"].value_counts().to_dict()
    page = (
        _env()
        .get_template("sweep.html.j2")
        .render(
            title=f"initbench: {results.path.name}",
            meta=results.meta,
            grid=grid,
            status=status,
            missing=missing,
            expected=expected,
            tables=table_views,
            figures=figures,
            trained=trained,
            generated=datetime.now(UTC).isoformat(timespec="seconds"),
            summary=_summary(cells, results.meta),
        )
    )
    path = out / "index.html"
    path.write_text(page)
    return path


def _summary(cells: pd.DataFrame, meta: dict) -> list[tuple[str, str]]:
    grid = meta.get("grid", {})
    return [
        ("runs", f"{len(cells)} of {meta.get('runs', len(cells))}"),
        ("schemes", str(cells["scheme_id"].nunique())),
        ("activations", ", ".join(sorted(cells["activation"].unique()))),
        ("archs", ", ".join(sorted(cells["arch"].unique()))),
        ("depths", ", ".join(map(str, sorted(cells["depth"].unique())))),
        ("widths", ", ".join(map(str, sorted(cells["width"].unique())))),
        ("seeds", str(grid.get("seeds", cells["seed"].nunique()))),
        ("probe input", grid.get("dataset") or "standard normal"),
        (
            "training",
            f"{grid.get('train_steps')} {grid.get('optimizer')} steps, lr {grid.get('lr')}"
            if grid.get("train_steps")
            else "none (probe only)",
        ),
        ("device", f"{meta.get('device')} ({meta.get('device_name')})"),
        ("versions", f"torch {meta.get('torch')}, initbench {meta.get('initbench')}"),
        ("date", str(meta.get("finished") or meta.get("started"))),
    ]


def publish(
    sweep_dirs: list[str | Path], out: str | Path, asv_html: str | Path | None = None
) -> Path:
    """Builds a static site: one report per sweep under ``out/<name>/`` and an index.

    ``asv_html`` (default ``results/asv/html`` when it exists) is copied to ``out/asv/`` and
    linked from the index.
    """
    if not sweep_dirs:
        raise UsageError("publish needs at least one sweep folder")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for sweep_dir in sweep_dirs:
        results = load(sweep_dir)
        name = Path(sweep_dir).resolve().name
        report(sweep_dir, out / name)
        cells = results.cells
        entries.append(
            {
                "name": name,
                "runs": len(cells),
                "ok": int((cells["status"] == "ok").sum()),
                "date": results.meta.get("finished") or results.meta.get("started"),
                "device": results.meta.get("device_name") or results.meta.get("device"),
            }
        )
    asv_link = None
    asv_source = Path(asv_html) if asv_html else Path("results/asv/html")
    if (asv_source / "index.html").exists():
        shutil.copytree(asv_source, out / "asv", dirs_exist_ok=True)
        asv_link = "asv/index.html"
    page = (
        _env()
        .get_template("site.html.j2")
        .render(
            title="initbench results",
            entries=entries,
            asv_link=asv_link,
            generated=datetime.now(UTC).isoformat(timespec="seconds"),
        )
    )
    (out / "index.html").write_text(page)
    return out / "index.html"
