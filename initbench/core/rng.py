"""The named random-number streams of a run: one generator per stream and seed, so that
adding draws to one stream never moves another's numbers."""

from __future__ import annotations

from enum import IntEnum

import torch

STREAM_OFFSET = 1_000_003  # apart from one another: seed + stream * STREAM_OFFSET
DEVICE_OFFSET = 7_000_003  # the device generators' streams, apart from the host's


class Stream(IntEnum):
    """What a generator draws. The numbers are part of every stored result: keep them."""

    WEIGHTS = 0  # the initial weights and biases (then the probe's cotangents, for a model)
    TRAINING = 1  # the order of training batches; the coordinate check's batch and labels
    FIT = 2  # the batch a data-dependent scheme fits on
    INPUTS = 3  # the probe's standard-normal inputs and cotangents


def run_generator(seed: int, stream: Stream = Stream.WEIGHTS) -> torch.Generator:
    """A CPU generator of one run's ``stream``.

    Drawing on the CPU makes a run's numbers the same whatever device computes it.
    """
    return torch.Generator().manual_seed(seed + int(stream) * STREAM_OFFSET)


def device_generator(
    seed: int, device: torch.device, stream: Stream = Stream.WEIGHTS
) -> torch.Generator:
    """A run's generator on the compute device (``--rng device``): the same distributions
    as :func:`run_generator`'s, other numbers, no copy from the host."""
    seed += DEVICE_OFFSET + int(stream) * STREAM_OFFSET
    return torch.Generator(device=device).manual_seed(seed)
