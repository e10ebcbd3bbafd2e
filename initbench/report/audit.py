"""The page of an ``initbench audit`` folder (``meta.json``'s kind ``audit``): the weights
that are off, with what is wrong, and a sortable table of every parameter against the
distribution the scheme intends for it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from initbench.core import fmt
from initbench.core.errors import UsageError
from initbench.report.pages import Page, measured_on, provenance, write_page
from initbench.sweeps.store import Results

TABLE_COLUMNS = {  # the table's columns: their titles
    "param": "parameter",
    "role": "role",
    "block": "block",
    "shape": "shape",
    "fan_in": "fan in",
    "fan_out": "fan out",
    "mean": "mean",
    "std": "std",
    "intended": "intended",
    "intended_std": "intended std",
    "ratio": "ratio",
    "bound": "max |w| / std",
    "intended_bound": "cut at",
    "constructor_std": "constructor's std",
    "findings": "off because",
}
NUMBERS = ("mean", "std", "intended_std", "ratio", "bound", "intended_bound", "constructor_std")


def rules() -> str:
    """When a weight is off, in one sentence."""
    from initbench.studies.audit import BOUND_SLACK, DRAW_SLACK, MEAN_SLACK, STD_RANGE

    low, high = STD_RANGE
    return (
        f"A weight is off when its std is outside {low:g}-{high:g}x the intended one, its "
        f"mean more than {MEAN_SLACK:g} intended stds (and four standard errors) from the "
        f"intended mean, its max |w| / std more than {BOUND_SLACK:g}x where the intended "
        f"draws are cut, or it is still its constructor's draw where the intended std "
        f"differs from that draw's by more than {DRAW_SLACK:.0%}."
    )


def table(params: pd.DataFrame) -> pd.DataFrame:
    """Every parameter, the off weights first, numbers to three digits."""
    view = params[list(TABLE_COLUMNS)].copy()
    for column in NUMBERS:
        view[column] = view[column].map(fmt.number)
    for column in ("block", "fan_in", "fan_out"):
        view[column] = [fmt.MISSING if pd.isna(v) else f"{v:.0f}" for v in view[column]]
    return view.rename(columns=TABLE_COLUMNS)


def summary(meta: dict) -> list[tuple[str, str]]:
    """The page's "about this audit" lines."""
    args = ", ".join(f"{k}={v}" for k, v in (meta.get("model_args") or {}).items())
    roles = ", ".join(f"{k}={v}" for k, v in (meta.get("roles") or {}).items())
    scores = ", ".join(f"{k} ({v:.3g})" for k, v in (meta.get("scores") or {}).items())
    lines = [
        ("model", str(meta.get("model"))),
        ("model arguments", args or "none"),
        ("scheme", f"{meta.get('scheme')} ({'best match' if meta.get('best_match') else 'given'})"),
        ("roles given", roles or "none: from the layers' names"),
        ("matched gains", str(meta.get("activation"))),
    ]
    if scores:
        lines.append(("best matches (score)", scores))
    return lines + provenance(meta)


def page(results: Results, out: Path) -> Path:
    """Writes ``out/index.html`` (loading torch with the audit's rules)."""
    from initbench.studies.audit import Audit

    params = results.tables.get("params")
    if params is None:
        raise UsageError(f"{results.path} holds no params.parquet: run initbench audit first")
    meta = results.meta
    result = Audit(meta["scheme"], meta["best_match"], meta.get("scores") or {}, params)
    html = table(params).to_html(index=False, classes="sortable", border=0, escape=True)
    return write_page(
        "audit.html.j2",
        out,
        title=f"initbench audit: {meta.get('model')}",
        measured_on=measured_on(meta),
        scheme=result.scheme,
        findings=result.findings(),
        rules=rules(),
        table=html,
        summary=summary(meta),
    )


PAGES = {"audit": Page(page, "a model's initialization against a scheme")}
