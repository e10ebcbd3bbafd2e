"""A published site: a report per results folder, the aggregated store of its sweeps
(per cell: the verdicts and each number's mean and 95% interval over seeds; per cell and
layer: each statistic's), and an index page drawn from that store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from initbench.core.errors import UsageError
from initbench.core.folders import atomic_write_parquet, replacing, write_meta
from initbench.core.intervals import group_intervals
from initbench.measure.statistics import STATISTICS
from initbench.report.classify import CELL_KEYS
from initbench.report.pages import Page, pages, report, write_page
from initbench.report.sweep import did_train, summary, verdicts_of
from initbench.report.tables import matrix
from initbench.sweeps.schema import CELL_COLUMNS, SCHEMA_VERSION, THEORY_COLUMNS
from initbench.sweeps.store import Results, load

# the cells columns the store keeps as mean and interval over a cell's ok runs (the
# verdicts already carry final_test_acc and steps_to_target with their intervals)
CELL_NUMBERS = [
    c
    for c, dtype in CELL_COLUMNS.items()
    if dtype == "float64"
    and c not in ("gain_value", "bias_var", "final_test_acc", "steps_to_target", "diverged_step")
    and not c.endswith("seconds")
    and c != "seconds_per_step"
]


# the mantissa bits a site keeps of each per-layer number: 1 part in 8,192, a hundred times
# finer than the 95% intervals of five seeds, and half the bytes of float32's 23
LAYER_BITS = 12


def keep_bits(frame: pd.DataFrame, bits: int = LAYER_BITS) -> pd.DataFrame:
    """``frame`` with its float32 columns rounded to ``bits`` mantissa bits (to nearest;
    the rest zero, which compresses)."""
    drop = 23 - bits
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == np.float32:
            values = out[column].to_numpy()
            raw = values.view(np.uint32)
            rounded = (raw + np.uint32(1 << (drop - 1))) & np.uint32(
                (0xFFFFFFFF << drop) & 0xFFFFFFFF
            )
            out[column] = np.where(np.isfinite(values), rounded, raw).view(np.float32)
    return out


def present(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """The ``columns`` a store has: one written before a column existed lacks it."""
    return [c for c in columns if c in frame]


def aggregate(
    results: Results, name: str, verdicts: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One sweep's rows of the site's store: ``cells`` (per cell and scheme: its
    ``verdicts``, then the mean and interval of each number over its ok runs) and
    ``layers`` (per cell, scheme and layer: each statistic's mean and interval, and the
    theory)."""
    keys = [*CELL_KEYS, "scheme_id"]
    ok = results.cells[results.cells["status"] == "ok"].copy()
    ok["bias_var"] = ok["bias_var"].fillna(0.0)
    names = results.cells[[*keys, "scheme", "gain"]].copy()
    names["bias_var"] = names["bias_var"].fillna(0.0)
    cells = (
        verdicts.merge(names.drop_duplicates(keys), on=keys, how="left")
        .merge(group_intervals(ok, keys, present(ok, CELL_NUMBERS)), on=keys, how="left")
        .assign(sweep=name)
    )
    per_layer = results.layers.merge(ok[[*keys, "run_id"]], on="run_id")
    layers = group_intervals(per_layer, [*keys, "layer"], present(per_layer, list(STATISTICS)))
    theory = per_layer.groupby([*keys, "layer"], sort=True, dropna=False)[THEORY_COLUMNS].mean()
    layers = layers.merge(theory.astype("float32").reset_index(), on=[*keys, "layer"])
    first = ["sweep", *keys, "scheme", "gain"]
    cells = cells[[*first, *(c for c in cells.columns if c not in first)]]
    return cells, keep_bits(layers.assign(sweep=name)[["sweep", *layers.columns]])


def publish(folders: list[str | Path], out: str | Path, asv_html: str | Path | None = None) -> Path:
    """Builds a static site: one report per results folder under ``out/<name>/``, the
    aggregated store of its sweeps (``meta.json``, ``cells.parquet``, ``layers.parquet``:
    :func:`initbench.load` reads it) and an index drawn from that store, which sets the
    sweeps' answer matrices side by side and links the other folders' pages (a folder of
    another kind is copied there whole, with its report in ``out/<name>/report/``).

    Args:
        folders: the results folders (sweeps, and folders of any other kind).
        out: the site's folder: new, empty, or an earlier site (replaced whole).
        asv_html: asv's HTML (default ``results/asv/html`` when it exists), copied to
            ``out/asv/`` and linked from the index.

    Returns:
        The index page.
    """
    if not folders:
        raise UsageError("publish needs at least one results folder")
    loaded = [load(d) for d in folders]  # every input checked before anything is written
    names = [Path(d).resolve().name for d in folders]
    if len(set(names)) != len(names):
        raise UsageError(f"results folders must have different names, got {', '.join(names)}")
    for results in loaded:
        if results.kind == "sweep" and results.cells.empty:
            raise UsageError(f"{results.path} holds no finished runs yet: run the sweep first")
    with replacing(Path(out), "site", inputs=[r.path for r in loaded]) as building:
        write_site(loaded, names, building, asv_html)
    return Path(out) / "index.html"


def write_site(
    loaded: list[Results], names: list[str], out: Path, asv_html: str | Path | None
) -> Path:
    """Writes the site of :func:`publish` into the empty folder ``out``."""
    entries, cells, layers = [], [], []
    for results, name in zip(loaded, names, strict=True):
        if results.kind != "sweep":
            shutil.copytree(results.path, out / name, ignore=_own_report(results.path))
            report(out / name)
            entries.append(
                {"name": name, "kind": results.kind, "link": f"{name}/report/index.html"}
            )
            continue
        classified = verdicts_of(results)
        report(results, out / name, classified=classified)
        sweep_cells, sweep_layers = aggregate(results, name, classified[0])
        cells.append(sweep_cells)
        layers.append(sweep_layers)
        meta = results.meta
        entries.append(
            {
                "name": name,
                "kind": "sweep",
                "link": f"{name}/index.html",
                "runs": len(results.cells),
                "statuses": status_text(results.cells),
                "date": meta.get("finished") or meta.get("started"),
                "device": device_text(meta),
                "seconds": meta.get("seconds"),
                "preset": meta.get("preset"),
                "part": meta.get("part"),
                "trained": did_train(results),
                "grid": summary(results.cells, meta),
                "spec": meta.get("grid"),
            }
        )
    asv_link = None
    asv_source = Path(asv_html) if asv_html else Path("results/asv/html")
    if (asv_source / "index.html").exists():
        shutil.copytree(asv_source, out / "asv")
        asv_link = "asv/index.html"
    for table, frames in (("cells", cells), ("layers", layers)):
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        atomic_write_parquet(out / f"{table}.parquet", frame, small=True)
    meta = {
        "kind": "site",
        "schema_version": SCHEMA_VERSION,
        "measured": max((e["date"] for e in entries if e.get("date")), default=None),
        "entries": entries,
        "asv_link": asv_link,
    }
    write_meta(out, meta)
    return site_page(load(out), out)


def _own_report(root: Path):
    """For ``shutil.copytree``: leaves out ``root/report`` (made anew in the site)."""
    top = root.resolve()
    return lambda folder, names: ["report"] if Path(folder).resolve() == top else []


def status_text(cells) -> str:
    """``15,930 ok, 1,800 skipped, 870 diverged``: how a sweep's runs ended."""
    counts = cells["status"].value_counts()
    order = ["ok"] + [status for status in counts.index if status != "ok"]
    return ", ".join(f"{counts.get(status, 0):,} {status}" for status in order)


def device_text(meta: dict) -> str:
    """``cpu (2 threads)``, ``cuda (NVIDIA H200)``: what computed a sweep."""
    if meta.get("device", "").startswith("cpu"):
        return f"cpu ({meta.get('threads')} threads)"
    return f"{meta.get('device')} ({meta.get('device_name')})"


def site_page(results: Results, out: Path) -> Path:
    """The index of a published site, from its store: ``out/index.html``."""
    from initbench.sweeps.presets import PRESETS

    meta = results.meta
    sweeps = []
    for entry in meta["entries"]:
        if entry["kind"] != "sweep":
            continue
        verdicts = results.cells[results.cells["sweep"] == entry["name"]]
        columns, rows = matrix(verdicts, entry["trained"], entry.get("spec"))
        sweeps.append(entry | {"columns": columns, "rows": rows})
    presets = {}
    for entry in sweeps:
        if entry.get("preset") in PRESETS:
            found = PRESETS[entry["preset"]]
            whole = PRESETS.get(found.whole) if found.whole else None
            presets[found.name] = {"preset": found, "whole": whole}
    return write_page(
        "site.html.j2",
        Path(out),
        title="initbench results",
        sweeps=sweeps,
        presets=list(presets.values()),
        others=[
            e | {"about": pages()[e["kind"]].about} for e in meta["entries"] if e["kind"] != "sweep"
        ],
        asv_link=meta.get("asv_link"),
        measured_on=meta.get("measured"),
    )


PAGES = {"site": Page(site_page, "site of published results")}
