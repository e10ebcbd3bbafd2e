"""initbench compare: two sweeps that differ in one scheme's gain, and the same two
published as sites, give exactly the verdicts that differ between their classifications."""

import pandas as pd
import pytest

import initbench
from initbench.report import publish
from initbench.report.compare import NUMBERS, VERDICTS, compare
from initbench.report.sweep import verdicts_of
from tests.cli import assert_usage_error, run_cli

KEYS = ["activation", "arch", "depth", "width", "bias_var"]
OTHERS = ("orthogonal[gain=unit]", "normal[std=0.01]", "kaiming_normal")


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    for side, gain in (("a", "unit"), ("b", "3.0")):
        grid = initbench.Grid(
            schemes=(f"xavier_normal[gain={gain}]", *OTHERS),
            activations=("tanh", "relu"),
            depths=(5, 20),
            widths=(16,),
            seeds=2,
            batch_size=64,
        )
        initbench.sweep(grid, root / side / "sweep", device="cpu", progress=False)
    return root


def expected(root) -> pd.DataFrame:
    """Independently: both classifications side by side, xavier matched to xavier."""
    sides = []
    for side in "ab":
        verdicts = verdicts_of(initbench.load(root / side / "sweep"))[0]
        verdicts["scheme"] = verdicts["scheme_id"].where(
            ~verdicts["scheme_id"].str.startswith("xavier_normal"), "xavier"
        )
        sides.append(verdicts[[*KEYS, "scheme", *VERDICTS]])
    both = sides[0].merge(sides[1], on=[*KEYS, "scheme"], suffixes=("_a", "_b"))
    assert len(both) == len(sides[0]) == len(sides[1])
    rows = []
    for verdict in VERDICTS:
        was, now = both[f"{verdict}_a"], both[f"{verdict}_b"]
        differ = ~((was == now) | (was.isna() & now.isna()))
        for row in both[differ].itertuples():
            rows.append((row.activation, row.depth, row.scheme, verdict))
    return sorted(rows)


def found(table: pd.DataFrame) -> list:
    scheme = table["scheme_id_a"].where(~table["scheme_id_a"].str.startswith("xavier"), "xavier")
    return sorted(zip(table["activation"], table["depth"], scheme, table["verdict"], strict=True))


def test_two_sweeps_differing_in_one_gain(sweeps, tmp_path):
    page, counts = compare(sweeps / "a" / "sweep", sweeps / "b" / "sweep", tmp_path / "c")
    table = pd.read_csv(tmp_path / "c" / "changes.csv")
    truth = expected(sweeps)
    assert truth and found(table) == truth
    xavier = table[table["scheme_id_a"].str.startswith("xavier")]
    assert set(xavier["scheme_id_b"]) == {"xavier_normal[gain=3]"}
    assert (
        table.loc[table["scheme_id_a"] == table["scheme_id_b"], "verdict"] == "recommended"
    ).all()
    schemes = len(verdicts_of(initbench.load(sweeps / "a" / "sweep"))[0])
    assert counts["compared"] == schemes and counts["only_a"] == counts["only_b"] == 0
    assert counts["verdicts"] == len(truth)
    assert counts["changed"] == len({row[:3] for row in truth})
    for number in NUMBERS[:2]:  # the numbers behind each change are each side's
        assert table[f"{number}_a"].notna().all() and table[f"{number}_b"].notna().all()
    html = page.read_text()
    assert f"{counts['changed']:,} of {counts['compared']:,} scheme-cells" in html
    assert html.count("<tr") == len(table) + 1 and "sweep" not in table


def test_two_sites_give_the_same_changes(sweeps, tmp_path):
    for side in "ab":
        publish([sweeps / side / "sweep"], tmp_path / side)
    compare(tmp_path / "a", tmp_path / "b", tmp_path / "c")
    table = pd.read_csv(tmp_path / "c" / "changes.csv")
    assert found(table) == expected(sweeps)
    assert set(table["sweep"]) == {"sweep"}


def test_the_command_prints_the_counts_and_refuses_bad_input(sweeps, tmp_path):
    a, b = sweeps / "a" / "sweep", sweeps / "b" / "sweep"
    result = run_cli("compare", str(a), str(b), "--out", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert "scheme-cells changed" in result.stdout and "page in" in result.stdout
    assert_usage_error(run_cli("compare", str(a), str(b), "--out", str(a)), "would write over")
    publish([a], tmp_path / "site")
    mixed = run_cli("compare", str(a), str(tmp_path / "site"), "--out", str(tmp_path / "d"))
    assert_usage_error(mixed, "not one of each")
    assert_usage_error(run_cli("compare", str(a), str(tmp_path / "nothing")), "nothing")


def test_a_scheme_under_another_gain_pairs_only_when_alone_of_its_kind_on_each_side():
    from initbench.report.compare import matched, without_gain

    assert without_gain("xavier_normal[gain=unit]") == "xavier_normal"
    assert without_gain("kaiming_normal[mode=fan_in,gain=2]") == "kaiming_normal[mode=fan_in]"
    assert without_gain("normal[std=0.01]") == "normal[std=0.01]"
    cell = {"sweep": "", "activation": "tanh", "arch": "mlp", "depth": 5, "width": 8}

    def side(*ids):
        frame = pd.DataFrame([cell | {"bias_var": 0.0, "scheme_id": i} for i in ids])
        return frame.assign(kind_of=frame["scheme_id"].map(without_gain), signal="stable")

    a = side("x[gain=unit]", "x[gain=matched]", "y[gain=1]")
    b = side("x[gain=unit]", "x[gain=3]", "y[gain=2]")
    found, only_a, only_b = matched(a, b)
    pairs = set(zip(found["scheme_id_a"], found["scheme_id_b"], strict=True))
    assert pairs == {("x[gain=unit]", "x[gain=unit]"), ("y[gain=1]", "y[gain=2]")}
    assert (only_a, only_b) == (1, 1)  # x[gain=matched] and x[gain=3]: two x on each side
