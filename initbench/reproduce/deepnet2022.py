"""Wang et al. 2022 (DeepNet): DeepNorm trains a deep post-LN transformer that the
standard initialization does not.

A 16-block post-LN GPT (``x_{l+1} = LN(x_l + G(x_l))``) on characters of Python's own
standard library, Adam at one learning rate without warmup: with Xavier's weights the
updates of the deep post-LN stack blow up the branches and the model stalls at the
characters' frequencies (the loss of a model that knows nothing but how often each
character comes); DeepNorm (``LN(alpha x + G(x))`` with ``alpha = (2N)^1/4`` and the value,
output and mlp weights scaled by ``beta = (8N)^-1/4``) learns on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from initbench.core.data import load_dataset
from initbench.report.figures.base import stem
from initbench.reproduce import Outcome
from initbench.reproduce.common import bounds, run_sweep, sweep_figure
from initbench.sweeps.grid import Grid

DEEPNORM = "deepnorm"
XAVIER = "xavier_normal[gain=unit]"
ARCH = "gpt[norm=post,head_dim=8]"


def unigram_bits() -> float:
    """The test split's bits per character under the training split's character
    frequencies: where a model that has learnt only them stands."""
    data = load_dataset("chars")
    counts = torch.bincount(data.y_train.flatten(), minlength=data.info.classes).double()
    frequency = counts / counts.sum()
    return float(-frequency[data.y_test.flatten()].log2().mean())


def run(folder: Path, full: bool, device: str, progress: bool) -> Outcome:
    depth, width = (48, 64) if full else (16, 32)
    grid = Grid(
        schemes=(DEEPNORM, XAVIER),
        activations=("gelu",),
        archs=(ARCH,),
        depths=(depth,),
        widths=(width,),
        seeds=2,
        batch_size=16,
        histograms=False,
        dataset="chars",
        train_steps=1000 if full else 100,
        train_batch_size=16,
        optimizer="adam",
        lr=1e-3,
        eval_every=20,
    )
    cells = run_sweep(folder, "train", grid, device, progress).cells.set_index("scheme_id")
    floor = unigram_bits()
    deepnorm = bounds(cells.loc[DEEPNORM, "final_test_loss"].to_numpy())
    xavier = cells.loc[XAVIER]
    stalled = (xavier["status"] == "diverged") | (xavier["final_test_loss"] > floor - 0.1)
    passed = deepnorm[2] < floor - 0.2 and bool(stalled.all())
    keys = {"arch": ARCH, "width": width, "activation": "gelu"}
    return Outcome(
        expected=f"DeepNorm's {depth}-block post-LN decoder learns beyond the characters' "
        f"frequencies ({floor:.2f} bits per character); with Xavier's weights it diverges "
        "or stalls there at the same learning rate (the paper: post-LN fails beyond about "
        "18 layers, DeepNet trains 1,000)",
        how="DeepNorm's final test loss in bits per character, mean and 95% interval over "
        f"seeds, against {floor:.2f}, the test split's bits under the training split's "
        "character frequencies; Xavier's runs diverged or ended within 0.1 bits of it",
        measured=deepnorm[0],
        interval=(deepnorm[1], deepnorm[2]),
        passed=passed,
        setting=f"characters of Python's standard library instead of WMT translation, a "
        f"GPT decoder of {depth} post-LN blocks of width {width}, {grid.train_steps} Adam "
        "steps at lr 1e-3 without warmup",
        details={
            "DeepNorm final test bits per character": deepnorm[0],
            "Xavier final test bits per character": float(xavier["final_test_loss"].mean()),
            "bits per character of the characters' frequencies": floor,
            "DeepNorm alpha": (2 * depth) ** 0.25,
            "DeepNorm beta": (8 * depth) ** -0.25,
        },
        figures=[
            (
                sweep_figure(folder, "train", f"loss_{stem(keys)}"),
                f"Training loss of the {depth}-block post-LN decoder, bits per character",
                f"DeepNorm ends at {deepnorm[0]:.2f} bits per character, Xavier at "
                f"{xavier['final_test_loss'].mean():.2f}; the characters' frequencies give "
                f"{floor:.2f}.",
            )
        ],
        sweeps=["train"],
    )
