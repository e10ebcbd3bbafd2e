"""How every module's output scales with the model's width: mup's "coord check"
(``initbench coord``).

:func:`coord_check` builds a model at several widths and seeds, trains each copy for a few
optimizer steps on one fixed batch, and records the size of every watched module's output
(:func:`initbench.core.models.watched`) at initialization and after each step. A
least-squares line through ``log(statistic)`` against ``log(width)`` gives each module's
exponent: near 0 where its coordinates keep their size as the model widens (what a
width-robust parametrization such as muP asks for), 1/2 or 1 where they grow like
``sqrt(width)`` or ``width``. :func:`coord_folder` is the whole command.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from initbench import __version__
from initbench.archs import get_arch
from initbench.archs.base import Inputs
from initbench.core.activations import get_activation
from initbench.core.device import device_info, resolve_device, use_full_float32
from initbench.core.errors import UsageError
from initbench.core.folders import claim, now, write_results
from initbench.core.ids import shape_text
from initbench.core.intervals import slope_interval
from initbench.core.models import (
    build_model,
    first_line,
    first_tensor,
    fit_batch,
    load_factory,
    parse_model_args,
    prepare,
)
from initbench.core.rng import Stream, run_generator
from initbench.core.schemes import get_scheme
from initbench.initialize import apply, param_groups
from initbench.measure.hooks import Recorder

COLUMNS = ["width", "seed", "step", "module", "kind", "call", "order", "out_var", "out_abs_mean"]
SLOPE_COLUMNS = [
    "module",
    "kind",
    "call",
    "order",
    "step",
    "statistic",
    "slope",
    "ci",
    "verdict",
    "points",
]
OUTPUTS = ("out_var", "out_abs_mean")  # taken of every module call's output
# |slope| <= STABLE: width-stable. The statistic then changes by at most 2^0.1 = 1.07x per
# doubling of the width (1.15x per fourfold): finite-width corrections and seed noise, far
# below the 2^0.5 = 1.41x per doubling of the smallest exponent a wrong parametrization gives.
STABLE = 0.1
IMAGE_SIZE, TOKENS = 8, 8  # a built-in arch's probe images and token sequences, as in a sweep
CLASSES = 10  # a built-in arch's outputs
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}
WIDTH_SHAPE = re.compile(r"(?:\d+|w)(?:x(?:\d+|w))*")
NO_FIT = "no fit: fewer than 2 widths with a finite value"


@dataclass(frozen=True)
class Family:
    """One model at any width: its module (``build``), its batch's shape (``shape``) and,
    for a built-in arch, the role of each of its parameters (``roles``)."""

    build: Callable[[int], nn.Module]
    shape: Callable[[int], tuple[int, ...]]
    roles: dict | None = None


def coord_check(
    model: str,
    widths: Sequence[int],
    *,
    steps: int = 3,
    seeds: int = 2,
    scheme: str | None = None,
    activation: str = "relu",
    depth: int = 4,
    optimizer: str = "adam",
    lr: float = 1e-3,
    inputs: str | None = None,
    batch: int = 64,
    model_args: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every watched module's output size at each width, seed and step, and its slope
    against width.

    For each width and seed the model is built after ``torch.manual_seed(seed)`` (so "as
    built" differs by seed), prepared as :func:`initbench.core.models.prepare` does (no
    in-place ops, dropout in eval mode), re-initialized with ``scheme`` from
    ``run_generator(seed)`` when given, and shown one fixed standard-normal batch (with
    random class labels) from ``run_generator(seed, Stream.TRAINING)``. The loss is the
    cross-entropy against those labels when the output is ``(batch, classes)``, else half
    the mean square of the output. Statistics are taken on that batch at initialization
    (step 0) and after each of ``steps`` optimizer steps on it.

    Args:
        model: a built-in architecture id (``mlp``, ``resmlp[norm=layer]``, ``cnn``, ...),
            built with ``depth`` hidden layers and 10 outputs and shown standard-normal
            samples of its width (``arch.synthetic_sample(width, 8, 8)``); or
            ``path/to/file.py:FACTORY``, called with ``width=`` and ``model_args``.
        widths: at least two distinct positive widths.
        steps: optimizer steps after initialization.
        seeds: copies per width (seeds 0..seeds-1).
        scheme: a scheme id to re-initialize every weight with; None keeps the model's own.
        activation: a built-in arch's nonlinearity, and what the scheme's ``matched`` gains
            refer to.
        depth: hidden layers of a built-in arch (not used for a factory).
        optimizer: ``adam`` or ``sgd``.
        lr: the learning rate.
        inputs: a factory's batch shape, ``w`` standing for the width (``32xw``,
            ``8x3x16x16``); required for a factory, refused for a built-in arch.
        batch: a built-in arch's batch size (a factory's is the first size of ``inputs``).
        model_args: keyword arguments of the factory (not ``width``).
        device: where to compute (``auto``, ``cpu``, ``cuda``, ...).

    Returns:
        ``(records, slopes)``: one row per width, seed, step and module call with
        :data:`COLUMNS`; one row per module call, step and statistic with
        :data:`SLOPE_COLUMNS` (see :func:`fit_slopes`).

    Raises:
        UsageError: bad widths or settings, an unknown arch, scheme or activation, a
            torchvision model, a factory without ``width``, a missing or malformed
            ``inputs``, a shape the model rejects, a scheme that cannot take a weight.
    """
    family = model_family(
        model,
        activation=activation,
        depth=depth,
        inputs=inputs,
        batch=batch,
        model_args=model_args,
    )
    records = measure(
        family,
        widths,
        steps=steps,
        seeds=seeds,
        scheme=scheme,
        activation=activation,
        optimizer=optimizer,
        lr=lr,
        device=device,
    )
    return records, fit_slopes(records)


def model_family(
    model: str,
    *,
    activation: str = "relu",
    depth: int = 4,
    inputs: str | None = None,
    batch: int = 64,
    model_args: Mapping[str, Any] | None = None,
) -> Family:
    """The model ``model`` names at any width (the arguments are :func:`coord_check`'s).

    Raises:
        UsageError: an unknown arch or activation, an arch on token ids, a torchvision
            model, a malformed ``MODEL``, a factory without ``width``, a missing,
            malformed or misplaced ``inputs``, model arguments for a built-in arch, a
            depth or batch below 1.
    """
    source, sep, name = model.rpartition(":")
    if source == "torchvision":
        raise UsageError(
            "torchvision models take no width: use a built-in arch (initbench list archs) or "
            "path/to/file.py:FACTORY whose factory takes width="
        )
    if source.endswith(".py"):
        return _factory_family(model, load_factory(Path(source), name), inputs, model_args)
    if sep:
        raise UsageError(
            f"MODEL must be a built-in arch id or path/to/file.py:FACTORY, got {model!r}"
        )
    if inputs is not None:
        raise UsageError(
            "--input is for a factory: a built-in arch sees standard-normal samples of its width"
        )
    if model_args:
        raise UsageError(
            "--model-arg is for a factory: give a built-in arch's parameters in its id, "
            "e.g. resmlp[norm=layer]"
        )
    arch, act = get_arch(model), get_activation(activation)
    if arch.tokens:
        raise UsageError(
            f"{arch.id} takes token ids: coord shows a batch of standard-normal values"
        )
    for what, value in (("depth", depth), ("batch", batch)):
        if value < 1:
            raise UsageError(f"{what} must be at least 1, got {value}")

    def build(width: int) -> nn.Module:
        sample = arch.synthetic_sample(width, IMAGE_SIZE, TOKENS)
        return arch.build(depth, width, act, Inputs(sample, CLASSES))

    return Family(
        build, lambda width: (batch, *arch.synthetic_sample(width, IMAGE_SIZE, TOKENS)), arch.roles
    )


def _factory_family(
    spec: str,
    factory: Callable[..., object],
    inputs: str | None,
    model_args: Mapping[str, Any] | None,
) -> Family:
    if not _takes_width(factory):
        raise UsageError(f"{spec} takes no width parameter: coord calls it with width=N")
    if inputs is None:
        raise UsageError(
            f"{spec} needs --input: its batch's shape, w standing for the width (e.g. 32xw)"
        )
    if not WIDTH_SHAPE.fullmatch(inputs):
        raise UsageError(
            f"--input must be a shape like 32xw or 8x3x16x16 (w: the width), got {inputs!r}"
        )
    sizes = [None if size == "w" else int(size) for size in inputs.split("x")]
    if 0 in sizes:
        raise UsageError(f"--input sizes must be positive, got {inputs}")
    args = dict(model_args or {})
    if "width" in args:
        raise UsageError("--model-arg width is what --widths sets")
    return Family(
        lambda width: build_model(spec, factory, args | {"width": width}),
        lambda width: tuple(width if size is None else size for size in sizes),
    )


def _takes_width(factory: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read: the call decides
        return True
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == "width" and p.kind is not p.POSITIONAL_ONLY)
        for p in parameters
    )


def measure(
    family: Family,
    widths: Sequence[int],
    *,
    steps: int = 3,
    seeds: int = 2,
    scheme: str | None = None,
    activation: str = "relu",
    optimizer: str = "adam",
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """The records of :func:`coord_check` for a model family, widths in increasing order.

    Raises:
        UsageError: bad widths, steps, seeds, optimizer or learning rate, an unknown scheme
            or activation, a shape the model rejects, a scheme that cannot take a weight.
    """
    widths = check_widths(widths)
    if steps < 0 or seeds < 1:
        raise UsageError(f"steps must be at least 0 and seeds at least 1, got {steps}, {seeds}")
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"lr must be positive and finite, got {lr}")
    chosen = get_scheme(scheme) if scheme is not None else None
    act = get_activation(activation)
    where = device if isinstance(device, torch.device) else resolve_device(device)
    frames = []
    for width in widths:
        for seed in range(seeds):
            torch.manual_seed(seed)
            net = prepare(family.build(width))
            shape = family.shape(width)
            roles = {"roles": family.roles, "width": width}
            if chosen is not None:
                data = fit_batch(shape, seed) if chosen.data_dependent else None
                apply(net, chosen, act, generator=run_generator(seed), data=data, **roles)
            step_of = OPTIMIZERS[optimizer](param_groups(net, chosen, lr, optimizer, **roles))
            frame = _train(net.to(where), shape, seed, steps, step_of, where)
            frames.append(frame.assign(width=width))
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def check_widths(widths: Sequence[int]) -> list[int]:
    """The distinct widths, in increasing order.

    Raises:
        UsageError: a width below 1, or fewer than two distinct widths.
    """
    small = [w for w in widths if w < 1]
    if small:
        raise UsageError(f"widths must be at least 1, got {small[0]}")
    distinct = sorted(set(widths))
    if len(distinct) < 2:
        raise UsageError(
            f"a coord check needs at least 2 distinct widths, got {distinct or 'none'}"
        )
    return distinct


def _train(
    net: nn.Module,
    shape: tuple[int, ...],
    seed: int,
    steps: int,
    step_of: torch.optim.Optimizer,
    device: torch.device,
) -> pd.DataFrame:
    """Statistics of one copy at initialization and after each of ``steps`` steps of
    ``step_of``."""
    draw = run_generator(seed, Stream.TRAINING)
    x = torch.randn(shape, generator=draw).to(device)
    recorder = Recorder(net, device, OUTPUTS)
    labels = None
    try:
        for step in range(steps + 1):
            recorder.begin(step)
            try:
                out = first_tensor(net(x))
            except Exception as error:
                if step:
                    raise
                raise UsageError(
                    f"the model rejects input of shape {shape_text(shape)}: {first_line(error)}"
                ) from error
            if out is None:
                raise UsageError("the model's output holds no tensor")
            if step == steps:
                break
            if not out.requires_grad:
                raise UsageError("the model's output does not depend on its parameters")
            if out.dim() == 2 and labels is None:
                labels = torch.randint(out.shape[1], out.shape[:1], generator=draw).to(device)
            loss = F.cross_entropy(out, labels) if out.dim() == 2 else out.square().mean() / 2
            step_of.zero_grad(set_to_none=True)
            loss.backward()
            step_of.step()
    finally:
        recorder.remove()
    return recorder.frame().assign(seed=seed)


def fit_slopes(records: pd.DataFrame) -> pd.DataFrame:
    """The slope of ``log(statistic)`` against ``log(width)`` per module call, step and
    statistic, over every (width, seed) point whose statistic is finite and positive.

    Returns:
        :data:`SLOPE_COLUMNS`: ``slope`` (least squares), ``ci`` (the half-width of its 95%
        t-interval, ``points - 2`` degrees of freedom; NaN with 2 points), ``verdict`` (see
        :func:`width_verdict`; :data:`NO_FIT` with fewer than 2 widths with a value) and
        ``points`` (the points fitted; those with a value of 0, NaN or inf are skipped).
    """
    rows = []
    for (step, module, call), group in records.groupby(["step", "module", "call"], sort=False):
        for statistic in OUTPUTS:
            slope, ci, points = _fit(group["width"], group[statistic])
            rows.append(
                (
                    module,
                    group["kind"].iloc[0],
                    call,
                    group["order"].min(),
                    step,
                    statistic,
                    slope,
                    ci,
                    width_verdict(slope) if math.isfinite(slope) else NO_FIT,
                    points,
                )
            )
    slopes = pd.DataFrame(rows, columns=SLOPE_COLUMNS)
    return slopes.sort_values(["step", "order", "statistic"], ignore_index=True)


def _fit(widths: pd.Series, values: pd.Series) -> tuple[float, float, int]:
    """Slope, 95% half-interval and points of the least-squares line of logs."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return slope_interval(np.log(widths.to_numpy(float)), np.log(values.to_numpy(float)))


def width_verdict(slope: float) -> str:
    """``width-stable`` for ``|slope| <= 0.1`` (:data:`STABLE`), else ``grows like
    width^0.52`` or ``shrinks like width^-0.5`` (the slope to 2 significant digits)."""
    if abs(slope) <= STABLE:
        return "width-stable"
    return f"{'grows' if slope > 0 else 'shrinks'} like width^{slope:.2g}"


# ---- the command ---------------------------------------------------------------------------


def parse_widths(text: str) -> list[int]:
    """``"64,128, 256"`` -> ``[64, 128, 256]``.

    Args:
        text: a comma list.

    Returns:
        The widths.

    Raises:
        UsageError: an item that is not an integer.
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if not re.fullmatch(r"-?\d+", item):
            raise UsageError(f"--widths must be integers separated by commas, got {item!r}")
    return [int(item) for item in items]


def coord_folder(
    model: str,
    widths: Sequence[int],
    out: Path,
    *,
    steps: int = 3,
    seeds: int = 2,
    scheme: str | None = None,
    activation: str = "relu",
    depth: int | None = None,
    optimizer: str = "adam",
    lr: float = 1e-3,
    input_spec: str | None = None,
    batch: int | None = None,
    model_args: Sequence[str] = (),
    device: str = "auto",
) -> Path:
    """``initbench coord``: writes ``out/coords.parquet``, ``out/slopes.parquet`` and
    ``out/meta.json`` (kind ``coord``), only after every width and seed is measured.

    Args:
        model: a built-in arch id, or ``path/to/file.py:FACTORY`` taking the width.
        widths: the widths to build it at (two or more).
        out: the folder to write.
        steps: optimizer steps after initialization.
        seeds: copies per width.
        scheme: re-initialize with this scheme (None: as built).
        activation: a built-in arch's activation, and what matched gains refer to.
        depth: a built-in arch's hidden layers (default 4); a factory refuses it.
        optimizer: ``adam`` or ``sgd``.
        lr: the learning rate.
        input_spec: the batch's shape with ``w`` for the width (``8xw``); a factory needs it.
        batch: a built-in arch's batch size (default 64); a factory refuses it.
        model_args: ``key=value`` arguments of the factory.
        device: where to compute.

    Returns:
        ``out``.

    Raises:
        UsageError: bad input (see :func:`coord_check`), ``depth`` or ``batch`` given for a
            factory, or an output folder that is a file, holds something other than a coord
            check, or cannot be written.
    """
    args = parse_model_args(list(model_args))
    factory = model.rpartition(":")[0].endswith(".py")
    for flag, value in (("--depth", depth), ("--batch", batch)):
        if factory and value is not None:
            raise UsageError(f"{flag} is for a built-in arch; a factory's batch is --input's")
    depth, batch = 4 if depth is None else depth, 64 if batch is None else batch
    scheme_id = get_scheme(scheme).id if scheme else None
    activation = get_activation(activation).id
    family = model_family(
        model,
        activation=activation,
        depth=depth,
        inputs=input_spec,
        batch=batch,
        model_args=args,
    )
    widths = check_widths(widths)
    where = resolve_device(device)
    claim(out, "coord")
    use_full_float32()
    started = now()
    records = measure(
        family,
        widths,
        steps=steps,
        seeds=seeds,
        scheme=scheme_id,
        activation=activation,
        optimizer=optimizer,
        lr=lr,
        device=where,
    )
    meta = {
        "kind": "coord",
        "stable": STABLE,  # the slope within which a module is width-stable
        "model": model,
        "model_args": args,
        "widths": widths,
        "steps": steps,
        "seeds": seeds,
        "scheme": scheme_id,
        "activation": activation,
        "depth": None if factory else depth,
        "batch": None if factory else batch,
        "optimizer": optimizer,
        "lr": lr,
        "input": input_spec,
        "input_shapes": {str(w): list(family.shape(w)) for w in widths},
        "initbench": __version__,
        "started": started,
        "finished": now(),
    } | device_info(where)
    write_results(out, {"coords": records, "slopes": fit_slopes(records)}, meta)
    return out
