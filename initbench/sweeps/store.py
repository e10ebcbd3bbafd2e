"""The results store: Parquet tables under one folder, written as runs finish, resumable.

Layout of a sweep folder::

    meta.json          the resolved grid, schema version, versions, device, times
    cells.parquet      one row per run            (after compaction)
    layers.parquet     one row per run and layer  (after compaction)
    curves.parquet     one row per run and logged training step
    hists.parquet      one row per run, histogram layer and quantity (its bins as lists)
    spectra.parquet    one row per run and non-empty bin of its Jacobian's singular values
    shards/            finished chunks not yet compacted: <n>.<table>.parquet

Every file is written to a temporary name and renamed into place. A chunk's ``cells`` shard
is written last: it is what marks its runs finished, so an interrupted write is ignored
and recomputed. Readers merge compacted tables and shards, keeping each run's latest row.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from initbench.core.errors import UsageError
from initbench.core.folders import atomic_write_parquet, claim, read_meta, write_meta, writing
from initbench.sweeps.schema import SCHEMA_VERSION

# Arrow's own Ctrl-C handler, around long reads, re-sends the signal once the read stops:
# one Ctrl-C could then interrupt twice (the second after initbench has said it stopped).
pa.enable_signal_handlers(False)

TABLES = ("layers", "curves", "hists", "spectra", "cells")  # cells last marks a chunk done
WEIGHTS = "weights.parquet"  # each cell's weight signature, written as a sweep begins
FINISHED = ("ok", "diverged", "skipped")  # failed and oom runs are retried on resume


@dataclass
class Records:
    """Rows of the tables for some runs."""

    cells: pd.DataFrame
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    hists: pd.DataFrame = field(default_factory=pd.DataFrame)
    spectra: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __add__(self, other: Records) -> Records:
        def join(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
            return a if b.empty else b if a.empty else pd.concat([a, b], ignore_index=True)

        return Records(*(join(getattr(self, t), getattr(other, t)) for t in RECORD_TABLES))


RECORD_TABLES = ("cells", "layers", "curves", "hists", "spectra")


@dataclass
class Results:
    """A loaded results folder: its tables as DataFrames and its ``meta.json``.

    A sweep's tables are attributes; tables of other kinds of folder (``modules`` of
    ``initbench probe``, ...) are in :attr:`tables` by file stem.
    """

    path: Path
    meta: dict[str, Any]
    cells: pd.DataFrame
    layers: pd.DataFrame
    curves: pd.DataFrame
    hists: pd.DataFrame
    spectra: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """What wrote the folder: ``sweep``, ``probe``, ..."""
        return str(self.meta.get("kind", "sweep"))


class Store:
    """One sweep folder, opened for writing."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.shards = self.root / "shards"
        self._counter = 0

    # ---- meta ----------------------------------------------------------------------------

    def meta_path(self) -> Path:
        return self.root / "meta.json"

    def read_meta(self) -> dict[str, Any] | None:
        return read_meta(self.root)

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_meta(self.root, meta)

    def begin(self, grid: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """Creates the folder, or checks that it holds the same grid; returns the meta."""
        claim(self.root, str(meta.get("kind", "sweep")))
        existing = self.read_meta()
        if existing is not None:
            version = existing.get("schema_version")
            if version == 4:  # only hists.parquet changed since: rewrite it
                existing = self._upgrade_from_4(existing)
            elif version != SCHEMA_VERSION:
                raise UsageError(
                    f"{self.root} was written by an older initbench (results schema "
                    f"{version}; this one writes {SCHEMA_VERSION}): choose another --out, or "
                    "finish it with the initbench that wrote it"
                )
            if existing.get("grid") != grid:
                changed = sorted(
                    k
                    for k in set(grid) | set(existing.get("grid", {}))
                    if grid.get(k) != existing.get("grid", {}).get(k)
                )
                raise UsageError(
                    f"{self.root} holds a different grid (differs in: {', '.join(changed)}); "
                    "choose another --out or remove that folder"
                )
            meta = existing | {k: v for k, v in meta.items() if k not in ("started",)}
        with writing(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
            meta = {"schema_version": SCHEMA_VERSION, "grid": grid} | meta
            self.write_meta(meta)
        return meta

    def _upgrade_from_4(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Rewrites a folder of schema 4 in schema 5: its shards compacted, and
        ``hists.parquet``'s rows (one per bin) grouped into one row per run, layer and
        quantity with the bins as lists. Returns the meta, now of schema 5."""
        with writing(self.root):
            self.compact()
            path = self.root / "hists.parquet"
            with reading(self.root, path):
                flat = pd.read_parquet(path) if path.exists() else pd.DataFrame()
            if len(flat):
                keys = ["run_id", "layer", "quantity"]
                lists = flat.groupby(keys, sort=False)[["lo", "hi", "count"]].agg(list)
                atomic_write_parquet(path, lists.reset_index())
            meta = meta | {"schema_version": SCHEMA_VERSION}
            self.write_meta(meta)
        return meta

    def write_weights(self, signatures: pd.DataFrame) -> None:
        """Writes ``weights.parquet``: each cell's weight signature
        (:meth:`~initbench.sweeps.grid.Grid.weight_signatures`), which the report groups
        equivalent schemes by. Rewritten by every session of a sweep."""
        with writing(self.root):
            atomic_write_parquet(self.root / WEIGHTS, signatures)

    # ---- rows ----------------------------------------------------------------------------

    def write(self, records: Records) -> None:
        """Writes one finished chunk as shards, ``cells`` last."""
        self._counter += 1
        stem = f"{time.time_ns():020d}-{os.getpid()}-{self._counter:05d}"
        try:
            self.shards.mkdir(exist_ok=True)
            for table in TABLES:
                frame = getattr(records, table)
                if len(frame) or table == "cells":
                    atomic_write_parquet(self.shards / f"{stem}.{table}.parquet", frame)
        except OSError as error:  # a full disk, a read-only folder: say where, in one line
            raise OSError(error.errno, f"cannot write to {self.root}: {error.strerror}") from None

    def finished_run_ids(self) -> set[str]:
        """Runs that need no recomputation (ok, diverged, skipped)."""
        cells = read_table(self.root, "cells", columns=["run_id", "status"])
        return set(cells.loc[cells["status"].isin(FINISHED), "run_id"])

    def compact(self) -> None:
        """Merges shards into the three tables, streaming file by file, and removes them.

        Memory holds one shard (or one row group of a compacted table) at a time, plus the
        run ids, whatever the size of the sweep.
        """
        shard_files = sorted(self.shards.glob("*.parquet")) if self.shards.exists() else []
        if not shard_files:
            with contextlib.suppress(OSError):  # an empty folder left by an older version
                self.shards.rmdir()
            return
        keep = _latest_attempts(self.root)
        for table in TABLES:
            path = self.root / f"{table}.parquet"
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                writer = None
                for batch in _latest_rows(self.root, table, keep):
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, batch.schema)
                    writer.write_table(batch.cast(writer.schema))
                if writer is None:  # no rows (no training): an empty table, not a missing file
                    pq.write_table(pa.table({}), tmp)
                else:
                    writer.close()
                _fsync(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        for path in shard_files:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only an empty folder goes
            self.shards.rmdir()


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _sources(root: Path, table: str) -> list[Path | None]:
    """The files a table's rows come from, oldest first: the compacted table, then the
    shards of finished chunks (None where a chunk wrote no rows of this table)."""
    sources: list[Path | None] = []
    main = root / f"{table}.parquet"
    if (root / "cells.parquet").exists():
        sources.append(main if main.exists() else None)
    shards = root / "shards"
    if shards.exists():
        for cells in sorted(shards.glob("*.cells.parquet")):
            path = cells.with_name(cells.name.replace(".cells.", f".{table}."))
            sources.append(path if path.exists() else None)
    return sources


def _latest_attempts(root: Path) -> list[list[str] | None]:
    """For each source of ``cells`` (see :func:`_sources`), the runs whose latest attempt
    it holds (the last file whose ``cells`` rows name a run), or None where that is every
    run it holds."""
    cell_sources = _sources(root, "cells")
    latest: dict[str, int] = {}
    held = []
    for index, path in enumerate(cell_sources):
        with reading(root, path):
            run_ids = pq.read_table(path, columns=["run_id"]).column(0).to_pylist()
        held.append(len(set(run_ids)))
        for run_id in run_ids:
            latest[run_id] = index
    keep: list[list[str]] = [[] for _ in cell_sources]
    for run_id, index in latest.items():
        keep[index].append(run_id)
    return [None if ids and len(ids) == n else ids for ids, n in zip(keep, held, strict=True)]


def _latest_rows(
    root: Path, table: str, keep: list[list[str] | None], columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """A table's current rows, file by file: each run's rows come from its latest attempt
    (``keep``, from :func:`_latest_attempts`), its ``cells`` row and the ``layers`` and
    ``curves`` rows of the same chunk, so rows of an earlier attempt (or of a chunk whose
    ``cells`` shard was never written) never show.
    """
    for index, path in enumerate(_sources(root, table)):
        if path is None or keep[index] == []:
            continue
        wanted = None if keep[index] is None else pa.array(keep[index], pa.string())
        with reading(root, path):
            for batch in pq.ParquetFile(path).iter_batches(columns=columns):
                rows = pa.Table.from_batches([batch])
                if wanted is not None:
                    rows = rows.filter(pc.is_in(rows["run_id"], value_set=wanted))
                if rows.num_rows:
                    yield rows


DAMAGE = (pa.ArrowException, OSError, ValueError, KeyError)  # what reading a bad file raises


class DamagedStore(UsageError):
    """A table of a results folder cannot be read."""


SWEEP_KINDS = ("sweep", "phase")  # folders of runs, shards and compacted tables


def reason_of(error: BaseException) -> str:
    """A read error in a few words, on one line."""
    return " ".join(str(error).split())[:120] or type(error).__name__


def damaged(root: Path, path: Path, error: BaseException, kind: str = "sweep") -> DamagedStore:
    """The one line that names a damaged file and what to do about it."""
    todo = (
        f"initbench check {root} --repair removes it, and running the sweep again "
        "recomputes its runs"
        if kind in SWEEP_KINDS
        else f"run the command that wrote {root} again"
    )
    return DamagedStore(f"{path} is damaged ({reason_of(error)}); {todo}")


@contextlib.contextmanager
def reading(root: Path, path: Path, kind: str = "sweep") -> Iterator[None]:
    """Turns a failure to read ``path`` into :class:`DamagedStore`."""
    try:
        yield
    except DamagedStore:
        raise
    except DAMAGE as error:
        raise damaged(root, path, error, kind) from None


def read_table(
    root: str | Path,
    table: str,
    columns: list[str] | None = None,
    keep: list[list[str] | None] | None = None,
) -> pd.DataFrame:
    """One table of a sweep: compacted rows and finished shards, latest attempt per run.

    ``keep`` (from :func:`_latest_attempts`) saves reading the run ids again when several
    tables are read at once.
    """
    root = Path(root)
    keep = _latest_attempts(root) if keep is None else keep
    read = columns
    if table == "hists" and columns is not None and "count" not in columns:
        read = [*columns, "count"]  # the bins' lists say how many rows
    batches = list(_latest_rows(root, table, keep, read))
    if not batches:
        return pd.DataFrame(columns=columns or [])
    rows = pa.concat_tables(batches, promote_options="permissive")
    if table != "hists":
        return rows.to_pandas()
    return one_row_per_bin(rows)[columns or rows.column_names]


_STRINGS = {pa.string(): pd.StringDtype("pyarrow"), pa.large_string(): pd.StringDtype("pyarrow")}


def one_row_per_bin(rows: pa.Table) -> pd.DataFrame:
    """``hists`` rows as readers take them, one per bin: the file holds one row per run,
    layer and quantity, its bins' ``lo``, ``hi`` and ``count`` as lists (a file of schema
    4, one row per bin, is read as it is)."""
    lists = [
        f.name for f in rows.schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
    ]
    if not lists:
        return rows.to_pandas()
    parents = pc.list_parent_indices(rows[lists[0]])
    columns = {
        c: pc.list_flatten(rows[c]) if c in lists else rows[c].take(parents)
        for c in rows.column_names
    }
    return pa.table(columns).to_pandas(types_mapper=_STRINGS.get)


def _read_whole(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def load(path: str | Path) -> Results:
    """Loads a results folder written by :func:`initbench.sweep` (or ``initbench probe``,
    ``coord``, ``phase``, ``reproduce``), or a site written by ``initbench publish``: its
    aggregated ``cells`` and ``layers`` (per cell, and per cell and layer: means and
    intervals over seeds).

    Args:
        path: the folder.

    Returns:
        Its tables and ``meta.json``.

    Raises:
        UsageError: the folder is missing, holds no sweep, or its tables are unreadable.
    """
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"{str(root)!r} is not a folder")
    meta = Store(root).read_meta()
    if meta is None:
        raise UsageError(f"{str(root)!r} is not a sweep folder (no meta.json)")
    kind = str(meta.get("kind", "sweep"))
    if kind == "site":  # a published site's store: aggregated, no shards
        tables = {}
        for table in TABLES:
            with reading(root, root / f"{table}.parquet", kind):
                tables[table] = _read_whole(root / f"{table}.parquet")
    else:
        keep = _latest_attempts(root)
        tables = {t: read_table(root, t, keep=keep) for t in TABLES}
    other = {}
    for path in sorted(root.glob("*.parquet")):
        if path.stem not in TABLES:
            with reading(root, path, kind):
                other[path.stem] = pd.read_parquet(path)
    return Results(root, meta, *(tables[t] for t in RECORD_TABLES), other)
