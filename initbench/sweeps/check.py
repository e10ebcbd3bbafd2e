"""``initbench check``: is a results folder whole, and what is left to do in it.

A sweep folder is whole when every table (compacted, and every finished chunk's shards)
reads to the end, its compacted ``cells`` names each run once, and every ``ok`` run has its
per-layer rows. Finished chunks not yet compacted, an interrupted chunk's stray shards, and
runs still to compute are reported but are no damage: the next ``initbench sweep`` on the
folder compacts, removes and computes them. ``--repair`` removes what is damaged (a
compacted table takes the other compacted tables with it, whose rows it indexes; a chunk's
shard takes its chunk), so that running the sweep again recomputes exactly those runs.
Folders of other kinds are whole when their ``meta.json`` and tables read; folders inside
(a reproduction's sweeps, a site's copies) are checked too.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from initbench.core.errors import UsageError
from initbench.core.folders import read_meta
from initbench.sweeps.store import DAMAGE, FINISHED, SWEEP_KINDS, TABLES, WEIGHTS, reason_of


@dataclass
class Problem:
    """One thing damaged: what it is, in a line, and the files ``--repair`` removes."""

    text: str
    remove: tuple[Path, ...]


@dataclass
class Health:
    """What :func:`check_folder` found in a folder (and in the folders inside it)."""

    root: Path
    kind: str
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    sweeps: bool = False  # whether a sweep is among the folders checked

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    def lines(self) -> list[str]:
        """The report ``initbench check`` prints, ending with a verdict line."""
        lines = [*self.notes, *(f"damaged: {p.text}" for p in self.problems)]
        if self.damaged:
            count = len(self.problems)
            lines.append(
                f"{self.root}: {count} damaged item{'s' * (count != 1)}; initbench check "
                f"{self.root} --repair removes them"
                + (", and running the sweep again recomputes their runs" if self.sweeps else "")
            )
        else:
            lines.append(f"{self.root}: whole")
        return lines


def check_folder(folder: str | Path) -> Health:
    """Verifies a results folder of any kind (see the module's doc).

    Args:
        folder: the folder (its inner results folders are checked too).

    Returns:
        What is whole, what is damaged (and what repairing removes), and notes.

    Raises:
        UsageError: not a folder, or no results folder (no ``meta.json``).
    """
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"{str(root)!r} is not a folder")
    meta = read_meta(root)
    if meta is None:
        raise UsageError(f"{str(root)!r} is not a results folder (no meta.json)")
    health = Health(root, str(meta.get("kind", "sweep")))
    _check(root, meta, health)
    return health


def repair_folder(health: Health) -> list[str]:
    """Removes what :func:`check_folder` found damaged.

    Args:
        health: :func:`check_folder`'s finding.

    Returns:
        A line per file removed.
    """
    lines = []
    for problem in health.problems:
        for path in problem.remove:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            lines.append(f"removed {path}")
    return lines


def _check(root: Path, meta: dict, health: Health) -> None:
    kind = str(meta.get("kind", "sweep"))
    if kind in SWEEP_KINDS:
        health.sweeps = True
        _check_sweep(root, meta, health)
    else:
        tables = sorted(root.glob("*.parquet"))
        readable = sum(_readable(path, (path,), health) is not None for path in tables)
        read = f", {readable} of {len(tables)} tables readable" if tables else ""
        health.notes.append(f"{root}: a {kind}{read}")
    for inner in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "shards"):
        try:
            inner_meta = read_meta(inner)
        except UsageError as error:
            health.problems.append(Problem(str(error), (inner / "meta.json",)))
            continue
        if inner_meta is not None:
            _check(inner, inner_meta, health)


def _readable(path: Path, remove: tuple[Path, ...], health: Health):
    """The whole table at ``path``, or None (and a problem) where it does not read."""
    try:
        return pq.read_table(path)
    except DAMAGE as error:
        health.problems.append(Problem(f"{path} does not read ({reason_of(error)})", remove))
        return None


def _check_sweep(root: Path, meta: dict, health: Health) -> None:
    compacted = tuple(root / f"{t}.parquet" for t in TABLES if (root / f"{t}.parquet").exists())
    if (root / WEIGHTS).exists():  # the sweep writes it again as it begins
        _readable(root / WEIGHTS, (root / WEIGHTS,), health)
    tables = {}
    for path in compacted:
        table = _readable(path, compacted, health)
        if table is not None:
            tables[path.stem] = table
            health.notes.append(f"  {path.name}: {table.num_rows:,} rows")
    cells = tables.get("cells")
    if cells is not None and cells.num_rows:
        run_ids = cells.column("run_id").to_pylist()
        repeated = len(run_ids) - len(set(run_ids))
        if repeated:
            health.problems.append(
                Problem(f"{root / 'cells.parquet'} names {repeated:,} runs twice", compacted)
            )
        layers = tables.get("layers")
        ok = {
            r for r, s in zip(run_ids, cells.column("status").to_pylist(), strict=True) if s == "ok"
        }
        if layers is not None:
            frame = layers.select(["run_id", "layer"]).to_pandas()
            frame = frame[frame["run_id"].isin(run_ids)]
            missing = len(ok - set(frame["run_id"]))
            if missing:
                health.problems.append(
                    Problem(f"{missing:,} ok runs have no rows in layers.parquet", compacted)
                )
            twice = int(frame.duplicated().sum())
            if twice:
                health.problems.append(
                    Problem(f"layers.parquet holds {twice:,} rows twice", compacted)
                )
    _check_shards(root, health)
    _check_runs(root, meta, health)


def _check_shards(root: Path, health: Health) -> None:
    shards = root / "shards"
    chunks: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(shards.glob("*.parquet")) if shards.is_dir() else []:
        chunks[path.name.split(".")[0]].append(path)
    finished = runs = stray = 0
    for stem, paths in chunks.items():
        if not (shards / f"{stem}.cells.parquet").exists():
            stray += len(paths)
            continue
        finished += 1
        for path in paths:
            table = _readable(path, tuple(paths), health)
            if table is not None and path.name.endswith(".cells.parquet"):
                runs += table.num_rows
    if finished:
        health.notes.append(
            f"  shards/: {finished:,} finished chunks ({runs:,} runs) not yet compacted; "
            "running the sweep again compacts them"
        )
    if stray:
        health.notes.append(
            f"  shards/: {stray:,} files of interrupted chunks, ignored; running the sweep "
            "again removes them"
        )


def _check_runs(root: Path, meta: dict, health: Health) -> None:
    """How the grid's runs stand: finished by status, failed, missing, and strays."""
    if health.problems:
        health.notes.insert(0, f"{root}: a {meta.get('kind', 'sweep')} (runs not counted)")
        return
    from initbench.sweeps.grid import Grid
    from initbench.sweeps.store import read_table

    expected = {run.id for run in Grid.from_dict(meta.get("grid", {})).runs()}
    cells = read_table(root, "cells", columns=["run_id", "status"])
    stored = cells[cells["run_id"].isin(expected)]
    counts = stored["status"].value_counts()
    finished = ", ".join(f"{counts[s]:,} {s}" for s in FINISHED if s in counts)
    done = int(stored["status"].isin(FINISHED).sum())
    failed = len(stored) - done
    missing = len(expected) - len(stored)
    head = f"{root}: a {meta.get('kind', 'sweep')} of {len(expected):,} runs: {done:,} finished"
    head += f" ({finished})" if finished else ""
    head += f", {failed:,} failed, {missing:,} to compute"
    health.notes.insert(0, head)
    strays = len(cells) - len(stored)
    if strays:
        health.notes.append(f"  {strays:,} stored runs are not in the grid of meta.json")
    if failed or missing:
        health.notes.append("  running the sweep again computes the failed and missing runs")
