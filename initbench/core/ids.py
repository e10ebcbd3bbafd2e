"""Stable string ids of the form ``name[key=value,...]`` shared by schemes and activations."""

from __future__ import annotations

import re
from collections.abc import Sequence

from initbench.core.errors import UsageError

_ID = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<params>[^\[\]]*)\])?$")


def format_value(value: object) -> str:
    """Formats a parameter value the way ids spell it (``0.01``, ``1``, ``fan_in``,
    ``true``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def format_id(name: str, params: dict[str, object]) -> str:
    """Returns ``name[k=v,...]`` (keys in the given order), or ``name`` with no parameters."""
    if not params:
        return name
    inner = ",".join(f"{k}={format_value(v)}" for k, v in params.items())
    return f"{name}[{inner}]"


def parse_id(text: str) -> tuple[str, dict[str, str]]:
    """Splits ``name[k=v,...]`` into its name and a dict of raw string values."""
    match = _ID.match(text.strip())
    if not match:
        raise UsageError(f"malformed id {text!r}: expected name or name[key=value,...]")
    return match["name"], parse_params(match["params"] or "", text)


def parse_params(inner: str, text: str) -> dict[str, str]:
    """``k=v,...`` (what an id holds between its brackets) as a dict of raw string values;
    ``text`` is the whole id, for the error."""
    params: dict[str, str] = {}
    for part in filter(None, inner.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"malformed parameter {part!r} in {text!r}: expected key=value")
        params[key.strip()] = value.strip()
    return params


def parse_number(text: str, what: str) -> float:
    """Parses a float, raising a UsageError that names ``what``."""
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number, got {text!r}") from None


def shape_text(shape: Sequence[int]) -> str:
    """A tensor shape as the command line writes it: ``2x3x8x8``."""
    return "x".join(str(size) for size in shape)
