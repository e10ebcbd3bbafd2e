"""Named grids: ``initbench sweep --preset NAME``.

A preset is one grid, or several named parts (the atlas: a grid per architecture, each
at the sizes it fits), swept into one folder per part.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass

from initbench.archs import parse_model_id
from initbench.core.errors import UsageError
from initbench.sweeps.grid import Grid, option


@dataclass(frozen=True)
class Preset:
    """A named grid, or a grid per named part; :func:`~initbench.sweeps.run.sweep` takes
    either (a preset with parts sweeps each into a folder of its own)."""

    name: str
    doc: str
    parts: dict[str, Grid]  # one part, named after the preset, for a single grid
    whole: str | None = None  # the preset this one is a part of

    @property
    def single(self) -> bool:
        """One grid (named after the preset), not parts."""
        return list(self.parts) == [self.name]

    def with_values(self, values: dict[str, object]) -> Preset:
        """The preset with ``values`` (grid fields, as :meth:`Grid.from_dict` takes them)
        set in every part; each part is checked as it is made."""
        parts = {name: Grid.from_dict(values, grid) for name, grid in self.parts.items()}
        return dataclasses.replace(self, parts=parts)


PRESETS: dict[str, Preset] = {}


def get_preset(name: str) -> Preset:
    """The preset named ``name``, parts and all.

    Args:
        name: the preset's name.

    Returns:
        The preset.

    Raises:
        UsageError: no preset has that name.
    """
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def preset(name: str) -> Grid | Preset:
    """A named grid, or a preset with parts (``initbench list presets`` shows them all).

    Args:
        name: the preset's name (``default``, ``atlas``, ...).

    Returns:
        Its grid, or, for a preset with parts (the atlas), the :class:`Preset`, which
        :func:`initbench.sweep` sweeps part by part like the command does.

    Raises:
        UsageError: no preset has that name.
    """
    found = get_preset(name)
    return found.parts[name] if found.single else found


# a cell's keys and the grid fields that narrow a sweep to it
CELL_FIELDS = {
    "activation": "activations",
    "arch": "archs",
    "depth": "depths",
    "width": "widths",
    "bias_var": "bias_vars",
}


def cell_command(grid: dict, cell: dict) -> str:
    """The one ``initbench sweep`` command that recomputes a cell of a sweep into
    ``cell/``: ``--preset NAME [--part PART]`` when the sweep's ``grid`` is a preset's,
    then the cell's options; else the options of the grid narrowed to the cell.

    Args:
        grid: the sweep's grid, as its ``meta.json`` holds it.
        cell: the cell's keys (``activation``, ``arch``, ``depth``, ``width``, ``bias_var``).
    """
    swept = Grid.from_dict(grid)
    # a model has its own depth and width: the grid's are left as they were
    own = ("depth", "width") if parse_model_id(str(cell["arch"])) else ()
    narrowed = {field: [cell[key]] for key, field in CELL_FIELDS.items() if key not in own}
    named = _preset_options(swept)
    if named is None:
        options = Grid.from_dict(narrowed, swept).options()
    else:
        options = named + [
            text for field, value in narrowed.items() for text in option(field, value)
        ]
    return shlex.join(["initbench", "sweep", *options, "--out", "cell"])


def _preset_options(grid: Grid) -> list[str] | None:
    """``["--preset", NAME]`` (and ``["--part", PART]``) of the preset whose grid (or
    part) ``grid`` is, or None."""
    for found in PRESETS.values():
        for name, part in found.parts.items():
            if part == grid:
                return ["--preset", found.name, *([] if found.single else ["--part", name])]
    return None


def register_preset(
    name: str,
    doc: str,
    grid: Grid | None = None,
    *,
    parts: dict[str, Grid] | None = None,
    whole: str | None = None,
) -> None:
    if name in PRESETS:
        raise ValueError(f"a preset named {name!r} is already registered")
    if (grid is None) == (parts is None):
        raise ValueError("give a preset either one grid or its parts")
    PRESETS[name] = Preset(name, doc, parts or {name: grid}, whole)


ACTIVATIONS = ("identity", "tanh", "sigmoid", "relu", "leaky_relu", "selu", "gelu", "silu")
# the families of torch.nn.init and the four beyond it that the published atlas and the
# committed calibration were computed with (the recipes join them when those are next
# computed)
CLASSIC = (
    "uniform",
    "normal",
    "trunc_normal",
    "constant",
    "ones",
    "zeros",
    "eye",
    "dirac",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "sparse",
    "delta_orthogonal",
    "variance_scaling",
    "torch_default",
    "lsuv",
)
HE = "kaiming_normal[mode=fan_in,nonlinearity=matched]"
# the residual-era methods, the width rules and the data-dependent fits, beside He's and
# torch's initializations
RESIDUAL = (HE, "torch_default", "fixup", "skipinit", "rezero", "zero_hadamard")
RESIDUAL += ("gradinit", "metainit", "spectral", "u_mup")
# the transformer recipes, beside Xavier's (torch's nn.Transformer), torch's and a flat 0.02
TRANSFORMER = ("xavier_uniform[gain=unit]", "torch_default", "normal[std=0.02]", "gpt2")
TRANSFORMER += ("megatron", "mitchell", "depth_init", "small_init_emb", "mimetic", "deepnorm")
TRANSFORMER += ("t_fixup", "fixup", "rezero", "skipinit", "spectral", "mup", "u_mup")

register_preset(
    "quick",
    "probe only, about two minutes on 2 cores: every classic scheme and the width rules "
    "on tanh, relu and sigmoid mlps (depths 5, 20, 50; widths 64, 256); the residual-era "
    "methods and data-dependent fits on relu and tanh residual mlps (depths 5, 20); the "
    "transformer recipes on gpts (depths 2, 8; width 64); 2 seeds",
    parts={
        "mlp": Grid(
            schemes=(*CLASSIC, "spectral", "mup", "u_mup"),
            activations=("tanh", "relu", "sigmoid"),
            depths=(5, 20, 50),
            widths=(64, 256),
            seeds=2,
        ),
        "resmlp": Grid(
            schemes=(*RESIDUAL, "mup"),
            activations=("relu", "tanh"),
            archs=("resmlp",),
            depths=(5, 20),
            widths=(64, 256),
            seeds=2,
        ),
        "gpt": Grid(
            schemes=TRANSFORMER,
            activations=("gelu",),
            archs=("gpt",),
            depths=(2, 8),
            widths=(64,),
            seeds=2,
            batch_size=32,
        ),
    },
)
register_preset(
    "default",
    "trained, a few minutes on 2 cores: the classic schemes on tanh and relu mlps of depth "
    "5, 15 and 30, width 128, 3 seeds, probed on a digits batch, then 300 SGD steps (lr "
    "0.003, momentum 0.9, batch 128) on digits; the residual-era methods, data-dependent "
    "fits and width rules on relu residual mlps of depth 10 and 30, width 64, trained so; "
    "the transformer recipes on gpts of 2 blocks, width 32, 300 Adam steps (lr 0.003, batch "
    "16) on chars (target: a third of the next characters right, beyond the 30% of always "
    "guessing the commonest), 2 seeds",
    parts={
        "mlp": Grid(
            schemes=(
                "xavier_normal",
                "kaiming_normal[mode=fan_in,nonlinearity=matched]",
                "orthogonal",
                "normal[std=0.01]",
                "torch_default",
                "lsuv",
            ),
            activations=("tanh", "relu"),
            depths=(5, 15, 30),
            widths=(128,),
            seeds=3,
            dataset="digits",
            train_steps=300,
            lr=0.003,
        ),
        "resmlp": Grid(
            schemes=(*RESIDUAL, "mup[base_width=32]"),
            activations=("relu",),
            archs=("resmlp",),
            depths=(10, 30),
            widths=(64,),
            seeds=3,
            dataset="digits",
            train_steps=300,
            lr=0.003,
        ),
        "gpt": Grid(
            schemes=TRANSFORMER,
            activations=("gelu",),
            archs=("gpt",),
            depths=(2,),
            widths=(32,),
            seeds=2,
            batch_size=32,
            histograms=False,
            dataset="chars",
            train_steps=300,
            train_batch_size=16,
            optimizer="adam",
            lr=0.003,
            eval_every=50,
            target_accuracy=0.33,  # a third of the next characters right
        ),
    },
)
register_preset(
    "full",
    "every classic scheme and the width rules x every activation x mlp and cnn x depths "
    "2-50 x widths 64-256, 5 seeds, probed on digits (days on a 2-core CPU, about an hour "
    "on one GPU; spread it with --executor ray)",
    Grid(
        schemes=(*CLASSIC, "spectral", "mup", "u_mup"),
        activations=ACTIVATIONS,
        archs=("mlp", "cnn"),
        depths=(2, 5, 10, 20, 50),
        widths=(64, 128, 256),
        seeds=5,
        dataset="digits",
    ),
)

CALIBRATION = Grid(  # every run trained at three learning rates, judged at its best
    schemes=CLASSIC,
    activations=ACTIVATIONS,
    depths=(5, 20, 50),
    widths=(32, 64),
    seeds=3,
    batch_size=128,
    histograms=False,
    dataset="digits",
    train_steps=150,
    train_batch_size=64,
    lrs=(0.001, 0.01, 0.1),
    eval_every=50,
)
register_preset(
    "calibration",
    "every classic scheme x every activation on mlps, 3 seeds, each run trained 150 SGD steps on "
    "digits at lr 0.001, 0.01 and 0.1 (its outcome at the best): the cells the verdict rule "
    "is fitted and checked on. Part split (depths 5, 20 and 50, widths 32 and 64): fitted on "
    "one half of its cells, checked on the other; part fresh (depths 10 and 30, width 48): "
    "sizes the fit never saw (about 35 minutes on 2 cores)",
    parts={
        "split": CALIBRATION,
        "fresh": Grid.from_dict({"depths": [10, 30], "widths": [48]}, CALIBRATION),
    },
)

# The atlas: every classic scheme x every activation, 5 seeds, probed with histograms and input-pair
# correlations on standard-normal inputs; the mlp and resmlp also trained on digits.
PROBE = Grid(schemes=CLASSIC, activations=ACTIVATIONS, seeds=5, histograms=True, input_corr=0.5)
TRAINED = Grid.from_dict(
    {"dataset": "digits", "train_steps": 200, "lr": 0.003, "eval_every": 20}, PROBE
)
DEPTHS = (2, 5, 10, 20, 50, 100)
WIDTHS = (64, 128, 256, 512, 1024)
ATLAS = {
    "mlp": Grid.from_dict({"archs": ["mlp"], "depths": DEPTHS, "widths": WIDTHS}, PROBE),
    "resmlp": Grid.from_dict({"archs": ["resmlp"], "depths": DEPTHS, "widths": WIDTHS}, PROBE),
    "resmlp-norm": Grid.from_dict(
        {"archs": ["resmlp[norm=layer]"], "depths": DEPTHS, "widths": WIDTHS}, PROBE
    ),
    "mlp-trained": Grid.from_dict(
        {"archs": ["mlp"], "depths": [2, 5, 10, 20, 50], "widths": [64, 128, 256]}, TRAINED
    ),
    "resmlp-trained": Grid.from_dict(
        {"archs": ["resmlp"], "depths": [2, 5, 10, 20, 50], "widths": [64, 128, 256]}, TRAINED
    ),
    # channels, blocks and batches that fit: 8x8 images, 3x3 convolutions
    "cnn": Grid.from_dict(
        {
            "archs": ["cnn"],
            "depths": [2, 5, 10, 20, 50],
            "widths": [32, 64, 128],
            "batch_size": 128,
        },
        PROBE,
    ),
    "resnet": Grid.from_dict(
        {"archs": ["resnet"], "depths": [2, 5, 10, 20], "widths": [32, 64], "batch_size": 128},
        PROBE,
    ),
    # 16-token sequences, heads of 64 units
    "transformer": Grid.from_dict(
        {
            "archs": ["transformer"],
            "depths": [2, 5, 10, 20],
            "widths": [64, 128, 256],
            "batch_size": 64,
        },
        PROBE,
    ),
}
register_preset(
    "atlas",
    "every classic scheme x every activation x every arch, 5 seeds, with histograms and "
    "correlations: "
    "mlp and resmlp at depths 2-100 and widths 64-1024 (and trained on digits for 200 steps "
    "at depths 2-50, widths 64-256), cnn (32-128 channels, depths 2-50), resnet (32-64 "
    "channels, 2-20 blocks) and transformer (widths 64-256, 2-20 blocks); sized for one "
    "GPU (see docs/atlas.md)",
    parts=ATLAS,
)
register_preset(
    "atlas-cpu",
    "the part of the atlas that fits 45 minutes on 2 CPU cores: every architecture probed "
    "(mlp at depths 2-50, resmlp with and without LayerNorm at depths 5-50, widths 64 and "
    "256; cnn at 32 channels, depths 5 and 20; resnet at 32 channels, 2 and 5 blocks; "
    "transformer at width 64, 2 and 5 blocks), and mlps trained on digits at width 128, "
    "depth 20",
    parts={
        "mlp": Grid.from_dict({"depths": [2, 5, 10, 20, 50], "widths": [64, 256]}, ATLAS["mlp"]),
        "resmlp": Grid.from_dict({"depths": [5, 20, 50], "widths": [64, 256]}, ATLAS["resmlp"]),
        "resmlp-norm": Grid.from_dict(
            {"depths": [5, 20, 50], "widths": [64, 256]}, ATLAS["resmlp-norm"]
        ),
        "cnn": Grid.from_dict({"depths": [5, 20], "widths": [32]}, ATLAS["cnn"]),
        "resnet": Grid.from_dict({"depths": [2, 5], "widths": [32]}, ATLAS["resnet"]),
        "transformer": Grid.from_dict({"depths": [2, 5], "widths": [64]}, ATLAS["transformer"]),
        "mlp-trained": Grid.from_dict({"depths": [20], "widths": [128]}, ATLAS["mlp-trained"]),
    },
    whole="atlas",
)
