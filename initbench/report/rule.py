"""The verdict rule: which failure modes of a network at initialization predict that it
will not train, with thresholds fitted against training (:func:`fit`), not chosen by hand.

From a scheme and cell's measures over its seeds (:func:`~initbench.report.classify.cell_measures`):

- **gradients** vanish or explode when the 95% interval of their end-to-end change lies
  beyond ``gradient_bits``. The change is ``depth / xi`` in units of ``1 / ln 2``, ``xi``
  the measured gradient depth scale (``-1 / ln chi1`` per layer, Schoenholz et al. 2017),
  so the threshold says how many depth scales deep a network still trains.
- **signal** (the pre-activation variance) likewise beyond ``signal_bits``; but it is
  ``critical``, not failing, when it decays as a power law no steeper than
  ``1 / l^CRITICAL_EXPONENT`` (the fitted exponent of variance against layer over the
  deep half, and the change end to end, which is at most ``CRITICAL_EXPONENT x
  log2(depth)`` bits: tanh at unit gain's ``q_l ~ 1 / l``) where the mean-field ``chi1``
  is 1 (within ``CRITICAL_CHI1``): the edge of chaos; and
  ``stable`` when it *settled* (a fixed point reached early, see ``classify``).
- **correlation collapse**: of the input pairs' distinguishability ``1 - c``, the last
  layer keeps less than a share ``separation`` (``(1 - c_L) / (1 - c_0)``: the c-map has
  reached its fixed point at 1 and the net no longer tells its inputs apart: sigmoid).
- **rank collapse**: the last layer's effective rank (directions that carry the batch's
  variance) below ``rank`` (units that compute the same thing: ``constant``, ``ones``).
- **dead units** (ReLU family): a dead share at the last layer above ``dead``.

The ``signal`` and ``gradients`` labels describe what the variance does (vanishing or
exploding beyond a fourfold change, ``DESCRIBED_BITS``); only the fitted thresholds decide
the prediction. A scheme is predicted to train when it fails none of the modes.
:func:`near_best` finds the thresholds of :data:`CANDIDATES` that agree with training
about as often as the best on the cells it is given (half of the calibration preset's
split part: :func:`held_out` keeps the rest unseen, and its fresh part has sizes the fit
never sees); of those, ``classify.fit`` keeps the one
whose recommendations hold up best. :data:`RULE` is what it returned on
``results/calibration`` (``scripts/calibrate.py``).
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

DESCRIBED_BITS = 2.0  # the labels: a change beyond fourfold is vanishing or exploding
CRITICAL_EXPONENT = 2.0  # a power law no steeper than 1 / l^2 is critical, not exponential
CRITICAL_CHI1 = 0.02  # the mean-field chi1 this close to 1: the edge of chaos
SETTLED = 0.5  # bits over the deep half: the quantity has stopped moving
SETTLED_LIMIT = 6.0  # bits: no change beyond this is stable, settled or not
DECISIVE = ("trains", "stalls", "diverges")  # training outcomes a prediction is checked against
MODES = ("non-finite", "gradients", "signal", "correlation collapse", "rank collapse", "dead units")


@dataclass(frozen=True)
class Rule:
    """The thresholds of the verdict rule (see the module's docstring)."""

    gradient_bits: float
    signal_bits: float
    separation: float
    rank: float
    dead: float

    def as_text(self) -> str:
        """The rule in words, as the pages print it (a mode whose threshold fails nothing
        is named as unused)."""
        used, unused = [], []
        clauses = (
            (
                self.gradient_bits < math.inf,
                f"the gradients change by more than {self.gradient_bits:g} bits (depth > "
                f"{self.gradient_bits * math.log(2):.2g} gradient depth scales)",
                "the gradients' change",
            ),
            (
                self.signal_bits < math.inf,
                f"the signal changes by more than {self.signal_bits:g} bits (unless critical)",
                "the signal's change",
            ),
            (
                self.separation > 0,
                f"the last layer keeps less than {self.separation:g} of the input pairs' "
                "distinguishability (1 - correlation)",
                "the correlation",
            ),
            (
                self.rank > 0,
                f"the last layer's effective rank is below {self.rank:g} directions",
                "the effective rank",
            ),
            (
                self.dead < math.inf,
                f"more than {self.dead:g} of its units are dead",
                "dead units",
            ),
        )
        for active, text, name in clauses:
            (used if active else unused).append(text if active else name)
        line = "trains unless " + _listed(["a statistic is not finite", *used], "or")
        if unused:
            line += f"; {_listed(unused, 'and')} did not help predict training (no threshold)"
        return line


def _listed(items: list[str], last: str) -> str:
    """``a, b or c``."""
    return ", ".join(items[:-1]) + f" {last} " + items[-1] if len(items) > 1 else items[0]


CANDIDATES = {
    "gradient_bits": (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0, math.inf),
    "signal_bits": (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0, math.inf),
    "separation": (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7),
    "rank": (0.0, 1.1, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0),
    "dead": (0.5, 0.8, 0.9, 0.95, math.inf),
}

# fitted by scripts/calibrate.py on the fitting half of results/calibration, and its
# agreement with training on the held-out half and the fresh sizes (test_rule checks both
# against the files)
RULE = Rule(gradient_bits=12.0, signal_bits=math.inf, separation=0.0, rank=3.0, dead=math.inf)
CHECKED = {
    "held-out": {"accuracy": 0.949, "decisive": 652, "covered": 1.0, "bad_recommended": 0},
    "fresh": {"accuracy": 0.929, "decisive": 434, "covered": 1.0, "bad_recommended": 1},
}


def held_out(cells: pd.DataFrame) -> pd.Series:
    """Which rows' cells the fit never sees: of each activation and depth, every other
    width (which one first, by a hash of the activation and depth), so that both halves
    span every activation and depth and every scheme of a cell falls on one side."""
    widths = {w: i for i, w in enumerate(sorted(cells["width"].unique()))}
    key = cells["activation"] + "|" + cells["depth"].astype(str)
    parity = key.map(lambda k: zlib.crc32(k.encode()) % 2)
    return ((parity + cells["width"].map(widths)) % 2 == 1).astype(bool)


def _beyond(mean: np.ndarray, half: np.ndarray, bits: float) -> tuple[np.ndarray, np.ndarray]:
    """Whether the 95% interval lies below ``-bits`` (vanishing) or above ``bits``."""
    half = np.where(np.isnan(half), 0.0, half)
    return mean + half < -bits, mean - half > bits


def _labels(m: pd.DataFrame, name: str, bits: float) -> np.ndarray:
    """``stable``, ``vanishing``, ``exploding`` or ``""`` (nothing measured) per row."""
    mean = m[f"{name}_change"].to_numpy(float)
    low, high = _beyond(mean, m[f"{name}_ci"].to_numpy(float), bits)
    settle = m[f"{name}_settle"].to_numpy(float)
    settled = (np.abs(settle) <= SETTLED) & (np.abs(mean) <= SETTLED_LIMIT)
    label = np.where(low & ~settled, "vanishing", np.where(high & ~settled, "exploding", "stable"))
    label = np.where(np.isnan(mean), "", label)
    label = np.where(m[f"{name}_nonfinite"].to_numpy(float) == 1, "exploding", label)
    return np.where(m[f"{name}_zero"].to_numpy(float) == 1, "vanishing", label)


def predict(measures: pd.DataFrame, rule: Rule = RULE) -> pd.DataFrame:
    """Each row's labels and prediction under ``rule``.

    Args:
        measures: one row per scheme and cell, with the columns of
            :func:`~initbench.report.classify.cell_measures`.
        rule: the thresholds.

    Returns:
        Columns ``signal`` (``stable``, ``critical``, ``vanishing``, ``exploding``: what
        the variance does, beyond a fourfold change), ``gradients`` (likewise),
        ``predicted`` (``trains`` or ``fails``, by the rule's thresholds) and ``failure``
        (the failure modes, comma-separated), on ``measures``' index.
    """
    # the labels describe (a fourfold change); the failure modes use the rule's thresholds
    gradients = _labels(measures, "gradients", DESCRIBED_BITS)
    signal = _labels(measures, "signal", DESCRIBED_BITS)
    # a power law no steeper than 1 / l^CRITICAL_EXPONENT, over the deep half and end to end
    exponent = measures["signal_exponent"].to_numpy(float)
    power_law = -CRITICAL_EXPONENT * np.log2(measures["depth"].to_numpy(float))
    chi1 = measures["chi1_theory"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        critical = (
            (exponent >= -CRITICAL_EXPONENT)
            & (measures["signal_change"].to_numpy(float) >= power_law)
            & (signal == "vanishing")
            & (np.abs(chi1 - 1) <= CRITICAL_CHI1)
        )
    signal = np.where(critical, "critical", signal)
    failing_gradients = _labels(measures, "gradients", rule.gradient_bits)
    failing_signal = np.where(critical, "critical", _labels(measures, "signal", rule.signal_bits))
    with np.errstate(invalid="ignore"):
        modes = {
            "non-finite": (measures["signal_nonfinite"] == 1)
            | (measures["gradients_nonfinite"] == 1),
            "gradients": np.isin(failing_gradients, ("vanishing", "exploding")),
            "signal": np.isin(failing_signal, ("vanishing", "exploding")),
            "correlation collapse": measures["separation_last"].to_numpy(float) < rule.separation,
            "rank collapse": measures["rank_last"].to_numpy(float) < rule.rank,
            "dead units": measures["dead_last"].to_numpy(float) > rule.dead,
        }
    names = {
        "gradients": np.char.add("gradients ", failing_gradients.astype(str)),
        "signal": np.char.add("signal ", failing_signal.astype(str)),
    }
    failure = [
        ", ".join(
            str(names[mode][i]) if mode in names else mode
            for mode in MODES
            if bool(np.asarray(modes[mode])[i])
        )
        for i in range(len(measures))
    ]
    return pd.DataFrame(
        {
            "signal": signal,
            "gradients": gradients,
            "predicted": np.where([bool(f) for f in failure], "fails", "trains"),
            "failure": failure,
        },
        index=measures.index,
    )


def near_best(measures: pd.DataFrame, training: pd.Series) -> dict[Rule, np.ndarray]:
    """The thresholds of :data:`CANDIDATES` whose agreement with ``training`` (``trains``
    against ``stalls`` or ``diverges``, on the rows where it is one of them) is within one
    standard error of the best, loosest first (the fewest failures claimed).

    Args:
        measures: one row per scheme and cell (as :func:`predict` takes them).
        training: the training outcome of each row.

    Returns:
        Each rule with the rows of ``measures`` it predicts to fail.
    """
    decisive = training.isin(DECISIVE).to_numpy()
    trains = (training[decisive] == "trains").to_numpy()
    loosest = Rule(math.inf, math.inf, 0.0, 0.0, math.inf)

    def fails(**changed: float) -> np.ndarray:
        rule = Rule(**(asdict(loosest) | changed))
        return (predict(measures, rule)["predicted"] == "fails").to_numpy()

    # each threshold's failures alone, with what fails under any threshold (non-finite
    # values); the signal's also depend on the gradients' threshold
    by_pair = {
        (g, s): fails(gradient_bits=g, signal_bits=s)
        for g, s in itertools.product(CANDIDATES["gradient_bits"], CANDIDATES["signal_bits"])
    }
    singles = {
        name: {v: fails(**{name: v}) for v in CANDIDATES[name]}
        for name in ("separation", "rank", "dead")
    }
    ascending = ("separation", "rank")  # the loosest first: a minimum of 0 fails nothing
    order = {name: sorted(CANDIDATES[name], reverse=name not in ascending) for name in CANDIDATES}
    scored = []
    for g, s, c, r, d in itertools.product(*(order[name] for name in CANDIDATES)):
        predicted_fails = (
            by_pair[(g, s)] | singles["separation"][c] | singles["rank"][r] | singles["dead"][d]
        )
        right = predicted_fails[decisive] != trains
        score = float(right.mean()) if len(trains) else 0.0
        scored.append(
            (score, int(predicted_fails[decisive].sum()), Rule(g, s, c, r, d), predicted_fails)
        )
    top = max(score for score, *_ in scored)
    # one standard error of the best accuracy: rules this close are as good on this data
    tolerance = math.sqrt(top * (1 - top) / max(len(trains), 1))
    near = sorted(
        (claimed, i) for i, (score, claimed, *_) in enumerate(scored) if score >= top - tolerance
    )
    return {scored[i][2]: scored[i][3] for _, i in near}
