"""What every figure shares: its context, its saved files, colours, facets and folding.

Every figure is drawn from a tidy table (one row per drawn point), saved with the tables of
the page's other figures in ``figures/data.csv.gz`` (its ``figure`` column names the
figure); lines are drawn with the table's values as they are (nothing is clipped or
floored), and points the axes cannot show get marks at the axes' edge instead.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from initbench.core import fmt
from initbench.core.folders import atomic_write_csv_gz, stacked
from initbench.report.classify import CELL_KEYS

MAX_GROUPS = 8  # lines per figure; the rest are folded and named in the caption
FACET_KEYS = ["arch", "width", "bias_var", "activation"]  # one figure per combination
PANEL_COLUMNS = 3  # depth panels per row: a figure shown at page width stays legible
COLOURS = 32  # of a saved figure: its lines, bands and text stay as they are drawn
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # each group's second cue after colour
DPI, LEGEND_POINTS = 85, 9  # the smallest text of a figure (points): 10.6 px at full size
DATA_COLUMNS = [
    "activation",
    "arch",
    "depth",
    "width",
    "bias_var",
    "scheme_id",
    "members",
    "layer",
    "statistic",
    "value",
    "lo",
    "hi",
    "kind",
]


@dataclass
class Figure:
    """A saved figure, ``figures/<name>.png``, with its verdict (one line per panel or
    finding, separated by newlines) and the table it draws."""

    name: str
    section: str
    title: str
    verdict: str
    caption: str = ""
    folded: list[str] = field(default_factory=list)
    data: pd.DataFrame | None = field(default=None, repr=False)


@dataclass
class Context:
    """What figures draw from: the sweep's tables and its classification."""

    cells: pd.DataFrame
    layers: pd.DataFrame
    curves: pd.DataFrame
    hists: pd.DataFrame
    verdicts: pd.DataFrame
    trained: bool
    target: float
    budget: int = 0  # training steps per run
    text: bool = False  # trained on a text: losses are in bits per character

    def __post_init__(self) -> None:
        for frame in (self.cells, self.verdicts):
            if "bias_var" in frame:
                frame["bias_var"] = frame["bias_var"].fillna(0.0)
        self._groups = list(dict.fromkeys(self.verdicts["group"]))
        members = self.verdicts.groupby([*CELL_KEYS, "group"], sort=False, dropna=False)
        self._members = (
            members["scheme_id"].agg(lambda ids: " = ".join(dict.fromkeys(ids))).to_dict()
        )

    def palette(self, groups: list[str]) -> dict[str, tuple]:
        """A colour for each group a figure draws (at most :data:`MAX_GROUPS`), as distinct
        as can be; the same groups always get the same colours."""
        ordered = sorted(groups, key=self._groups.index)
        return dict(zip(ordered, _palette(len(ordered)), strict=True))

    def members(self, keys: dict, group: str) -> str:
        """``a = b``: the schemes of ``group`` in the cell ``keys``."""
        return self._members.get((*(keys[k] for k in CELL_KEYS), group), group)

    def facets(self) -> list[tuple[dict, pd.DataFrame]]:
        """``(keys, verdicts)`` per figure: one per arch, width, bias variance and
        activation."""
        out = []
        for key, rows in self.verdicts.groupby(FACET_KEYS, sort=True):
            out.append((dict(zip(FACET_KEYS, key, strict=True)), rows))
        return out


def _palette(n: int) -> list[tuple]:
    """``n`` colours: seaborn's colour-blind palette's first eight, then (a figure draws
    more only when more are recommended) its dark palette's."""
    import seaborn as sns

    colors = sns.color_palette("colorblind", MAX_GROUPS) + sns.color_palette("dark", 10)
    return [tuple(colors[i % len(colors)]) for i in range(n)]


def setup():
    """Sets matplotlib up: the Agg backend and seaborn's theme; returns pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    return plt


def save(fig, out: Path, name: str) -> None:
    """Writes the figure as ``out/<name>.png`` in :data:`COLOURS` colours (a fifth of the
    bytes of full colour, the lines and text as sharp), then closes it; the same figure
    gives the same bytes (no date or version in its metadata)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    image = Image.open(buffer).convert("RGB")
    image = image.quantize(COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(out / f"{name}.png", optimize=True)


DATA_FILE = "data.csv.gz"


def write_data(out: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Writes ``tables`` (figure name -> the table it draws) into ``out/data.csv.gz``
    beside the other figures' tables already there: one table after another in the order
    of their names, a first column ``figure`` naming each. The same tables give the same
    bytes (no time stamp in the gzip header)."""
    kept = {}
    if (out / DATA_FILE).exists():  # as written (text), so that rewriting changes no byte
        earlier = pd.read_csv(out / DATA_FILE, dtype=str, keep_default_na=False)
        kept = {name: rows.drop(columns="figure") for name, rows in earlier.groupby("figure")}
    tables = kept | {name: t for name, t in tables.items() if t is not None}
    atomic_write_csv_gz(out / DATA_FILE, stacked({n: tables[n] for n in sorted(tables)}, "figure"))


def read_data(out: Path, name: str) -> pd.DataFrame:
    """The table that figure ``name`` in ``out`` draws, as :func:`write_data` saved it."""
    frame = pd.read_csv(out / DATA_FILE)
    rows = frame[frame["figure"] == name].drop(columns="figure").reset_index(drop=True)
    return rows.dropna(axis=1, how="all")


def stem(keys: dict) -> str:
    """``mlp_w128_tanh`` (``mlp_w128_b0.05_tanh`` with biases): the part of a file name a
    facet sets."""
    text = f"{keys['arch']}_w{keys['width']}"
    if keys.get("bias_var"):
        text += f"_b{keys['bias_var']:g}"
    if keys.get("activation"):
        text += f"_{keys['activation']}"
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


def facet_title(keys: dict) -> str:
    """``tanh mlp, width 128`` (and the bias variance): the networks a figure draws."""
    text = f"{keys.get('activation', '')} {keys['arch']}, width {keys['width']}".strip()
    return text + (f", bias variance {keys['bias_var']:g}" if keys.get("bias_var") else "")


def choose_groups(rows: pd.DataFrame, change: str = "signal_change") -> tuple[list[str], list[str]]:
    """The groups a figure draws (every recommended one, then up to :data:`MAX_GROUPS` in
    all: the stable ones, then the rest by how far they drift) and the ones it folds."""
    rows = rows[rows["note"] == ""]
    order = (
        rows.assign(
            rank=np.select(
                [rows["recommended"], rows["signal"].isin(["stable", "critical"])],
                [0, 1],
                default=2,
            ),
            drift=rows[change].abs().replace(np.inf, 1e300).fillna(1e300),
        )
        .groupby("group", sort=False)[["rank", "drift"]]
        .min()
        .sort_values(["rank", "drift"])
    )
    groups = list(order.index)
    keep = max(MAX_GROUPS, int((order["rank"] == 0).sum()))
    return groups[:keep], groups[keep:]


def depth_panels(plt, table: pd.DataFrame, xlabel: str):
    """A figure with a panel per depth and activation, :data:`PANEL_COLUMNS` to a row,
    titled, the lowest panel of each column with its x axis labelled.

    Returns:
        The figure, and per panel its axes, depth, activation and rows of ``table``.
    """
    cells = sorted(
        {(d, a) for d, a in zip(table["depth"], table["activation"], strict=True)},
        key=lambda cell: (cell[1], cell[0]),
    )
    columns = min(PANEL_COLUMNS, len(cells))
    rows_of_panels = math.ceil(len(cells) / columns)
    fig, axes = plt.subplots(
        rows_of_panels,
        columns,
        figsize=(0.6 + 4.0 * columns, 0.9 + 2.9 * rows_of_panels),
        squeeze=False,
    )
    panels = []
    for index, (depth, activation) in enumerate(cells):
        ax = axes[index // columns][index % columns]
        ax.set_title(f"{activation}, depth {depth}", fontsize=10)
        lowest = index + columns >= len(cells)
        ax.set_xlabel(xlabel if lowest else "")
        rows = table[(table["depth"] == depth) & (table["activation"] == activation)]
        panels.append((ax, depth, activation, rows))
    for index in range(len(cells), rows_of_panels * columns):
        axes[index // columns][index % columns].set_visible(False)
    return fig, panels


def finish(
    fig,
    colors: dict[str, tuple],
    keys: dict,
    table: pd.DataFrame,
    title: str,
    ylabel: str,
    extra: list,
) -> None:
    """The legend of the groups the figure draws (and ``extra``), its title and y label."""
    shown = [g for g in colors if g in set(table["scheme_id"])]
    bottom = legend(fig, colors, shown, extra)
    fig.suptitle(f"{title} ({facet_title(keys)})", fontsize=11)
    fig.supylabel(ylabel, fontsize=10)
    fig.tight_layout(rect=(0, bottom, 1, 0.97))


def drawn_rows(ctx: Context, keys: dict, frame: pd.DataFrame, layer, statistic) -> pd.DataFrame:
    """Rows of a figure's CSV (:data:`DATA_COLUMNS`, kind ``measured``) from ``frame``'s
    ``activation``, ``depth``, ``scheme_id``, ``value``, ``lo`` and ``hi``: the facet's
    ``keys``, each group's members, the x value ``layer`` and the ``statistic``."""
    frame = frame.reset_index(drop=True)
    cells = zip(frame["activation"], frame["depth"], frame["scheme_id"], strict=True)
    return pd.DataFrame(
        {
            "activation": frame["activation"],
            "arch": keys["arch"],
            "depth": frame["depth"],
            "width": keys["width"],
            "bias_var": keys["bias_var"],
            "scheme_id": frame["scheme_id"],
            "members": [ctx.members(keys | {"activation": a, "depth": d}, s) for a, d, s in cells],
            "layer": layer,
            "statistic": statistic,
            "value": frame["value"],
            "lo": frame["lo"],
            "hi": frame["hi"],
            "kind": "measured",
        }
    )[DATA_COLUMNS]


def legend(fig, colors: dict[str, tuple], groups: list[str], extra: list = ()) -> float:
    """One legend for the figure, below it: a colour per group, then ``extra`` handles.

    Returns:
        The fraction of the figure's height the legend takes (for ``tight_layout``).
    """
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=colors[g], lw=2, marker=marker(colors, g), ms=5, label=g)
        for g in groups
    ]
    handles += list(extra)
    columns = min(3, len(handles))
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=columns,
        bbox_to_anchor=(0.5, 0.0),
        fontsize=LEGEND_POINTS,
        frameon=False,
    )
    rows = math.ceil(len(handles) / columns)
    return (0.25 + 0.21 * rows) / fig.get_size_inches()[1]


def marker(colors: dict[str, tuple], group: str) -> str:
    """The marker of ``group``, by its place in the figure's palette."""
    return MARKERS[list(colors).index(group) % len(MARKERS)]


def mean_and_band(ax, x: np.ndarray, rows: pd.DataFrame, color, group: str, **line) -> None:
    """The mean over seeds (``value``) as a line over its band (``lo`` to ``hi``), at the
    points where the mean is finite; a marker (if given) on about eight of them."""
    y = rows["value"].to_numpy(float)
    ok = np.isfinite(y)
    ax.fill_between(
        x[ok],
        rows["lo"].to_numpy(float)[ok],
        rows["hi"].to_numpy(float)[ok],
        color=color,
        alpha=0.15,
        lw=0,
        zorder=1,
        gid=f"band|{group}",
    )
    line.setdefault("markevery", max(1, int(ok.sum()) // 8))
    ax.plot(x[ok], y[ok], color=color, zorder=3, gid=f"measured|{group}", **line)


def off_chart(ax, x: np.ndarray, y: np.ndarray, color, lo: float, hi: float) -> str | None:
    """Marks where a line leaves the axes (a triangle at the edge) and returns a note."""
    finite = np.isfinite(y)
    below = finite & (y < lo)
    above = finite & (y > hi)
    for mask, edge, marker in ((below, lo, "v"), (above, hi, "^")):
        if mask.any():
            first = int(np.argmax(mask))
            ax.plot(
                [x[first]],
                [edge],
                marker=marker,
                color=color,
                ms=8,
                clip_on=False,
                zorder=5,
                gid="offchart",
            )
    if below.any() or above.any():
        return fmt.factor(float(y[finite][-1]))
    return None


def zero_marks(ax, x: np.ndarray, y: np.ndarray, color, edge: float) -> bool:
    """Marks points whose value is exactly zero on a log scale (``-inf``) with an x at the
    bottom edge; returns whether there were any."""
    zero = np.isneginf(y)
    if zero.any():
        ax.plot(
            x[zero],
            np.full(zero.sum(), edge),
            "x",
            color=color,
            ms=6,
            mew=2,
            clip_on=False,
            zorder=5,
            gid="zero",
        )
    return bool(zero.any())


def cell_rows(rows: pd.DataFrame, keys: dict) -> pd.DataFrame:
    for key in CELL_KEYS:
        if key in keys:
            rows = rows[rows[key] == keys[key]]
    return rows


def label_lists(rows: pd.DataFrame, column: str, labels: tuple[str, ...], value) -> str:
    """``stable: a ×1.1, b · vanishing: c ×2^-29`` for one cell's verdict rows."""
    parts = []
    for label in labels:
        chosen = rows[rows[column] == label].drop_duplicates("group")
        if chosen.empty:
            continue
        names = [f"{r.group} {value(r)}".strip() for r in chosen.itertuples()]
        parts.append(f"{label}: " + ", ".join(names))
    return " · ".join(parts)


def finite_range(values: list[np.ndarray], floor: tuple[float, float]) -> tuple[float, float]:
    """Axis limits covering the finite values (at least ``floor``), padded a little."""
    joined = np.concatenate([np.asarray(v, float) for v in values]) if values else np.array([])
    joined = joined[np.isfinite(joined)]
    lo = min(floor[0], joined.min()) if joined.size else floor[0]
    hi = max(floor[1], joined.max()) if joined.size else floor[1]
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def isfinite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
