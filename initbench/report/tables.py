"""Comparison tables and the answer matrix, both read from the classification."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from initbench.core import fmt
from initbench.core.ids import parse_id
from initbench.core.schemes import FAMILIES, short_label
from initbench.report.classify import CELL_KEYS, failing, warnings
from initbench.report.figures.base import stem
from initbench.sweeps.presets import cell_command

STATUSES = ("diverged", "skipped", "failed", "oom")


@dataclass
class Table:
    """One cell's comparison table, with its verdict."""

    id: str
    title: str
    frame: pd.DataFrame  # the numbers (CSV)
    view: pd.DataFrame  # the same as text (HTML, Markdown)
    verdict: str


def cell_title(keys: dict) -> str:
    text = f"{keys['activation']}, {keys['arch']} depth {keys['depth']}, width {keys['width']}"
    return text + (f", bias variance {keys['bias_var']:g}" if keys.get("bias_var") else "")


def failures(row, trained: bool) -> list[str]:
    """What a verdict row fails, in words (see :func:`~initbench.report.classify.failing`)."""
    if row.note:
        return ["not applicable" if row.note.startswith("not applicable") else "no run finished"]
    if trained:
        if row.training == "mixed":
            return [f"mixed: {row.reached_target} of {row.seeds} seeds train"]
        return [row.training] if row.training in ("stalls", "diverges") else []
    return row.failure.split(", ") if row.failure else []


def mode_value(row, mode: str) -> str:
    """The number behind a failure mode, the one the rule compares (``gradients
    vanishing``: the change; ``correlation collapse``: the distinguishability kept;
    ``rank collapse``: the effective directions; ``dead units``: the dead share)."""
    row = row if isinstance(row, pd.Series) else pd.Series(row._asdict())
    name = mode.split()[0]
    if name in ("signal", "gradients"):
        return fmt.factor(row[f"{name}_change"])
    if name == "correlation":  # the share of the inputs' distinguishability kept
        return f"{fmt.percent(float(row['separation_last']))} kept"
    if name == "rank":  # effective directions
        return fmt.number(float(row["rank_last"]))
    if name == "dead":
        return fmt.percent(float(row["dead_last"]))
    return ""


def verdict_word(row, trained: bool) -> str:
    """``★ recommended``, ``passes``, or what it fails; then its warnings."""
    bad = failures(row, trained)
    word = (
        "★ recommended" if row.recommended else ", ".join(bad) or "passes, not tied with the best"
    )
    warned = [f"{w} ({mode_value(row, w)})" for w in warnings(row, trained)]
    return word + (f"; warning: {', '.join(warned)}" if warned else "")


def group_rows(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per group of equivalent schemes, naming all of its members."""
    keys = [*CELL_KEYS, "group"]
    members = verdicts.groupby(keys, sort=False, dropna=False)["scheme_id"].agg(
        lambda ids: " ≡ ".join(dict.fromkeys(ids))
    )
    rows = verdicts[verdicts["scheme_id"] == verdicts["group"]].copy()
    rows["members"] = [members[tuple(r)] for r in rows[keys].itertuples(index=False)]
    return rows


def cell_tables(verdicts: pd.DataFrame, trained: bool) -> list[Table]:
    """One table per cell: recommended groups first, then the ones that pass, then the rest."""
    tables = []
    grouped = group_rows(verdicts)
    for index, (key, rows) in enumerate(grouped.groupby(CELL_KEYS, sort=True, dropna=False)):
        keys = dict(zip(CELL_KEYS, key, strict=True))
        if trained:
            metric = rows["final_test_acc"]
        else:
            metric = -(rows["signal_change"].abs() + rows["gradients_change"].abs())
        order = [
            0 if r.recommended else 2 if failures(r, trained) else 1 for r in rows.itertuples()
        ]
        frame = (
            rows.assign(_order=order, _metric=metric.fillna(-math.inf))
            .sort_values(["_order", "_metric"], ascending=[True, False])
            .drop(columns=["_order", "_metric"])
            .reset_index(drop=True)
        )
        view = pd.DataFrame(
            {
                "scheme": frame["members"].map(column_label),
                "verdict": [verdict_word(r, trained) for r in frame.itertuples()],
                "signal": [
                    fmt.factor_interval(r.signal_change, r.signal_ci) for r in frame.itertuples()
                ],
                "gradients": [
                    fmt.factor_interval(r.gradients_change, r.gradients_ci)
                    for r in frame.itertuples()
                ],
            }
        )
        if trained:
            view["test accuracy"] = [
                fmt.percent(r.final_test_acc, r.final_test_acc_ci) for r in frame.itertuples()
            ]
            view["steps to target"] = [
                fmt.MISSING
                if r.note
                else f"{fmt.steps(r.steps_to_target)} ({r.reached_target}/{r.seeds} seeds)"
                for r in frame.itertuples()
            ]
        view["seeds"] = frame["seeds"]
        view["not ok"] = [
            ", ".join(f"{getattr(r, s)} {s}" for s in STATUSES if getattr(r, s)) or fmt.MISSING
            for r in frame.itertuples()
        ]
        table_id = f"table_{index + 1:03d}"
        tables.append(Table(table_id, cell_title(keys), frame, view, cell_verdict(frame, trained)))
    return tables


def cell_verdict(frame: pd.DataFrame, trained: bool) -> str:
    """The cell's sentence: ``Recommended (tied ...): a, b. Fail: c (stalls). Warnings: ...``."""
    recommended = frame[frame["recommended"]]
    if len(recommended):
        what = "test accuracy" if trained else "the probe's score"
        tied = f" (statistically tied on {what})" if len(recommended) > 1 else ""
        parts = [f"Recommended{tied}: " + ", ".join(recommended["members"])]
    else:
        parts = ["No scheme passes"]
    failed = [
        f"{r.members} ({', '.join(failures(r, trained))})"
        for r in frame.itertuples()
        if failures(r, trained) and not r.note.startswith("not applicable")
    ]
    if failed:
        parts.append("Fail: " + "; ".join(failed))
    warned = [
        f"{r.members} ({_warning_text(r, trained)})"
        for r in frame.itertuples()
        if warnings(r, trained) and not failures(r, trained)
    ]
    if warned:
        parts.append("Warnings: " + "; ".join(warned))
    return ". ".join(parts) + "."


def _warning_text(row, trained: bool) -> str:
    return ", ".join(f"{w} {mode_value(row, w)}" for w in warnings(row, trained))


def matrix(
    verdicts: pd.DataFrame, trained: bool, grid: dict | None = None
) -> tuple[list[str], list[dict]]:
    """The answer matrix: columns (schemes; one that is another's equivalent in every cell
    shares its column), and one row per cell with, per column, a label, a CSS class
    (the outcome) and a tooltip (the numbers), the recommended columns, the anchor of its
    evidence (the signal figure of its network and activation on the sweep's page) and,
    given the sweep's ``grid`` (its meta's), the command that recomputes it."""
    columns = _columns(verdicts, trained)
    rows = []
    for key, cell in verdicts.groupby(CELL_KEYS, sort=True, dropna=False):
        keys = dict(zip(CELL_KEYS, key, strict=True))
        by_scheme = cell.set_index("scheme_id")
        entries = []
        for column in columns:
            scheme = column.split(" ≡ ")[0]
            if scheme in by_scheme.index:
                entries.append(_entry(by_scheme.loc[scheme], scheme, trained))
            else:
                entries.append({"label": "", "note": "", "css": "none", "title": "not swept"})
        recommended = [c for c, e in zip(columns, entries, strict=True) if e["css"] == "rec"]
        rows.append(
            {
                "keys": keys,
                "title": cell_title(keys),
                "entries": entries,
                "recommended": recommended,
                "evidence": f"fig-signal_{stem(keys)}",
                "command": cell_command(grid, keys) if grid else None,
            }
        )
    return columns, rows


def column_label(column: str) -> str:
    """A matrix column's header: its schemes' short labels (``KN in,g ≡ KN out,g``)."""
    return " ≡ ".join(short_label(scheme) for scheme in column.split(" ≡ "))


def scheme_key(columns: list[str]) -> list[dict]:
    """The key to a matrix's short labels: each column's label, its scheme ids, and what
    its family is."""
    return [
        {
            "label": column_label(column),
            "ids": column,
            "about": FAMILIES[name].doc
            if (name := parse_id(column.split(" ≡ ")[0])[0]) in FAMILIES
            else "",
        }
        for column in columns
    ]


def _columns(verdicts: pd.DataFrame, trained: bool) -> list[str]:
    """Scheme ids, the most often recommended first (then the most often passing); a
    scheme that is in the same other scheme's group in every cell shares that scheme's
    column (``a ≡ b``)."""
    order = (
        verdicts.assign(ok=~failing(verdicts, trained))
        .groupby("scheme_id", sort=False)[["recommended", "ok"]]
        .sum()
        .sort_values(["recommended", "ok"], ascending=False, kind="stable")
        .index
    )
    verdicts = verdicts.set_index("scheme_id").loc[order].reset_index()
    groups = verdicts.groupby("scheme_id", sort=False)["group"].agg(set)
    heads: dict[str, list[str]] = {}
    for scheme, member_of in groups.items():
        (group,) = member_of if len(member_of) == 1 else (scheme,)
        if group != scheme and groups.get(group) == {group}:
            heads.setdefault(group, [group]).append(scheme)
        else:
            heads.setdefault(scheme, [scheme])
    return [" ≡ ".join(dict.fromkeys(members)) for members in heads.values()]


def _entry(row: pd.Series, scheme: str, trained: bool) -> dict:
    """One matrix cell: what it says, its colour, its numbers."""
    if row["note"]:
        label = "n/a" if row["note"].startswith("not applicable") else "failed"
        return {"label": label, "note": "", "css": "na", "title": row["note"]}
    bad = failures(row, trained)
    warned = warnings(row, trained)
    if trained:
        label = f"{row['training']} {fmt.percent(row['final_test_acc'])}"
        if row["training"] == "diverges":
            label = "diverges"
        css = {"trains": "ok", "mixed": "mixed", "stalls": "stall", "diverges": "explode"}[
            row["training"]
        ]
    else:
        name = bad[0] if bad else str(row["signal"]) if row["signal"] == "critical" else "stable"
        label = name.replace("signal ", "").replace("gradients ", "grad. ")
        if bad:
            label += " " + mode_value(row, bad[0])
        css = (
            "ok"
            if not bad
            else "explode"
            if ("exploding" in name or "non-finite" in name)
            else "vanish"
        )
    if row["recommended"]:
        label, css = "★ " + label, "rec"
    note = ", ".join(
        f"{w.replace('gradients', 'grad.').split()[0]} {mode_value(row, w)}" for w in warned
    )
    equivalent = f" (≡ {short_label(row['group'])})" if row["group"] != scheme else ""
    title = (
        f"{short_label(scheme)}{equivalent}: signal "
        f"{fmt.factor_interval(row['signal_change'], row['signal_ci'])} ({row['signal']}), "
        f"gradients {fmt.factor_interval(row['gradients_change'], row['gradients_ci'])} "
        f"({row['gradients']})"
    )
    if trained:
        title += (
            f", test accuracy {fmt.percent(row['final_test_acc'], row['final_test_acc_ci'])}, "
            f"target reached in {row['reached_target']} of {row['seeds']} seeds"
        )
    return {"label": label, "note": note, "css": css, "title": title}
