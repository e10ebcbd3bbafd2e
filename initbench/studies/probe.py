"""Per-module statistics of any ``nn.Module`` at initialization (``initbench probe``).

:func:`probe_model` runs one forward and one backward pass per seed through a copy of a
model and records, for every call of every leaf module (and of every
``nn.MultiheadAttention``, taken whole), the statistics of its output, of the gradient at
its output, and of its own weights and their gradients. :func:`load_model` and
:func:`load_input` turn the command line's ``MODEL`` and ``--input`` into a model and a
batch; :func:`probe_folder` is the whole command.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from initbench import __version__
from initbench.core.activations import get_activation
from initbench.core.device import device_info, resolve_device, use_full_float32
from initbench.core.errors import UsageError
from initbench.core.folders import claim, now, write_results
from initbench.core.ids import shape_text
from initbench.core.models import (
    Inputs,
    first_line,
    first_tensor,
    fit_batch,
    load_input,
    load_model,
    parse_model_args,
    prepare,
)
from initbench.core.rng import run_generator
from initbench.core.schemes import get_scheme
from initbench.initialize import apply
from initbench.measure.hooks import GRADIENT_COLUMN, WEIGHT_COLUMNS, Recorder

OUTPUTS = ["out_mean", "out_var", "out_abs_max"]  # of each call's output
COLUMNS = ["seed", "module", "kind", "call", "order", *OUTPUTS, GRADIENT_COLUMN, *WEIGHT_COLUMNS]


def probe_model(
    model: nn.Module,
    inputs: Inputs,
    scheme: str | None = None,
    activation: str | None = None,
    seeds: int = 1,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Output, gradient and weight statistics of every module call, one pass per seed.

    Each seed probes a deep copy of ``model``: ``inplace`` switched off wherever a module
    has it (so every output stays intact), re-initialized with ``scheme`` when given, in
    train mode (BatchNorm normalizes with the batch's statistics) except for dropout,
    drop-path and ``nn.MultiheadAttention``, which are in eval mode (no random masks).
    Forward hooks watch every leaf module, and every ``nn.MultiheadAttention`` as a whole
    (it calls ``out_proj``'s weight directly, never ``out_proj``). The backward pass feeds a
    standard-normal cotangent to the output's first tensor. As in a sweep, one generator,
    ``run_generator(seed)``, draws the weights, then the batch, then the cotangent.

    Args:
        model: any module; it is not changed.
        inputs: a batch (the same for every seed), or its shape: a standard-normal batch
            per seed.
        scheme: a scheme id to re-initialize every weight with; None keeps the model's own
            initialization. A data-dependent scheme (``lsuv``) fits on a standard-normal
            batch of its own (``run_generator(seed, Stream.FIT)``, as in a sweep), or on the
            given batch.
        activation: what the scheme's ``matched`` gains refer to (default ``relu``).
        seeds: how many copies to probe (seeds 0..seeds-1).
        device: where to compute (``auto``, ``cpu``, ``cuda``, ...).

    Returns:
        One row per seed and module call, in forward order, with :data:`COLUMNS`.

    Raises:
        UsageError: the scheme cannot initialize a weight of the model, the model rejects
            the input, or its output holds no tensor.
    """
    if seeds < 1:
        raise UsageError(f"seeds must be at least 1, got {seeds}")
    where = device if isinstance(device, torch.device) else resolve_device(device)
    frames = [_probe_seed(model, inputs, scheme, activation, seed, where) for seed in range(seeds)]
    return pd.concat(frames, ignore_index=True)


def _probe_seed(
    model: nn.Module,
    inputs: Inputs,
    scheme: str | None,
    activation: str | None,
    seed: int,
    device: torch.device,
) -> pd.DataFrame:
    generator = run_generator(seed)
    net = prepare(copy.deepcopy(model))
    if scheme is not None:
        data = fit_batch(inputs, seed) if get_scheme(scheme).data_dependent else None
        net = net.cpu()  # schemes draw on the CPU generator
        apply(net, scheme, activation or "relu", generator=generator, data=data)
    net = net.to(device)
    x = inputs if isinstance(inputs, torch.Tensor) else torch.randn(inputs, generator=generator)
    recorder = Recorder(net, device, OUTPUTS, gradients=True, weights=True)
    with recorder:
        try:
            out = first_tensor(net(x.to(device)))
        except Exception as error:
            raise UsageError(
                f"the model rejects input of shape {shape_text(x.shape)}: {first_line(error)}"
            ) from error
    if out is None:
        raise UsageError("the model's output holds no tensor")
    if out.requires_grad:
        net.zero_grad(set_to_none=True)
        out.backward(torch.randn(out.shape, generator=generator).to(device, out.dtype))
    return recorder.frame().assign(seed=seed)[COLUMNS]


# ---- the command ---------------------------------------------------------------------------


def probe_folder(
    model_spec: str,
    input_spec: str,
    out: Path,
    *,
    scheme: str | None = None,
    activation: str | None = None,
    seeds: int = 1,
    model_args: Sequence[str] = (),
    device: str = "auto",
) -> Path:
    """``initbench probe``: probes a model and writes ``out/modules.parquet`` and
    ``out/meta.json``. Every input is checked, and every seed probed, before anything is
    written.

    Args:
        model_spec: ``torchvision:NAME`` or ``path/to/file.py:FACTORY``.
        input_spec: a batch shape (``8x3x224x224``) or a ``.pt`` file holding a batch.
        out: the folder to write.
        scheme: re-initialize every weight with this scheme (None: as built).
        activation: what the scheme's matched gains refer to (needs ``scheme``).
        seeds: copies to probe.
        model_args: ``key=value`` arguments of the factory.
        device: where to compute.

    Returns:
        ``out``.

    Raises:
        UsageError: bad input (see :func:`load_model`, :func:`load_input`,
            :func:`probe_model`), or an output folder that is a file, holds something other
            than a probe, or cannot be written.
    """
    args = parse_model_args(list(model_args))
    inputs = load_input(input_spec)
    if activation is not None and scheme is None:
        raise UsageError("--activation sets a scheme's matched gains: it needs --scheme")
    scheme_id = get_scheme(scheme).id if scheme else None
    activation = get_activation(activation or "relu").id if scheme else None
    where = resolve_device(device)
    claim(out, "probe")
    model = load_model(model_spec, args)
    use_full_float32()
    started = now()
    frame = probe_model(model, inputs, scheme_id, activation, seeds, where)
    shape = inputs if isinstance(inputs, tuple) else tuple(inputs.shape)
    meta = {
        "kind": "probe",
        "model": model_spec,
        "model_args": args,
        "input": input_spec,
        "input_shape": list(shape),
        "scheme": scheme_id,
        "activation": activation,
        "seeds": seeds,
        "initbench": __version__,
        "started": started,
        "finished": now(),
    } | device_info(where)
    write_results(out, {"modules": frame}, meta)
    return out
