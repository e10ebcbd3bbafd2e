"""Whether a model's weights have the distributions its initialization intends
(``initbench audit``).

:func:`audit` measures every parameter of a model as it is (its factory's own
initialization: nothing is drawn again) and compares each weight a scheme initializes
(:func:`~initbench.core.targets.init_targets`, with its role and site) with the plain
scheme a recipe chooses for that site (:meth:`~initbench.core.scheme.Scheme.at`). A weight
is *off* when

- its std is outside :data:`STD_RANGE` times the intended std;
- its mean is further from the intended mean than :data:`MEAN_SLACK` intended stds, plus
  four standard errors of the mean;
- the intended draws are bounded (a truncated normal, a uniform) and its largest ``|w|``
  passes that bound, both in units of the std, by more than :data:`BOUND_SLACK`: a
  truncation that cut nothing, such as ``trunc_normal_(std=0.02, a=-2, b=2)`` (100 std);
- it is still its layer's constructor draw where the intended std differs from that draw's
  by more than :data:`DRAW_SLACK`. The constructor's draw is the layer's own
  ``reset_parameters`` run on a copy of it (torch's generator seeded 0): the weight is that
  draw when its std and its ``max |w| / std`` are both within :data:`DRAW_SLACK` of the
  copy's (U(+-1/sqrt(fan_in)) has std ``1 / sqrt(3 fan_in)`` and ``max |w| / std`` sqrt 3).

Biases, normalizations and other parameters are measured and listed, never judged.
Without a recipe, the weights are audited against the scheme they match best: the one
against which the fewest are off.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from initbench import __version__
from initbench.core import fmt
from initbench.core.activations import Activation, get_activation
from initbench.core.device import device_info
from initbench.core.errors import UsageError
from initbench.core.folders import claim, now, write_results
from initbench.core.ids import shape_text
from initbench.core.inits import truncated_normal_moments
from initbench.core.models import load_model, parse_model_args
from initbench.core.roles import WEIGHT_ROLES, Site
from initbench.core.scheme import Scheme
from initbench.core.schemes import expand_schemes, get_scheme
from initbench.core.targets import (
    NORMS,
    Target,
    biases,
    block_indices,
    block_of,
    init_targets,
    weight_sites,
)

STD_RANGE = (0.8, 1.25)  # measured std / intended std
MEAN_SLACK = 0.2  # |mean - intended mean| in intended stds, beyond four standard errors
BOUND_SLACK = 1.1  # max |w| / std over the intended bound
DRAW_SLACK = 0.1  # relative difference that still counts as the constructor's draw
SHOWN = 20  # rows of the terminal table

COLUMNS = [
    "order",
    "param",
    "role",
    "block",
    "shape",
    "fan_in",
    "fan_out",
    "mean",
    "std",
    "bound",
    "intended",
    "intended_mean",
    "intended_std",
    "intended_bound",
    "ratio",
    "constructor_std",
    "constructor_bound",
    "constructor_draw",
    "off",
    "findings",
]


@dataclasses.dataclass
class Audit:
    """What :func:`audit` found.

    Attributes:
        scheme: the id of the scheme the weights were checked against.
        best_match: True when it was not given but chosen as the best match.
        scores: each candidate scheme's share of weights that would be off against it,
            best first (empty when the scheme was given).
        table: one row per parameter (:data:`COLUMNS`), the off weights first, then the
            others by how far their std is from the intended one; ``bound`` is
            ``max |w| / std``.
    """

    scheme: str
    best_match: bool
    scores: dict[str, float]
    table: pd.DataFrame

    @property
    def off(self) -> list[str]:
        """The parameters that are off, most suspicious first."""
        return self.table.loc[self.table["off"], "param"].tolist()

    def findings(self) -> list[str]:
        """One line per weight that is off: its name, role and what is wrong."""
        rows = self.table[self.table["off"]]
        return [f"{r.param} ({r.role}): {r.findings}" for r in rows.itertuples()]

    def terminal(self, limit: int = SHOWN) -> str:
        """The table's first ``limit`` weights as text, numbers to three digits."""
        weights = self.table[self.table["intended"] != ""]
        rows = weights.head(limit)
        view = pd.DataFrame(
            {
                "": ["off" if off else "" for off in rows["off"]],
                "param": rows["param"],
                "role": rows["role"],
                "shape": rows["shape"],
                "std": rows["std"].map(fmt.number),
                "intended": rows["intended_std"].map(fmt.number),
                "ratio": rows["ratio"].map(fmt.number),
                "max|w|/std": rows["bound"].map(fmt.number),
                "cut at": rows["intended_bound"].map(fmt.number),
                "constructor's": ["yes" if c else "" for c in rows["constructor_draw"]],
            }
        )
        text = view.to_string(index=False)
        more = len(weights) - len(rows)
        return text + (f"\n... {more} more weights" if more > 0 else "")


def audit(
    model: nn.Module,
    recipe: str | None = None,
    roles: Mapping[str, str] | None = None,
    *,
    activation: str = "relu",
    width: int | None = None,
) -> Audit:
    """Checks every weight of ``model``, as it is, against the distribution ``recipe``
    intends for it (see the module's docstring for when a weight is off).

    Args:
        model: any module; it is not changed.
        recipe: a scheme id (``gpt2``, ``megatron[std=0.02]``, ``xavier_normal[gain=unit]``);
            None: the scheme the weights match best: the fewest weights off, ties to the
            lowest mean ``ln(std / intended std)^2`` (:attr:`Audit.scores`).
        roles: parameter-name patterns (fnmatch) to roles, over the roles from the layers'
            names (``{"*.w_out.weight": "mlp_out"}``).
        activation: what ``matched`` gains refer to.
        width: the network's width, for recipes that scale with it (default: a weight's
            fan-in).

    Returns:
        The audit: its table and the scheme it checked against.

    Raises:
        UsageError: an unknown or data-dependent scheme, one that does not apply to the
            model, a role that is not a weight's, or a pattern that matches no weight.
    """
    act = get_activation(activation)
    targets = _targets(model, roles or {})
    params = dict(model.named_parameters())
    weights = [t.view(params[t.param]).detach() for t in targets]
    sites = weight_sites(targets, [tuple(w.shape) for w in weights], width)
    measured = [_moments(w) for w in weights]
    drawn = _constructor_draws(model, targets)

    def rows(scheme: Scheme) -> list[dict[str, object]]:
        return [
            _weight_row(t, site, stats, scheme.at(site), act, drawn.get(t.name))
            for t, site, stats in zip(targets, sites, measured, strict=True)
        ]

    scores: dict[str, float] = {}
    if recipe is None:
        scores = _best_match(sites, rows)
        scheme = get_scheme(next(iter(scores)))
    else:
        scheme = _checked(get_scheme(recipe), sites)
    table = pd.DataFrame(rows(scheme) + _other_rows(model, {t.param for t in targets}))
    table = table.assign(order=range(len(table)))[COLUMNS]
    distance = table["ratio"].map(_log_ratio).abs().fillna(-1.0)
    table = table.iloc[
        sorted(range(len(table)), key=lambda i: (not table["off"].iat[i], -distance.iat[i], i))
    ].reset_index(drop=True)
    return Audit(scheme.id, recipe is None, scores, table)


def _best_match(
    sites: Sequence[Site], rows: Callable[[Scheme], list[dict[str, object]]]
) -> dict[str, float]:
    """Every candidate's share of weights that would be off, best first: ties go to the
    lowest mean ``ln(std / intended std)^2``, then to registry order. The candidates: every
    variant ``initbench list schemes`` lists (gain-taking families at unit and matched
    gains) but the data-dependent ones, that applies to the network and has closed-form
    moments on every weight."""
    ranked = []
    for scheme in expand_schemes(["*"]):
        if scheme.data_dependent or _reason(scheme, sites):
            continue
        if any(scheme.at(site).moments is None for site in sites):
            continue
        found = rows(scheme)
        logs = [_log_ratio(row["ratio"]) ** 2 for row in found]
        spread = sum(v for v in logs if not math.isnan(v)) / len(found)
        ranked.append((sum(row["off"] for row in found) / len(found), spread, scheme.id))
    ranked.sort(key=lambda entry: entry[:2])
    return {scheme_id: off for off, _, scheme_id in ranked}


def parse_roles(items: Sequence[str]) -> dict[str, str]:
    """``["*.w2.weight=mlp_out"]`` -> ``{"*.w2.weight": "mlp_out"}``.

    Raises:
        UsageError: an item without ``=``, or without a pattern before it.
    """
    roles = {}
    for item in items:
        pattern, sep, role = item.rpartition("=")
        if not sep or not pattern:
            raise UsageError(f"--role must be GLOB=ROLE, got {item!r}")
        roles[pattern] = role
    return roles


def audit_folder(
    model_spec: str,
    out: Path,
    *,
    recipe: str | None = None,
    roles: Sequence[str] = (),
    model_args: Sequence[str] = (),
    activation: str = "relu",
) -> Audit:
    """``initbench audit``: builds the model (torch's generator seeded 0), audits it and
    writes ``out/params.parquet`` (the table) and ``out/meta.json``. Every input is checked
    before anything is written.

    Args:
        model_spec: ``torchvision:NAME`` or ``path/to/file.py:FACTORY``.
        out: the folder to write.
        recipe: the scheme id to check against (None: the best match).
        roles: ``GLOB=ROLE`` overrides of the weights' roles.
        model_args: ``key=value`` arguments of the factory.
        activation: what matched gains refer to.

    Returns:
        The audit.

    Raises:
        UsageError: bad input (see :func:`audit` and
            :func:`~initbench.core.models.load_model`), or an output folder that holds
            something other than an audit.
    """
    args = parse_model_args(list(model_args))
    role_table = parse_roles(roles)
    if recipe is not None:
        recipe = get_scheme(recipe).id
    get_activation(activation)
    claim(out, "audit")
    started = now()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = load_model(model_spec, args)
    result = audit(model, recipe, role_table, activation=activation)
    meta = {
        "kind": "audit",
        "model": model_spec,
        "model_args": args,
        "scheme": result.scheme,
        "best_match": result.best_match,
        "scores": dict(list(result.scores.items())[:5]),
        "roles": role_table,
        "activation": activation,
        "off": result.off,
        "initbench": __version__,
        "started": started,
        "finished": now(),
    } | device_info(torch.device("cpu"))
    write_results(out, {"params": result.table}, meta)
    return result


# ---- the parts ----------------------------------------------------------------------------


def _targets(model: nn.Module, roles: Mapping[str, str]) -> list[Target]:
    """The model's weights with roles from their names, then from ``roles``' patterns."""
    targets = init_targets(model)
    if not targets:
        raise UsageError("the model has no weight a scheme initializes (Linear, Conv, ...)")
    for pattern, role in roles.items():
        if role not in WEIGHT_ROLES:
            raise UsageError(
                f"role {role!r} of {pattern!r} is not a weight's role; choose from "
                f"{', '.join(WEIGHT_ROLES)}"
            )
        if not any(fnmatch.fnmatchcase(t.param, pattern) for t in targets):
            names = ", ".join(t.param for t in targets[:4])
            raise UsageError(f"role pattern {pattern!r} matches no weight (they are {names}, ...)")
    return [
        dataclasses.replace(
            t, role=next((r for p, r in roles.items() if fnmatch.fnmatchcase(t.param, p)), t.role)
        )
        for t in targets
    ]


def _checked(scheme: Scheme, sites: Sequence[Site]) -> Scheme:
    if scheme.data_dependent:
        raise UsageError(f"{scheme.id} fits weights on data: it intends no distribution to audit")
    reason = _reason(scheme, sites)
    if reason:
        raise UsageError(f"{scheme.id} does not apply to this model: {reason} (see --role)")
    return scheme


def _reason(scheme: Scheme, sites: Sequence[Site]) -> str | None:
    """Why ``scheme`` cannot initialize every weight at ``sites``, or None."""
    reason = scheme.not_applicable_to(sites)
    for site in sites:
        reason = reason or scheme.at(site).not_applicable(site.shape)
    return reason


def _moments(weight: torch.Tensor) -> tuple[float, float, float, int]:
    """``(mean, std, max |w| / std, entries)`` of a weight, in float64."""
    w = weight.double()
    std = w.std().item() if w.numel() > 1 else math.nan
    peak = w.abs().max().item()
    return w.mean().item(), std, peak / std if std > 0 else math.nan, w.numel()


def _intended(plain: Scheme, site: Site, act: Activation) -> tuple[float, float, float]:
    """The intended ``(mean, std, bound)``, the bound being the largest ``|w| / std`` its
    draws can reach (inf where unbounded); NaN where the scheme has no closed form."""
    if plain.moments is None:
        return math.nan, math.nan, math.inf
    mean, var = plain.moments(site.shape, act)
    std = math.sqrt(var)
    if plain.kind == "trunc_normal":  # cut at (a, b) stds of the normal: extra
        a, b = plain.extra
        return mean, std, max(-a, b) / math.sqrt(truncated_normal_moments(1.0, a, b)[1])
    if plain.kind == "uniform" and std > 0:
        return mean, std, (abs(mean) + math.sqrt(3) * std) / std
    return mean, std, math.inf


def _ratio(std: float, intended: float) -> float:
    if intended == 0:
        return 1.0 if std == 0 else math.inf
    return std / intended


def _log_ratio(ratio: float) -> float:
    if math.isnan(ratio):
        return math.nan
    return math.log(ratio) if 0 < ratio < math.inf else math.inf


def _constructor_draws(
    model: nn.Module, targets: Sequence[Target]
) -> dict[str, tuple[float, float, float, int]]:
    """The :func:`_moments` of each target as its layer's ``reset_parameters`` draws it (on
    a copy, torch's generator seeded 0), where the layer has one."""
    modules = dict(model.named_modules())
    drawn: dict[str, tuple[float, float, float, int]] = {}
    for owner_name in dict.fromkeys(t.param.rpartition(".")[0] for t in targets):
        owner = modules[owner_name]
        reset = getattr(owner, "reset_parameters", None) or getattr(
            owner, "_reset_parameters", None
        )
        if reset is None:
            continue
        fresh = copy.deepcopy(owner)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            getattr(fresh, reset.__name__)()
        own = dict(fresh.named_parameters())
        prefix = f"{owner_name}." if owner_name else ""
        for t in targets:
            name = t.param.removeprefix(prefix)
            if t.param.startswith(prefix) and name in own:
                drawn[t.name] = _moments(t.view(own[name]).detach())
    return drawn


def _weight_row(
    target: Target,
    site: Site,
    measured: tuple[float, float, float, int],
    plain: Scheme,
    act: Activation,
    constructor: tuple[float, float, float, int] | None,
) -> dict[str, object]:
    mean, std, bound, entries = measured
    intended_mean, intended_std, intended_bound = _intended(plain, site, act)
    ratio = _ratio(std, intended_std)
    _, c_std, c_bound, _ = constructor or (math.nan,) * 4
    is_draw = _near(std, c_std) and _near(bound, c_bound)
    found = []
    if not math.isnan(ratio) and not STD_RANGE[0] <= ratio <= STD_RANGE[1]:
        found.append(
            f"std {fmt.number(std)} is {fmt.number(ratio)}x the intended "
            f"{fmt.number(intended_std)} ({plain.id})"
        )
    slack = intended_std * (MEAN_SLACK + 4 / math.sqrt(entries))
    if abs(mean - intended_mean) > slack:
        found.append(f"mean {fmt.number(mean)}, intended {fmt.number(intended_mean)}")
    if bound > BOUND_SLACK * intended_bound:
        found.append(
            f"max |w| is {fmt.number(bound)} std where {plain.id} cuts at "
            f"{fmt.number(intended_bound)}: no truncation"
        )
    if is_draw and not _near(intended_std, c_std):
        found.append(f"still its constructor's draw (std {fmt.number(c_std)})")
    return {
        "param": target.name,
        "role": site.role,
        "block": site.block,
        "shape": shape_text(site.shape),
        "fan_in": site.fan_in,
        "fan_out": site.fan_out,
        "mean": mean,
        "std": std,
        "bound": bound,
        "intended": plain.id,
        "intended_mean": intended_mean,
        "intended_std": intended_std,
        "intended_bound": intended_bound,
        "ratio": ratio,
        "constructor_std": c_std,
        "constructor_bound": c_bound,
        "constructor_draw": is_draw,
        "off": bool(found),
        "findings": "; ".join(found),
    }


def _near(value: float, reference: float) -> bool:
    """Within :data:`DRAW_SLACK` of ``reference`` (False where either is NaN)."""
    return abs(value - reference) <= DRAW_SLACK * abs(reference)


def _other_rows(model: nn.Module, weights: set[str]) -> list[dict[str, object]]:
    """The parameters that are not weights: measured, not judged."""
    bias_names = set(biases(model))
    norms = {
        f"{name}.{p}" if name else p
        for name, module in model.named_modules()
        if isinstance(module, NORMS)
        for p, _ in module.named_parameters(recurse=False)
    }
    blocks = block_indices(model)
    rows = []
    for name, param in model.named_parameters():
        if name in weights:
            continue
        mean, std, bound, _ = _moments(param.detach())
        role = "bias" if name in bias_names else "norm" if name in norms else "other"
        rows.append(
            {
                "param": name,
                "role": role,
                "block": block_of(name, blocks),
                "shape": shape_text(tuple(param.shape)),
                "mean": mean,
                "std": std,
                "bound": bound,
                "intended": "",
                "constructor_draw": False,
                "off": False,
                "findings": "",
            }
        )
    return rows
