"""Pages: what every page shares (its template environment, writing it whole, its
provenance lines), and :func:`report`, which writes the page of any results folder.

Each kind of results folder (``meta.json``'s ``kind``) has its page in one module of this
package, which declares it in a ``PAGES`` mapping: kind -> :class:`Page`. Adding a kind of
page is that one module; :func:`pages` finds it.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import jinja2

from initbench.core import fmt, folders
from initbench.core.errors import UsageError
from initbench.core.folders import atomic_write_bytes
from initbench.report.tables import column_label, scheme_key
from initbench.sweeps.store import Results, load


class Page(NamedTuple):
    """The page of one kind of results folder: what renders it into a folder (returning
    its HTML file), and the line a site's index says about such a folder."""

    render: Callable[..., Path]
    about: str


@functools.cache
def pages() -> dict[str, Page]:
    """Every kind's page, from the ``PAGES`` of this package's modules."""
    found: dict[str, Page] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        module = importlib.import_module(f"{__package__}.{info.name}")
        found.update(getattr(module, "PAGES", {}))
    return found


def env() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader(__package__, "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["number"] = fmt.number
    environment.filters["duration"] = fmt.duration
    environment.filters["column_label"] = column_label
    environment.filters["scheme_key"] = scheme_key
    return environment


def write_page(template: str, out: Path, **context) -> Path:
    """Renders a page template into ``out/index.html`` (whole or not at all). A page says
    when its results were measured (``measured_on``), not when it was written: the same
    results give the same page."""
    path = out / "index.html"
    atomic_write_bytes(path, env().get_template(template).render(**context).encode())
    return path


def report(results_dir: str | Path | Results, out: str | Path | None = None, **options) -> Path:
    """Writes the report of a results folder: ``index.html``, figures (PNG, and the tables
    they draw in ``figures/data.csv.gz``), every table's numbers in ``tables.csv.gz``, and
    ``verdicts.csv.gz``.

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
    known = pages()
    if results.kind not in known:
        raise UsageError(f"{results.path} holds results of an unknown kind {results.kind!r}")
    page = known[results.kind].render
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


def measured_on(meta: dict) -> str | None:
    """When a results folder's measurements finished (or began)."""
    return meta.get("finished") or meta.get("started")


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
