"""The user's model: loading it from the command line's ``MODEL`` (torchvision or a
Python file's factory) with its arguments, its ``--input``, preparing a copy to be
measured, and which of its modules are watched (their outputs and weights)."""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from initbench.core.errors import UsageError
from initbench.core.rng import Stream, run_generator

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

Inputs = torch.Tensor | tuple[int, ...]  # a batch, or the shape of standard-normal ones


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
        raise UsageError(f"{spec} raised {describe_error(error)}") from error
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
        raise UsageError(f"cannot import {path}: {describe_error(error)}") from error
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
    ``resmlp-norm-layer`` for ``resmlp[norm=layer]``.

    Args:
        spec: the command line's ``MODEL``.

    Returns:
        Letters, digits, dots and underscores, joined by ``-``.
    """
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
        raise UsageError(f"cannot read {path}: {describe_error(error)}") from error
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


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its type's name if none)."""
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def describe_error(error: BaseException) -> str:
    """``TypeError: its first line`` (the type alone when it says nothing)."""
    line = first_line(error)
    return (
        type(error).__name__ if line == type(error).__name__ else f"{type(error).__name__}: {line}"
    )


def watched(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose calls are recorded (by :class:`~initbench.measure.hooks.Recorder`,
    and as the layers of a model swept as an architecture): leaves (modules without
    children), and ``nn.MultiheadAttention`` whole (its children skipped), in
    ``named_modules`` order."""
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
    ``q/k/v_proj_weight`` of attention) or ``weight_*`` (a recurrent layer's
    ``weight_ih_l0``, ...), and ``out_proj.weight`` for attention."""
    weights = [
        p
        for name, p in module.named_parameters(recurse=False)
        if name.endswith("weight") or name.startswith("weight_")
    ]
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
