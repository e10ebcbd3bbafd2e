"""A sweep's page: the answer matrix, verdicts, tables and figures, in one self-contained page."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from initbench.core import fmt
from initbench.core.data import DATASETS
from initbench.core.errors import UsageError
from initbench.core.folders import atomic_write_csv_gz, stacked
from initbench.report import rule
from initbench.report.classify import (
    CELL_KEYS,
    SCORE,
    agreement,
    classify,
    confusion,
    equivalence_groups,
)
from initbench.report.figures import SECTIONS, Context, all_figures
from initbench.report.pages import Page, measured_on, provenance, write_page
from initbench.report.tables import cell_tables, matrix
from initbench.sweeps.store import Results

TABLES_FILE = "tables.csv.gz"  # every table's numbers, a first column ``table`` naming each
VERDICT_COLUMNS = [
    *CELL_KEYS,
    "scheme_id",
    "signal",
    "gradients",
    "predicted",
    "failure",
    "training",
    "recommended",
    "group",
]


TEXTS = {name for name, info in DATASETS.items() if info.kind == "text"}


def did_train(results: Results) -> bool:
    """Whether a sweep trained: training steps asked for and training curves stored."""
    return bool(results.meta.get("grid", {}).get("train_steps")) and not results.curves.empty


def verdicts_of(results: Results) -> tuple[pd.DataFrame, bool]:
    """The classification of a sweep, and whether it trained."""
    groups = equivalence_groups(results.cells, results.tables.get("weights"))
    trained = did_train(results)
    return classify(results.cells, results.layers, trained, groups), trained


def sweep_page(
    results: Results, out: Path, classified: tuple[pd.DataFrame, bool] | None = None
) -> Path:
    """A sweep's page; ``classified`` is :func:`verdicts_of`'s result when known."""
    cells = results.cells
    if cells.empty:
        raise UsageError(f"{results.path} holds no finished runs yet: run the sweep first")
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    grid = results.meta.get("grid", {})
    verdicts, trained = classified or verdicts_of(results)
    verdicts = verdicts.copy()  # figures fill in missing bias variances: the caller's stays
    ordered = [*VERDICT_COLUMNS, *(c for c in verdicts.columns if c not in VERDICT_COLUMNS)]
    atomic_write_csv_gz(out / "verdicts.csv.gz", verdicts[ordered])

    tables = cell_tables(verdicts, trained)
    atomic_write_csv_gz(out / TABLES_FILE, stacked({t.id: t.frame for t in tables}, "table"))
    ctx = Context(
        cells,
        results.layers,
        results.curves,
        results.hists,
        verdicts,
        trained,
        float(grid.get("target_accuracy", 0.8)),
        int(grid.get("train_steps") or 0),
        grid.get("dataset") in TEXTS,
    )
    figures = all_figures(ctx, figures_dir)
    columns, rows = matrix(verdicts, trained, results.meta.get("grid"))
    expected = int(results.meta.get("runs", len(cells)))
    return write_page(
        "sweep.html.j2",
        out,
        title=f"initbench: {results.path.name}",
        measured_on=measured_on(results.meta),
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
        rule=rule.RULE,
        rule_text=rule.RULE.as_text(),
        score_text=SCORE.as_text(),
        calibrated={
            part: f"{fmt.percent(found['accuracy'])} of {found['decisive']}"
            for part, found in rule.CHECKED.items()
        },
        settled=f"{2**rule.SETTLED:.2g}",
        settled_limit=f"{2**rule.SETTLED_LIMIT:.0f}",
        critical=f"{rule.CRITICAL_EXPONENT:g}",
        checked=_checked(verdicts) if trained else None,
        target=fmt.percent(float(grid.get("target_accuracy", 0.8))),
    )


def _checked(verdicts: pd.DataFrame) -> dict:
    """The probe's prediction against this sweep's training: the confusion matrix (as
    HTML) and the agreement numbers (:func:`~initbench.report.classify.agreement`)."""
    found = agreement(verdicts, verdicts["probe_recommended"])
    table = confusion(verdicts).rename_axis(index="predicted", columns="training")
    return found | {"confusion": table.to_html(border=0), "percent": fmt.percent}


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


PAGES = {"sweep": Page(sweep_page, "sweep of schemes over cells")}
