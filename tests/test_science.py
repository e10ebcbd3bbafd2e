"""Signal-propagation science against closed forms and independent computations: biases,
the correlation map and its depth scales, Jacobian spectra."""

import math

import numpy as np
import pytest
import torch

from initbench import Grid
from initbench.archs import get_arch
from initbench.core import theory
from initbench.core.activations import get_activation
from initbench.core.schemes import get_scheme
from initbench.sweeps.engine import compute_chunk
from initbench.sweeps.grid import Cell, Run

CPU = torch.device("cpu")
NODES, WEIGHTS = np.polynomial.hermite.hermgauss(80)
Z = NODES * math.sqrt(2)
W = WEIGHTS / math.sqrt(math.pi)


def gauss(f) -> float:
    return float(np.sum(W * f(Z)))


def gauss2(f, q: float, c: float) -> float:
    """E[f(u1, u2)] for u1, u2 ~ N(0, q) with correlation c, by a 2-D Gauss-Hermite sum."""
    z1, z2 = np.meshgrid(Z, Z, indexing="ij")
    u1 = math.sqrt(q) * z1
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    return float(np.sum(np.outer(W, W) * f(u1, u2)))


def _runs(scheme, activation, depth, width, seeds, arch="mlp", bias_var=0.0):
    cell = Cell(
        get_scheme(scheme), get_activation(activation), get_arch(arch), depth, width, bias_var
    )
    return [Run(cell, seed) for seed in range(seeds)]


def test_tanh_fixed_points_and_chi1_match_an_independent_quadrature():
    sigma_w2, sigma_b2 = 1.5, 0.05
    found = theory.depth_scales(torch.tanh, sigma_w2, sigma_b2)
    q = 1.0
    for _ in range(3000):  # the variance map by plain fixed-point iteration
        q = sigma_w2 * gauss(lambda z, q=q: np.tanh(math.sqrt(q) * z) ** 2) + sigma_b2
    assert found["q_star"] == pytest.approx(q, rel=1e-6)
    chi1 = sigma_w2 * gauss(lambda z: (1 - np.tanh(math.sqrt(q) * z) ** 2) ** 2)
    assert found["chi1"] == pytest.approx(chi1, rel=1e-6)
    assert chi1 < 1 and found["c_star"] == 1.0  # ordered phase: correlations go to 1
    assert found["xi_c"] == pytest.approx(-1 / math.log(chi1), rel=1e-6)
    # chaotic phase: c* < 1 solves c = (sigma_w^2 E[tanh tanh] + sigma_b^2) / q*
    chaotic = theory.depth_scales(torch.tanh, 4.0, 0.05)
    q = chaotic["q_star"]
    c = chaotic["c_star"]
    cmap = (4.0 * gauss2(lambda a, b: np.tanh(a) * np.tanh(b), q, c) + 0.05) / q
    assert chaotic["chi1"] > 1 and 0 < c < 1
    assert cmap == pytest.approx(c, abs=1e-6)


def test_relu_c_map_matches_the_arc_cosine_kernel():
    # Kaiming ReLU: c_{l+1} = (sqrt(1 - c^2) + (pi - arccos c) c) / pi (Cho & Saul 2009)
    found = theory.depth_scales(torch.relu, 2.0, 0.0)
    assert found["chi1"] == pytest.approx(1.0) and found["c_star"] == 1.0
    assert found["xi_c"] == math.inf
    expected, c = [0.3], 0.3
    for _ in range(5):
        c = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
        expected.append(c)
    predicted = theory.pair_corr(torch.relu, [2.0] * 6, [2.0] * 6, 0.3)
    # Gauss-Hermite converges slowly across ReLU's kink (error about 0.06 / nodes): with 200
    # nodes a side each step is within 6e-4, five steps within 2e-3 (smooth activations
    # such as tanh are exact to 1e-6, above)
    assert predicted == pytest.approx(expected, abs=2.5e-3)


def test_measured_correlations_follow_the_c_map_at_width_1024():
    """tanh in the chaotic phase (gain 2): pairs decorrelate towards c* < 1.

    The band: each run averages B / 2 = 128 pair cosines of N = 1024 units, whose noise is
    about 1 / sqrt(N B / 2) ~ 0.003; finite-width corrections of the c-map are O(1 / N).
    The mean of 2 seeds must sit within 0.02 of the theory at every layer."""
    grid = Grid(batch_size=256, input_corr=0.5)
    records = compute_chunk(_runs("xavier_normal[gain=2]", "tanh", 8, 1024, 2), grid, CPU, None)
    layers = records.layers.groupby("layer")[["corr", "theory_corr"]].mean()
    assert layers["theory_corr"].iloc[0] == pytest.approx(0.5, abs=1e-6)
    assert layers["theory_corr"].iloc[-1] < 0.4  # it does decorrelate
    assert (layers["corr"] - layers["theory_corr"]).abs().max() < 0.02
    cells = records.cells
    assert cells["input_corr"].to_numpy() == pytest.approx([0.5, 0.5], abs=0.02)
    assert (cells["chi1"] > 1).all()


def test_bias_variance_enters_the_variance_map():
    grid = Grid(batch_size=256)
    runs = _runs("xavier_normal[gain=unit]", "tanh", 6, 512, 4, bias_var=0.3)
    records = compute_chunk(runs, grid, CPU, None)
    layers = records.layers
    assert set(records.cells["bias_var"]) == {0.3}
    assert runs[0].id.endswith("|b0.3|s0")
    q1 = layers.loc[layers["layer"] == 1, "theory_pre_var"].iloc[0]
    assert q1 == pytest.approx(1.0 + 0.3)  # sigma_w^2 E[x^2] + sigma_b^2
    q2 = layers.loc[layers["layer"] == 2, "theory_pre_var"].iloc[0]
    assert q2 == pytest.approx(gauss(lambda z: np.tanh(math.sqrt(q1) * z) ** 2) + 0.3, rel=1e-6)
    ratio = (layers["pre_var"] / layers["theory_pre_var"]).groupby(layers["layer"]).mean()
    assert ratio.to_numpy() == pytest.approx(np.ones(6), abs=0.05)


def test_jacobian_of_an_orthogonal_linear_stack_is_orthogonal():
    grid = Grid(batch_size=8, jacobian=True)
    records = compute_chunk(_runs("orthogonal[gain=unit]", "identity", 20, 64, 2), grid, CPU, None)
    cells = records.cells
    assert cells["jac_s_max"].to_numpy() == pytest.approx([1, 1], abs=1e-4)
    assert cells["jac_s_min"].to_numpy() == pytest.approx([1, 1], abs=1e-4)
    assert cells["jac_s2_var"].to_numpy() == pytest.approx([0, 0], abs=1e-6)
    spectra = records.spectra
    assert spectra["count"].sum() == 2 * 4 * 64  # 2 runs x 4 samples x 64 singular values
    # 1 +- float rounding: the two bins that meet at 1
    assert (spectra["lo"] >= 10 ** (-1 / 8) - 1e-9).all() and (spectra["hi"] <= 10 ** (1 / 8)).all()


def test_jacobian_spread_of_a_gaussian_linear_stack_grows_with_depth():
    grid = Grid(batch_size=8, jacobian=True)
    spread = []
    for depth in (2, 8, 32):
        runs = _runs("normal[std=0.125]", "identity", depth, 64, 3)  # variance 1 / N
        cells = compute_chunk(runs, grid, CPU, None).cells
        # E[s^2] = tr(J J^T) / N = 1 in expectation for any depth
        assert cells["jac_s2_mean"].mean() == pytest.approx(1.0, rel=0.35)
        spread.append(cells["jac_s2_var"].mean())
    assert spread[0] < spread[1] < spread[2]
    assert spread[2] > 5 * spread[0]


def test_jacobian_needs_a_vector_arch_and_a_width_within_the_limit():
    from initbench.core.errors import UsageError

    with pytest.raises(UsageError, match="each sample on its own"):
        Grid(archs=("resnet",), jacobian=True).runs()
    with pytest.raises(UsageError, match="limited to widths and inputs of up to 1024"):
        Grid(widths=(2048,), jacobian=True).runs()
    with pytest.raises(UsageError, match="1600 input values"):  # 16 channels of 10 x 10
        Grid(archs=("cnn",), widths=(16,), image_size=10, jacobian=True).runs()
