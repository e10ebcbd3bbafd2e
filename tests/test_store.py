import pandas as pd
import pyarrow as pa
import pytest

from initbench.core.errors import UsageError
from initbench.sweeps.store import Records, Store, load, one_row_per_bin, read_table


def _records(run_ids, status="ok", layers=True):
    cells = pd.DataFrame({"run_id": run_ids, "status": status, "value": range(len(run_ids))})
    rows = pd.DataFrame(
        {
            "run_id": [r for r in run_ids for _ in (1, 2)],
            "layer": [1, 2] * len(run_ids),
            "pre_var": [f"{status}-{r}" for r in run_ids for _ in (1, 2)],
        }
    )
    return Records(cells, rows if layers else pd.DataFrame())


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "s")
    store.begin({"seeds": 1}, {})
    return store


def test_each_run_shows_its_latest_attempt_before_and_after_compaction(store):
    store.write(_records(["a", "b"], status="failed", layers=False))
    store.write(_records(["c"]))
    store.write(_records(["b"]))  # the retry of b
    store.compact()
    store.write(_records(["a"], status="oom", layers=False))
    store.write(_records(["a"]))
    for _ in range(2):
        cells = read_table(store.root, "cells").set_index("run_id")
        assert cells["status"].to_dict() == {"a": "ok", "b": "ok", "c": "ok"}
        layers = read_table(store.root, "layers")
        assert sorted(layers["pre_var"]) == sorted(f"ok-{r}" for r in "aabbcc")
        assert store.finished_run_ids() == {"a", "b", "c"}
        store.compact()
    assert not store.shards.exists()


def test_a_chunk_without_its_cells_shard_is_ignored(store):
    store.write(_records(["a"]))
    (store.shards / "99999999999999999999-1-00001.layers.parquet").write_bytes(
        _records(["z"]).layers.to_parquet()
    )
    assert set(read_table(store.root, "layers")["run_id"]) == {"a"}
    assert store.finished_run_ids() == {"a"}


def test_stale_rows_of_a_failed_retry_do_not_show(store):
    store.write(_records(["a"]))
    store.write(_records(["a"], status="failed", layers=False))
    assert read_table(store.root, "layers").empty
    assert store.finished_run_ids() == set()
    results = load(store.root)
    assert results.cells["status"].tolist() == ["failed"]


def test_a_sweep_of_an_older_schema_is_not_resumed(store):
    meta = store.read_meta()
    for older in ({"schema_version": 3}, {}):  # before schema 4, or before versions
        store.write_meta({k: v for k, v in meta.items() if k != "schema_version"} | older)
        with pytest.raises(UsageError, match=r"older initbench .*choose another --out"):
            store.begin({"seeds": 1}, {})


def test_histogram_lists_are_read_one_row_per_bin_and_bin_rows_as_they_are():
    lists = pa.table(
        {
            "run_id": ["a", "b"],
            "layer": [1, 3],
            "lo": [[0.0, 1.0], [2.0]],
            "count": [[5, 6], [7]],
        }
    )
    rows = one_row_per_bin(lists)
    expected = pd.DataFrame(
        {"run_id": ["a", "a", "b"], "layer": [1, 1, 3], "lo": [0.0, 1.0, 2.0], "count": [5, 6, 7]}
    )
    pd.testing.assert_frame_equal(rows, expected, check_dtype=False)
    assert rows["run_id"].dtype == pd.StringDtype("pyarrow")
    flat = pa.Table.from_pandas(expected, preserve_index=False)  # schema 4: a row per bin
    pd.testing.assert_frame_equal(one_row_per_bin(flat), expected)
