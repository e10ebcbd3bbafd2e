"""Phase diagrams: a sweep over the (sigma_w^2, sigma_b^2) plane of one activation.

Weights are drawn from N(0, sigma_w^2 / fan_in) (``variance_scaling[scale=sigma_w^2]``) and
biases from N(0, sigma_b^2), so every cell sits at a known point of the mean-field phase
diagram (Poole et al. 2016; Schoenholz et al. 2017): ordered where ``chi1 < 1``, chaotic
where ``chi1 > 1``, and trainable up to a depth of about ``6 xi_c``. ``initbench report``
draws the measurements against those lines.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from initbench.core.errors import UsageError
from initbench.core.ids import format_value
from initbench.sweeps.grid import Grid

MAX_POINTS = 200


def parse_values(text: str, what: str) -> tuple[float, ...]:
    """``start:stop:count`` (evenly spaced, both ends included) or ``a,b,c``: variances.

    Args:
        text: the option's value.
        what: the option's name, for the error message.

    Returns:
        The values.

    Raises:
        UsageError: malformed text, no points, more than 200, or a value that is not a
            finite variance >= 0.
    """
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            bounds, points = (float(start), float(stop)), int(count)
        else:
            values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:  # a UsageError is a ValueError too: none is raised in here
        raise UsageError(f"{what} must be start:stop:count or a comma list, got {text!r}") from None
    if ":" in text:
        if not 1 <= points <= MAX_POINTS:
            raise UsageError(f"{what}: the count must be between 1 and {MAX_POINTS}")
        values = tuple(float(v) for v in np.linspace(*bounds, points))
    if not values:
        raise UsageError(f"{what} has no points")
    if any(not (v >= 0 and math.isfinite(v)) for v in values):
        raise UsageError(f"{what} must be variances >= 0, got {text!r}")
    return values


def phase_grid(
    activation: str,
    sigma_w2: tuple[float, ...],
    sigma_b2: tuple[float, ...],
    depths: tuple[int, ...],
    width: int = 128,
    seeds: int = 2,
    **grid: object,
) -> Grid:
    """The sweep of a phase diagram: one ``variance_scaling`` scheme per weight variance.

    Args:
        activation: the activation id.
        sigma_w2: weight variances (times fan_in).
        sigma_b2: bias variances.
        depths: network depths.
        width: the width of every network.
        seeds: seeds per point.
        grid: any other grid keys (``dataset``, ``train_steps``, ...).

    Returns:
        The grid.
    """
    schemes = tuple(
        f"variance_scaling[scale={format_value(float(s))},mode=fan_in,distribution=normal]"
        for s in sigma_w2
    )
    return Grid.from_dict(
        {
            "schemes": schemes,
            "activations": [activation],
            "depths": list(depths),
            "widths": [width],
            "bias_vars": list(sigma_b2),
            "seeds": seeds,
            **grid,
        }
    )


def phase(
    activation: str,
    sigma_w2: tuple[float, ...],
    sigma_b2: tuple[float, ...],
    depths: tuple[int, ...],
    out: str | Path,
    *,
    width: int = 128,
    seeds: int = 2,
    device: str = "auto",
    progress: bool = True,
    **grid: object,
) -> Path:
    """Sweeps the phase diagram into ``out`` (resumable like any sweep).

    Args:
        activation: the activation id.
        sigma_w2: weight variances (times fan_in).
        sigma_b2: bias variances.
        depths: network depths.
        out: the results folder.
        width: the width of every network.
        seeds: seeds per point.
        device: where to compute.
        progress: show a progress bar.
        grid: other grid keys (``dataset``, ``train_steps``, ``lr``, ...).

    Returns:
        ``out``.
    """
    from initbench.sweeps.run import sweep

    spec = phase_grid(activation, sigma_w2, sigma_b2, depths, width, seeds, **grid)
    about = {
        "phase": {
            "activation": activation,
            "sigma_w2": list(sigma_w2),
            "sigma_b2": list(sigma_b2),
        }
    }
    return sweep(spec, out, device=device, progress=progress, kind="phase", about=about)
