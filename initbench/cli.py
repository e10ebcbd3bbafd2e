"""The ``initbench`` command: a thin layer over the Python API.

Known errors print one line and exit with code 2 (usage) or 1 (environment);
``INITBENCH_DEBUG=1`` shows the traceback instead. Heavy modules (torch, pandas) are
imported inside the commands that need them, so ``--help`` and ``list`` answer at once.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

try:  # typer 0.20+ carries its own copy of click, whose exceptions it raises
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer uses click itself
    import click

from initbench.core.errors import RunsFailed, UsageError

# options several commands share
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
Reinitialize = Annotated[
    str | None, typer.Option(help="Re-initialize every weight first (default: as built).")
]
ModelArgs = Annotated[
    list[str] | None,
    typer.Option("--model-arg", metavar="KEY=VALUE", help="For the model's factory; repeatable."),
]

app = typer.Typer(
    help="Benchmark neural-network weight initialization in PyTorch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from initbench import __version__

        typer.echo(f"initbench {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Benchmark neural-network weight initialization in PyTorch."""


class Listing(StrEnum):
    schemes = "schemes"
    activations = "activations"
    archs = "archs"
    presets = "presets"
    datasets = "datasets"
    reproductions = "reproductions"


def split_list(value: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; commas inside ``[...]`` stay with their id."""
    if value is None:
        return None
    items, depth, current = [], 0, ""
    for char in value:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item.strip() for item in items if item.strip()]


def _listing(what: Listing) -> list[dict[str, object]]:
    if what is Listing.schemes:
        from initbench.core.schemes import FAMILIES, expand_schemes

        return [
            {
                "name": name,
                "variants": [s.id for s in expand_schemes([name])],
                "takes_gain": family.takes_gain,
                "doc": family.doc,
                "paper": family.paper,
            }
            for name, family in FAMILIES.items()
        ]
    if what is Listing.activations:
        from initbench.core.activations import ACTIVATION_NAMES, get_activation

        return [
            {
                "name": n,
                "gain": round(get_activation(n).gain(), 6),
                "calculate_gain": get_activation(n).gain_name,
            }
            for n in ACTIVATION_NAMES
        ]
    if what is Listing.archs:
        from initbench.archs import ARCHS, describe

        return [describe(entry) for entry in ARCHS.values()]
    if what is Listing.presets:
        from initbench.sweeps.presets import PRESETS

        return [
            {
                "name": p.name,
                "doc": p.doc,
                "runs": sum(g.run_count() for g in p.parts.values()),
                "parts": {name: g.to_dict() for name, g in p.parts.items()},
            }
            for p in PRESETS.values()
        ]
    if what is Listing.reproductions:
        from initbench.reproduce import REPRODUCTIONS

        return [
            {"name": r.name, "claim": r.claim, "citation": r.citation}
            for r in REPRODUCTIONS.values()
        ]
    from initbench.core.data import DATASETS

    return [
        {"name": d.name, "source": d.source, "sample": list(d.sample), "classes": d.classes}
        for d in DATASETS.values()
    ]


@app.command("list")
def list_cmd(
    what: Annotated[Listing, typer.Argument(help="What to list.")] = Listing.schemes,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List schemes, activations, archs, presets, datasets or reproductions."""
    rows = _listing(what)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        extra = (
            row.get("variants")
            or row.get("doc")
            or row.get("source")
            or row.get("claim")
            or row.get("gain", "")
        )
        if isinstance(extra, list):
            extra = ", ".join(extra)
        typer.echo(f"{row['name']:<18} {extra}")


@app.command()
def sweep(
    preset: Annotated[str | None, typer.Option(help="Start from a preset grid.")] = None,
    part: Annotated[
        str | None, typer.Option(help="Only this part of a preset with parts, into OUT.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Start from a TOML grid file.")] = None,
    schemes: Annotated[str | None, typer.Option(help="Comma list; fnmatch patterns.")] = None,
    activations: Annotated[str | None, typer.Option(help="Comma list.")] = None,
    archs: Annotated[str | None, typer.Option(help="Comma list of arch ids.")] = None,
    depths: Annotated[str | None, typer.Option(help="Comma list of hidden layers.")] = None,
    widths: Annotated[str | None, typer.Option(help="Comma list of widths.")] = None,
    gains: Annotated[str | None, typer.Option(help="unit, matched or numbers.")] = None,
    bias_vars: Annotated[
        str | None, typer.Option("--bias-var", "--bias-vars", help="Bias variances (comma list).")
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per cell.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Probe batch size.")] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Side of convolutional archs' probe images.")
    ] = None,
    tokens: Annotated[int | None, typer.Option(help="Tokens per transformer probe.")] = None,
    input_corr: Annotated[
        float | None, typer.Option(help="Correlation of the probe's input pairs.")
    ] = None,
    histograms: Annotated[
        bool | None, typer.Option("--histograms/--no-histograms", help="Store histograms.")
    ] = None,
    jacobian: Annotated[
        bool | None, typer.Option("--jacobian/--no-jacobian", help="Jacobian spectra.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Probe/train on this dataset.")] = None,
    train_steps: Annotated[int | None, typer.Option(help="Steps per run; 0: probe only.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd or adam.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    lrs: Annotated[
        str | None,
        typer.Option(help="Learning rates to try (comma list); each run keeps its best."),
    ] = None,
    train_batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    momentum: Annotated[float | None, typer.Option(help="SGD momentum.")] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Log losses and accuracy every N steps.")
    ] = None,
    target_accuracy: Annotated[
        float | None, typer.Option(help="Test accuracy steps_to_target counts to.")
    ] = None,
    device: Device = "auto",
    rng: Annotated[
        str, typer.Option(help="host (same numbers on every device), device, or auto.")
    ] = "auto",
    out: Annotated[Path | None, typer.Option(help="Sweep folder.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where datasets live.")] = None,
    download: Annotated[bool, typer.Option(help="Let torchvision download.")] = False,
    deterministic: Annotated[bool, typer.Option(help="Deterministic kernels.")] = False,
    gpu_memory_fraction: Annotated[float | None, typer.Option(help="Cap GPU memory.")] = None,
    executor: Annotated[str, typer.Option(help="Where runs execute: local or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start Ray here).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Run a grid estimated at >12 hours.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run a sweep (resumes when OUT holds the same grid).

    A preset with parts (the atlas) sweeps each part into OUT/PART.
    """
    from initbench.sweeps.grid import Grid, read_toml
    from initbench.sweeps.presets import get_preset

    chosen = get_preset(preset) if preset else None
    flags = {
        "schemes": split_list(schemes),
        "activations": split_list(activations),
        "archs": split_list(archs),
        "depths": split_list(depths),
        "widths": split_list(widths),
        "gains": split_list(gains),
        "bias_vars": split_list(bias_vars),
        "seeds": seeds,
        "batch_size": batch_size,
        "image_size": image_size,
        "tokens": tokens,
        "input_corr": input_corr,
        "histograms": histograms,
        "jacobian": jacobian,
        "dataset": dataset,
        "train_steps": train_steps,
        "optimizer": optimizer,
        "lr": lr,
        "lrs": split_list(lrs),
        "train_batch_size": train_batch_size,
        "momentum": momentum,
        "eval_every": eval_every,
        "target_accuracy": target_accuracy,
    }
    given = read_toml(config) if config is not None else {}
    given |= {k: v for k, v in flags.items() if v is not None}
    # names and sizes are checked as each grid is made, before torch loads: answers at once
    if part is not None:
        if chosen is None or chosen.single:
            raise UsageError("--part needs a preset with parts (initbench list presets)")
        if part not in chosen.parts:
            raise UsageError(
                f"preset {preset!r} has no part {part!r}; choose from {', '.join(chosen.parts)}"
            )
        grid = Grid.from_dict(given, chosen.parts[part])
    else:
        grid = chosen.with_values(given) if chosen else Grid.from_dict(given)
    import time

    from initbench.core.fmt import duration
    from initbench.sweeps.run import sweep as run_sweep

    out = out or Path("results") / (preset or (config.stem if config else "sweep")) / (part or "")
    began = time.perf_counter()
    try:
        run_sweep(
            grid,
            out,
            device=device,
            progress=progress,
            deterministic=deterministic,
            gpu_memory_fraction=gpu_memory_fraction,
            data_dir=data_dir,
            download=download,
            executor=executor,
            ray_address=ray_address,
            rng=rng,
            yes=yes,
        )
    except KeyboardInterrupt:  # caught here: typer would exit quietly
        typer.echo(
            f"initbench: interrupted; finished runs are in {out}, run again to resume",
            err=True,
        )
        sys.exit(130)
    took = f" ({duration(time.perf_counter() - began)})" if progress else ""
    done(f"results in {out}{took}")


DEFAULT_PROBE_INPUT = "8x3x224x224"  # a batch of 8 ImageNet-sized images


@app.command()
def probe(
    model: Annotated[
        str, typer.Argument(help="torchvision:NAME or path/to/file.py:FACTORY.", metavar="MODEL")
    ],
    input_spec: Annotated[
        str,
        typer.Option(
            "--input", metavar="SPEC", help="A shape (standard-normal batches) or a .pt file."
        ),
    ] = DEFAULT_PROBE_INPUT,
    scheme: Reinitialize = None,
    activation: Annotated[
        str | None, typer.Option(help="What the scheme's matched gains refer to (default relu).")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Copies probed (re-initialized per seed).")] = 1,
    model_arg: ModelArgs = None,
    device: Device = "auto",
    out: Annotated[Path | None, typer.Option(help="Default: results/probe-<model name>.")] = None,
) -> None:
    """Per-module statistics of any model: output, gradient and weight variances."""
    from initbench.core.models import model_name
    from initbench.studies.probe import probe_folder

    folder = probe_folder(
        model,
        input_spec,
        out or Path("results") / f"probe-{model_name(model)}",
        scheme=scheme,
        activation=activation,
        seeds=seeds,
        model_args=model_arg or [],
        device=device,
    )
    from initbench.report import report
    from initbench.report.probe import findings
    from initbench.sweeps.store import load

    results = load(folder)
    page = report(results)
    typer.echo(findings(results))
    done(f"module statistics in {folder / 'modules.parquet'}; page in {page}")


@app.command()
def audit(
    model: Annotated[
        str, typer.Argument(help="torchvision:NAME or path/to/file.py:FACTORY.", metavar="MODEL")
    ],
    recipe: Annotated[
        str | None,
        typer.Option(help="The scheme the weights should have (default: the best match)."),
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(metavar="GLOB=ROLE", help="A weight's role, by name pattern; repeatable."),
    ] = None,
    activation: Annotated[str, typer.Option(help="What matched gains refer to.")] = "relu",
    model_arg: ModelArgs = None,
    out: Annotated[Path | None, typer.Option(help="Default: results/audit-<model name>.")] = None,
) -> None:
    """Check a model's initialization, weight by weight, against a recipe.

    Exit code 1 when a weight is off (docs/cli.md says when), 0 otherwise.
    """
    from initbench.core.models import model_name
    from initbench.studies.audit import audit_folder

    folder = out or Path("results") / f"audit-{model_name(model)}"
    result = audit_folder(
        model,
        folder,
        recipe=recipe,
        roles=role or [],
        model_args=model_arg or [],
        activation=activation,
    )
    from initbench.report import report

    page = report(folder)
    how = "the best match" if result.best_match else "given"
    typer.echo(f"{model} against {result.scheme} ({how})")
    typer.echo(result.terminal())
    for line in result.findings():
        typer.echo(f"off: {line}")
    weights = int((result.table["intended"] != "").sum())
    done(
        f"{len(result.off)} of {weights} weights off; table in {folder / 'params.parquet'}; "
        f"page in {page}"
    )
    if result.off:
        raise typer.Exit(1)


@app.command()
def coord(
    model: Annotated[
        str,
        typer.Argument(
            help="A built-in arch id (mlp, resmlp[norm=layer], ...) or path/to/file.py:FACTORY "
            "whose factory takes width=.",
            metavar="MODEL",
        ),
    ],
    widths: Annotated[str, typer.Option(help="Comma list; at least 2 distinct.")] = (
        "64,128,256,512"
    ),
    steps: Annotated[int, typer.Option(help="Optimizer steps after initialization.")] = 3,
    seeds: Annotated[int, typer.Option(help="Copies per width.")] = 2,
    scheme: Reinitialize = None,
    activation: Annotated[
        str, typer.Option(help="A built-in arch's nonlinearity; what matched gains refer to.")
    ] = "relu",
    depth: Annotated[
        int | None, typer.Option(help="Hidden layers of a built-in arch (default 4).")
    ] = None,
    optimizer: Annotated[str, typer.Option(help="adam or sgd.")] = "adam",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    input_spec: Annotated[
        str | None,
        typer.Option(
            "--input", metavar="SPEC", help="A factory's batch shape, w for the width: 32xw."
        ),
    ] = None,
    batch: Annotated[
        int | None, typer.Option(help="A built-in arch's batch size (default 64).")
    ] = None,
    model_arg: ModelArgs = None,
    device: Device = "auto",
    out: Annotated[Path | None, typer.Option(help="Default: results/coord-<model name>.")] = None,
) -> None:
    """How every module's output scales with width, at init and after a few steps."""
    from initbench.core.models import model_name
    from initbench.studies.coord import coord_folder, parse_widths

    folder = coord_folder(
        model,
        parse_widths(widths),
        out or Path("results") / f"coord-{model_name(model)}",
        steps=steps,
        seeds=seeds,
        scheme=scheme,
        activation=activation,
        depth=depth,
        optimizer=optimizer,
        lr=lr,
        input_spec=input_spec,
        batch=batch,
        model_args=model_arg or [],
        device=device,
    )
    from initbench.report import report
    from initbench.report.coord import findings
    from initbench.sweeps.store import load

    results = load(folder)
    page = report(results)
    typer.echo(findings(results))
    done(f"coordinates and slopes in {folder}; page in {page}")


@app.command()
def phase(
    activation: Annotated[str, typer.Option(help="The activation (tanh, relu, ...).")] = "tanh",
    sigma_w2: Annotated[
        str, typer.Option("--sigma-w2", help="Weight variances: start:stop:count or a list.")
    ] = "0.5:4:8",
    sigma_b2: Annotated[
        str, typer.Option("--sigma-b2", help="Bias variances: start:stop:count or a list.")
    ] = "0.05",
    depths: Annotated[str, typer.Option(help="Comma list of depths.")] = "4,8,16,32",
    width: Annotated[int, typer.Option(help="Width of every net.")] = 128,
    seeds: Annotated[int, typer.Option(help="Seeds per point.")] = 2,
    dataset: Annotated[str | None, typer.Option(help="Probe/train on this dataset.")] = None,
    train_steps: Annotated[int, typer.Option(help="Steps per run; 0: probe only.")] = 0,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.01,
    device: Device = "auto",
    out: Annotated[Path | None, typer.Option(help="Default: results/phase-<activation>.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """A phase diagram over (sigma_w^2, sigma_b^2): measured against chi1 = 1 and 6 xi_c."""
    from initbench.studies.phase import parse_values, phase_grid

    weights = parse_values(sigma_w2, "--sigma-w2")
    biases = parse_values(sigma_b2, "--sigma-b2")
    depth_list = tuple(int(d) for d in split_list(depths) or []) if _integers(depths) else None
    if not depth_list:
        raise UsageError(f"--depths must be a comma list of integers, got {depths!r}")
    more = {"dataset": dataset, "train_steps": train_steps, "lr": lr}
    phase_grid(activation, weights, biases, depth_list, width, seeds, **more)  # checks names
    from initbench.studies.phase import phase as run_phase

    try:
        path = run_phase(
            activation,
            weights,
            biases,
            depth_list,
            out or Path("results") / f"phase-{activation}",
            width=width,
            seeds=seeds,
            device=device,
            progress=progress,
            **more,
        )
    except KeyboardInterrupt:
        typer.echo("initbench: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    done(f"results in {path}; initbench report {path} draws the phase diagram")


def _integers(text: str) -> bool:
    return all(part.strip().isdigit() for part in text.split(",") if part.strip())


@app.command()
def reproduce(
    name: Annotated[
        str | None, typer.Argument(help="A reproduction (initbench list reproductions).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Run every reproduction.")] = False,
    full: Annotated[bool, typer.Option("--full", help="The paper's size (hours; a GPU).")] = False,
    device: Device = "cpu",
    out: Annotated[Path | None, typer.Option(help="Default: results/reproduce[/NAME].")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Reproduce a classic result (he2015, glorot2010, ...) with its figures and verdict."""
    from initbench import reproduce as catalog

    if all_ == (name is not None):
        raise UsageError("name one reproduction, or pass --all")
    if name is not None:
        catalog.get(name)
        folder = out or Path("results") / "reproduce" / name
        record = catalog.reproduce(name, folder, full=full, device=device, progress=progress)
        word = "reproduced" if record["passed"] else "NOT reproduced"
        done(f"{name}: {word} ({record['seconds']} s); report in {folder / 'report'}")
        return
    page = catalog.reproduce_all(
        out or Path("results") / "reproduce", full=full, device=device, progress=progress
    )
    done(f"report in {page}")


@app.command("report")
def report_cmd(
    results_dir: Annotated[
        Path, typer.Argument(help="A folder of sweep, probe, coord, phase or reproduce.")
    ],
    out: Annotated[Path | None, typer.Option(help="Default: RESULTS_DIR/report.")] = None,
) -> None:
    """Write the tables, figures and HTML page of a results folder."""
    from initbench.report import report

    done(f"report in {report(results_dir, out)}")


@app.command("publish")
def publish_cmd(
    sweep_dirs: Annotated[list[Path], typer.Argument(help="Results folders (any kind).")],
    out: Annotated[Path, typer.Option(help="Site folder.")] = Path("site"),
    asv_html: Annotated[Path | None, typer.Option(help="asv's html folder.")] = None,
) -> None:
    """Build a static site joining several sweep reports and asv's pages."""
    from initbench.report import publish

    done(f"site in {publish(sweep_dirs, out, asv_html)}")


@app.command()
def compare(
    first: Annotated[Path, typer.Argument(help="A sweep folder or a published site: a.")],
    second: Annotated[Path, typer.Argument(help="Another of the same kind: b.")],
    out: Annotated[Path, typer.Option(help="Where the page and changes.csv go.")] = Path("compare"),
) -> None:
    """Show the verdicts that changed between two sweeps or two published sites."""
    from initbench.report.compare import compare as compare_folders

    page, counts = compare_folders(first, second, out)
    done(
        f"{counts['changed']:,} of {counts['compared']:,} scheme-cells changed "
        f"({counts['verdicts']:,} verdicts; {counts['only_a']:,} only in a, "
        f"{counts['only_b']:,} only in b); page in {page}"
    )


@app.command()
def check(
    folder: Annotated[Path, typer.Argument(help="A results folder (any kind) or a site.")],
    repair: Annotated[
        bool,
        typer.Option(help="Remove damaged files, so that running the sweep again recomputes them."),
    ] = False,
) -> None:
    """Verify a results folder: every table readable, every run once, what is left to do.

    Exit code 0 when the folder is whole (or was repaired), 1 when it is damaged.
    """
    from initbench.sweeps.check import check_folder, repair_folder

    health = check_folder(folder)
    for line in health.lines():
        typer.echo(line)
    if health.damaged and repair:
        for line in repair_folder(health):
            typer.echo(line)
        return
    if health.damaged:
        raise typer.Exit(1)


# ---- the entry point ------------------------------------------------------------------------

# errno values that say the user's path cannot be written: exit 2, like any bad input
PATH_ERRORS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
}
_interrupted = threading.Event()


def _on_interrupt(signum: int, frame: object) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


def _quiet_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """An interrupt that lands in a finalizer cannot propagate: remember it, print nothing."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _interrupted.set()
        return
    sys.__unraisablehook__(unraisable)


def done(text: str) -> None:
    """Prints a command's last line, unless Ctrl-C came first (then it exits 130). From here
    on the work is whole: a later Ctrl-C changes nothing."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _interrupted.is_set():
        raise KeyboardInterrupt
    typer.echo(text)


def main() -> None:
    """Entry point: one line and exit 2 for bad input, unless INITBENCH_DEBUG=1; Ctrl-C
    anywhere exits 130 with one line."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _on_interrupt) if in_main else None
    sys.unraisablehook = _quiet_unraisable
    _interrupted.clear()
    try:
        code = _run(os.environ.get("INITBENCH_DEBUG") == "1")
    finally:
        sys.unraisablehook = sys.__unraisablehook__
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if _interrupted.is_set() and code != 130:
        typer.echo("initbench: interrupted", err=True)
        code = 130
    if code == 130:
        # A Ctrl-C that lands in code run by exec (dataclasses and scipy build functions so)
        # leaves CPython's "unhandled interrupt" flag set even when caught, and under
        # ``python -m`` the process then dies by SIGINT instead of exiting 130. Any exec
        # that finishes clears the flag.
        exec("")
    sys.exit(code)


def _run(debug: bool) -> int:
    """Runs the command line; returns the exit code, having printed any error as one line."""
    try:
        code = app(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as error:  # no command: the help, exit 0
        typer.echo(error.ctx.get_help() if error.ctx else str(error))
        return 0
    except click.ClickException as error:
        if debug:
            raise
        return _error(_one_line(error.format_message()), error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("initbench: interrupted", err=True)
        return 130
    except UsageError as error:
        if debug:
            raise
        return _error(str(error), 2)
    except RunsFailed as error:
        if debug:
            raise
        return _error(str(error), 1)
    except OSError as error:
        if debug:
            raise
        where = f"{error.filename}: " if error.filename else ""
        return _error(f"{where}{error.strerror or error}", 2 if error.errno in PATH_ERRORS else 1)
    if code == 130:
        typer.echo("initbench: interrupted", err=True)
    return code or 0


def _error(message: str, code: int) -> int:
    typer.echo(f"initbench: error: {message}", err=True)
    return code


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


if __name__ == "__main__":
    main()
