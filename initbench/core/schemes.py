"""The registry of initialization schemes: every ``torch.nn.init`` initializer and its
variants (:mod:`initbench.core.inits`), and the recipes published since, each one module of
:mod:`initbench.core.recipes`.

A scheme is an initializer with fixed parameters. Its id, ``name[k=v,...]``, is a stable key
in stored results: ``xavier_normal[gain=matched]``,
``kaiming_normal[mode=fan_in,nonlinearity=matched]``, ``normal[std=0.01]``, ``torch_default``,
``gpt2``. Adding a recipe is its module in :mod:`initbench.core.recipes` and its line in
:data:`FAMILIES` below.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Iterable, Sequence

from initbench.core import inits
from initbench.core.errors import UsageError
from initbench.core.ids import parse_id
from initbench.core.recipes import (
    deepnorm,
    depth_init,
    fixup,
    gpt2,
    gradinit,
    megatron,
    metainit,
    mimetic,
    mitchell,
    mup,
    rezero,
    skipinit,
    small_init_emb,
    t_fixup,
    u_mup,
    zero_hadamard,
)
from initbench.core.scheme import GAIN_SETTINGS, Family, Scheme, gain_setting

RECIPES = (
    fixup,
    skipinit,
    rezero,
    zero_hadamard,
    gradinit,
    metainit,
    mup,
    u_mup,
    gpt2,
    megatron,
    mitchell,
    depth_init,
    small_init_emb,
    mimetic,
    deepnorm,
    t_fixup,
)
FAMILIES: dict[str, Family] = {
    **inits.FAMILIES,
    **{module.__name__.rpartition(".")[2]: module.FAMILY for module in RECIPES},
}


def torch_initializers() -> list[str]:
    """Every public in-place initializer that the installed ``torch.nn.init`` exposes."""
    import torch.nn.init

    return sorted(
        name
        for name, fn in vars(torch.nn.init).items()
        if name.endswith("_") and not name.startswith("_") and inspect.isfunction(fn)
    )


def _build(name: str, params: dict[str, object]) -> Scheme:
    try:
        scheme = FAMILIES[name].build(**params)
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(f"scheme {name!r} got a bad parameter value: {error}") from None
    except TypeError:
        accepted = list(inspect.signature(FAMILIES[name].build).parameters)
        raise UsageError(
            f"scheme {name!r} takes parameters {accepted or 'none'}, got {sorted(params)}"
        ) from None
    for key, value in scheme.params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"scheme {name!r} needs a finite {key}, got {value}")
    return scheme


# parameter values as :func:`short_label` spells them
_SHORT_VALUES = {
    "matched": "g",  # the gain (or nonlinearity) matched to the activation
    "unit": "1",
    "fan_in": "in",
    "fan_out": "out",
    "leaky_relu": "lrelu",
    "normal": "n",
    "uniform": "u",
    "truncated_normal": "tn",
}


def short_label(scheme_id: str) -> str:
    """A scheme in a few characters, for crowded headers: its family's short name, then
    its parameter values (``KN in,g`` is ``kaiming_normal[mode=fan_in,nonlinearity=matched]``,
    ``XU 1`` is ``xavier_uniform[gain=unit]``); pages that use it print the key."""
    name, params = parse_id(scheme_id)
    family = FAMILIES.get(name)
    head = family.short if family and family.short else name
    values = ",".join(_SHORT_VALUES.get(v, v) for v in params.values())
    return f"{head} {values}" if values else head


def get_scheme(scheme_id: str | Scheme) -> Scheme:
    """Builds a scheme from its id, e.g. ``normal[std=0.05]`` or ``xavier_normal[gain=matched]``.

    Args:
        scheme_id: the id, or a scheme (returned as it is).

    Returns:
        The scheme.

    Raises:
        UsageError: an unknown family, or parameters it does not take or cannot use.
    """
    if isinstance(scheme_id, Scheme):
        return scheme_id
    name, params = parse_id(scheme_id)
    if name not in FAMILIES:
        raise UsageError(f"unknown scheme {name!r}; choose from {', '.join(FAMILIES)}")
    return _build(name, dict(params))


def expand_schemes(
    patterns: Iterable[str], gains: Sequence[object] = GAIN_SETTINGS
) -> list[Scheme]:
    """Expands scheme patterns (``xavier*``, ``*``) and explicit ids into schemes.

    A pattern matches family names (fnmatch) and yields each family's documented variants,
    gain-taking families once per gain setting. An explicit id (``normal[std=0.05]``) yields
    exactly that scheme. Order follows the registry; duplicates are dropped.

    Args:
        patterns: fnmatch patterns of family names, or explicit scheme ids.
        gains: the gain settings (``unit``, ``matched`` or numbers) gain-taking families
            are expanded over.

    Returns:
        The schemes, each once.

    Raises:
        UsageError: a pattern that matches no family, or a bad id or gain.
    """
    gains = [gain_setting(g) for g in gains]
    found: dict[str, Scheme] = {}
    for pattern in patterns:
        pattern = pattern.strip()
        if "=" in pattern:
            scheme = get_scheme(pattern)
            found.setdefault(scheme.id, scheme)
            continue
        names = [n for n in FAMILIES if fnmatch.fnmatchcase(n, pattern)]
        if not names:
            raise UsageError(f"no scheme matches {pattern!r}; choose from {', '.join(FAMILIES)}")
        for name in names:
            family = FAMILIES[name]
            variants = [{"gain": g} for g in gains] if family.takes_gain else family.variants
            for params in variants:
                scheme = _build(name, dict(params))
                found.setdefault(scheme.id, scheme)
    return list(found.values())
