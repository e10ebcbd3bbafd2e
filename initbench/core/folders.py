"""Results folders: what each holds, and writing one without losing the one before.

Every folder a command writes has a ``meta.json`` whose ``kind`` names what wrote it
(``sweep``, ``probe``, ``coord``, ``phase``, ``reproduce``, ``reproductions``, ``report``,
``site``). A command writes only into a folder that is new, empty or of its own kind
(:func:`claim`), so no command replaces another's results. Files are written to a
temporary name and renamed into place (:func:`atomic_write_bytes`); a generated folder (a
report, a site) is built beside its place and swapped in whole (:func:`replacing`), so an
interrupt or a failed write leaves the previous one as it was.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initbench.core.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

META = "meta.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``path`` whole or not at all: a temporary file, fsynced, renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_parquet(path: Path, frame: pd.DataFrame, *, small: bool = False) -> None:
    """Writes ``frame`` whole; ``small``: about half the bytes for a slower write (zstd,
    and float columns split by byte rather than dictionary-coded), for files kept in git."""
    if not small:
        atomic_write_bytes(path, frame.to_parquet(index=False))
        return
    floats = [c for c in frame.columns if frame[c].dtype.kind == "f"]
    packed = frame.to_parquet(
        index=False,
        compression="zstd",
        compression_level=9,
        use_byte_stream_split=floats,
        use_dictionary=[c for c in frame.columns if c not in floats],
    )
    atomic_write_bytes(path, packed)


def stacked(tables: Mapping[str, pd.DataFrame], key: str) -> pd.DataFrame:
    """``tables`` one after another, in their order, a first column ``key`` naming each."""
    import pandas as pd

    frames = [frame.assign(**{key: name}) for name, frame in tables.items()]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({key: []})
    return frame[[key, *(c for c in frame.columns if c != key)]]


def atomic_write_csv_gz(path: Path, frame: pd.DataFrame) -> None:
    """Writes ``frame`` as gzipped CSV, floats to float32's 8 digits; the same frame gives
    the same bytes (no time stamp in the gzip header)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped:
        zipped.write(frame.to_csv(index=False, float_format="%.8g").encode())
    atomic_write_bytes(path, buffer.getvalue())


def read_meta(folder: Path) -> dict[str, Any] | None:
    """A folder's ``meta.json``, or None where it has none.

    Raises:
        UsageError: the file exists but cannot be read as JSON.
    """
    path = Path(folder) / META
    try:
        meta = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as error:
        raise UsageError(f"{path} is damaged ({error}); remove that folder or repair it") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{path} is damaged (not a JSON object); remove that folder")
    return meta


def write_meta(folder: Path, meta: Mapping[str, Any]) -> None:
    atomic_write_bytes(Path(folder) / META, json.dumps(meta, indent=2, default=str).encode())


@contextlib.contextmanager
def writing(out: Path) -> Iterator[None]:
    """Turns a failure to write into ``out`` (read-only, permission denied, a path through a
    file, no space) into one :class:`UsageError` that names ``out``."""
    try:
        yield
    except OSError as error:
        raise UsageError(f"cannot write to {out}: {error.strerror or error}") from None


def claim(out: Path, kind: str, inputs: Iterable[Path] = ()) -> None:
    """Checks that a command writing ``kind`` may write into ``out``: it is missing, empty
    or holds ``kind`` already, and it neither is, holds, nor lies inside one of ``inputs``.

    Raises:
        UsageError: naming the folder and what it holds.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {str(out)!r} is a file, not a folder")
    where = out.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if where == source or where in source.parents or source in where.parents:
            raise UsageError(
                f"--out {out} would write over its input {source}: choose a folder outside it"
            )
    if not out.is_dir() or not any(out.iterdir()):
        return
    meta = read_meta(out)
    if meta is None:
        raise UsageError(f"{out} is not empty and holds no {kind}; choose another --out")
    held = str(meta.get("kind", "sweep"))
    if held != kind:
        raise UsageError(f"{out} holds a {held}, not a {kind}: choose another --out")


def begin(out: Path, kind: str, meta: Mapping[str, Any]) -> None:
    """Claims ``out`` for ``kind`` (see :func:`claim`), creates it and writes its
    ``meta.json`` before anything else, so an interrupted command resumes into it.

    Raises:
        UsageError: ``out`` may not be written, or cannot be.
    """
    claim(out, kind)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        write_meta(out, {"kind": kind, **meta})


def write_results(out: Path, tables: Mapping[str, pd.DataFrame], meta: Mapping[str, Any]) -> None:
    """Writes ``out/<name>.parquet`` for each table, then ``out/meta.json``.

    Raises:
        UsageError: the folder cannot be written.
    """
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in tables.items():
            atomic_write_parquet(out / f"{name}.parquet", frame)
        write_meta(out, meta)


@contextlib.contextmanager
def replacing(out: Path, kind: str, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Builds a folder of ``kind`` in a temporary sibling, then swaps it for ``out`` whole.

    Yields the folder to write into (beside ``out``, so relative links stay right); its
    ``meta.json`` must name ``kind``. An error or an interrupt before the swap removes it
    and leaves ``out`` as it was; Ctrl-C during the swap waits until it is done.

    Raises:
        UsageError: ``out`` may not be written (see :func:`claim`).
    """
    out = Path(out)
    claim(out, kind, inputs)
    building = out.with_name(f".{out.name}.{os.getpid()}.new")
    try:
        with writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir()
            yield building
            with _signals_held():
                _swap(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _swap(building: Path, out: Path) -> None:
    """Puts ``building`` in the place of ``out``: two renames, then the old one goes."""
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        os.replace(out, old)
    os.replace(building, out)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Holds SIGINT and SIGTERM back (in the main thread) until the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def now() -> str:
    """The current UTC time, to the second, as ``meta.json``'s ``started`` and ``finished``."""
    return datetime.now(UTC).isoformat(timespec="seconds")
