"""The page of a phase-diagram folder: heatmaps over (sigma_w^2, depth) per bias variance,
with the mean-field order-to-chaos line (chi1 = 1) and the trainable depth 6 xi_c drawn
over them, and the measured correlation depth scale against its prediction."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from initbench.core import fmt
from initbench.core.activations import get_activation
from initbench.core.schemes import get_scheme
from initbench.report.figures.base import Figure, save, setup, write_data
from initbench.report.pages import Page, measured_on, write_page
from initbench.report.sweep import summary, verdicts_of
from initbench.sweeps.store import Results

TRAINABLE = 6.0  # Schoenholz et al. 2017: nets train up to about 6 xi_c layers
COLUMNS = ["sigma_w2", "sigma_b2", "depth", "statistic", "value", "lo", "hi", "kind"]


def prediction(activation: str, sigma_w2: np.ndarray, sigma_b2: float) -> pd.DataFrame:
    """``chi1`` and ``xi_c`` along a fine line of sigma_w^2 at one sigma_b^2."""
    from initbench.core import theory  # the prediction needs torch: only this page loads it

    phi = get_activation(activation).fn
    rows = [theory.depth_scales(phi, float(s), sigma_b2) | {"sigma_w2": s} for s in sigma_w2]
    return pd.DataFrame(rows)


def critical_point(line: pd.DataFrame) -> float:
    """The sigma_w^2 where chi1 crosses 1 (NaN if it does not within the line)."""
    chi = line["chi1"].to_numpy() - 1
    crossings = np.nonzero(np.sign(chi[:-1]) != np.sign(chi[1:]))[0]
    if not len(crossings):
        return math.nan
    i = crossings[0]
    x0, x1 = line["sigma_w2"].iloc[i], line["sigma_w2"].iloc[i + 1]
    return float(x0 + (x1 - x0) * chi[i] / (chi[i] - chi[i + 1]))


def measurements(results: Results) -> pd.DataFrame:
    """Per (sigma_w^2, sigma_b^2, depth): the classification's numbers and the runs' means."""
    verdicts, trained = verdicts_of(results)
    cells = results.cells[results.cells["status"] == "ok"].copy()
    cells["sigma_w2"] = [float(get_scheme(s).params["scale"]) for s in cells["scheme_id"]]
    per_cell = cells.groupby(["sigma_w2", "bias_var", "depth"]).agg(
        xi_c_fit=("xi_c_fit", "median"),
        xi_c=("xi_c", "first"),
        chi1=("chi1", "first"),
        final_test_acc=("final_test_acc", "mean"),
    )
    verdicts = verdicts.assign(
        sigma_w2=[float(get_scheme(s).params["scale"]) for s in verdicts["scheme_id"]]
    )
    labels = verdicts.set_index(["sigma_w2", "bias_var", "depth"])[
        ["signal", "signal_change", "training"]
    ]
    return per_cell.join(labels, how="outer").reset_index().assign(trained=trained)


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    values = np.log(values) if log else values
    if len(values) == 1:
        mids = np.array([values[0] - 0.5, values[0] + 0.5])
    else:
        inner = (values[1:] + values[:-1]) / 2
        mids = np.concatenate([[2 * values[0] - inner[0]], inner, [2 * values[-1] - inner[-1]]])
    return np.exp(mids) if log else mids


HEATMAPS = {
    "signal_change": ("variance change end to end (bits)", "RdBu_r", None),
    "xi_c_fit": ("measured correlation depth scale (log10)", "viridis", None),
    "final_test_acc": ("final test accuracy", "magma", (0, 1)),
}


def heatmap_figure(table: pd.DataFrame, line: pd.DataFrame, sigma_b2: float, activation: str):
    """Heatmaps over (sigma_w^2, depth) with chi1 = 1 and 6 xi_c drawn over them."""
    plt = setup()
    statistics = [s for s in HEATMAPS if s != "final_test_acc" or table["trained"].any()]
    fig, axes = plt.subplots(
        1, len(statistics), figsize=(4.8 * len(statistics), 4.2), squeeze=False
    )
    sw = np.sort(table["sigma_w2"].unique())
    depths = np.sort(table["depth"].unique())
    critical = critical_point(line)
    for ax, statistic in zip(axes[0], statistics, strict=True):
        label, cmap, limits = HEATMAPS[statistic]
        grid = table.pivot_table(
            index="depth", columns="sigma_w2", values=statistic, aggfunc="first"
        )
        grid = grid.reindex(index=depths, columns=sw)
        values = grid.to_numpy(float)
        if statistic == "signal_change":  # symmetric around 0 (kept), at least +-2 bits
            finite = np.abs(values[np.isfinite(values)])
            bound = min(max(finite.max() if finite.size else 2.0, 2.0), 60.0)
            limits = (-bound, bound)
        if statistic == "xi_c_fit":
            with np.errstate(divide="ignore"):
                values = np.log10(values)
            finite = values[np.isfinite(values)]
            limits = (finite.min(), finite.max()) if finite.size else (0, 1)
            values = np.where(np.isposinf(values), limits[1], values)
        mesh = ax.pcolormesh(
            _edges(sw, False),
            _edges(depths, True),
            values,
            cmap=cmap,
            vmin=limits[0],
            vmax=limits[1],
            shading="flat",
        )
        mesh.set_gid(f"heatmap|{statistic}")
        fig.colorbar(mesh, ax=ax, fraction=0.05)
        if math.isfinite(critical):
            ax.axvline(critical, color="white", ls="--", lw=1.5, gid="critical")
        trainable = TRAINABLE * line["xi_c"].to_numpy(float)
        ax.plot(
            line["sigma_w2"], np.clip(trainable, 1e-3, 1e6), color="#39ff14", lw=2, gid="trainable"
        )
        ax.set_yscale("log")
        ax.set_yticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
        ax.set_ylim(_edges(depths, True)[0], _edges(depths, True)[-1])
        ax.set_xlim(_edges(sw, False)[0], _edges(sw, False)[-1])
        ax.set_xlabel("sigma_w^2")
        ax.set_ylabel("depth" if ax is axes[0][0] else "")
        ax.set_title(label, fontsize=10)
        ax.grid(False)
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            color="0.2",
            ls="--",
            label=f"chi1 = 1 (order to chaos, sigma_w^2 = {fmt.number(critical)})",
        ),
        Line2D([], [], color="#39ff14", lw=2, label="6 xi_c: the predicted trainable depth"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, fontsize=8)
    fig.suptitle(f"Phase diagram: {activation}, sigma_b^2 = {sigma_b2:g}", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return fig


def scale_figure(table: pd.DataFrame, lines: dict[float, pd.DataFrame], activation: str):
    """The measured correlation depth scale against the predicted one, along sigma_w^2."""
    plt = setup()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, max(len(lines), 1)))
    for color, (sigma_b2, line) in zip(colors, sorted(lines.items()), strict=True):
        ax.plot(
            line["sigma_w2"], line["xi_c"], color=color, lw=1.5, ls="--", gid=f"theory|{sigma_b2:g}"
        )
        rows = table[table["bias_var"] == sigma_b2].groupby("sigma_w2")["xi_c_fit"]
        measured = rows.median()
        finite = measured[np.isfinite(measured)]
        ax.plot(
            finite.index,
            finite.to_numpy(),
            "o",
            color=color,
            label=f"sigma_b^2 = {sigma_b2:g}",
            gid=f"measured|{sigma_b2:g}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("sigma_w^2")
    ax.set_ylabel("correlation depth scale xi_c (layers)")
    ax.legend(
        title="dots: fitted to measured correlations; dashed: theory", fontsize=8, title_fontsize=8
    )
    ax.set_title(f"Correlation depth scale, {activation}", fontsize=11)
    fig.tight_layout()
    return fig


def verdicts(table: pd.DataFrame, lines: dict[float, pd.DataFrame]) -> list[str]:
    """How well the measurements follow the predictions, in numbers."""
    out = []
    for sigma_b2, line in sorted(lines.items()):
        out.append(
            f"sigma_b^2 = {sigma_b2:g}: chi1 = 1 at sigma_w^2 = {fmt.number(critical_point(line))}"
        )
    both = table[np.isfinite(table["xi_c_fit"]) & np.isfinite(table["xi_c"]) & (table["xi_c"] > 0)]
    if len(both):
        error = np.abs(np.log10(both["xi_c_fit"] / both["xi_c"]))
        out.append(
            f"The fitted correlation depth scale is within a factor {10 ** error.median():.2g} of "
            f"the prediction at the median point ({len(both)} points; within "
            f"{10 ** error.quantile(0.9):.2g} at 90% of them)"
        )
    if table["trained"].any():
        shallow = table["depth"] < TRAINABLE * table["xi_c"]
        trains = table["training"] == "trains"
        rates = [
            (trains[mask].mean() if mask.any() else math.nan, mask.sum())
            for mask in (shallow, ~shallow)
        ]
        agree = ((shallow & trains) | (~shallow & ~trains)).mean()
        out.append(
            f"Trainable depth: {fmt.percent(rates[0][0])} of {rates[0][1]} points shallower than "
            f"6 xi_c train, {fmt.percent(rates[1][0])} of {rates[1][1]} deeper ones do; the "
            f"prediction agrees with the measurement at {fmt.percent(agree)} of the points"
        )
    return out


def page(results: Results, out: Path) -> Path:
    """Writes the phase page (heatmaps, depth scales, verdicts) and returns its path."""
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    spec = results.meta["phase"]
    table = measurements(results)
    sw = np.asarray(spec["sigma_w2"], float)
    fine = np.linspace(sw.min(), sw.max(), 120) if len(sw) > 1 else sw
    lines = {float(b): prediction(spec["activation"], fine, float(b)) for b in spec["sigma_b2"]}
    figures, drawn = [], {}
    for sigma_b2, line in sorted(lines.items()):
        rows = table[table["bias_var"] == sigma_b2]
        name = f"phase_b{sigma_b2:g}"
        drawn[name] = _tidy(rows, line, sigma_b2)
        save(heatmap_figure(rows, line, sigma_b2, spec["activation"]), figures_dir, name)
        figures.append(Figure(name, "phase", f"Phase diagram, sigma_b^2 = {sigma_b2:g}", ""))
    drawn["depth_scale"] = pd.concat(
        [_tidy(table[table["bias_var"] == b], line, b) for b, line in lines.items()]
    )
    save(scale_figure(table, lines, spec["activation"]), figures_dir, "depth_scale")
    figures.append(Figure("depth_scale", "phase", "Correlation depth scale", ""))
    write_data(figures_dir, drawn)
    return write_page(
        "phase.html.j2",
        out,
        title=f"initbench phase diagram: {results.path.name}",
        measured_on=measured_on(results.meta),
        spec=spec,
        figures=figures,
        verdicts=verdicts(table, lines),
        summary=summary(results.cells, results.meta),
    )


def _tidy(rows: pd.DataFrame, line: pd.DataFrame, sigma_b2: float) -> pd.DataFrame:
    """The points a phase figure draws: measured cells, and the theory line."""
    measured = rows.melt(
        id_vars=["sigma_w2", "depth"],
        value_vars=[c for c in ("signal_change", "xi_c_fit", "final_test_acc") if c in rows],
        var_name="statistic",
    ).assign(sigma_b2=sigma_b2, lo=np.nan, hi=np.nan, kind="measured")
    predicted = line.melt(id_vars=["sigma_w2"], value_vars=["chi1", "xi_c"], var_name="statistic")
    predicted = predicted.assign(
        sigma_b2=sigma_b2, depth=np.nan, lo=np.nan, hi=np.nan, kind="theory"
    )
    return pd.concat([measured, predicted], ignore_index=True)[COLUMNS]


PAGES = {"phase": Page(page, "phase diagram")}
