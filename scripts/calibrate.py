"""Fits the verdict rule on the calibration sweep and checks it where it was not fitted.

    initbench sweep --preset calibration --out /tmp/calibration      # about 25 minutes
    python scripts/calibrate.py /tmp/calibration

Fits the thresholds (``initbench.report.rule.fit``) on the fitting half of the cells,
predicts the held-out half with them, and prints the rule, the held-out confusion matrix
and the three numbers that say whether the probe's verdicts hold: agreement with
training, cells whose probe recommendations include a training-recommended scheme, and
probe recommendations that stall or diverge. Then the flip rate: the calibration cells
probed again with 6 seeds, the probe's recommended flags of seeds 0-2 against 3-5.
Writes ``results/calibration/measures.csv`` (what the fit reads, one row per scheme and
cell) and ``results/calibration/README.md`` (what this prints), both deterministic.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

import initbench
from initbench.report import rule
from initbench.report.classify import (
    CELL_KEYS,
    MEASURES,
    RANK_BITS,
    RANK_BITS_CANDIDATES,
    agreement,
    classify,
    confusion,
    equivalence_groups,
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
    *("training", "final_test_acc", "held_out"),
]


def flip_rate(seeds: int = 6) -> tuple[float, int]:
    """The share of the probe's recommended flags that change between seeds 0-2 and 3-5 of
    the calibration cells probed with ``seeds`` seeds, and how many flags were compared."""
    grid = initbench.Grid.from_dict(
        {"train_steps": 0, "lrs": [], "seeds": seeds}, preset("calibration")
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
    results = load(args.folder)
    if not did_train(results):
        raise SystemExit(f"{args.folder} did not train: sweep --preset calibration")
    groups = equivalence_groups(results.cells, results.tables.get("weights"))
    by_weight = {}
    for weight in RANK_BITS_CANDIDATES:
        verdicts = classify(results.cells, results.layers, True, groups, rank_bits=weight)
        verdicts["held_out"] = rule.held_out(verdicts)
        by_weight[weight] = verdicts
    fitting = {weight: fitting_agreement(v) for weight, v in by_weight.items()}
    rank_bits = fit_rank_bits(fitting)
    verdicts = by_weight[rank_bits]
    measures = verdicts[MEASURE_COLUMNS].sort_values([*CELL_KEYS, "scheme_id"])
    OUT.mkdir(parents=True, exist_ok=True)
    measures.to_csv(OUT / "measures.csv", index=False, float_format="%.6g")
    measures = pd.read_csv(OUT / "measures.csv", keep_default_na=False, na_values=[""])
    fitted = fit_from(measures)
    lines = [
        "# Calibration of the verdict rule",
        "",
        "Written by `python scripts/calibrate.py FOLDER` from a sweep of the `calibration` "
        "preset; `measures.csv` is what the fit reads.",
        "",
        f"Fitted on {int((~measures['held_out']).sum())} scheme-cells "
        f"({measures.loc[~measures['held_out'], CELL_KEYS].drop_duplicates().shape[0]} cells), "
        f"checked on the other {int(measures['held_out'].sum())}.",
        "",
        f"Rule: {fitted.as_text()}.",
        "",
        "```",
        repr(fitted),
        "```",
        "",
        "The probe's recommendation: the schemes predicted to train whose score ties with the "
        f"best, the score being {rank_bits:g} x log2(the last layer's effective rank) less the "
        "drift in bits; the weight fitted on the fitting half among "
        f"{', '.join(f'{w:g}' for w in RANK_BITS_CANDIDATES)} (the fewest recommendations "
        "that stall or diverge among those that cover the most cells):",
        "",
        "| weight | cells covered | recommendations that stall or diverge |",
        "|---:|---:|---:|",
        *(
            f"| {w:g} | {found['covered']:.1%} | {found['bad_recommended']} of "
            f"{found['probe_recommended']} |"
            for w, found in fitting.items()
        ),
        "",
    ]
    for name, part in (("held-out", verdicts["held_out"]), ("fitted", ~verdicts["held_out"])):
        checked = verdicts[part].copy()
        labels = rule.predict(checked, fitted)
        checked[labels.columns] = labels
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
            f"The calibration cells probed with 6 seeds: {rate:.1%} of {flags} recommended "
            "flags change between seeds 0-2 and seeds 3-5.",
            "",
        ]
    text = "\n".join(lines)
    (OUT / "README.md").write_text(text)
    print(text)
    if fitted != rule.RULE:
        print(f"initbench/report/rule.py's RULE is {rule.RULE!r}: set it to the fitted rule")
    if rank_bits != RANK_BITS:
        print(f"initbench/report/classify.py's RANK_BITS is {RANK_BITS:g}: set it to {rank_bits:g}")


def fitting_agreement(verdicts: pd.DataFrame) -> dict[str, float]:
    """:func:`agreement` on the fitting half's rows."""
    part = verdicts[~verdicts["held_out"]]
    return agreement(part, part["probe_recommended"])


def fit_rank_bits(found: dict[float, dict[str, float]]) -> float:
    """The recommendation's weight on effective rank whose recommendations on the fitting
    half (``found``: :func:`fitting_agreement` per weight) cover the most cells, then stall
    or diverge the fewest times (the smallest weight on a tie)."""
    return min(found, key=lambda w: (-found[w]["covered"], found[w]["bad_recommended"], w))


def fit_from(measures: pd.DataFrame) -> rule.Rule:
    """The rule fitted on the rows of ``measures.csv`` that are not held out."""
    part = measures[~measures["held_out"].astype(bool)]
    return rule.fit(part, part["training"])


if __name__ == "__main__":
    main()
