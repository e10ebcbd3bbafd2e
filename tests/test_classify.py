"""Each classification rule on made-up stores, including the contradictions the old report
made: one scheme both best and failing, a settled tanh called vanishing, a twofold-per-8-
layers explosion not flagged, gradients of exactly 0 ignored. The mechanism is tested at
thresholds of 2 bits (``TWO_BITS``); the fitted thresholds on real sweeps in test_rule.py."""

import math

import numpy as np
import pandas as pd
import pytest

from initbench.report.classify import (
    Score,
    agreement,
    classify,
    equivalence_groups,
    failing,
    quantity_measures,
)
from initbench.report.rule import Rule
from initbench.sweeps.grid import Grid
from initbench.sweeps.schema import CELL_COLUMNS

TWO_BITS = Rule(gradient_bits=2.0, signal_bits=2.0, separation=0.0, rank=0.0, dead=math.inf)
CELL = {"activation": "relu", "arch": "mlp", "width": 64, "bias_var": 0.0}


def made_up(schemes: dict, depth: int, seeds: int = 3, noise: float = 0.02, **columns):
    """cells and layers for ``schemes``: name -> (pre_var per layer, grad_h_var per layer).

    Seed s scales every layer's value by a random factor within ``noise`` (log2 units)."""
    rng = np.random.default_rng(0)
    cells, layers = [], []
    for scheme, (pre, grad) in schemes.items():
        for seed in range(seeds):
            run_id = f"{scheme}|s{seed}"
            row = {
                "run_id": run_id,
                "scheme_id": scheme,
                "seed": seed,
                "depth": depth,
                "status": "ok",
            }
            cells.append(
                CELL
                | row
                | {k: v[scheme][seed] if isinstance(v, dict) else v for k, v in columns.items()}
            )
            jitter = 2.0 ** rng.normal(0, noise, depth)
            for layer in range(depth):
                layers.append(
                    {
                        "run_id": run_id,
                        "layer": layer + 1,
                        "pre_var": pre[layer] * jitter[layer],
                        "grad_h_var": grad[layer] * jitter[::-1][layer],
                    }
                )
    frame = pd.DataFrame(cells)
    for column, dtype in CELL_COLUMNS.items():
        if column not in frame:
            frame[column] = pd.NA if dtype == "string" else np.nan
    return frame[list(CELL_COLUMNS)].astype(CELL_COLUMNS), pd.DataFrame(layers)


def flat(depth):
    return [1.0] * depth


def verdict(verdicts, scheme):
    return verdicts.set_index("scheme_id").loc[scheme]


def test_a_variance_that_settles_at_a_fixed_point_is_stable():
    # tanh with the matched gain: the variance drops eightfold over two layers, then holds
    settled = [8.0, 2.0] + [1.0] * 8
    cells, layers = made_up({"tanh_matched": (settled, flat(10))}, depth=10)
    row = verdict(classify(cells, layers, trained=False, rule=TWO_BITS), "tanh_matched")
    assert row["signal_change"] == pytest.approx(-3.0, abs=0.1)
    assert row["signal"] == "stable" and row["recommended"]


def test_a_collapse_that_then_holds_is_not_stable():
    # sigmoid with eye weights: the variance falls 2^-46 over ten layers, then holds
    collapsed = [2.0 ** -min(layer * 4.6, 46) for layer in range(30)]
    cells, layers = made_up({"eye": (collapsed, flat(30))}, depth=30)
    row = verdict(classify(cells, layers, trained=False, rule=TWO_BITS), "eye")
    assert row["signal_change"] == pytest.approx(-46, abs=0.1)
    assert row["signal"] == "vanishing"


def test_a_power_law_decay_with_steady_gradients_is_critical_not_vanishing():
    # tanh with Xavier gain 1: q_l ~ 1 / (2 l), chi1 = 1: the edge of chaos, which trains
    decaying = [1 / (2 * (layer + 1)) for layer in range(15)]
    cells, layers = made_up({"xavier_unit": (decaying, flat(15))}, depth=15, chi1=1.0)
    row = verdict(classify(cells, layers, trained=False, rule=TWO_BITS), "xavier_unit")
    assert row["signal_change"] == pytest.approx(math.log2(1 / 15), abs=0.1)
    assert row["signal_exponent"] == pytest.approx(-1, abs=0.05)
    assert row["signal"] == "critical" and row["predicted"] == "trains" and row["recommended"]


def test_an_exponential_decay_of_the_same_size_is_vanishing():
    # the same fall end to end, as a constant factor per layer: exponential, not critical
    decaying = [(1 / 15) ** (layer / 14) for layer in range(15)]
    cells, layers = made_up({"small": (decaying, flat(15))}, depth=15, chi1=1.0)
    row = verdict(classify(cells, layers, trained=False, rule=TWO_BITS), "small")
    assert row["signal_change"] == pytest.approx(math.log2(1 / 15), abs=0.1)
    assert row["signal_exponent"] < -2
    assert row["signal"] == "vanishing" and row["failure"] == "signal vanishing"


def test_a_slow_explosion_over_many_layers_is_flagged():
    # relu with Xavier gain 1.5: 1.125x per layer, 2^8.3 over 50 layers (1.2 bits a layer
    # of seed noise at width 128)
    growing = [1.125**layer for layer in range(50)]
    cells, layers = made_up(
        {"xavier_1.5": (growing, flat(50)), "kaiming": (flat(50), flat(50))}, depth=50, noise=0.3
    )
    verdicts = classify(cells, layers, trained=False, rule=TWO_BITS)
    assert verdict(verdicts, "xavier_1.5")["signal"] == "exploding"
    assert verdict(verdicts, "kaiming")["signal"] == "stable"
    assert verdicts.loc[verdicts["recommended"], "scheme_id"].tolist() == ["kaiming"]


def test_gradients_of_exactly_zero_vanish():
    zero = [0.0] * 5
    cells, layers = made_up({"zeros": (flat(5), zero), "ok": (flat(5), flat(5))}, depth=5)
    verdicts = classify(cells, layers, trained=False, rule=TWO_BITS)
    row = verdict(verdicts, "zeros")
    assert row["gradients"] == "vanishing" and row["gradients_change"] == -math.inf
    assert not row["recommended"] and verdict(verdicts, "ok")["recommended"]


def test_a_run_that_diverged_at_initialization_explodes():
    cells, layers = made_up({"huge": (flat(4), flat(4))}, depth=4)
    cells["status"] = "diverged"
    cells["reason"] = "non-finite activations or gradients at initialization"
    row = verdict(classify(cells, layers, trained=False, rule=TWO_BITS), "huge")
    assert row["signal"] == "exploding" and not row["recommended"]


def test_the_best_scheme_is_never_also_failing():
    # "vanish" drifts least in total (it is exactly flat backwards), but its signal vanishes
    vanishing = [2.0**-layer for layer in range(8)]
    cells, layers = made_up(
        {"vanish": (vanishing, flat(8)), "a": (flat(8), flat(8)), "b": (flat(8), [1.3] * 8)},
        depth=8,
    )
    verdicts = classify(cells, layers, trained=False, rule=TWO_BITS)
    assert not (verdicts["recommended"] & failing(verdicts, trained=False)).any()
    assert not verdict(verdicts, "vanish")["recommended"]


def test_ties_are_said_and_clear_losers_are_not_recommended():
    accuracy = {
        "best": [0.981, 0.975, 0.987],
        "close": [0.983, 0.970, 0.986],  # differences from the best change sign: a tie
        # behind on every seed (the paired test separates it) but the two means' intervals
        # overlap: both tests must agree to set a scheme apart, so it ties
        "behind": [0.978, 0.972, 0.985],
        "worse": [0.90, 0.89, 0.91],  # both tests separate it
    }
    schemes = {name: (flat(5), flat(5)) for name in accuracy}
    steps = {name: [50.0] * 3 for name in accuracy}
    cells, layers = made_up(schemes, depth=5, final_test_acc=accuracy, steps_to_target=steps)
    verdicts = classify(cells, layers, trained=True, rule=TWO_BITS)
    assert set(verdicts.loc[verdicts["recommended"], "scheme_id"]) == {"best", "close", "behind"}
    assert set(verdicts["training"]) == {"trains"}


@pytest.mark.parametrize(
    ("score", "tied"),
    [
        (Score(rank_bits=0.0, free_bits=0.0, margin=0.0), False),
        (Score(rank_bits=0.0, free_bits=0.0, margin=2.0), True),  # within 2 bits of the best
        (Score(rank_bits=0.0, free_bits=1.0, margin=0.0), True),  # 1 bit of drift is free
        (Score(rank_bits=0.0, free_bits=0.5, margin=0.4), False),  # 0.5 bits behind
    ],
)
def test_a_margin_or_free_bits_tie_a_scheme_one_bit_of_drift_behind(score, tied):
    # "drift"'s gradients double over its 4 layers, the same on every seed: apart from
    # "flat" by both tests unless the score forgives the bit
    schemes = {
        "flat": (flat(4), flat(4)),
        "drift": (flat(4), [2.0 ** (1 - i / 3) for i in range(4)]),
    }
    cells, layers = made_up(schemes, depth=4)
    verdicts = classify(cells, layers, trained=False, rule=TWO_BITS, score=score)
    assert verdict(verdicts, "drift")["gradients_change"] == pytest.approx(1.0, abs=0.1)
    assert verdict(verdicts, "flat")["recommended"]
    assert verdict(verdicts, "drift")["recommended"] == tied


def test_with_one_seed_every_scheme_that_passes_is_tied():
    schemes = {"a": (flat(4), flat(4)), "b": (flat(4), [2.0] * 4)}
    cells, layers = made_up(schemes, depth=4, seeds=1)
    verdicts = classify(cells, layers, trained=False, rule=TWO_BITS)
    assert verdicts["recommended"].all()
    assert verdicts["signal_ci"].isna().all()  # no interval from one seed


def test_training_labels():
    """Every seed reaches the target: trains; none: stalls; some: mixed (not recommended,
    and not decisive: agreement leaves it out)."""
    names = ("trains", "mixed", "stalls", "diverges")
    schemes = {name: (flat(3), flat(3)) for name in names}
    steps = {
        "trains": [40.0, 60.0, 90.0],
        "mixed": [40.0, np.nan, np.nan],
        "stalls": [np.nan] * 3,
        "diverges": [40.0] * 3,
    }
    diverged = {name: [np.nan] * 3 for name in names} | {"diverges": [np.nan, 12.0, np.nan]}
    acc = {
        "trains": [0.9] * 3,
        "mixed": [0.85, 0.6, 0.6],
        "stalls": [0.3] * 3,
        "diverges": [0.9] * 3,
    }
    cells, layers = made_up(
        schemes, depth=3, steps_to_target=steps, diverged_step=diverged, final_test_acc=acc
    )
    verdicts = classify(cells, layers, trained=True, rule=TWO_BITS).set_index("scheme_id")
    assert verdicts["training"].to_dict() == {name: name for name in names}
    assert verdicts["recommended"].to_dict() == {
        "trains": True,
        "mixed": False,
        "stalls": False,
        "diverges": False,
    }
    assert failing(verdicts, trained=True)["mixed"]
    assert agreement(verdicts, verdicts["recommended"])["decisive"] == 3


def test_interval_comes_from_per_layer_steps():
    # two seeds of a steady halving with independent per-layer noise
    rng = np.random.default_rng(1)
    steps = -1 + rng.normal(0, 0.3, (2, 9))
    y = np.concatenate([np.zeros((2, 1)), np.cumsum(steps, axis=1)], axis=1)
    measured = quantity_measures(y)
    assert measured["change"] == pytest.approx(steps.sum(1).mean())
    residual = steps - steps.mean(0)
    dof = 1 * 9
    from scipy import stats

    half = stats.t.ppf(0.975, dof) * math.sqrt(9 * (residual**2).sum() / dof / 2)
    assert measured["ci"] == pytest.approx(half)


def grid_cells(grid: Grid) -> pd.DataFrame:
    """The cells rows a sweep of ``grid`` writes, one per cell: its keys and ids."""
    return pd.DataFrame(
        [
            {
                "activation": c.activation.id,
                "arch": c.arch.id,
                "depth": c.depth,
                "width": c.width,
                "bias_var": c.bias_var,
                "scheme_id": c.scheme.id,
                "cell_id": c.id,
            }
            for c in grid.cells()
        ]
    )


def test_schemes_drawing_the_same_weights_are_one_group():
    schemes = (
        "xavier_normal[gain=matched]",
        "kaiming_normal[mode=fan_in,nonlinearity=matched]",
        "kaiming_normal[mode=fan_out,nonlinearity=matched]",
        "orthogonal[gain=matched]",
    )
    grid = Grid(schemes=schemes, activations=("relu", "tanh"), depths=(4,), widths=(64,))
    square = equivalence_groups(grid_cells(grid), grid.weight_signatures())
    assert {square[(a, "mlp", 4, 64, 0.0, s)] for s in schemes[:3] for a in ("relu", "tanh")} == {
        "xavier_normal[gain=matched]"
    }
    assert square[("relu", "mlp", 4, 64, 0.0, schemes[3])] == schemes[3]
    digits = Grid.from_dict({"dataset": "digits"}, grid)
    groups = equivalence_groups(grid_cells(digits), digits.weight_signatures())
    # the first layer is 64 x 64 on digits too, but the readout is 10 x 64: fans differ
    assert groups[("relu", "mlp", 4, 64, 0.0, schemes[1])] == schemes[1]


def test_without_weight_signatures_every_scheme_is_its_own_group():
    grid = Grid(schemes=("xavier_normal[gain=matched]",), activations=("relu",), depths=(2,))
    assert equivalence_groups(grid_cells(grid), None) == {}


def test_a_scheme_that_cannot_fill_a_weight_is_its_own_group():
    """``dirac`` cannot fill an mlp's 2-D weights: it never absorbs ``eye``, whose moments
    it would share."""
    grid = Grid(schemes=("eye", "dirac"), activations=("tanh",), depths=(3,), widths=(32,))
    groups = equivalence_groups(grid_cells(grid), grid.weight_signatures())
    assert groups[("tanh", "mlp", 3, 32, 0.0, "eye")] == "eye"
    assert groups[("tanh", "mlp", 3, 32, 0.0, "dirac")] == "dirac"
