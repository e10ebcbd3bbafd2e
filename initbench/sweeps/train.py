"""Convergence: short training runs of stacked ensembles, the tutorial's train/eval loops.

R runs of one shape train together: the loss is the sum of the runs' mean losses and the
optimizers (SGD with momentum, Adam) act element-wise, so each run follows exactly the
trajectory it would follow alone. Each run draws its minibatch order from its own seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from initbench.archs import Stacked
from initbench.archs.base import per_run_loss
from initbench.core.data import Dataset
from initbench.core.device import synchronize
from initbench.core.rng import Stream, run_generator
from initbench.sweeps.grid import Grid, Run

EVAL_BATCH = 1024  # samples per evaluation batch
EVAL_TOKENS = 16_384  # targets per evaluation batch, where a sample has a target per token
INITIAL_TARGETS = 65_536  # step 0's training loss: on the training split's first ones


def batch_order(seed: int, n: int, steps: int, batch_size: int) -> torch.Tensor:
    """A run's minibatch indices ``(steps, batch_size)``: reshuffled every epoch."""
    generator = run_generator(seed, Stream.TRAINING)
    epochs = math.ceil(steps * batch_size / n)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(epochs)])
    return order[: steps * batch_size].view(steps, batch_size)


def make_optimizer(params, grid: Grid, lr: float) -> torch.optim.Optimizer:
    if grid.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=grid.momentum)


@dataclass
class TrainResult:
    """Logged curves ``(R, T)`` at ``steps`` (T,), and per-run summaries."""

    steps: np.ndarray
    train_loss: np.ndarray
    train_acc: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    diverged_step: np.ndarray  # (R,) first step with a non-finite loss, NaN if none
    seconds: float  # wall time of the whole stack

    def summaries(self, target_accuracy: float, total_steps: int) -> dict[str, np.ndarray]:
        """Per-run convergence metrics (see docs/results.md)."""
        reached = self.test_acc >= target_accuracy
        first = np.where(reached.any(1), reached.argmax(1), -1)
        steps_to_target = np.where(first >= 0, self.steps[np.maximum(first, 0)], np.nan)
        if len(self.steps) > 1:
            auc = np.trapezoid(self.train_loss[:, 1:], self.steps[1:], axis=1)
            auc = auc / max(self.steps[-1] - self.steps[1], 1)
        else:
            auc = self.train_loss[:, -1]
        runs = self.train_loss.shape[0]
        return {
            "steps_to_target": steps_to_target,
            "train_loss_auc": auc,
            "final_train_loss": self.train_loss[:, -1],
            "final_train_acc": self.train_acc[:, -1],
            "final_test_loss": self.test_loss[:, -1],
            "final_test_acc": self.test_acc[:, -1],
            "diverged_step": self.diverged_step,
            "train_seconds": np.full(runs, self.seconds / runs),
            "seconds_per_step": np.full(runs, self.seconds / runs / max(total_steps, 1)),
        }


def best_of(results: Sequence[TrainResult]) -> tuple[TrainResult, np.ndarray]:
    """Each run's training at the learning rate where it ends with the best test accuracy
    (one that diverged counts as worst; ties go to the earlier), and that rate's index per
    run. The wall time is all of them together."""
    score = np.stack(
        [
            np.where(np.isnan(r.diverged_step), np.nan_to_num(r.test_acc[:, -1], nan=-1.0), -2.0)
            for r in results
        ]
    )
    best = score.argmax(0)
    runs = np.arange(len(best))

    def pick(name: str) -> np.ndarray:
        return np.stack([getattr(r, name) for r in results])[best, runs]

    curves = ("train_loss", "train_acc", "test_loss", "test_acc", "diverged_step")
    seconds = sum(r.seconds for r in results)
    return TrainResult(results[0].steps, *map(pick, curves), seconds), best


@torch.no_grad()
def evaluate(net: Stacked, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Test loss and accuracy per run (``model.eval()`` + ``torch.no_grad()``), in batches
    of ``EVAL_BATCH`` samples (of ``EVAL_TOKENS`` targets, for a target per token)."""
    net.eval()
    loss_sum = torch.zeros(net.runs, device=x.device)
    correct = torch.zeros(net.runs, device=x.device)
    per_sample = y[0].numel()
    size = EVAL_BATCH if per_sample == 1 else max(1, EVAL_TOKENS // per_sample)
    for start in range(0, len(x), size):
        xb, yb = x[start : start + size], y[start : start + size]
        out = net(xb.unsqueeze(0).expand(net.runs, *xb.shape))
        loss, hits = per_run_loss(out, yb.unsqueeze(0).expand(net.runs, *yb.shape))
        loss_sum += loss * len(xb)
        correct += hits
    return loss_sum / len(x), correct / len(x)


def scaled_step(optimizer: torch.optim.Optimizer, scales: dict[torch.Tensor, torch.Tensor]) -> None:
    """An optimizer step in which each parameter of ``scales`` moves by its step times its
    scale (broadcast over runs): a learning rate scaled per parameter and run, exactly, for
    the element-wise optimizers (SGD with momentum, Adam); a scale of 0 keeps the
    parameter where it is."""
    before = {p: p.detach().clone() for p in scales}
    optimizer.step()
    with torch.no_grad():
        for p, scale in scales.items():
            step = (p - before[p]) * scale
            p.copy_(torch.where(scale == 0, before[p], before[p] + step))


def train_stack(
    net: Stacked,
    runs: Sequence[Run],
    dataset: Dataset,
    grid: Grid,
    lr: float,
    on_step: Callable[[], object] | None = None,
) -> TrainResult:
    """Trains the stacked runs at ``lr`` for ``grid.train_steps`` steps, logging every
    ``eval_every`` (``on_step`` is called after every step, for progress bars)."""
    device = net.device
    arch = runs[0].cell.arch
    x_train = arch.data_sample(dataset.x_train).to(device)
    y_train = dataset.y_train.to(device)
    x_test = arch.data_sample(dataset.x_test).to(device)
    y_test = dataset.y_test.to(device)
    steps, batch = grid.train_steps, grid.train_batch_size
    order = torch.stack([batch_order(r.seed, len(x_train), steps, batch) for r in runs]).to(device)
    optimizer = make_optimizer(net.parameters(), grid, lr)
    scales = net.lr_scales([r.cell.scheme for r in runs], grid.optimizer)
    unit = 1 / math.log(2) if dataset.info.kind == "text" else 1.0  # bits per token
    diverged = torch.full((net.runs,), -1, dtype=torch.long, device=device)
    loss_sum = torch.zeros(net.runs, device=device)
    correct_sum = torch.zeros(net.runs, device=device)
    logs: list[torch.Tensor] = []
    logged_steps: list[int] = []

    def log(step: int, seen: int) -> None:
        test_loss, test_acc = evaluate(net, x_test, y_test)
        if seen:
            train = (loss_sum / seen, correct_sum / (seen * batch))
        else:  # before training: the initial weights' loss on (the start of) the training set
            first = max(1, INITIAL_TARGETS // y_train[0].numel())
            train = evaluate(net, x_train[:first], y_train[:first])
        logs.append(torch.stack([train[0] * unit, train[1], test_loss * unit, test_acc]))
        logged_steps.append(step)
        loss_sum.zero_()
        correct_sum.zero_()

    synchronize(device)
    start = time.perf_counter()
    log(0, 0)
    seen = 0
    for step in range(steps):
        net.train()
        idx = order[:, step]
        optimizer.zero_grad()
        out = net(x_train[idx])
        loss, correct = per_run_loss(out, y_train[idx])
        bad = ~torch.isfinite(loss)
        diverged.masked_fill_(bad & (diverged < 0), step + 1)
        loss.masked_fill(bad, 0.0).sum().backward()
        scaled_step(optimizer, {net.param(name): scale for name, scale in scales.items()})
        loss_sum += loss.detach()
        correct_sum += correct
        seen += 1
        if (step + 1) % grid.eval_every == 0 or step + 1 == steps:
            log(step + 1, seen)
            seen = 0
        if on_step is not None:
            on_step()
    synchronize(device)
    seconds = time.perf_counter() - start
    curves = torch.stack(logs, dim=-1).cpu().numpy()  # (4, R, T)
    div = diverged.cpu().numpy().astype(float)
    div[div < 0] = np.nan
    return TrainResult(np.array(logged_steps), *curves, div, seconds)
