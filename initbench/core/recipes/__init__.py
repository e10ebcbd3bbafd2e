"""Recipes: schemes that give each weight of a network its own distribution, by its role,
block and the network's depth (:class:`~initbench.core.scheme.Recipe`), one module each.

A recipe module defines ``FAMILY``, the :class:`~initbench.core.scheme.Family` that
:mod:`initbench.core.schemes` registers under the module's name, and builds its schemes
with :func:`recipe` from the plain distributions of :mod:`initbench.core.inits`. This
module holds what they share: the plain pieces they are made of and the conditions under
which they apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from initbench.core import inits
from initbench.core.activations import Activation
from initbench.core.errors import UsageError
from initbench.core.roles import RESIDUAL_OUT, Site
from initbench.core.scheme import Recipe, Scheme

EMBEDDINGS = ("embedding", "position")


def recipe(
    name: str,
    params: dict[str, object],
    weight: Callable[[Site], Scheme],
    *,
    setting: Callable[[Site], tuple[float, float] | None] | None = None,
    lr_scale: Callable[[Site, str], float] | None = None,
    needs: Callable[[Sequence[Site]], str | None] | None = None,
    fitter: str | None = None,
) -> Scheme:
    """A recipe scheme: ``weight`` chooses the plain scheme of each site; the other rules
    default to the architecture's scalars, unit learning rates and any network."""
    given = {"setting": setting, "lr_scale": lr_scale, "needs": needs}
    rules = Recipe(weight, **{key: rule for key, rule in given.items() if rule is not None})
    return Scheme(
        name,
        params,
        _by_site,
        None,
        theory=False,
        kind="recipe",
        fitter=fitter,
        recipe=rules,
    )


def fitted(name: str, steps: object) -> Scheme:
    """A data-dependent recipe: torch's default weights, then ``steps`` steps of the
    fitter ``initbench.initialize.<name>`` on the run's own batch (the budget its id
    records).

    Raises:
        UsageError: ``steps`` is not a positive integer.
    """
    count = float(steps)
    if not (count == int(count) and count >= 1):
        raise UsageError(f"{name} steps must be a positive integer, got {steps!r}")
    base = inits.torch_default()
    return recipe(name, {"steps": int(count)}, lambda site: base, fitter=name)


def _by_site(weight, activation, generator) -> None:
    raise TypeError("a recipe fills each weight with the plain scheme at its site (Scheme.at)")


def truncated(std: float, cutoff: float = 3.0) -> Scheme:
    """N(0, std^2) cut at +-cutoff std (OLMo's and torchtitan's ``trunc_normal_``)."""
    return inits.trunc_normal(std, -cutoff * std, cutoff * std)


# a weight at 0 (Fixup's and ZerO's last layers): the zeros torch.nn.init.zeros_ gives, to
# which the mean-field maps apply (a variance of 0: the branch adds nothing)
ZEROS = Scheme(
    "zeros",
    {},
    lambda weight, activation, generator: weight.zero_(),
    lambda shape, activation: (0.0, 0.0),
    theory=True,
    kind="constant",
)


def scaled(scheme: Scheme, factor: float) -> Scheme:
    """``scheme``'s draws times ``factor`` (Fixup's and T-Fixup's rescaled layers)."""

    def moments(shape: Sequence[int], act: Activation) -> tuple[float, float]:
        mean, var = scheme.moments(shape, act)  # type: ignore[misc]
        return mean * factor, var * factor**2

    def fill(weight, activation, generator) -> None:
        scheme.init(weight, activation, generator)
        weight.mul_(factor)

    orthogonal = None
    if scheme.orthogonal is not None:
        base = scheme.orthogonal

        def orthogonal(weight, activation):
            part, gain = base(weight, activation)
            return part, gain * factor

    return Scheme(
        scheme.name,
        {**scheme.params, "times": factor},
        fill,
        None if scheme.moments is None else moments,
        scheme.theory,
        scheme.kind,
        scheme.dims,
        covers=scheme.covers,
        gain=scheme.gain,
        extra=scheme.extra,
        orthogonal=orthogonal,
    )


def zero_gates(site: Site) -> tuple[float, float] | None:
    """Every branch's gate at 0, trained: each block the identity at initialization."""
    return (0.0, 1.0) if site.role == "gate" else None


def needs_branches(name: str) -> Callable[[Sequence[Site]], str | None]:
    """The condition of a recipe for residual networks: a layer that writes a branch into
    a residual stream."""

    def check(sites: Sequence[Site]) -> str | None:
        if any(site.role in RESIDUAL_OUT for site in sites):
            return None
        return f"{name} needs residual branches (resmlp, resnet, transformer, gpt)"

    return check


def needs_attention(name: str) -> Callable[[Sequence[Site]], str | None]:
    """The condition of a recipe for transformers: attention's query and key."""

    def check(sites: Sequence[Site]) -> str | None:
        roles = {site.role for site in sites}
        if {"query", "key"} <= roles:
            return None
        return f"{name} needs attention (transformer, gpt)"

    return check


def depth_std(base: float, blocks: int) -> float:
    """GPT-2's and Megatron's residual projections: ``base / sqrt(2 n_layers)``, the
    network's blocks its layers."""
    return base / math.sqrt(2 * max(blocks, 1))


def model_width(site: Site) -> int:
    """The network's width (``d_model``) at a site: the width it says, else the weight's
    fan-in."""
    return site.width or site.fan_in


def parse_flag(value: object, what: str) -> bool:
    """``true``/``false`` (as ids spell them) as a bool.

    Raises:
        UsageError: any other value.
    """
    text = str(value).lower()
    if text not in ("true", "false"):
        raise UsageError(f"{what} must be true or false, got {value!r}")
    return text == "true"
