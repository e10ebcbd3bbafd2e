"""Pages of reproductions: one per reproduction (its claim, the expected and the measured
value, its figures), and an overview of ``initbench reproduce --all``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from initbench.core import fmt
from initbench.core.errors import UsageError
from initbench.report.pages import Page, measured_on, write_page
from initbench.sweeps.store import Results


def read(folder: Path) -> dict:
    path = folder / "reproduce.json"
    if not path.exists():
        raise UsageError(f"{folder} holds no reproduce.json: run initbench reproduce first")
    return json.loads(path.read_text())


def measured_text(record: dict) -> str:
    """``0.503 (95%: 0.497 to 0.509)``."""
    value = record["measured"] if record["measured"] is not None else math.nan
    lo, hi = (v if v is not None else math.nan for v in record["interval"])
    text = fmt.number(value)
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" (95%: {fmt.number(lo)} to {fmt.number(hi)})"
    return text


def page(results: Results, out: Path) -> Path:
    """The page of one reproduction folder."""
    record = read(results.path)
    prefix = (
        "../" if out.resolve().parent == results.path.resolve() else f"{results.path.resolve()}/"
    )
    out.mkdir(parents=True, exist_ok=True)
    return write_page(
        "reproduce.html.j2",
        out,
        title=f"Reproduction: {record['name']}",
        measured_on=measured_on(results.meta),
        record=record,
        measured=measured_text(record),
        details=[
            (k, fmt.number(v) if isinstance(v, int | float) else str(v))
            for k, v in record["details"].items()
        ],
        prefix=prefix,
    )


def overview(results: Results, out: Path) -> Path:
    """The page of ``initbench reproduce --all``: every reproduction's verdict."""
    records = [read(results.path / name) for name in results.meta["names"]]
    out.mkdir(parents=True, exist_ok=True)
    prefix = (
        "../" if out.resolve().parent == results.path.resolve() else f"{results.path.resolve()}/"
    )
    return write_page(
        "reproductions.html.j2",
        out,
        title="initbench: reproductions of classic results",
        measured_on=measured_on(results.meta),
        records=[r | {"measured_text": measured_text(r)} for r in records],
        passed=sum(r["passed"] for r in records),
        seconds=sum(r["seconds"] for r in records),
        prefix=prefix,
    )


PAGES = {
    "reproduce": Page(page, "reproduction of a classic result"),
    "reproductions": Page(overview, "reproductions of classic results"),
}
