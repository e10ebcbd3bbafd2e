"""The histogram counts against an independent count: numpy's sorted search over the edges."""

import numpy as np
import pytest
import torch

from initbench.archs.base import Axes
from initbench.core.activations import get_activation
from initbench.measure import histograms

BOUNDS = [None, (-1.0, 1.0), (0.0, 1.0)]


def numpy_counts(values: np.ndarray, bounds) -> np.ndarray:
    """Per run (rows), how many values fall in each bin: bin i holds edges[i-1] < x <=
    edges[i], and NaN the last bin, as torch.bucketize counts."""
    edges = histograms.edges(bounds).astype(values.dtype)
    index = np.searchsorted(edges, values, side="left")
    index[np.isnan(values)] = len(edges)
    return np.stack([np.bincount(row, minlength=len(edges) + 1) for row in index])


def awkward_values(dtype, bounds) -> np.ndarray:
    """Values on, just above and just below every edge, across float32's whole range
    (subnormals included), and the special values."""
    rng = np.random.default_rng(0)
    edges = histograms.edges(bounds).astype(dtype)
    scale = 10.0 ** rng.uniform(-45, 38, 20_000)
    spread = (rng.standard_normal(20_000) * scale).astype(dtype)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 3e38, -3e38])
    near = [edges, np.nextafter(edges, dtype(np.inf)), np.nextafter(edges, dtype(-np.inf))]
    return np.concatenate([spread, *near, special.astype(dtype)])


@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_counts_equal_a_sorted_search_over_the_edges(bounds, dtype):
    values = awkward_values(dtype, bounds)
    runs = -(-len(values) // histograms.SAMPLE)  # each run's values counted on their own
    values = values[: len(values) // runs * runs].reshape(runs, -1)
    assert values.shape[1] <= histograms.SAMPLE
    found = histograms.counts(torch.from_numpy(values.copy()), bounds)
    np.testing.assert_array_equal(found.numpy(), numpy_counts(values, bounds))


def test_a_large_layer_is_counted_on_the_same_fixed_subsample_in_every_run():
    """(batch, runs, units) with the run axis in the middle: each run's SAMPLE values at
    the same positions of its (batch, units) block."""
    rng = np.random.default_rng(1)
    values = rng.standard_normal((300, 2, 50)).astype(np.float32)  # 15,000 values a run
    axes = Axes(run=1, batch=0, positions=(), units=2)
    found = histograms.counts(histograms.sample(torch.from_numpy(values), axes, 2), None).numpy()
    assert (found.sum(1) == histograms.SAMPLE).all()
    chosen = histograms._sample(15_000, torch.device("cpu")).numpy()
    per_run = values.transpose(1, 0, 2).reshape(2, -1)[:, chosen]
    np.testing.assert_array_equal(found, numpy_counts(per_run, None))
    histograms._sample.cache_clear()  # drawn again, the same positions: a fixed seed
    np.testing.assert_array_equal(histograms._sample(15_000, torch.device("cpu")).numpy(), chosen)


@pytest.mark.parametrize("lengths", [(500, 500, 500), (500, 300, 700)])
def test_a_layer_stack_is_counted_as_each_layer_alone(lengths):
    """Layers whose samples have one length are binned in one pass, others one by one:
    either way each (run, layer) has the counts of its own values."""
    rng = np.random.default_rng(2)
    layers = [
        rng.standard_normal((3, n)).astype(np.float32) * 10.0**i for i, n in enumerate(lengths)
    ]
    tanh = get_activation("tanh")
    samples = {q: [torch.from_numpy(layer) for layer in layers] for q in ("pre", "post")}
    found = histograms.layer_counts(samples, tanh)
    for quantity, bounds in (("pre", None), ("post", tanh.bounds)):
        assert found[quantity].shape[:2] == (3, len(lengths))
        for i, layer in enumerate(layers):
            np.testing.assert_array_equal(
                found[quantity][:, i].numpy(), numpy_counts(layer, bounds)
            )


def test_histograms_are_taken_at_up_to_five_layers_first_to_last():
    assert histograms.layers(3) == [1, 2, 3]
    assert histograms.layers(5) == [1, 2, 3, 4, 5]
    assert histograms.layers(50) == [1, 13, 26, 38, 50]
