"""Fits the verdict rule on the calibration sweep and checks it where it was not fitted.

    initbench sweep --preset calibration --out /tmp/calibration      # about 35 minutes
    python scripts/calibrate.py /tmp/calibration

Fits the thresholds and the probe's recommendation score together
(``initbench.report.classify.fit``) on the fitting half of the ``split`` part's cells,
predicts the held-out half and the ``fresh`` part (sizes the fit never saw) with them, and
prints the rule, the confusion matrices and the three numbers that say whether the
probe's verdicts hold: agreement with training, cells whose probe recommendations include
a training-recommended scheme, and probe recommendations that stall or diverge. Then the
flip rate: the split cells probed again with 6 seeds, the probe's recommended flags of
seeds 0-2 against 3-5. Writes ``results/calibration/measures.csv`` (one row per scheme
and cell, with its ``part``: fit, held-out or fresh), ``runs.csv.gz`` (one row per run:
the totals the score reads, and the final accuracy) and ``README.md`` (what this
prints), all deterministic.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import pandas as pd

import initbench
from initbench.report import rule
from initbench.report.classify import (
    CELL_KEYS,
    MEASURES,
    SCORE,
    SCORE_CANDIDATES,
    TOTALS,
    agreement,
    classify,
    confusion,
    equivalence_groups,
    fit,
    recommend,
    scored_runs,
)
from initbench.report.sweep import did_train
from initbench.sweeps.presets import preset
from initbench.sweeps.store import load

OUT = Path(__file__).resolve().parents[1] / "results" / "calibration"
MEASURE_COLUMNS = [
    *CELL_KEYS,
    "scheme_id",
    "group",
    "note",
    *(f"{quantity}_{m}" for quantity in ("signal", "gradients") for m in MEASURES),
    *("corr_last", "input_corr", "separation_last", "rank_last", "dead_last"),
    *("chi1_theory", "chi1_measured"),
    *("training", "final_test_acc", "reached_target", "seeds", "part"),
]
PARTS = {"held-out": "held-out", "fresh": "fresh", "fit": "fitted"}  # part -> its section
RUN_COLUMNS = [*CELL_KEYS, "scheme_id", "seed", "status", "reason", "final_test_acc", *TOTALS]
SHOWN = 10  # the page's table of fitted candidates: the best this many


def flip_rate(seeds: int = 6) -> tuple[float, int]:
    """The share of the probe's recommended flags that change between seeds 0-2 and 3-5 of
    the calibration cells probed with ``seeds`` seeds, and how many flags were compared."""
    grid = initbench.Grid.from_dict(
        {"train_steps": 0, "lrs": [], "seeds": seeds}, preset("calibration").parts["split"]
    )
    with tempfile.TemporaryDirectory() as folder:
        initbench.sweep(grid, Path(folder) / "s", progress=True)
        results = load(Path(folder) / "s")
    groups = equivalence_groups(results.cells, results.tables.get("weights"))
    flags = []
    for half in (range(0, seeds // 2), range(seeds // 2, seeds)):
        cells = results.cells[results.cells["seed"].isin(half)]
        layers = results.layers[results.layers["run_id"].isin(cells["run_id"])]
        verdicts = classify(cells, layers, False, groups)
        flags.append(verdicts.set_index([*CELL_KEYS, "scheme_id"])["recommended"])
    both = pd.concat(flags, axis=1, keys=["a", "b"]).dropna()
    return float((both["a"] != both["b"]).mean()), len(both)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the calibration preset's sweep folder")
    parser.add_argument("--no-flips", action="store_true", help="skip the flip-rate sweep")
    args = parser.parse_args()
    keys = [*CELL_KEYS, "scheme_id"]
    found, all_runs = [], []
    for name in ("split", "fresh"):
        results = load(args.folder / name)
        if not did_train(results):
            raise SystemExit(f"{args.folder / name} did not train: sweep --preset calibration")
        groups = equivalence_groups(results.cells, results.tables.get("weights"))
        verdicts = classify(results.cells, results.layers, True, groups)
        verdicts["part"] = (
            rule.held_out(verdicts).map({True: "held-out", False: "fit"})
            if name == "split"
            else "fresh"
        )
        found.append(verdicts[MEASURE_COLUMNS])
        all_runs.append(scored_runs(results.cells, results.layers)[RUN_COLUMNS])
    OUT.mkdir(parents=True, exist_ok=True)
    pd.concat(found).sort_values(keys).to_csv(
        OUT / "measures.csv", index=False, float_format="%.6g"
    )
    runs = pd.concat(all_runs)
    runs.sort_values([*keys, "seed"]).to_csv(
        OUT / "runs.csv.gz",
        index=False,
        float_format="%.6g",
        compression={"method": "gzip", "mtime": 0},
    )
    measures, runs = read_calibration(OUT)
    choices = fit_from(measures, runs)
    fitted, score = next(iter(choices))
    verdicts = verdicts_from(measures, runs, fitted)
    verdicts["probe_recommended"] = recommend(verdicts, runs, False, score)
    lines = [
        "# Calibration of the verdict rule",
        "",
        "Written by `python scripts/calibrate.py FOLDER` from a sweep of the `calibration` "
        "preset; `measures.csv` (one row per scheme and cell) and `runs.csv.gz` (one row per "
        "run: its probe's totals and final accuracy) are what the fit reads.",
        "",
        f"Fitted on {count(measures, 'fit')} of the split part, checked on its other "
        f"{count(measures, 'held-out')} and on the {count(measures, 'fresh')} of the fresh "
        "part (depths and a width the fit never saw). Training is decisive where every seed "
        "reaches the target accuracy (trains), none does (stalls) or one diverges; where the "
        "seeds disagree (mixed) it is not, and such rows count neither for nor against the "
        "rule.",
        "",
        f"Rule: {fitted.as_text()}.",
        "",
        "```",
        repr(fitted),
        "```",
        "",
        "The probe's recommendation: the schemes predicted to train whose score ties with the "
        f"best, the score being {score.as_text()}:",
        "",
        "```",
        repr(score),
        "```",
        "",
        "Both are fitted together on the fitting half. The rules are those of "
        f"{n_rules():,} threshold combinations whose agreement with training is within one "
        "standard error of the best; the scores are "
        f"{len(SCORE_CANDIDATES)} candidates (weights {values_text('rank_bits')}, free bits "
        f"{values_text('free_bits')}, margins {values_text('margin')}). Of each pair, the "
        "probe's recommendations are held against training's: the most cells covered, then "
        "the fewest recommendations that stall or diverge, then the fewest recommendations "
        "(of equally safe answers, the sharpest), then the loosest rule (the fewest failures "
        f"claimed), then the smallest score values. The best {SHOWN} (of rules that fail the "
        "same rows, the loosest):",
        "",
        "| gradient bits | signal bits | separation | rank | dead | weight | free bits | margin "
        "| cells covered | recommendations that stall or diverge | training-recommended "
        "recommended |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.gradient_bits:g} | {r.signal_bits:g} | {r.separation:g} | {r.rank:g} | "
            f"{r.dead:g} | {s.rank_bits:g} | {s.free_bits:g} | {s.margin:g} | "
            f"{found['covered']:.1%} | {found['bad_recommended']} of "
            f"{found['probe_recommended']} | {found['recall']:.1%} |"
            for (r, s), found in list(choices.items())[:SHOWN]
        ),
        "",
    ]
    for part, name in PARTS.items():
        checked = verdicts[verdicts["part"] == part]
        found = agreement(checked, checked["probe_recommended"])
        table = confusion(checked)
        lines += [
            f"## On the {name} cells",
            "",
            f"- predicted agrees with training on {found['accuracy']:.1%} of "
            f"{found['decisive']} decisive scheme-cells",
            f"- {found['covered']:.1%} of the {found['cells_that_train']} cells where some "
            "scheme trains have a training-recommended scheme among the probe's recommendations",
            f"- {found['bad_recommended']} of the probe's {found['probe_recommended']} "
            "recommendations stall or diverge",
            "",
            table.rename_axis(index="predicted \\ training").to_markdown(),
            "",
        ]
    if not args.no_flips:
        rate, flags = flip_rate()
        lines += [
            "## Stability across seeds",
            "",
            f"The split part's cells probed with 6 seeds: {rate:.1%} of {flags} recommended "
            "flags change between seeds 0-2 and seeds 3-5.",
            "",
        ]
    text = "\n".join(lines)
    (OUT / "README.md").write_text(text)
    print(text)
    if fitted != rule.RULE:
        print(f"initbench/report/rule.py's RULE is {rule.RULE!r}: set it to the fitted rule")
    if score != SCORE:
        print(f"initbench/report/classify.py's SCORE is {SCORE!r}: set it to {score!r}")


def values_text(field: str) -> str:
    """The candidates' values of one of the score's fields, as the page lists them."""
    return ", ".join(f"{v:g}" for v in sorted({getattr(s, field) for s in SCORE_CANDIDATES}))


def read_calibration(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``measures.csv`` and ``runs.csv.gz`` as the fit reads them."""
    read = {"keep_default_na": False, "na_values": [""]}
    return pd.read_csv(folder / "measures.csv", **read), pd.read_csv(folder / "runs.csv.gz", **read)


def verdicts_from(
    measures: pd.DataFrame, runs: pd.DataFrame, fitted: rule.Rule = rule.RULE
) -> pd.DataFrame:
    """The rows of ``measures.csv`` with their labels under ``fitted`` and recommended by
    training, as ``classify`` gives them (what training recommends, and which signals
    are critical, do not depend on the rule)."""
    verdicts = measures.copy()
    verdicts[["signal", "gradients", "predicted", "failure"]] = rule.predict(verdicts, fitted)
    verdicts["recommended"] = recommend(verdicts, runs, True)
    return verdicts


def fit_from(measures: pd.DataFrame, runs: pd.DataFrame) -> dict:
    """The rule and score fitted on the rows of ``measures.csv`` of the fitting half, with
    the candidates ranked behind them (``classify.fit``)."""
    verdicts = verdicts_from(measures, runs)
    return fit(verdicts[verdicts["part"] == "fit"], runs)


def count(measures: pd.DataFrame, part: str) -> str:
    """``N scheme-cells (M cells)`` of one part."""
    rows = measures[measures["part"] == part]
    return f"{len(rows)} scheme-cells ({len(rows[CELL_KEYS].drop_duplicates())} cells)"


def n_rules() -> int:
    """How many threshold combinations the fit tries."""
    return math.prod(len(values) for values in rule.CANDIDATES.values())


if __name__ == "__main__":
    main()
