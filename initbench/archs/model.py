"""Any ``nn.Module`` as an architecture of a sweep.

Its id is the model as ``initbench probe`` takes it, ``torchvision:NAME`` or
``path/to/file.py:FACTORY``, with the factory's keyword arguments in brackets and
``input``, one sample's shape: ``torchvision:resnet18[num_classes=10,input=3x32x32]``. A
torchvision model sees ``3 x image_size x image_size`` images without ``input``; a factory
needs it, unless the sweep's dataset gives the samples (then ``input`` reshapes them:
``input=64`` flattens digits' 1 x 8 x 8 images).

The model is built once, on the CPU, with torch's global generator seeded 0 while it
builds (its state is restored after), and prepared as ``initbench probe`` prepares a copy
(:func:`~initbench.core.models.prepare`: in-place ops off; dropout, drop-path and
attention in eval mode, in training too). Its **layers** are the calls of its watched
modules (:func:`~initbench.core.models.watched`: every leaf, every
``nn.MultiheadAttention`` whole) in forward order whose output's first tensor is a
floating-point tensor with the batch along its first dimension: parameter-free modules
included, and a residual addition where a module takes the sum (the second call of
torchvision's BasicBlock's ReLU). So a model fixes its own depth, its number of layers,
and width, the most units of a layer (the channels of an image, the last dimension of a
vector or a sequence); the grid's depths and widths apply to the registered archs. A
layer's ``pre_*`` statistics describe the module's output, its ``post_*`` the same tensor
(a model adds no activation of its own), its ``grad_w_norm`` the module's own weights
(:func:`~initbench.core.models.own_weights`), its gradient ``dL/dh`` the gradient at that
output. There is no mean-field theory for a model.

:class:`ModelStack` computes R runs at once where the model allows it: one
``torch.func.functional_call`` of the model under ``torch.func.vmap`` over the runs'
stacked parameters and buffers; where vmap refuses the model (data-dependent control
flow, an op without a batching rule such as ``nn.LSTM``'s, a random op) it calls the
model once per run, with the same numbers. Parameters no scheme touches (a class token, a
positional embedding) keep their built values in every run; buffers start as built and
each run updates its own (BatchNorm's running statistics, in training).
"""

from __future__ import annotations

import copy
import functools
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from initbench.archs.base import (
    Arch,
    Axes,
    Inputs,
    Parts,
    Stacked,
    Stage,
    Taps,
    _key,
    network_parts,
)
from initbench.core.activations import Activation
from initbench.core.errors import UsageError
from initbench.core.ids import format_id, shape_text
from initbench.core.models import (
    SHAPE,
    first_line,
    first_tensor,
    load_model,
    own_weights,
    parse_model_args,
    prepare,
    watched,
)
from initbench.core.schemes import Scheme
from initbench.core.targets import observe

INPUT = "input"  # the parameter that gives one sample's shape; the others go to the factory
TRACE_BATCH = 2  # samples of the passes that time and size a model


@dataclass(frozen=True)
class Layer:
    """A layer of a model: a call of a watched module, and one sample's output shape."""

    module: str
    kind: str
    call: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Trace:
    """What one forward pass of a batch shows of a model: its layers, one sample's output
    shape, and per sample the multiply-adds of its weights and the floats its watched
    modules output (time and memory estimates)."""

    layers: tuple[Layer, ...]
    output: tuple[int, ...]
    macs: float
    elements: int


def units(shape: tuple[int, ...]) -> int:
    """A layer's units from one sample's shape: channels of an image (3 or more
    dimensions), the last dimension of a vector or a sequence (1 for a scalar)."""
    if len(shape) >= 3:
        return shape[0]
    return shape[-1] if shape else 1


class ModelArch(Arch):
    """A user's model as an architecture (see the module's docstring).

    Args:
        spec: ``torchvision:NAME`` or ``path/to/file.py:FACTORY``.
        params: the id's raw parameters: ``input`` (a shape, ``3x32x32``) and the
            factory's keyword arguments (each an int, a float, ``true``/``false`` or a
            string, as ``--model-arg`` parses them).

    Raises:
        UsageError: a malformed ``input``, or what :func:`~initbench.core.models.load_model`
            refuses (an unknown torchvision model, a factory that raises, ...).
    """

    doc = "a user's nn.Module: torchvision:NAME or path/to/file.py:FACTORY"

    def __init__(self, spec: str, params: dict[str, str]) -> None:
        self.spec, self.raw = spec, dict(params)
        shape = params.get(INPUT)
        if shape is not None and not SHAPE.fullmatch(shape):
            raise UsageError(f"arch {spec!r}: input must be a shape like 3x32x32, got {shape!r}")
        self.sample = tuple(int(size) for size in shape.split("x")) if shape else None
        if self.sample is not None and 0 in self.sample:
            raise UsageError(f"arch {spec!r}: input sizes must be positive, got {shape}")
        self.args = parse_model_args([f"{k}={v}" for k, v in params.items() if k != INPUT])
        # the id: the arguments in alphabetical order, then the input
        self.values = {k: self.args[k] for k in sorted(self.args)}
        self.values |= {INPUT: shape_text(self.sample)} if self.sample else {}
        self.name = spec
        self.model = self._build()
        self._traces: dict[tuple[Inputs, int], Trace] = {}
        self._stackable_for: dict[Inputs, bool] = {}
        self._parts: Parts | None = None

    @property
    def id(self) -> str:
        return format_id(self.spec, self.values)

    def _build(self) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = load_model(self.spec, self.args)
        return prepare(model.float())

    # ---- inputs ---------------------------------------------------------------------------

    def synthetic_sample(self, width: int, image_size: int, tokens: int) -> tuple[int, ...]:
        if self.sample is not None:
            return self.sample
        if self.spec.startswith("torchvision:"):
            return (3, image_size, image_size)
        raise UsageError(
            f"arch {self.spec!r} needs one sample's shape (or a dataset): write "
            f"{format_id(self.spec, {**self.args, INPUT: '3x32x32'})}, say"
        )

    def data_sample(self, x: torch.Tensor) -> torch.Tensor:
        if self.sample is None or tuple(x.shape[1:]) == self.sample:
            return x
        if math.prod(x.shape[1:]) != math.prod(self.sample):
            raise UsageError(
                f"arch {self.id}: a dataset sample of shape {shape_text(x.shape[1:])} has "
                f"{math.prod(x.shape[1:])} values, input {shape_text(self.sample)} "
                f"{math.prod(self.sample)}"
            )
        return x.reshape(len(x), *self.sample)

    def output_sample(self, inputs: Inputs, batch: int) -> tuple[int, ...]:
        return self.trace(inputs, batch).output

    def sizes(self, depths, widths, inputs: Inputs, batch: int) -> list[tuple[int, int]]:
        layers = self.trace(inputs, batch).layers
        if not layers:
            raise UsageError(
                f"arch {self.id} has no layer: no module's output is a floating-point tensor "
                "with the batch first"
            )
        return [(len(layers), max(units(layer.shape) for layer in layers))]

    # ---- networks -------------------------------------------------------------------------

    def build(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> nn.Module:
        """A fresh copy of the model as built (the depth, width and activation are its own)."""
        return copy.deepcopy(self.model)

    def template(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> nn.Module:
        return self.model

    def model_parts(self) -> Parts:
        """The model's weights with their sites: roles from its layers' names, no width."""
        if self._parts is None:
            self._parts = network_parts(self.model, None, None)
        return self._parts

    def parts(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> Parts:
        return self.model_parts()

    def stack(
        self,
        runs: int,
        depth: int,
        width: int,
        activation: Activation,
        inputs: Inputs,
        device: torch.device | str = "cpu",
    ) -> ModelStack:
        return ModelStack(
            self.model_parts(),
            runs,
            depth,
            activation,
            device,
            functools.partial(self.trace, inputs),
            self.stackable(inputs),
        )

    def macs_per_sample(
        self, depth: int, width: int, activation: Activation, inputs: Inputs
    ) -> float:
        return self.trace(inputs, TRACE_BATCH).macs

    def activation_elements(self, depth: int, width: int, inputs: Inputs) -> int:
        return self.trace(inputs, TRACE_BATCH).elements

    # ---- what a forward pass shows ----------------------------------------------------------

    def trace(self, inputs: Inputs, batch: int) -> Trace:
        """What a forward pass of a standard-normal batch of ``batch`` shows (cached).

        Raises:
            UsageError: the model rejects the batch, or its output holds no tensor with
                the batch first.
        """
        if (inputs, batch) not in self._traces:
            self._traces[(inputs, batch)] = self._trace(inputs, batch)
        return self._traces[(inputs, batch)]

    def stackable(self, inputs: Inputs) -> bool:
        """Whether runs of the model compute together under vmap (cached)."""
        if inputs not in self._stackable_for:
            self._stackable_for[inputs] = self._stackable(inputs)
        return self._stackable_for[inputs]

    def _batch(self, inputs: Inputs, batch: int) -> torch.Tensor:
        """Standard-normal samples, or zeros of an integer dtype (valid token ids)."""
        dtype = getattr(torch, inputs.dtype)
        if not dtype.is_floating_point:
            return torch.zeros(batch, *inputs.sample, dtype=dtype)
        generator = torch.Generator().manual_seed(0)
        return torch.randn(batch, *inputs.sample, generator=generator, dtype=dtype)

    def _trace(self, inputs: Inputs, batch: int) -> Trace:
        net = copy.deepcopy(self.model)
        x = self._batch(inputs, batch)
        calls: list[tuple[str, nn.Module, int, torch.Tensor | None]] = []
        count: Counter[str] = Counter()

        def hook(name: str, module: nn.Module, args: object, output: object) -> None:
            calls.append((name, module, count[name], first_tensor(output)))
            count[name] += 1

        handles = [m.register_forward_hook(functools.partial(hook, n)) for n, m in watched(net)]
        try:
            with torch.no_grad():
                out = first_tensor(net(x))
        except Exception as error:
            raise UsageError(
                f"arch {self.id} rejects input of shape {shape_text(x.shape)}: {first_line(error)}"
            ) from error
        finally:
            for handle in handles:
                handle.remove()
        if out is None or out.dim() == 0 or len(out) != batch:
            raise UsageError(
                f"arch {self.id}: its output holds no tensor with the batch of {batch} first"
            )
        layers, macs, elements = [], 0.0, 0
        for name, module, call, tensor in calls:
            if tensor is None:
                continue
            per_sample = tensor.numel() / batch
            elements += round(per_sample)
            for weight in own_weights(module):
                macs += weight.numel() * per_sample / max(len(weight), 1)
            if tensor.is_floating_point() and tensor.dim() and len(tensor) == batch:
                shape = tuple(tensor.shape[1:])
                layers.append(Layer(name, type(module).__name__, call, shape))
        return Trace(tuple(layers), tuple(out.shape[1:]), macs, elements)

    def _stackable(self, inputs: Inputs) -> bool:
        """Whether ``torch.func.vmap`` computes two runs of the model with every hook on,
        forward and backward (no data-dependent control flow, every op batched, no random
        op)."""
        trace = self.trace(inputs, TRACE_BATCH)  # a model that fails alone says why
        net = ModelStack(
            self.model_parts(),
            2,
            len(trace.layers),
            None,
            "cpu",
            functools.partial(self.trace, inputs),
            stacked=True,
        )
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                net.param(name).copy_(p.expand_as(net.param(name)))
        x = self._batch(inputs, TRACE_BATCH).expand(2, TRACE_BATCH, *inputs.sample)
        try:
            net(x, Taps()).sum().backward()
        except Exception:
            return False
        return True

    def __reduce__(self) -> tuple[type[ModelArch], tuple[str, dict[str, str]]]:
        """Pickled as its spec and parameters (a process that unpickles it builds the model
        again: its class may live in a file that only an import finds)."""
        return type(self), (self.spec, self.raw)


class ModelStack(Stacked):
    """R runs of a model: its parameters and buffers stacked (run r is index r), computed
    by ``functional_call`` under ``vmap`` (``stacked``), or once per run.

    Args:
        parts: the prepared model (``parts.template``, not changed) and its weights.
        runs, depth, activation, device: as every stacked network takes them.
        trace: the model's :class:`Trace` for a batch size (its layers).
        stacked: compute the runs under ``vmap`` (else one after another).
    """

    def __init__(
        self,
        parts: Parts,
        runs: int,
        depth: int,
        activation: Activation | None,
        device: torch.device | str,
        trace: Callable[[int], Trace],
        stacked: bool,
    ) -> None:
        super().__init__(parts, runs, depth, activation, device)
        template = parts.template
        self.trace, self.stacked = trace, stacked
        touched = {t.param for t in self.targets} | {*self.bias_names, *self.norm_params}
        self.kept = {
            name: p.detach().clone()
            for name, p in template.named_parameters()
            if name not in touched
        }
        self.buffer_names = [name for name, _ in template.named_buffers()]
        self.held = nn.Module()  # the runs' buffers
        for name, buffer in template.named_buffers():
            stacked_buffer = buffer.detach().unsqueeze(0).repeat(runs, *[1] * buffer.dim())
            self.held.register_buffer(_key(name), stacked_buffer.to(device))
        self.model = [copy.deepcopy(template).to(device)]  # in a list: not a submodule
        owners = dict(template.named_modules())
        names = {id(p): name for name, p in template.named_parameters()}
        self.weights = {
            module: [names[id(p)] for p in own_weights(owners[module])] for module in owners
        }
        # the targets whose output a hook sees (not a recurrent layer's gates: observe)
        self.observed = []
        for index, target in enumerate(self.targets):
            handle = observe(template, target, lambda out: None)
            if handle is not None:
                handle.remove()
                self.observed.append(index)
        self.layers: tuple[Layer, ...] = ()  # of the last pass with taps

    def buffer(self, name: str) -> torch.Tensor:
        return getattr(self.held, _key(name))

    @torch.no_grad()
    def initialize(
        self,
        run: int,
        scheme: Scheme,
        generator: torch.Generator | None,
        bias_var: float = 0.0,
        into: dict[str, torch.Tensor] | None = None,
        deferred: list | None = None,
    ) -> None:
        """Draws run ``run``'s weights and biases (see :meth:`Stacked.initialize`); the
        parameters no scheme touches get their built values."""
        super().initialize(run, scheme, generator, bias_var, into, deferred)
        for name, value in self.kept.items():
            (into[name] if into else self.param(name))[run].copy_(value)

    def train(self, mode: bool = True) -> ModelStack:
        super().train(mode)
        model = self.model[0]
        prepare(model) if mode else model.eval()
        return self

    def stages(self) -> list[Stage]:
        """One stage, the whole model: every weight's output is reported in one pass."""
        return [Stage(tuple(range(len(self.targets))), self.forward)]

    def forward(self, x: torch.Tensor, taps: Taps | None = None) -> torch.Tensor:
        """``(R, B, *sample)`` inputs to ``(R, B, *output)`` outputs; with ``taps``, every
        layer's output and every weight's output (that a hook sees) reported to them."""
        params = {name: self.param(name) for name in self.names}
        buffers = {name: self.buffer(name) for name in self.buffer_names}
        if taps is None:
            layers: tuple[Layer, ...] = ()
            zeros: list[torch.Tensor] = []
        else:
            layers = self.trace(x.shape[1]).layers
            if len(layers) != self.depth:
                raise RuntimeError(
                    f"the model has {len(layers)} layers on a batch of {x.shape[1]}, "
                    f"{self.depth} on the grid's"
                )
            self.layers = layers
            grad = torch.is_grad_enabled()
            zeros = [
                torch.zeros(
                    self.runs, x.shape[1], *layer.shape, device=x.device, requires_grad=grad
                )
                for layer in layers
            ]
        call = functools.partial(self._call, layers, taps is not None)
        if self.stacked:
            out, values, seen = vmap(call)(params, buffers, x, zeros)
        else:
            results = [
                call(
                    {name: p[r] for name, p in params.items()},
                    {name: b[r] for name, b in buffers.items()},
                    x[r],
                    [z[r] for z in zeros],
                )
                for r in range(self.runs)
            ]
            outs, per_run, seen_per_run = zip(*results, strict=True)
            out = torch.stack(outs)
            values = [torch.stack(layer) for layer in zip(*per_run, strict=True)]
            seen = [torch.stack(target) for target in zip(*seen_per_run, strict=True)]
        if taps is not None:
            for index, output in zip(self.observed, seen, strict=True):
                taps.weighted(index, *self.view(output))
            for index, (value, zero) in enumerate(zip(values, zeros, strict=True)):
                taps.layer(index + 1, value, value, at=zero)
        return out

    def _call(
        self,
        layers: tuple[Layer, ...],
        tapped: bool,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        zeros: list[torch.Tensor],
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """One run (or, under vmap, every run): the output's first tensor, each layer's
        output (a copy, taken before ``zeros[i]`` is added to it) and, with ``tapped``,
        each observed weight's output."""
        model = self.model[0]
        index = {(layer.module, layer.call): i for i, layer in enumerate(layers)}
        values: list[torch.Tensor | None] = [None] * len(layers)
        outputs: dict[int, torch.Tensor] = {}  # target -> its first output
        count: Counter[str] = Counter()

        def hook(name: str, module: nn.Module, args: object, output: object) -> object:
            position = index.get((name, count[name]))
            count[name] += 1
            if position is None:
                return None
            tensor = first_tensor(output)
            values[position] = tensor.detach().clone()
            return _with_first(output, tensor + zeros[position])

        handles = []
        if tapped:
            handles = [
                m.register_forward_hook(functools.partial(hook, n)) for n, m in watched(model)
            ]
            for target in self.observed:
                keep = functools.partial(outputs.setdefault, target)
                handles.append(observe(model, self.targets[target], keep))
        try:
            out = first_tensor(functional_call(model, (params, buffers), (x,)))
        finally:
            for handle in handles:
                handle.remove()
        missing = [
            f"{layers[i].module} (call {layers[i].call})" for i, v in enumerate(values) if v is None
        ]
        if tapped:
            missing += [self.targets[t].name for t in self.observed if t not in outputs]
        if missing:
            raise RuntimeError(
                f"{missing[0]} was not called: the model's calls depend on its weights or input"
            )
        assert out is not None  # the trace checked it
        seen = tuple(outputs[target] for target in self.observed if tapped)
        return out, tuple(values), seen  # type: ignore[arg-type]

    def view(self, t: torch.Tensor) -> tuple[torch.Tensor, Axes]:
        """``(R, B, *sample)``: an image's channels are its units and its pixels positions; a
        sequence's last dimension its units and its tokens positions; a scalar one unit."""
        rest = t.dim() - 2
        if rest == 0:
            return t.unsqueeze(-1), Axes(0, 1, (), 2)
        if rest >= 3:
            return t, Axes(0, 1, tuple(range(3, t.dim())), 2)
        return t, Axes(0, 1, tuple(range(2, t.dim() - 1)), t.dim() - 1)

    def layer_params(self, layer: int) -> list[str]:
        return self.weights[self.layers[layer - 1].module]

    def layer_labels(self) -> list[tuple[str, str, int]]:
        return [(layer.module, layer.kind, layer.call) for layer in self.layers]


def _with_first(output: object, tensor: torch.Tensor) -> object:
    """``output`` with its first tensor (:func:`~initbench.core.models.first_tensor`)
    replaced by ``tensor``."""
    if isinstance(output, torch.Tensor):
        return tensor
    if isinstance(output, Mapping):
        for key, item in output.items():
            if first_tensor(item) is not None:
                changed = copy.copy(output)
                changed[key] = _with_first(item, tensor)  # type: ignore[index]
                return changed
    if isinstance(output, list | tuple):
        items = list(output)
        for i, item in enumerate(items):
            if first_tensor(item) is not None:
                items[i] = _with_first(item, tensor)
                break
        if isinstance(output, list):
            return items
        return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)
    return output
