"""Seaborn figures, each with a verdict: variance and gradients per layer (theory dashed),
drift heatmaps, convergence curves and steps-to-target bars."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from initbench.report.tables import add_derived

MAX_SCHEMES = 8
CLIP = (1e-30, 1e30)  # plotted range: beyond it a signal is gone or exploded anyway


def ratio_text(log2_ratio: float) -> str:
    """``1.21x`` for moderate ratios, ``2^-170`` beyond a thousandfold."""
    if not math.isfinite(log2_ratio):
        return "n/a"
    if abs(log2_ratio) < 10:
        return f"{2**log2_ratio:.3g}x"
    return f"2^{log2_ratio:.0f}"


PALETTE = "colorblind"


@dataclass
class Figure:
    name: str  # file stem under figures/
    title: str
    verdict: str


def _pick_schemes(cells: pd.DataFrame) -> list[str]:
    """All schemes if few; else the best and worst by variance drift."""
    drift = add_derived(cells).groupby("scheme_id")["var_drift"].mean().sort_values()
    ids = list(drift.index)
    if len(ids) <= MAX_SCHEMES:
        return ids
    finite = [i for i in ids if not math.isnan(drift[i])]
    return finite[:5] + finite[-3:]


def _save(fig, out: Path, name: str) -> None:
    import matplotlib.pyplot as plt

    for ext in ("png", "svg"):
        fig.savefig(out / f"{name}.{ext}", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", palette=PALETTE, context="notebook")
    return plt, sns


def _deepest(
    group: pd.DataFrame, table: pd.DataFrame
) -> tuple[int, pd.DataFrame, list[str], pd.DataFrame]:
    """The deepest depth of one (arch, width) group of cells: that depth, its cells, the
    schemes shown, and ``table``'s rows (layers or curves) of those schemes' runs."""
    depth = group["depth"].max()
    deep = group[group["depth"] == depth]
    schemes = _pick_schemes(deep)
    data = table.merge(deep[["run_id", "scheme_id", "activation"]], on="run_id")
    return depth, deep, schemes, data[data["scheme_id"].isin(schemes)]


def per_layer(
    cells: pd.DataFrame, layers: pd.DataFrame, out: Path, column: str, theory: str | None
) -> list[Figure]:
    """One figure per (arch, width, deepest depth): ``column`` against layer, one panel per
    activation, one line per scheme, seeds as a band, theory dashed."""
    plt, sns = _setup()
    figures = []
    ok = cells[cells["status"] == "ok"]
    for (arch, width), group in ok.groupby(["arch", "width"]):
        depth, group, schemes, data = _deepest(group, layers)
        data[column] = data[column].clip(*CLIP)
        activations = sorted(data["activation"].unique())
        if data.empty:
            continue
        fig, axes = plt.subplots(
            1, len(activations), figsize=(5.2 * len(activations), 4.4), squeeze=False, sharey=True
        )
        colors = dict(zip(schemes, sns.color_palette(PALETTE, len(schemes)), strict=False))
        for ax, act in zip(axes[0], activations, strict=True):
            sub = data[data["activation"] == act]
            sns.lineplot(
                sub,
                x="layer",
                y=column,
                hue="scheme_id",
                hue_order=schemes,
                palette=colors,
                estimator=lambda v: float(np.exp(np.mean(np.log(np.clip(v, 1e-300, None))))),
                errorbar=("pi", 100),
                ax=ax,
                legend=ax is axes[0][-1],
            )
            if theory is not None:
                th = sub.groupby(["scheme_id", "layer"])[theory].first().reset_index()
                for scheme, curve in th.groupby("scheme_id"):
                    if curve[theory].notna().any():
                        ax.plot(
                            curve["layer"], curve[theory], ls="--", lw=1.2, color=colors[scheme]
                        )
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            ax.set_ylim(max(low, CLIP[0]), min(high, CLIP[1]))
            ax.set_title(act)
            ax.set_xlabel("hidden layer")
        label = {"pre_var": "pre-activation variance", "grad_w_norm": "weight-gradient norm"}[
            column
        ]
        axes[0][0].set_ylabel(f"{label} (log scale)")
        if axes[0][-1].get_legend():
            sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="scheme")
        fig.suptitle(
            f"{label} per layer, {arch} depth {depth} width {width}"
            + (" (dashed: mean-field theory)" if theory else "")
            + "; band: min-max over seeds"
        )
        name = f"{column}_{arch}_w{width}_d{depth}"
        _save(fig, out, name)
        figures.append(Figure(name, fig._suptitle.get_text(), _layer_verdict(group, column)))
    return figures


def _layer_verdict(group: pd.DataFrame, column: str) -> str:
    derived = add_derived(group)
    measure = "var_drift" if column == "pre_var" else "grad_drift"
    ratio = "var_ratio" if column == "pre_var" else "grad_ratio"
    parts = []
    for act, sub in derived.groupby("activation"):
        means = sub.groupby("scheme_id")[measure].mean().dropna().sort_values()
        if means.empty:
            continue
        best, worst = means.index[0], means.index[-1]
        r_best = float(np.log2(sub[sub.scheme_id == best][ratio].astype(float)).mean())
        r_worst = float(np.log2(sub[sub.scheme_id == worst][ratio].astype(float)).mean())
        what = "variance" if column == "pre_var" else "gradient ratio (first/last)"
        parts.append(
            f"{act}: {best} keeps the {what} at {ratio_text(r_best)} end to end; "
            f"{worst} is worst at {ratio_text(r_worst)}"
        )
    return ". ".join(parts) + "." if parts else "No finished runs."


def drift_heatmap(cells: pd.DataFrame, out: Path) -> list[Figure]:
    """Variance drift, scheme x depth, one panel per activation."""
    plt, sns = _setup()
    derived = add_derived(cells)
    figures = []
    for (arch, width), group in derived.groupby(["arch", "width"]):
        activations = sorted(group["activation"].unique())
        schemes = list(dict.fromkeys(group["scheme_id"]))
        fig, axes = plt.subplots(
            1,
            len(activations),
            figsize=(
                2.2 + 1.1 * group["depth"].nunique() * len(activations),
                1.2 + 0.32 * len(schemes),
            ),
            squeeze=False,
            sharey=True,
        )
        for ax, act in zip(axes[0], activations, strict=True):
            table = (
                group[group["activation"] == act]
                .pivot_table(index="scheme_id", columns="depth", values="var_drift", aggfunc="mean")
                .reindex(schemes)
            )
            sns.heatmap(
                table,
                ax=ax,
                cmap="viridis_r",
                vmin=0,
                vmax=2,
                annot=table.shape[0] <= 30,
                fmt=".2f",
                cbar=ax is axes[0][-1],
                cbar_kws={"label": "|log2 variance change| per layer"},
            )
            ax.set_title(act)
            ax.set_xlabel("depth")
            ax.set_ylabel("scheme" if ax is axes[0][0] else "")
        fig.suptitle(f"Variance drift, {arch} width {width} (0 = signal kept; blank = not ok)")
        name = f"drift_{arch}_w{width}"
        _save(fig, out, name)
        healthy = group[group["var_drift"] <= 0.25].groupby("activation")["scheme_id"].nunique()
        verdict = "; ".join(
            f"{act}: {healthy.get(act, 0)} of {group[group.activation == act].scheme_id.nunique()} "
            "schemes keep the variance within 19% per layer"
            for act in activations
        )
        figures.append(Figure(name, fig._suptitle.get_text(), verdict + "."))
    return figures


def convergence(
    cells: pd.DataFrame, curves: pd.DataFrame, out: Path, target: float
) -> list[Figure]:
    """Test accuracy against step (deepest depth) and steps-to-target bars."""
    if curves.empty:
        return []
    plt, sns = _setup()
    figures = []
    ok = cells[cells["status"].isin(["ok", "diverged"])]
    for (arch, width), group in ok.groupby(["arch", "width"]):
        depth, deep, schemes, data = _deepest(group, curves)
        activations = sorted(data["activation"].unique())
        fig, axes = plt.subplots(
            1, len(activations), figsize=(5.2 * len(activations), 4.2), squeeze=False, sharey=True
        )
        for ax, act in zip(axes[0], activations, strict=True):
            sns.lineplot(
                data[data.activation == act],
                x="step",
                y="test_acc",
                hue="scheme_id",
                hue_order=schemes,
                errorbar=("pi", 100),
                ax=ax,
                legend=ax is axes[0][-1],
            )
            ax.axhline(target, ls=":", color="grey")
            ax.set_title(act)
            ax.set_ylabel("test accuracy")
        if axes[0][-1].get_legend():
            sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="scheme")
        fig.suptitle(
            f"Test accuracy while training, {arch} depth {depth} width {width} "
            f"(dotted: target {target:.0%}; band: min-max over seeds)"
        )
        name = f"convergence_{arch}_w{width}_d{depth}"
        _save(fig, out, name)
        final = deep.groupby(["activation", "scheme_id"])["final_test_acc"].mean()
        verdict = "; ".join(
            f"{act}: {final[act].idxmax()} ends best ({final[act].max():.1%}), "
            f"{final[act].idxmin()} worst ({final[act].min():.1%})"
            for act in final.index.get_level_values(0).unique()
        )
        figures.append(Figure(name, fig._suptitle.get_text(), verdict + "."))

        bars = group.copy()
        budget = int(curves["step"].max())
        bars["steps"] = bars["steps_to_target"].fillna(budget * 1.05)
        fig, ax = plt.subplots(
            figsize=(8, 0.9 + 0.28 * bars["scheme_id"].nunique() * bars["activation"].nunique())
        )
        sns.barplot(
            bars,
            y="scheme_id",
            x="steps",
            hue="activation",
            errorbar=("pi", 100),
            ax=ax,
            orient="h",
        )
        ax.axvline(budget, ls=":", color="grey")
        ax.set_xlabel(
            f"steps to {target:.0%} test accuracy (past the dotted line: never, in {budget})"
        )
        ax.set_ylabel("")
        ax.set_title(f"Steps to target, {arch} width {width}, all depths")
        sns.move_legend(ax, "lower right")
        name = f"steps_{arch}_w{width}"
        _save(fig, out, name)
        reached = group.groupby("scheme_id")["steps_to_target"].apply(lambda s: s.notna().mean())
        never = ", ".join(reached[reached == 0].index[:5]) or "none"
        verdict = (
            f"{(reached == 1).sum()} schemes reach the target in every run, "
            f"{(reached == 0).sum()} in none ({never})."
        )
        figures.append(Figure(name, ax.get_title(), verdict))
    return figures
