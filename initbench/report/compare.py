"""Two sweeps, or two published sites, side by side: every verdict that changed.

Scheme-cells are matched by their cell and scheme id (and, between sites, the sweep they
belong to); a scheme that is in each under another gain (``xavier_normal[gain=unit]``
and ``[gain=1.5]``) is matched with itself when it is the only one of its kind in that
cell on each side. ``changes.csv`` has a row per changed verdict, with the numbers behind
it on each side; ``index.html`` shows them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from initbench.core import fmt
from initbench.core.errors import UsageError
from initbench.core.folders import replacing, write_meta
from initbench.report.classify import CELL_KEYS
from initbench.report.pages import write_page
from initbench.report.sweep import verdicts_of
from initbench.sweeps.store import Results, load

VERDICTS = ["signal", "gradients", "predicted", "training", "recommended"]
NUMBERS = ["signal_change", "gradients_change", "rank_last", "final_test_acc"]


def verdict_table(results: Results) -> pd.DataFrame:
    """Per scheme-cell (and sweep, for a site): its verdicts and their numbers."""
    if results.kind in ("site", "sweep") and results.cells.empty:
        raise UsageError(f"{results.path} holds no finished runs yet: nothing to compare")
    if results.kind == "site":
        table = results.cells.copy()
    elif results.kind == "sweep":
        table = verdicts_of(results)[0].assign(sweep="")
    else:
        raise UsageError(
            f"{results.path} holds {results.kind} results: compare two sweeps or sites"
        )
    table["bias_var"] = table["bias_var"].fillna(0.0)
    table["kind_of"] = table["scheme_id"].map(without_gain)
    columns = ["sweep", *CELL_KEYS, "scheme_id", "kind_of", *VERDICTS, *NUMBERS]
    return table[[c for c in columns if c in table]]


def without_gain(scheme_id: str) -> str:
    """``xavier_normal[gain=unit]`` -> ``xavier_normal``: a scheme id less its gain."""
    name, _, rest = scheme_id.partition("[")
    kept = [p for p in rest.rstrip("]").split(",") if p and not p.startswith("gain=")]
    return f"{name}[{','.join(kept)}]" if kept else name


def matched(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """``a`` and ``b`` side by side (columns ``_a`` and ``_b``): by scheme id, then by
    scheme without its gain where that is one scheme on each side; and how many
    scheme-cells only ``a`` and only ``b`` have."""
    keys = ["sweep", *CELL_KEYS]
    both = a.merge(b, on=[*keys, "scheme_id"], how="outer", suffixes=("_a", "_b"), indicator=True)
    pairs = both[both["_merge"] == "both"].assign(
        scheme_id_a=lambda f: f["scheme_id"], scheme_id_b=lambda f: f["scheme_id"]
    )
    left = a.merge(pairs[[*keys, "scheme_id"]], how="left", indicator=True)
    right = b.merge(pairs[[*keys, "scheme_id"]], how="left", indicator=True)
    left = left[left["_merge"] == "left_only"].drop(columns="_merge")
    right = right[right["_merge"] == "left_only"].drop(columns="_merge")
    alone = [*keys, "kind_of"]  # one scheme of its kind in the cell, on each side
    left = left.merge(a[~a.duplicated(alone, keep=False)][[*keys, "scheme_id"]])
    right = right.merge(b[~b.duplicated(alone, keep=False)][[*keys, "scheme_id"]])
    regained = left.merge(right, on=alone, suffixes=("_a", "_b"))
    frames = [pairs.drop(columns=["_merge", "kind_of_a", "kind_of_b"]), regained]
    found = pd.concat(frames, ignore_index=True)
    found["scheme_id"] = found["scheme_id_a"]
    return found, len(a) - len(found), len(b) - len(found)


def changes(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """One row per verdict that differs between ``a`` and ``b``, with the numbers on both
    sides; and the counts (compared, changed, only in either)."""
    found, only_a, only_b = matched(a, b)
    rows = []
    for verdict in VERDICTS:
        if f"{verdict}_a" not in found or f"{verdict}_b" not in found:
            continue
        was, now = found[f"{verdict}_a"], found[f"{verdict}_b"]
        differ = ~((was == now) | (was.isna() & now.isna()))
        picked = found[differ]
        rows.append(
            picked[["sweep", *CELL_KEYS, "scheme_id_a", "scheme_id_b"]].assign(
                verdict=verdict,
                a=was[differ].astype(str),
                b=now[differ].astype(str),
                **{
                    f"{n}_{s}": picked[f"{n}_{s}"]
                    for n in NUMBERS
                    for s in "ab"
                    if f"{n}_{s}" in picked
                },
            )
        )
    table = pd.concat(rows, ignore_index=True)
    table = table.sort_values(["sweep", *CELL_KEYS, "scheme_id_a", "verdict"])
    table = table.reset_index(drop=True)
    cells = table[["sweep", *CELL_KEYS, "scheme_id_a"]].drop_duplicates()
    counts = {
        "compared": len(found),
        "changed": len(cells),
        "verdicts": len(table),
        "only_a": only_a,
        "only_b": only_b,
    }
    return table, counts


def compare(first: str | Path, second: str | Path, out: str | Path) -> tuple[Path, dict]:
    """Writes ``out/changes.csv`` and ``out/index.html``: the verdicts that differ between
    two sweeps or two sites (``first`` is "a", ``second`` "b").

    Returns:
        The page, and the counts: scheme-cells compared, changed, verdicts changed, and
        the scheme-cells only the first and only the second has.

    Raises:
        UsageError: a folder that is not a sweep or a site, a sweep against a site, or an
            ``out`` that would overwrite either.
    """
    a, b = load(first), load(second)
    if (a.kind == "site") != (b.kind == "site"):
        raise UsageError("compare two sweeps or two published sites, not one of each")
    table, counts = changes(verdict_table(a), verdict_table(b))
    with replacing(Path(out), "compare", inputs=[a.path, b.path]) as building:
        if a.kind == "sweep":  # one sweep each: no sweep names to tell apart
            table = table.drop(columns="sweep")
        table.to_csv(building / "changes.csv", index=False, float_format="%.6g")
        shown = table.copy()
        for column in shown.columns:
            if column.split("_")[-1] in ("a", "b") and column.rsplit("_", 1)[0] in NUMBERS:
                shown[column] = shown[column].map(fmt.number)
        write_page(
            "compare.html.j2",
            building,
            title="initbench compare",
            a=str(a.path),
            b=str(b.path),
            counts=counts,
            table=shown.to_html(index=False, classes="sortable", border=0, escape=True),
        )
        write_meta(building, {"kind": "compare", "a": str(a.path), "b": str(b.path)} | counts)
    return Path(out) / "index.html", counts
