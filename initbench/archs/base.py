"""What every architecture provides, and what every stacked (many runs at once) network shares.

An :class:`Arch` owns its input layout, the plain ``nn.Module`` a user would write, its
mean-field theory, and its :class:`Stacked` twin, which holds R runs of one shape as stacked
parameters (run r is index r of every parameter) and computes them together. A stacked
network is a sequence of :class:`Stage` s: the hidden layers 1..depth, then the readout.
While it computes it reports to optional :class:`Taps`: each hidden layer's tensors (for
the probe) and each weight's output (for data-dependent schemes such as LSUV).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from initbench.core.activations import Activation
from initbench.core.errors import UsageError
from initbench.core.fill import (
    fill_biases,
    fill_settings,
    fill_targets,
    learning_rate_scales,
)
from initbench.core.ids import format_id, parse_number
from initbench.core.roles import Site
from initbench.core.scheme import Scheme
from initbench.core.targets import NORMS, Target, biases, init_targets, settings, weight_sites


class Axes(NamedTuple):
    """Where runs, samples, positions (pixels, tokens) and units sit in a hidden tensor."""

    run: int
    batch: int
    positions: tuple[int, ...]
    units: int

    def but_run(self) -> tuple[int, ...]:
        """Reducing over these gives one value per run."""
        return tuple(sorted((self.batch, *self.positions, self.units)))

    def samples(self) -> tuple[int, ...]:
        """Reducing over these gives one value per run and unit."""
        return tuple(sorted((self.batch, *self.positions)))

    def vector(self) -> tuple[int, ...]:
        """Reducing over these gives one value per run and sample (a sample's vector)."""
        return tuple(sorted((*self.positions, self.units)))

    def vector_reduced_batch(self) -> int:
        """Where the batch axis sits once :meth:`vector` is reduced."""
        return self.batch - sum(d < self.batch for d in self.vector())


ROWS = Axes(run=0, batch=1, positions=(), units=2)  # (R, B, N): mlp layers, every readout


@dataclass(frozen=True)
class Inputs:
    """What a network of a cell sees: one input sample's shape, the number of outputs, and
    the samples' dtype (a dataset's may be integer token ids)."""

    sample: tuple[int, ...]
    classes: int
    dtype: str = "float32"


class Taps:
    """Receives a stacked network's tensors while it computes. The base class ignores them."""

    def layer(
        self,
        index: int,
        pre: torch.Tensor,
        post: torch.Tensor | None,
        at: torch.Tensor | None = None,
    ) -> None:
        """Hidden layer ``index`` (1..depth): the tensor its ``pre_*`` statistics describe,
        its post-activation (None where the network does not compute it), and where the
        gradient at ``pre`` is taken: ``pre`` itself (None), or a zero tensor that was
        added to it (where ``pre`` is a copy taken off the computation, as a model's
        module outputs are)."""

    def weighted(self, target: int, out: torch.Tensor, axes: Axes) -> None:
        """The output of weight ``target`` (an index into :attr:`Stacked.targets`)."""


@dataclass(frozen=True)
class Stage:
    """A step of a stacked network: the weights it applies, and how it maps its state."""

    targets: tuple[int, ...]
    run: Callable[[Any, Taps | None], Any]


@dataclass(frozen=True, eq=False)
class Parts:
    """A network's parameters as schemes see them: the plain module (on the meta device),
    the weights a scheme fills with their sites, and the scalars of its residual branches
    (gates, skips, shifts) with theirs."""

    template: nn.Module
    targets: list[Target]
    sites: list[Site]
    settings: list[Target]
    setting_sites: list[Site]


class Stacked(nn.Module):
    """R runs of one architecture and shape, computed together.

    Parameters mirror the plain module's (``parts.template``): parameter ``name`` of run r
    is ``self.param(name)[r]``. Subclasses define :meth:`enter`, :meth:`stages`,
    :meth:`view` and :meth:`layer_params`.
    """

    def __init__(
        self,
        parts: Parts,
        runs: int,
        depth: int,
        activation: Activation,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        template = parts.template
        self.runs, self.depth, self.activation = runs, depth, activation
        self.parts = parts
        self.targets = parts.targets
        self.bias_names = biases(template)
        self.names = [name for name, _ in template.named_parameters()]
        self.stack = nn.ParameterDict(
            {
                _key(name): nn.Parameter(torch.empty(runs, *p.shape, device=device))
                for name, p in template.named_parameters()
            }
        )
        self.norm_params = {
            f"{prefix}.{p}" if prefix else p: 1.0 if p == "weight" else 0.0
            for prefix, module in template.named_modules()
            if isinstance(module, NORMS)
            for p, _ in module.named_parameters(recurse=False)
        }
        self._stages: list[Stage] | None = None

    def param(self, name: str) -> nn.Parameter:
        return self.stack[_key(name)]

    @property
    def device(self) -> torch.device:
        return next(iter(self.stack.values())).device

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
        """Draws run ``run``'s weights (model order), then its biases, with ``generator``.

        ``into`` maps parameter names to stacked host buffers to fill instead of the
        parameters themselves (then copied over by the caller); with ``deferred``,
        orthogonal QRs wait for :func:`~initbench.core.fill.finish_orthogonal`.
        """
        stacks = into or {name: self.param(name) for name in self.names}
        params = {name: stacks[name][run] for name in self.names}
        parts = self.parts
        fill_targets(
            params,
            self.targets,
            scheme,
            self.activation,
            generator,
            sites=parts.sites,
            fallback=True,
            deferred=deferred,
        )
        fill_biases(params, self.bias_names, bias_var, generator)
        for name, value in self.norm_params.items():
            params[name].fill_(value)
        fill_settings(params, parts.settings, parts.setting_sites, scheme)

    def lr_scales(self, schemes: list[Scheme], optimizer: str) -> dict[str, torch.Tensor]:
        """Each run's learning-rate multiplier (``schemes``: run r's scheme) of every
        parameter where some run's is not 1, shaped to scale the parameter's step
        (:func:`~initbench.core.fill.learning_rate_scales`)."""
        parts = self.parts
        per_run = [
            learning_rate_scales(
                parts.settings, parts.setting_sites, parts.targets, parts.sites, scheme, optimizer
            )
            for scheme in schemes
        ]
        names = sorted({name for scales in per_run for name in scales})
        return {
            name: torch.tensor(
                [scales.get(name, 1.0) for scales in per_run], device=self.device
            ).view(-1, *[1] * (self.param(name).dim() - 1))
            for name in names
        }

    @property
    def stage_list(self) -> list[Stage]:
        if self._stages is None:
            self._stages = self.stages()
        return self._stages

    def forward(self, x: torch.Tensor, taps: Taps | None = None) -> torch.Tensor:
        """``(R, B, *sample)`` inputs to ``(R, B, classes)`` outputs."""
        state = self.enter(x)
        for stage in self.stage_list:
            state = stage.run(state, taps)
        return state

    # ---- defined by each architecture ---------------------------------------------------

    def enter(self, x: torch.Tensor) -> Any:
        """The first stage's state from ``(R, B, *sample)`` inputs."""
        return x

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def view(self, t: torch.Tensor) -> tuple[torch.Tensor, Axes]:
        """A hidden tensor as a view with a run axis, without copying."""
        return t, ROWS

    def layer_params(self, layer: int) -> list[str]:
        """The parameters whose joint gradient norm is layer ``layer``'s ``grad_w_norm``."""
        raise NotImplementedError

    def features(self, state: torch.Tensor) -> torch.Tensor:
        """A hidden state as ``(R, samples, features)``: one vector per run and sample."""
        return state.flatten(2)

    def input_vectors(self, x: torch.Tensor) -> torch.Tensor | None:
        """The inputs ``(R, B, ...)`` as ``(R, B, features)`` vectors, whose second moment
        and pair correlation the probe records (None: inputs that are not vectors, token
        ids)."""
        return x.flatten(2) if x.is_floating_point() else None

    def layer_labels(self) -> list[tuple[str, str, int]] | None:
        """Each hidden layer's module: its name, class and call (0 for its first call in
        the forward pass); None where the layers are the architecture's own (1..depth)."""
        return None


def network_parts(
    model: nn.Module, roles: dict[str, str | tuple[str, ...]] | None, width: int | None
) -> Parts:
    """A module's :class:`Parts`: its weights (roles from ``roles``, an architecture's
    table, or from the layers' names) and branch scalars, with their sites."""
    targets = init_targets(model, roles)
    params = dict(model.named_parameters())
    sites = weight_sites(targets, [tuple(t.view(params[t.param]).shape) for t in targets], width)
    scalars = settings(model, roles or {})
    blocks, branches = (sites[0].blocks, sites[0].branches) if sites else (0, 0)
    scalar_sites = [Site(t.role, (), t.block, blocks, width, None, branches) for t in scalars]
    return Parts(model, targets, sites, scalars, scalar_sites)


def per_run_loss(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and number of samples correct per run: ``out`` is ``(R, B, C)``
    and ``y`` ``(R, B)``, or a target per token, ``(R, B, T, C)`` and ``(R, B, T)``: the
    loss is then the mean over tokens, and a sample counts by its fraction of tokens
    right."""
    loss = F.cross_entropy(out.flatten(0, -2), y.flatten(), reduction="none").view(y.shape)
    runs, batch = y.shape[:2]
    correct = (out.argmax(-1) == y).float().view(runs, batch, -1).mean(2).sum(1)
    return loss.view(runs, batch, -1).mean(2).mean(1), correct


def _key(name: str) -> str:
    return name.replace(".", "__")


def stacked_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ W^T + b`` for every run: x ``(R, ..., in)``, weight ``(R, out, in)``, bias
    ``(R, out)``."""
    shape = x.shape
    flat = x.reshape(shape[0], -1, shape[-1])
    if bias is None:
        out = torch.bmm(flat, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.view(*shape[:-1], weight.shape[1])


class Arch:
    """An architecture with fixed id parameters (``resmlp[norm=layer]``).

    Its name, doc and parameters (name -> default; the default's type parses the value, a
    tuple lists the choices) come from its registry entry (:mod:`initbench.archs`);
    subclasses implement the methods below.
    """

    name: ClassVar[str]
    doc: ClassVar[str] = ""
    params: ClassVar[dict[str, object]] = {}
    roles: ClassVar[dict[str, str | tuple[str, ...]]] = {}
    supports_jacobian: ClassVar[bool] = False  # each sample computed on its own (no BatchNorm)
    tokens: ClassVar[bool] = False  # takes token ids (text datasets), not vectors or images

    def __init__(self, **values: str) -> None:
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise UsageError(
                f"arch {self.name!r} takes parameters {sorted(self.params) or 'none'}, "
                f"got {unknown}"
            )
        self.values = {
            k: _parse(self.name, k, values.get(k, _default(d)), d) for k, d in self.params.items()
        }

    @property
    def id(self) -> str:
        shown = {k: v for k, v in self.values.items() if v != _default(self.params[k])}
        return format_id(self.name, shown)

    def __repr__(self) -> str:
        return f"Arch({self.id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # ---- inputs ---------------------------------------------------------------------------

    def check_width(self, width: int) -> None:
        """Raises :class:`UsageError` for a width this architecture cannot have."""

    def synthetic_sample(self, width: int, image_size: int, tokens: int) -> tuple[int, ...]:
        """The shape of one standard-normal probe sample at this width."""
        return (width,)

    def draw_inputs(
        self, batch: int, inputs: Inputs, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """A synthetic probe batch ``(batch, *inputs.sample)``: standard normal (token ids
        for archs on text)."""
        return torch.randn(batch, *inputs.sample, generator=generator, device=device)

    def data_sample(self, x: torch.Tensor) -> torch.Tensor:
        """Dataset samples ``(n, C, H, W)`` (1-D data: ``(n, C, L)``) in this arch's layout."""
        return x.flatten(1)

    def data_shape(self, sample: tuple[int, ...]) -> tuple[int, ...]:
        """The shape :meth:`data_sample` gives a dataset sample of shape ``sample``."""
        return tuple(self.data_sample(torch.empty(1, *sample, device="meta")).shape[1:])

    def positions(self, inputs: Inputs) -> int:
        """Spatial positions or tokens per sample in the hidden layers (1 for vectors)."""
        return 1

    def output_sample(self, inputs: Inputs, batch: int) -> tuple[int, ...]:
        """The shape of one sample's output (a batch of ``batch``): its class scores (a
        score per class and position for archs on text)."""
        return (inputs.classes,)

    def sizes(
        self, depths: Sequence[int], widths: Sequence[int], inputs: Inputs, batch: int
    ) -> list[tuple[int, int]]:
        """The ``(depth, width)`` of this arch's cells in a grid: every pair of the grid's
        depths and widths (a model fixes its own: see :mod:`initbench.archs.model`)."""
        return [(depth, width) for depth in depths for width in widths]

    # ---- networks -------------------------------------------------------------------------

    def build(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> nn.Module:
        """One network as a plain ``nn.Module`` (what a user would write by hand)."""
        raise NotImplementedError

    def stack(
        self,
        runs: int,
        depth: int,
        width: int,
        activation: Activation,
        inputs: Inputs,
        device: torch.device | str = "cpu",
    ) -> Stacked:
        raise NotImplementedError

    def layer_modules(self, model: nn.Module) -> list[nn.Module]:
        """The modules of a plain network (from :meth:`build`) whose outputs are hidden
        layers 1..depth: the tensors the probe's ``pre_*`` statistics describe."""
        raise NotImplementedError

    @functools.lru_cache(maxsize=256)  # noqa: B019 (archs are few and live for the process)
    def template(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> nn.Module:
        """The plain module on the meta device: its parameters' names and shapes, no data
        (shared: never changed)."""
        with torch.device("meta"):
            return self.build(depth, width, activation, inputs)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 (archs are few and live for the process)
    def parts(self, depth: int, width: int, activation: Activation, inputs: Inputs) -> Parts:
        """The network's weights and branch scalars with their sites (roles from this
        architecture's table; shared: never changed)."""
        model = self.template(depth, width, activation, inputs)
        return network_parts(model, self.roles, width)

    def weight_sites(
        self, depth: int, width: int, activation: Activation, inputs: Inputs
    ) -> list[Site]:
        """The site (role, block, shape) of every weight a scheme initializes, in model
        order."""
        return self.parts(depth, width, activation, inputs).sites

    def macs_per_sample(
        self, depth: int, width: int, activation: Activation, inputs: Inputs
    ) -> float:
        """Multiply-adds of one forward pass for one sample (time estimates, FLOP rates)."""
        sites = self.weight_sites(depth, width, activation, inputs)
        return sum(math.prod(s.shape) for s in sites) * self.positions(inputs)

    def activation_elements(self, depth: int, width: int, inputs: Inputs) -> int:
        """Floats of hidden activations one sample keeps for the backward pass (memory)."""
        return width * self.positions(inputs) * (depth + 1)

    def theory(
        self,
        activation: Activation,
        weights: Sequence[tuple[tuple[int, ...], float]],
        bias_var: float,
        inputs: Inputs,
        input_second_moment: float,
        input_corr: float,
    ) -> dict[str, list[float]]:
        """Mean-field predictions per hidden layer: ``theory_pre_var``,
        ``theory_grad_h_var`` and ``theory_corr`` (a missing key, or NaN values, where no
        theory applies).

        Args:
            activation: the cell's activation.
            weights: each weight's shape and entry variance, in model order (variance NaN
                where the scheme has no closed form or the theory does not hold).
            bias_var: the variance of every bias.
            inputs: the input layout.
            input_second_moment: ``E[x^2]`` of the probe batch.
            input_corr: the cosine similarity of the probe batch's input pairs.
        """
        return {}

    def depth_scales(
        self,
        activation: Activation,
        weights: Sequence[tuple[tuple[int, ...], float]],
        bias_var: float,
        q_start: float,
    ) -> dict[str, float]:
        """``chi1``, ``c_star``, ``xi_q``, ``xi_c`` of the repeated hidden layer (see
        :func:`initbench.core.theory.depth_scales`); NaN where the mean-field map does not apply."""
        return dict.fromkeys(("q_star", "c_star", "chi1", "xi_q", "xi_c"), math.nan)


THEORY = ("theory_pre_var", "theory_grad_h_var", "theory_corr")


def _default(spec: object) -> object:
    return spec[0] if isinstance(spec, tuple) else spec


def _parse(arch: str, key: str, value: object, spec: object) -> object:
    if isinstance(spec, tuple):
        if value not in spec:
            raise UsageError(
                f"arch {arch!r}: {key} must be one of {', '.join(spec)}, got {value!r}"
            )
        return value
    if isinstance(spec, bool):
        return str(value).lower() in ("1", "true", "yes")
    if isinstance(spec, int):
        number = parse_number(str(value), f"arch {arch!r} parameter {key}")
        if number != int(number) or number < 1:
            raise UsageError(f"arch {arch!r}: {key} must be a positive integer, got {value!r}")
        return int(number)
    if isinstance(spec, float):
        number = parse_number(str(value), f"arch {arch!r} parameter {key}")
        if not math.isfinite(number):
            raise UsageError(f"arch {arch!r}: {key} must be finite, got {value!r}")
        return number
    return value
