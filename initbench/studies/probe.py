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
import difflib
import importlib.util
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from initbench import __version__
from initbench.core.activations import get_activation
from initbench.core.device import device_info, resolve_device, use_full_float32
from initbench.core.errors import UsageError
from initbench.core.folders import claim, write_results
from initbench.core.rng import Stream, run_generator
from initbench.core.schemes import get_scheme
from initbench.initialize import apply

COLUMNS = [
    "seed",
    "module",
    "kind",
    "call",
    "order",
    "out_mean",
    "out_var",
    "out_abs_max",
    "grad_out_var",
    "weight_var",
    "weight_grad_norm",
]
# random in train mode, so probed in eval mode: dropout, attention (its attention dropout), and
# drop-path (torchvision's StochasticDepth, timm's DropPath: by class name)
EVAL_MODE = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.MultiheadAttention,
)
DROP_PATHS = ("StochasticDepth", "DropPath")
SHAPE = re.compile(r"\d+(?:x\d+)*")
LIST_MODELS = 'python -c "import torchvision; print(torchvision.models.list_models())"'

Inputs = torch.Tensor | tuple[int, ...]


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


def watched(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules :func:`probe_model` records: leaves (modules without children), and
    ``nn.MultiheadAttention`` whole (its children skipped), in ``named_modules`` order."""
    chosen: list[tuple[str, nn.Module]] = []
    attention: list[str] = []
    for name, module in model.named_modules():
        if any(parent == "" or name.startswith(f"{parent}.") for parent in attention):
            continue
        if isinstance(module, nn.MultiheadAttention):
            attention.append(name)
            chosen.append((name, module))
        elif next(module.children(), None) is None:
            chosen.append((name, module))
    return chosen


def own_weights(module: nn.Module) -> list[nn.Parameter]:
    """A module's weights: its parameters named ``*weight`` (``in_proj_weight`` or
    ``q/k/v_proj_weight`` of attention), and ``out_proj.weight`` for attention."""
    weights = [p for name, p in module.named_parameters(recurse=False) if name.endswith("weight")]
    if isinstance(module, nn.MultiheadAttention):
        weights.append(module.out_proj.weight)
    return weights


def first_tensor(output: object) -> torch.Tensor | None:
    """The first tensor of an output: itself, or the first one found depth first in a
    tuple (named tuples too), a list or a dict's values; None if it holds none."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, list | tuple):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


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
    recorder = _Recorder(net, device)
    try:
        out = first_tensor(net(x.to(device)))
    except Exception as error:
        raise UsageError(
            f"the model rejects input of shape {shape_text(x.shape)}: {first_line(error)}"
        ) from error
    finally:
        recorder.remove()
    if out is None:
        raise UsageError("the model's output holds no tensor")
    if out.requires_grad:
        net.zero_grad(set_to_none=True)
        out.backward(torch.randn(out.shape, generator=generator).to(device, out.dtype))
    return recorder.frame(seed)


def prepare(net: nn.Module) -> nn.Module:
    """Sets ``net`` up to be probed, in place, and returns it: ``inplace`` off wherever a
    module has it (every output stays intact), train mode, except dropout, drop-path and
    ``nn.MultiheadAttention`` in eval mode (no random masks)."""
    net.train()
    for module in net.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
        if isinstance(module, EVAL_MODE) or type(module).__name__ in DROP_PATHS:
            module.eval()
    return net


def fit_batch(inputs: Inputs, seed: int) -> torch.Tensor:
    """A data-dependent scheme's batch: the given one, or a standard-normal batch of its own
    drawn from the seed's fit stream (as in a sweep: it is not fitted on the probe batch)."""
    if isinstance(inputs, torch.Tensor):
        return inputs
    return torch.randn(inputs, generator=run_generator(seed, Stream.FIT))


class _Recorder:
    """Forward hooks on the watched modules of a model: a row per call, kept on-device."""

    def __init__(self, net: nn.Module, device: torch.device) -> None:
        self.modules = watched(net)
        self.nan = torch.tensor(math.nan, device=device)
        self.calls: Counter[str] = Counter()
        self.rows: list[tuple[str, str, int]] = []  # module, kind, call
        self.outputs: list[torch.Tensor] = []  # mean, variance, largest magnitude
        self.grads: dict[int, torch.Tensor] = {}  # row -> variance of dL/d output
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            row = len(self.rows)
            self.rows.append((name, type(module).__name__, self.calls[name]))
            self.calls[name] += 1
            tensor = first_tensor(output)
            if tensor is None or tensor.numel() == 0:
                self.outputs.append(self.nan.expand(3))
                return
            value = tensor.detach().float()
            self.outputs.append(
                torch.stack([value.mean(), value.var(correction=0), value.abs().max()])
            )
            if tensor.requires_grad:
                tensor.register_hook(partial(self._keep_grad, row))

        return hook

    def _keep_grad(self, row: int, grad: torch.Tensor) -> None:
        self.grads[row] = grad.detach().float().var(correction=0)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _weights(self, module: nn.Module) -> torch.Tensor:
        """Variance of the module's weights and the norm of their gradients (NaN: none)."""
        weights = own_weights(module)
        if not weights:
            return self.nan.expand(2)
        variance = torch.cat([w.detach().flatten().float() for w in weights]).var(correction=0)
        grads = [w.grad.float().square().sum() for w in weights if w.grad is not None]
        norm = torch.stack(grads).sum().sqrt() if grads else self.nan
        return torch.stack([variance, norm])

    def frame(self, seed: int) -> pd.DataFrame:
        """The rows of one seed's pass, copied off the device at once."""
        if not self.rows:
            return pd.DataFrame(columns=COLUMNS)
        weights = {name: self._weights(m) for name, m in self.modules if self.calls[name]}
        grads = [self.grads.get(row, self.nan) for row in range(len(self.rows))]
        values = torch.cat(
            [
                torch.stack(self.outputs),
                torch.stack(grads)[:, None],
                torch.stack([weights[name] for name, _, _ in self.rows]),
            ],
            dim=1,
        )
        frame = pd.DataFrame(self.rows, columns=["module", "kind", "call"])
        frame.insert(0, "seed", seed)
        frame["order"] = range(len(frame))
        frame[COLUMNS[5:]] = values.cpu().double().numpy()
        return frame[COLUMNS]


# ---- the command line's model, input and model arguments ------------------------------------


def load_model(spec: str, model_args: Mapping[str, Any] | None = None) -> nn.Module:
    """Builds ``torchvision:NAME`` (``torchvision.models.get_model(NAME, weights=None)``) or
    ``path/to/file.py:FACTORY`` (the file imported, ``FACTORY`` called) with ``model_args``.

    Raises:
        UsageError: a malformed spec, an unknown torchvision model, a missing file or
            factory, a factory that raises or returns something other than an ``nn.Module``.
    """
    source, _, name = spec.rpartition(":")
    if not name or not (source == "torchvision" or source.endswith(".py")):
        raise UsageError(f"MODEL must be torchvision:NAME or path/to/file.py:FACTORY, got {spec!r}")
    factory = _torchvision(name) if source == "torchvision" else load_factory(Path(source), name)
    return build_model(spec, factory, model_args)


def build_model(
    spec: str, factory: Callable[..., object], model_args: Mapping[str, Any] | None = None
) -> nn.Module:
    """Calls ``factory`` (the model ``spec`` names) with ``model_args``.

    Raises:
        UsageError: the factory raises, or returns something other than an ``nn.Module``.
    """
    try:
        model = factory(**(model_args or {}))
    except Exception as error:
        raise UsageError(f"{spec} raised {_describe(error)}") from error
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec} returned a {type(model).__name__}, not an nn.Module")
    return model


def _torchvision(name: str) -> Callable[..., object]:
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown torchvision model {name!r}{hint} (all of them: {LIST_MODELS})")
    return partial(torchvision.models.get_model, name, weights=None)


def load_factory(path: Path, name: str) -> Callable[..., object]:
    """Imports ``path`` (its folder importable while it loads) and returns its ``name``.

    Raises:
        UsageError: a missing file, a file that fails to import, a missing or non-callable
            ``name`` (naming the callables the file defines).
    """
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    module_name = f"initbench_model_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None  # a .py file always has both
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up there
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise UsageError(f"cannot import {path}: {_describe(error)}") from error
    finally:
        sys.path.remove(folder)
    factory = getattr(module, name, None)
    if factory is None:
        defined = [
            key
            for key, value in vars(module).items()
            if callable(value) and getattr(value, "__module__", None) == module_name
        ]
        listing = f" (it defines {', '.join(defined)})" if defined else ""
        raise UsageError(f"{path} has no {name!r}{listing}")
    if not callable(factory):
        raise UsageError(f"{name!r} in {path} is a {type(factory).__name__}, not a factory")
    return factory


def model_name(spec: str) -> str:
    """The model's name in the default output folder: ``resnet18`` for
    ``torchvision:resnet18``, ``nets-make`` for ``path/to/nets.py:make``,
    ``resmlp-norm-layer`` for ``resmlp[norm=layer]``."""
    source, _, name = spec.rpartition(":")
    text = name if source in ("torchvision", "") else f"{Path(source).stem}-{name}"
    return "-".join(re.findall(r"[A-Za-z0-9._]+", text)).strip("._") or "model"


def load_input(spec: str) -> Inputs:
    """``8x3x224x224`` (a shape: standard-normal batches) or a ``.pt`` file holding one tensor.

    Raises:
        UsageError: a malformed or empty shape, a missing or unreadable file, a file
            holding something other than a tensor.
    """
    if SHAPE.fullmatch(spec):
        shape = tuple(int(size) for size in spec.split("x"))
        if 0 in shape:
            raise UsageError(f"--input sizes must be positive, got {spec}")
        return shape
    path = Path(spec)
    if path.suffix != ".pt":
        raise UsageError(f"--input must be a shape like 8x3x224x224 or a .pt file, got {spec!r}")
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UsageError(f"cannot read {path}: {_describe(error)}") from error
    if not isinstance(value, torch.Tensor):
        raise UsageError(f"{path} holds a {type(value).__name__}, not a tensor")
    return value


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """``["num_classes=10", "dropout=0.1", "affine=false"]`` -> keyword arguments; each value
    is an int, else a float, else ``true``/``false``, else a string."""
    args: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(
                f"--model-arg must be key=value with a Python name as key, got {item!r}"
            )
        args[key.strip()] = _value(text.strip())
    return args


def _value(text: str) -> object:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.lower() == "true" if text.lower() in ("true", "false") else text


def shape_text(shape: tuple[int, ...] | torch.Size) -> str:
    """``2x3x8x8``."""
    return "x".join(str(size) for size in shape)


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its type's name if none)."""
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def _describe(error: BaseException) -> str:
    """``TypeError: its first line`` (the type alone when it says nothing)."""
    line = first_line(error)
    return (
        type(error).__name__ if line == type(error).__name__ else f"{type(error).__name__}: {line}"
    )


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


def now() -> str:
    """The current UTC time, to the second, as ``meta.json``'s ``started`` and ``finished``."""
    return datetime.now(UTC).isoformat(timespec="seconds")
