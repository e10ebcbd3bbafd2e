"""One classification per scheme and cell, used by every table, caption and summary.

**Signal** (forward) and **gradients** (backward) are measured per run as the change
``log2(pre_var[depth] / pre_var[1])`` and ``log2(grad_h_var[1] / grad_h_var[depth])``
(the backward signal, from the last hidden layer to the first). Over a cell's seeds these
give a mean and a 95% interval. At finite width the log-variance moves like a random walk
with independent steps from layer to layer (Hanin & Nica 2019), so the interval comes
from the per-layer steps: their spread around each layer's mean step over seeds gives
``(seeds - 1) x (depth - 1)`` degrees of freedom instead of ``seeds - 1``, and a few seeds
already tell a real drift from noise. A quantity *settled* when over the deep half of the
network (at least 3 layers) its fitted per-layer trend moves it by at most
``rule.SETTLED`` bits within ``rule.SETTLED_LIMIT`` bits of where it started (a fixed
point such as tanh's with the matched gain).

Beside them: the signal's power-law exponent over the deep half (``critical`` decay), the
last layer's input-pair correlation, effective rank and dead share, the measured ``chi1``
(the gradients' per-layer factor) beside the mean-field one, and the gradient depth scale.
:mod:`initbench.report.rule` turns these into labels and a prediction (``trains`` or
``fails``, with its failure modes), by thresholds fitted against training.

**Training** (when the sweep trains): ``diverges`` if any seed's loss went non-finite,
``trains`` if every seed reaches ``target_accuracy``, ``stalls`` if none does, and
``mixed`` if the seeds disagree. A ``mixed`` row is not recommended, but it is not
decisive either: it counts neither for nor against a prediction.

**Equivalent schemes**: two schemes whose weights have the same distribution on every
weight of the cell's network (same kind and moments: ``xavier_normal[gain=matched]`` and
``kaiming_normal[mode=fan_in,nonlinearity=matched]`` on square layers) form one group; a
scheme that cannot fill a weight of the cell shares no group.

**Failing** is judged on what the sweep measures last: training when it trained
(``mixed``, ``stalls`` or ``diverges``; a predicted failure is then a *warning*), else the
prediction.

**Recommended**: the groups that fail nothing and are statistically tied with the best of
them. The best has the highest mean final test accuracy (trained) or the highest mean
probe score (probe only, :data:`SCORE`: ``rank_bits x log2(effective rank)`` at the last
layer, less the drift: ``|gradient change|``, ``|signal change|`` unless the signal is
critical, and the bits of distinguishability lost, each beyond ``free_bits``; a score
within ``margin`` of the best's ties with it). A group is set apart from the best only
when two tests agree: the 95% interval of the paired per-seed difference (seeds share
their random streams across schemes) lies below 0, and the 95% intervals of the two means
do not overlap. With one seed nothing can be told apart, and every group that fails nothing is
recommended. A trained sweep also gets ``probe_recommended``: what the probe alone would
have recommended.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import astuple, dataclass

import numpy as np
import pandas as pd

from initbench.core.intervals import mean_interval, mean_intervals, t_quantile
from initbench.report.rule import DECISIVE, RULE, Rule, near_best, predict

MIN_SETTLE_LAYERS = 3


@dataclass(frozen=True)
class Score:
    """The probe's recommendation: a run's score is ``rank_bits x log2(effective rank)`` at
    the last layer less the drift, each drift term counted only beyond ``free_bits``; a
    scheme whose mean score is within ``margin`` of the best's ties with it."""

    rank_bits: float
    free_bits: float
    margin: float

    def as_text(self) -> str:
        """The score in words, as the pages print it."""
        free = f", each beyond {self.free_bits:g} bits" if self.free_bits else ""
        text = (
            f"{self.rank_bits:g} x log2(the last layer's effective rank) less the drift in "
            "bits (|gradient change| + |signal change|, the signal's left out where it is "
            f"critical, + the bits of the input pairs' distinguishability lost{free})"
        )
        if self.margin:
            text += f"; a scheme within {self.margin:g} bits of the best's mean score ties with it"
        return text


# fitted by scripts/calibrate.py on the calibration's fitting half among these
SCORE = Score(rank_bits=2.0, free_bits=0.0, margin=0.0)
SCORE_CANDIDATES = tuple(
    Score(*map(float, v))
    for v in itertools.product((0, 2, 4, 8, 16), (0, 1, 2, 4), (0, 1, 2, 4, 8))
)
CELL_KEYS = ["activation", "arch", "depth", "width", "bias_var"]
SIGNALS = ("stable", "critical", "vanishing", "exploding")
TRAINING = ("trains", "mixed", "stalls", "diverges")


def quantity_measures(y: np.ndarray) -> dict[str, float]:
    """One quantity of one cell: ``y`` is ``(seeds, layers)`` of log2 values in the order
    of the pass (forward: layer 1 first; backward: the last layer first).

    Returns:
        ``change`` (mean over seeds of the end-to-end change, bits), ``ci`` (its 95%
        half-width), ``settle`` (bits moved over the deep half by the fitted trend, mean
        over seeds), ``exponent`` (the slope of ``y`` against ``log2`` of the position in
        the pass over the deep half: -1 for a quantity that falls as ``1 / l``), ``zero``
        and ``nonfinite`` (1.0 if any value is exactly 0 or not finite, else 0.0).
    """
    seeds, layers = y.shape
    out = {"change": math.nan, "ci": math.nan, "settle": math.nan, "exponent": math.nan}
    out["zero"] = float(np.isneginf(y).any())
    out["nonfinite"] = float((np.isposinf(y) | np.isnan(y)).any())
    if out["zero"] or out["nonfinite"] or layers < 2:
        return out
    steps = np.diff(y, axis=1)  # (seeds, layers - 1)
    out["change"] = float(steps.sum(1).mean())
    if seeds > 1:
        dof = (seeds - 1) * (layers - 1)
        spread = ((steps - steps.mean(0)) ** 2).sum() / dof
        out["ci"] = float(t_quantile(dof) * math.sqrt((layers - 1) * spread / seeds))
    deep = np.arange(layers) >= math.ceil(layers / 2) - 1
    if deep.sum() >= MIN_SETTLE_LAYERS:
        x = np.arange(layers)[deep].astype(float)
        slopes = np.polyfit(x, y[:, deep].T, 1)[0]
        out["settle"] = float(slopes.mean() * (x.max() - x.min()))
        out["exponent"] = float(np.polyfit(np.log2(x + 1), y[:, deep].T, 1)[0].mean())
    return out


def probed(cells: pd.DataFrame) -> pd.Series:
    """Runs whose probe finished: ``ok``, or ``diverged`` later, in training (the network
    at initialization was measured all the same)."""
    in_training = cells["reason"].fillna("").str.startswith("non-finite training loss")
    return (cells["status"] == "ok") | ((cells["status"] == "diverged") & in_training)


def separation(corr: np.ndarray | float, input_corr: np.ndarray | float) -> np.ndarray:
    """The share of the input pairs' distinguishability a layer keeps: ``(1 - c) / (1 -
    c_0)`` (``inf`` or NaN where the inputs themselves are one)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (1 - np.float64(corr)) / (1 - np.float64(input_corr))


def cell_measures(cells: pd.DataFrame, layers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell and scheme: the signal's and the gradients' measures over the runs whose
    probe finished (:func:`probed`); and per run: each quantity's end-to-end change (bits)."""
    ok = cells.loc[probed(cells), [*CELL_KEYS, "scheme_id", "run_id", "chi1", "input_corr"]]
    last = [c for c in LAST_LAYER if c in layers]  # stores from before a statistic lack it
    merged = layers[["run_id", "layer", "pre_var", "grad_h_var", *last]].merge(ok, on="run_id")
    merged = merged.sort_values(["run_id", "layer"])
    rows, per_run = [], []
    for key, group in merged.groupby([*CELL_KEYS, "scheme_id"], sort=False, dropna=False):
        run_ids = group["run_id"].unique()
        row = dict(zip([*CELL_KEYS, "scheme_id"], key, strict=True))
        totals = {"run_id": run_ids}
        for name, column, backward in (
            ("signal", "pre_var", False),
            ("gradients", "grad_h_var", True),
        ):
            values = group[column].to_numpy(float).reshape(len(run_ids), -1)
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.log2(values[:, ::-1] if backward else values)
                totals[f"{name}_total"] = y[:, -1] - y[:, 0]
            row |= {f"{name}_{k}": v for k, v in quantity_measures(y).items()}
        deepest = group[group["layer"] == group["layer"].max()]
        if "corr" in deepest:  # per run: bits of the inputs' distinguishability lost
            kept = separation(
                deepest["corr"].to_numpy(float), deepest["input_corr"].to_numpy(float)
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                totals["separation_total"] = np.log2(kept)
        if "eff_rank" in deepest:  # per run: bits of effective directions at the last layer
            with np.errstate(divide="ignore", invalid="ignore"):
                totals["rank_total"] = np.log2(deepest["eff_rank"].to_numpy(float))
        for column, name in LAST_LAYER.items():
            row[name] = float(deepest[column].mean()) if column in deepest else math.nan
        runs = group.drop_duplicates("run_id")
        row["chi1_theory"] = float(runs["chi1"].mean())
        row["input_corr"] = float(runs["input_corr"].mean())
        rows.append(row)
        per_run.append(pd.DataFrame(totals))
    runs = pd.concat(per_run) if per_run else pd.DataFrame(columns=["run_id", *TOTALS])
    return pd.DataFrame(rows, columns=[*CELL_KEYS, "scheme_id"] if not rows else None), runs


LAST_LAYER = {"corr": "corr_last", "eff_rank": "rank_last", "dead_frac": "dead_last"}
TOTALS = ("signal_total", "gradients_total", "separation_total", "rank_total")


def classify_training(runs: pd.DataFrame) -> str:
    """``diverges``, ``trains``, ``stalls`` or ``mixed`` for one cell's runs."""
    if runs["diverged_step"].notna().any() or (runs["status"] == "diverged").any():
        return "diverges"
    reached = int(runs["steps_to_target"].notna().sum())
    return "trains" if reached == len(runs) else "stalls" if reached == 0 else "mixed"


def classify(
    cells: pd.DataFrame,
    layers: pd.DataFrame,
    trained: bool,
    groups: dict[tuple, str] | None = None,
    rule: Rule = RULE,
    score: Score = SCORE,
) -> pd.DataFrame:
    """Every scheme and cell's classification: one row per (cell keys, scheme).

    Args:
        cells: the sweep's ``cells`` table.
        layers: its ``layers`` table.
        trained: the sweep trained (classify training, rank by accuracy).
        groups: ``(activation, arch, depth, width, bias_var, scheme_id) -> group`` for
            equivalent schemes (default: every scheme its own group).
        rule: the thresholds that turn measures into a prediction.
        score: the probe's recommendation score (its weight on the last layer's
            effective rank, and the drift that costs nothing).

    Returns:
        Columns ``activation, arch, depth, width, bias_var, scheme_id, group, signal,
        gradients, predicted, failure, training, recommended`` (and
        ``probe_recommended`` when trained) and the numbers behind them (see
        ``docs/report.md``).
    """
    keys = [*CELL_KEYS, "scheme_id"]
    measures, runs = _measured(cells, layers)
    measures = measures.set_index(keys)
    rows = []
    for key, group in runs.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key, strict=True))
        row["group"] = (groups or {}).get(key, row["scheme_id"])
        found = measures.loc[key].to_dict() if key in measures.index else {}
        rows.append(row | _classify_cell(group, found, trained))
    verdicts = pd.DataFrame(rows)
    labels = predict(verdicts, rule)
    for column in labels:
        verdicts[column] = labels[column]
    missing = verdicts["note"] != ""
    verdicts.loc[missing, ["signal", "gradients", "predicted", "failure"]] = ""
    verdicts["recommended"] = recommend(verdicts, runs, trained, score)
    if trained:
        verdicts["probe_recommended"] = recommend(verdicts, runs, False, score)
    return verdicts


def _measured(cells: pd.DataFrame, layers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`cell_measures` of the runs, and the runs with their totals."""
    cells = cells.copy()
    cells["bias_var"] = cells["bias_var"].fillna(0.0)
    for column in ("chi1", "input_corr"):
        if column not in cells:
            cells[column] = math.nan
    measures, totals = cell_measures(cells, layers)
    return measures, cells.merge(totals, on="run_id", how="left")


def scored_runs(cells: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """The runs with each quantity's end-to-end change (``TOTALS``), as :func:`recommend`
    scores them."""
    return _measured(cells, layers)[1]


def recommend(
    verdicts: pd.DataFrame, runs: pd.DataFrame, trained: bool, score: Score = SCORE
) -> pd.Series:
    """Per row of ``verdicts``: recommended, by training (``trained``) or by the probe's
    ``score`` of each run (``runs``: :func:`scored_runs`)."""
    recommended = pd.Series(False, index=verdicts.index)
    for _, cell in verdicts.groupby(CELL_KEYS, sort=False, dropna=False):
        recommended[_tied_with_best(cell, runs, trained, score)] = True
    return recommended


MEASURES = ("change", "ci", "settle", "exponent", "zero", "nonfinite")


def _classify_cell(runs: pd.DataFrame, measures: dict, trained: bool) -> dict[str, object]:
    counts = runs["status"].value_counts()
    statuses = ("ok", "diverged", "skipped", "failed", "oom")
    row: dict[str, object] = {"seeds": len(runs)} | {s: int(counts.get(s, 0)) for s in statuses}
    note = ""
    if (runs["status"] == "skipped").all():
        note = str(runs["reason"].iloc[0])
    elif not (runs["status"].isin(["ok", "diverged"])).any():
        reasons = runs["reason"].dropna()
        note = "no run finished" + (f": {reasons.iloc[0]}" if len(reasons) else "")
    diverged = (runs["status"] == "diverged") & runs["reason"].fillna("").str.contains("initial")
    for name in ("signal", "gradients"):
        values = {f"{name}_{k}": measures.get(f"{name}_{k}", math.nan) for k in MEASURES}
        if diverged.any():
            values[f"{name}_nonfinite"] = 1.0
        row |= values
    for name in ("corr_last", "rank_last", "dead_last", "chi1_theory", "input_corr"):
        row[name] = measures.get(name, math.nan)
    row["separation_last"] = float(separation(row["corr_last"], row["input_corr"]))
    depth = int(runs["depth"].iloc[0])
    per_layer = row["gradients_change"] / max(depth - 1, 1)  # bits per layer, backward
    row["chi1_measured"] = 2.0**per_layer
    row["depth_scale"] = 1 / abs(per_layer * math.log(2)) if per_layer else math.inf
    for name in ("signal", "gradients"):  # the changes, once the finite ones are used
        if row[f"{name}_zero"] == 1:
            row[f"{name}_change"] = -math.inf
        elif row[f"{name}_nonfinite"] == 1:
            row[f"{name}_change"] = math.inf
    row["training"] = ""
    if trained:
        if not note:
            row["training"] = classify_training(runs[runs["status"].isin(["ok", "diverged"])])
        for column in ("final_test_acc", "steps_to_target"):
            mean, half, _ = mean_interval(runs[column].to_numpy(float))
            row[column], row[f"{column}_ci"] = mean, half
        row["reached_target"] = int(runs["steps_to_target"].notna().sum())
    row["note"] = note
    return row


def failing(verdicts: pd.DataFrame, trained: bool) -> pd.Series:
    """Rows that fail what the sweep is judged on: training when it trained (``stalls``,
    ``diverges``, or ``mixed``: a scheme is recommended for training only where every
    seed trains), else the prediction (``fails``); and rows with no finished run."""
    if trained:
        bad = verdicts["training"].isin(["mixed", "stalls", "diverges"])
    else:
        bad = verdicts["predicted"] == "fails"
    return bad | (verdicts["note"].fillna("") != "")


def warnings(row: pd.Series | object, trained: bool) -> list[str]:
    """Diagnostics of a trained row that do not fail it: the failure modes the probe
    predicts (trouble at greater depth, or at other learning rates)."""
    if not trained or getattr(row, "note", "") or not getattr(row, "failure", ""):
        return []
    return str(row.failure).split(", ")


def fit(verdicts: pd.DataFrame, runs: pd.DataFrame) -> dict[tuple[Rule, Score], dict]:
    """The rule and the probe's score fitted together on a trained sweep's ``verdicts``
    (``runs``: :func:`scored_runs`): the rules whose agreement with training is within one
    standard error of the best (``rule.near_best``) crossed with :data:`SCORE_CANDIDATES`,
    ranked by :func:`ranked_choices`; the first is the fit."""
    return ranked_choices(verdicts, runs, near_best(verdicts, verdicts["training"]))


def ranked_choices(
    verdicts: pd.DataFrame,
    runs: pd.DataFrame,
    rules: dict[Rule, np.ndarray],
    scores: tuple[Score, ...] = SCORE_CANDIDATES,
) -> dict[tuple[Rule, Score], dict[str, float]]:
    """Each pair of a rule and a score with how the probe's recommendations under them
    hold up against training on ``verdicts`` (a trained sweep's rows, with ``runs``:
    :func:`scored_runs`), best first: the most cells covered, then the fewest
    recommendations that stall or diverge, then the fewest recommendations (of equally
    safe answers, the sharpest: each recommended scheme is named in its row and drawn in
    every figure of its cell), then the rule's place in ``rules``, then the smallest
    score values. Of rules that fail the same rows only the first is kept.

    Args:
        verdicts: trained verdicts (as :func:`agreement` takes them).
        runs: their runs.
        rules: each rule with the rows of ``verdicts`` it predicts to fail (positions).
        scores: the candidate scores.

    Returns:
        ``(rule, score) -> {"covered", "bad_recommended", "probe_recommended", "recall"}``.
    """
    first: dict[bytes, Rule] = {}
    for candidate, fails in rules.items():
        first.setdefault(np.asarray(fails, bool).tobytes(), candidate)
    kept = list(first.values())
    fails = np.stack([np.asarray(rules[r], bool) for r in kept])  # (rules, rows)
    note = (verdicts["note"].fillna("") != "").to_numpy()
    recommended = verdicts["recommended"].astype(bool).to_numpy()
    bad = verdicts["training"].isin(["stalls", "diverges"]).to_numpy()
    cells = [
        (cell, verdicts.index.get_indexer(cell.index))
        for _, cell in verdicts.groupby(CELL_KEYS, sort=False, dropna=False)
    ]
    some_train = sum(bool((cell["training"] == "trains").any()) for cell, _ in cells)
    found = {}
    for score in scores:
        covered, bad_count, count, hits = (np.zeros(len(kept), int) for _ in range(4))
        for cell, rows in cells:
            metric = _cell_metric(cell, runs, False, score)
            values = metric.reindex(columns=cell["scheme_id"]).to_numpy(float)
            present = cell["scheme_id"].isin(metric.columns).to_numpy()
            means = _nanmean(values)
            ties = _ties(values[:, :, None], values[:, None, :], score.margin) & present[:, None]
            eligible = ~fails[:, rows] & ~note[rows]  # (rules, schemes)
            ranked = eligible & present & ~np.isnan(means)
            key = np.where(ranked, means, np.nan)
            key[~ranked.any(1)] = 0.0
            best = np.nanargmax(key, 1)
            tied = np.where(ranked.any(1)[:, None], eligible & ties[:, best].T, eligible)
            count += tied.sum(1)
            bad_count += (tied & bad[rows]).sum(1)
            hits += (tied & recommended[rows]).sum(1)
            if (cell["training"] == "trains").any():
                covered += (tied & recommended[rows]).any(1)
        for i, candidate in enumerate(kept):
            found[(candidate, score)] = {
                "covered": covered[i] / some_train if some_train else math.nan,
                "bad_recommended": int(bad_count[i]),
                "probe_recommended": int(count[i]),
                "recall": hits[i] / max(recommended.sum(), 1),
            }
    place = {r: i for i, r in enumerate(kept)}

    def order(pair: tuple[Rule, Score]) -> tuple:
        a = found[pair]
        return (-a["covered"], a["bad_recommended"], a["probe_recommended"], place[pair[0]])

    return {pair: found[pair] for pair in sorted(found, key=lambda p: (*order(p), astuple(p[1])))}


def _metric(runs: pd.DataFrame, trained: bool, critical: set[str], score: Score) -> pd.Series:
    """Per run, higher is better: final test accuracy, or the probe's score:
    ``rank_bits x log2(effective rank)`` of the last layer (the directions the batch still
    spans: identity and orthogonal weights keep them) minus the drift in bits:
    ``|gradient change|``, plus ``|signal change|`` unless the scheme's signal is critical
    (a power-law decay is what criticality looks like, not a drift), plus the bits of the
    input pairs' distinguishability lost or gained by the last layer; each drift term
    counts only beyond ``score.free_bits``."""
    if trained:
        return runs["final_test_acc"].astype(float)
    signal = runs["signal_total"].abs().where(~runs["scheme_id"].isin(critical), 0.0)
    separation = runs.get("separation_total", pd.Series(0.0, index=runs.index))
    rank = runs.get("rank_total", pd.Series(0.0, index=runs.index))
    terms = (signal, runs["gradients_total"].abs(), separation.abs().fillna(0.0))
    drift = sum((term - score.free_bits).clip(lower=0.0) for term in terms)
    return score.rank_bits * rank.fillna(0.0) - drift


def _cell_metric(
    cell: pd.DataFrame, runs: pd.DataFrame, trained: bool, score: Score
) -> pd.DataFrame:
    """The cell's runs' :func:`_metric`, seeds by scheme."""
    keys = cell.iloc[0][CELL_KEYS]
    mask = np.ones(len(runs), dtype=bool)
    for key in CELL_KEYS:
        mask &= (runs[key] == keys[key]).to_numpy()
    finished = (runs["status"] == "ok") if trained else probed(runs)
    here = runs[mask & finished.to_numpy()]
    critical = set(cell.loc[cell["signal"] == "critical", "scheme_id"])
    return here.assign(metric=_metric(here, trained, critical, score)).pivot_table(
        index="seed", columns="scheme_id", values="metric", aggfunc="first"
    )


def _tied_with_best(
    cell: pd.DataFrame, runs: pd.DataFrame, trained: bool, score: Score
) -> list[int]:
    """Index labels of the cell's rows that fail nothing and tie with the best."""
    eligible = cell[~failing(cell, trained)]
    if eligible.empty:
        return []
    metric = _cell_metric(cell, runs, trained, score)
    present = [s for s in eligible["scheme_id"] if s in metric]
    means = metric[present].mean() if present else pd.Series(dtype=float)
    if means.isna().all():
        return list(eligible.index)
    best = metric[means.idxmax()].to_numpy(float)[:, None]
    schemes = [s for s in eligible["scheme_id"] if s in metric]
    ties = _ties(metric[schemes].to_numpy(float), best, 0.0 if trained else score.margin)
    tied = {s for s, t in zip(schemes, ties, strict=True) if t}
    return [i for i, s in zip(eligible.index, eligible["scheme_id"], strict=True) if s in tied]


def _ties(values: np.ndarray, best: np.ndarray, margin: float) -> np.ndarray:
    """Whether each of ``values``' columns (seeds first; ``best`` broadcasts against
    them) ties with ``best``: its mean within ``margin`` of the best's, or not
    :func:`_separated` from it."""
    with np.errstate(invalid="ignore"):
        close = _nanmean(values) >= _nanmean(best) - margin
    return close | ~_separated(values, best)


def _nanmean(values: np.ndarray) -> np.ndarray:
    """The mean over the first axis of the values that are not NaN (as pandas takes it:
    infinities count)."""
    kept = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(kept, values, 0.0).sum(0) / kept.sum(0)


def _separated(values: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Whether both tests set ``values`` apart from (below) ``best``, column by column
    (seeds first; the two broadcast): the 95% interval of the paired per-seed difference
    lies below 0, and the two 95% intervals of the means do not overlap."""
    values, best = np.broadcast_arrays(np.asarray(values, float), np.asarray(best, float))
    both = np.isfinite(values) & np.isfinite(best)
    with np.errstate(invalid="ignore"):
        mean, half, n = mean_intervals(np.where(both, values - best, np.nan))
    m_a, h_a, n_a = mean_intervals(values)
    m_b, h_b, n_b = mean_intervals(best)
    with np.errstate(invalid="ignore"):
        paired = (n >= 2) & (mean + half < 0)
        return paired & (np.minimum(n_a, n_b) >= 2) & (m_a + h_a < m_b - h_b)


def confusion(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Prediction against training on the rows where training is decisive: counts with
    ``predicted`` as rows and ``training`` as columns."""
    decisive = verdicts[verdicts["training"].isin(DECISIVE)]
    table = pd.crosstab(decisive["predicted"], decisive["training"])
    return (
        table.reindex(index=["trains", "fails"], columns=["trains", "stalls", "diverges"])
        .fillna(0)
        .astype(int)
    )


def agreement(verdicts: pd.DataFrame, probe_recommended: pd.Series) -> dict[str, float]:
    """How the probe's verdicts hold up against training on a trained sweep's rows.

    Args:
        verdicts: trained verdicts (``training``, ``recommended`` by training,
            ``predicted``), one row per scheme and cell.
        probe_recommended: what the probe alone would recommend, on the same index.

    Returns:
        ``accuracy`` (share of decisive rows where ``predicted`` agrees with training),
        ``covered`` (share of cells where some scheme trains whose probe-recommended set
        includes a training-recommended scheme), ``bad_recommended`` (probe-recommended rows
        that stall or diverge), ``recall`` (share of the training-recommended rows the
        probe recommends too), and the counts behind them.
    """
    decisive = verdicts["training"].isin(DECISIVE)
    right = (verdicts["predicted"] == "trains") == (verdicts["training"] == "trains")
    cells = verdicts.assign(probe=probe_recommended).groupby(CELL_KEYS, dropna=False)
    some_train = cells.apply(lambda c: bool((c["training"] == "trains").any()))
    covered = cells.apply(lambda c: bool((c["probe"] & c["recommended"]).any()))
    bad = probe_recommended & verdicts["training"].isin(["stalls", "diverges"])
    recommended = verdicts["recommended"].astype(bool)
    return {
        "accuracy": float(right[decisive].mean()) if decisive.any() else math.nan,
        "decisive": int(decisive.sum()),
        "covered": float(covered[some_train].mean()) if some_train.any() else math.nan,
        "cells_that_train": int(some_train.sum()),
        "bad_recommended": int(bad.sum()),
        "probe_recommended": int(probe_recommended.sum()),
        "recall": float((probe_recommended & recommended).sum() / max(recommended.sum(), 1)),
        "training_recommended": int(recommended.sum()),
    }


def equivalence_groups(cells: pd.DataFrame, weights: pd.DataFrame | None) -> dict[tuple, str]:
    """``(activation, arch, depth, width, bias_var, scheme_id) -> group``: schemes with the
    same weight distribution on every weight of the cell share the first one's id.

    Args:
        cells: the sweep's runs (``cell_id`` and the cell's keys).
        weights: each cell's weight signature (the sweep's ``weights.parquet``); None or
            missing cells: every scheme is its own group.
    """
    if weights is None or weights.empty:
        return {}
    signature = dict(zip(weights["cell_id"], weights["weights"], strict=True))
    groups: dict[tuple, str] = {}
    rows = cells[[*CELL_KEYS, "scheme_id", "cell_id"]].drop_duplicates([*CELL_KEYS, "scheme_id"])
    for cell_key, schemes in rows.groupby(CELL_KEYS, sort=False, dropna=False):
        first: dict[str, str] = {}
        for scheme_id, cell_id in zip(schemes["scheme_id"], schemes["cell_id"], strict=True):
            key = signature.get(cell_id)
            groups[(*cell_key, scheme_id)] = (
                scheme_id if key is None else first.setdefault(key, scheme_id)
            )
    return groups
