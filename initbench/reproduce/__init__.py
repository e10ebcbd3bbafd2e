"""One-command reproductions of classic results: ``initbench reproduce NAME``.

Each reproduction is a module of this package with a ``run(folder, full, device,
progress) -> Outcome`` function, registered with one :func:`register` line below. It runs
its sweeps into ``folder`` (CPU-sized by default, the paper's size with ``full``),
compares the measured value with the expected one, and writes ``reproduce.json`` and
``meta.json`` (``kind: reproduce``); ``initbench report`` draws its page.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from initbench import __version__
from initbench.core.errors import UsageError


@dataclass(frozen=True)
class Reproduction:
    """A registered reproduction: its name, the module that runs it, the claim, the source."""

    name: str
    module: str
    claim: str
    citation: str


@dataclass
class Outcome:
    """What a reproduction measured.

    Attributes:
        expected: the expected value, in words with its number (a paper's, where it gives one).
        how: how the measured value is computed.
        measured: the measured value.
        interval: its 95% interval ``(lo, hi)`` (NaNs where none).
        passed: the measurement agrees with the claim.
        setting: how this run differs from the paper's setting.
        details: further numbers, by name.
        figures: figures of the report page: ``(path under the folder, caption, verdict)``.
        sweeps: the sweep folders it ran (relative), whose full reports the page links.
    """

    expected: str
    how: str
    measured: float
    interval: tuple[float, float]
    passed: bool
    setting: str
    details: dict[str, Any] = field(default_factory=dict)
    figures: list[tuple[str, str, str]] = field(default_factory=list)
    sweeps: list[str] = field(default_factory=list)


REPRODUCTIONS: dict[str, Reproduction] = {}


def register(name: str, claim: str, citation: str) -> None:
    """Adds a reproduction run by ``initbench.reproduce.<name>``."""
    if name in REPRODUCTIONS:
        raise ValueError(f"a reproduction named {name!r} is already registered")
    REPRODUCTIONS[name] = Reproduction(name, f"initbench.reproduce.{name}", claim, citation)


def get(name: str) -> Reproduction:
    if name not in REPRODUCTIONS:
        raise UsageError(f"unknown reproduction {name!r}; choose from {', '.join(REPRODUCTIONS)}")
    return REPRODUCTIONS[name]


def reproduce(
    name: str, out: str | Path, *, full: bool = False, device: str = "cpu", progress: bool = True
) -> dict[str, Any]:
    """Runs one reproduction into ``out`` (its sweeps resume like any sweep) and writes its
    ``reproduce.json``, ``meta.json`` and report page.

    Args:
        name: the reproduction (``initbench list reproductions``).
        out: its folder.
        full: the paper's full grid, not the quick one.
        device: where to compute.
        progress: show progress bars.

    Returns:
        The contents of ``reproduce.json``.
    """
    from initbench.core import folders

    entry = get(name)
    folder = Path(out)
    about = {"name": name, "initbench": __version__, "device": device}
    folders.begin(folder, "reproduce", about)
    start = time.perf_counter()
    outcome: Outcome = importlib.import_module(entry.module).run(folder, full, device, progress)
    record = {
        "name": entry.name,
        "claim": entry.claim,
        "citation": entry.citation,
        **asdict(outcome),
        "full": full,
        "seconds": round(time.perf_counter() - start, 1),
    }
    folders.atomic_write_bytes(
        folder / "reproduce.json", json.dumps(record, indent=2, default=_json).encode()
    )
    finished = folders.now()
    folders.write_meta(folder, {"kind": "reproduce", **about, "finished": finished})
    from initbench.report import report

    report(folder)
    return record


def reproduce_all(
    out: str | Path, *, full: bool = False, device: str = "cpu", progress: bool = True
) -> Path:
    """Runs every reproduction into ``out/<name>`` and writes one page for all of them.

    Args:
        out: the folder of the reproductions' folders.
        full: the papers' full grids, not the quick ones.
        device: where to compute.
        progress: show progress bars.

    Returns:
        The overview page.
    """
    from initbench.core import folders

    root = Path(out)
    folders.begin(root, "reproductions", {"names": list(REPRODUCTIONS)})
    for name in REPRODUCTIONS:
        reproduce(name, root / name, full=full, device=device, progress=progress)
    from initbench.report import report

    return report(root)


def _json(value: object) -> object:
    if isinstance(value, float) and value != value:  # NaN
        return None
    return float(value) if hasattr(value, "__float__") else str(value)


register(
    "he2015",
    "ReLU nets keep their activation variance with Kaiming's initialization and halve it "
    "every layer with Xavier's (gain 1); a 30-layer ReLU net trains with Kaiming and stalls "
    "with Xavier.",
    "He, Zhang, Ren, Sun. Delving Deep into Rectifiers. ICCV 2015 (Section 2.2, Figure 3).",
)
register(
    "glorot2010",
    "With tanh, the standard initialization U(+-1/sqrt(n)) shrinks activations and "
    "back-propagated gradients layer after layer; the normalized initialization keeps them.",
    "Glorot, Bengio. Understanding the difficulty of training deep feedforward neural "
    "networks. AISTATS 2010 (Figures 6 and 7).",
)
register(
    "saxe2014",
    "In deep linear networks, orthogonal weights make learning time independent of depth; "
    "scaled Gaussian weights do not.",
    "Saxe, McClelland, Ganguli. Exact solutions to the nonlinear dynamics of learning in deep "
    "linear neural networks. ICLR 2014 (Section 5, Figure 6).",
)
register(
    "schoenholz2017",
    "Random tanh networks train only up to a depth of about 6 xi_c, the correlation depth "
    "scale, which diverges at the order-to-chaos transition.",
    "Schoenholz, Gilmer, Ganguli, Sohl-Dickstein. Deep Information Propagation. ICLR 2017 "
    "(Figure 5).",
)
register(
    "pennington2017",
    "Orthogonal tanh networks at criticality keep the input-output Jacobian's singular "
    "values concentrated (dynamical isometry); Gaussian and ReLU networks spread them more "
    "with every layer.",
    "Pennington, Schoenholz, Ganguli. Resurrecting the sigmoid in deep learning through "
    "dynamical isometry. NeurIPS 2017 (Figures 1-3).",
)
register(
    "xiao2018",
    "Delta-orthogonal convolutions (an orthogonal centre tap) give CNNs dynamical isometry, "
    "which Gaussian convolutions lose with depth, and so train at depths where Gaussian "
    "CNNs do not.",
    "Xiao, Bahri, Sohl-Dickstein, Schoenholz, Pennington. Dynamical Isometry and a Mean "
    "Field Theory of CNNs. ICML 2018 (Sections 4-5, Figures 1 and 4).",
)
register(
    "fixup2019",
    "Fixup trains a residual network of depth 100 without normalization; He's "
    "initialization diverges or stalls at the same learning rate.",
    "Zhang, Dauphin, Ma. Fixup Initialization: Residual Learning Without Normalization. "
    "ICLR 2019 (Section 4).",
)
register(
    "mup2021",
    "Under muP the coordinates of every layer keep their size as the network widens, "
    "during training too; under the standard parametrization they grow with width.",
    "Yang et al. Tensor Programs V: Tuning Large Neural Networks via Zero-Shot "
    "Hyperparameter Transfer. NeurIPS 2021 (Section 6, the coordinate check).",
)
register(
    "gpt2_scaled",
    "The residual stream's variance at initialization grows with depth unless the "
    "residual projections are scaled by 1/sqrt(2L), as GPT-2 does; with the scaling it "
    "stays bounded.",
    "Radford, Wu, Child, Luan, Amodei, Sutskever. Language Models are Unsupervised "
    "Multitask Learners. 2019 (Section 2.3).",
)
register(
    "deepnet2022",
    "A deep post-LN transformer trains with DeepNorm and diverges or stalls without it at "
    "the same learning rate.",
    "Wang, Ma, Dong, Huang, Zhang, Wei. DeepNet: Scaling Transformers to 1,000 Layers. "
    "2022 (Sections 3-4).",
)
