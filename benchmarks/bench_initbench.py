"""asv benchmarks of initbench's own speed and key numbers (numpy/pandas style)."""

import random
import tempfile

import torch

import initbench
from initbench import Grid
from initbench.archs import get_arch
from initbench.core.activations import get_activation
from initbench.core.device import resolve_device
from initbench.core.schemes import expand_schemes, get_scheme
from initbench.sweeps.engine import compute_chunk
from initbench.sweeps.grid import Cell, Run

CPU = resolve_device("cpu")


def setup(*params):
    torch.manual_seed(0)


SCHEMES = [s.id for s in expand_schemes(["*"], ["matched"]) if s.recipe is None]
LARGE = ["orthogonal[gain=matched]", "sparse[sparsity=0.1,std=0.01]"]
# Every scheme on 256x256; on the other shapes orthogonal_, sparse_ and a seeded sample of 8
# (scipy's LimitedParamBenchmark idea), so that a full ``asv run`` stays within minutes.
SAMPLED = set(LARGE) | set(random.Random(0).sample(SCHEMES, 8))


class TimeSchemes:
    """Every plain scheme (a recipe draws each weight with one of them) on representative
    weight shapes (a seeded subset of the grid)."""

    params = (SCHEMES, ["256x256", "1024x1024", "64x64x3x3"])
    param_names = ("scheme", "shape")
    rounds = 1
    repeat = (1, 5, 1.0)

    def setup(self, scheme, shape):
        if shape != "256x256" and scheme not in SAMPLED:
            raise NotImplementedError("outside the seeded subset")
        self.scheme = get_scheme(scheme)
        self.shape = tuple(int(s) for s in shape.split("x"))
        if self.scheme.not_applicable(self.shape) or self.scheme.data_dependent:
            raise NotImplementedError("not applicable")
        self.weight = torch.empty(self.shape)
        self.act = get_activation("relu")

    def time_init(self, scheme, shape):
        self.scheme.init(self.weight, self.act, torch.Generator().manual_seed(0))


def _runs(
    arch,
    depth,
    width,
    seeds=4,
    scheme="kaiming_normal[mode=fan_in,nonlinearity=matched]",
    act="relu",
):
    cell = Cell(get_scheme(scheme), get_activation(act), get_arch(arch), depth, width)
    return [Run(cell, s) for s in range(seeds)]


class Probe:
    """Probe time and peak memory by arch x depth x width (4 stacked runs)."""

    params = (["mlp", "cnn"], [5, 20], [64, 256])
    param_names = ("arch", "depth", "width")
    rounds = 1
    repeat = (1, 5, 2.0)

    def setup(self, arch, depth, width):
        if arch == "cnn" and width > 64:
            raise NotImplementedError("cnn widths above 64 are minutes on a CPU")
        self.grid = Grid(batch_size=128, image_size=8)
        self.runs = _runs(arch, depth, width)

    def time_probe(self, arch, depth, width):
        compute_chunk(self.runs, self.grid, CPU, None)

    def peakmem_probe(self, arch, depth, width):
        compute_chunk(self.runs, self.grid, CPU, None)


class TrainStep:
    """Ten training steps of a stacked ensemble of 8 runs on digits."""

    def setup(self):
        self.grid = Grid(dataset="digits", train_steps=10, eval_every=10)
        self.runs = _runs("mlp", 10, 128, seeds=8)
        from initbench.core.data import load_dataset

        self.data = load_dataset("digits")

    def time_train_10_steps(self):
        compute_chunk(self.runs, self.grid, CPU, self.data)


class QuickSweep:
    """The quick preset end to end (about 40 s on 2 cores: one sample)."""

    timeout = 300
    rounds = 1
    repeat = 1
    number = 1
    warmup_time = 0

    def time_quick_preset(self):
        with tempfile.TemporaryDirectory() as tmp:
            initbench.sweep(initbench.preset("quick"), f"{tmp}/q", device="cpu", progress=False)


class TrackNumbers:
    """Numerical regressions show in asv's graphs: ratios at depth 20, width 256, 8 seeds."""

    params = (["relu+kaiming", "tanh+xavier"], ["var_ratio", "grad_ratio"])
    param_names = ("cell", "metric")
    unit = "ratio"

    def setup(self, cell, metric):
        act, scheme = cell.split("+")
        scheme = {
            "kaiming": "kaiming_normal[mode=fan_in,nonlinearity=matched]",
            "xavier": "xavier_normal[gain=unit]",
        }[scheme]
        runs = _runs("mlp", 20, 256, seeds=8, scheme=scheme, act=act)
        self.cells = compute_chunk(runs, Grid(batch_size=256), CPU, None).cells

    def track_geometric_mean(self, cell, metric):
        import numpy as np

        return float(np.exp(np.log(self.cells[metric].astype(float)).mean()))
