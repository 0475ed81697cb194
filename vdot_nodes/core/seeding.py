"""Seeded weight initialisation that leaves the caller's random state alone.

Module constructors draw from torch's global RNG. :func:`seeded` runs a block with the global RNG
seeded, as ``torch.manual_seed(seed)`` would, and restores the caller's state (CPU and every visible
CUDA device) afterwards, so building a tiny model in a test, a training run or the CLI never changes
what the caller draws next. Weights are bit-identical to a plain ``torch.manual_seed(seed)`` before
the constructor. Sampling never uses the global RNG: it draws from its own ``torch.Generator``
(``sampling.SeededNoise``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Within the block torch's global RNG starts from ``seed``; the caller's RNG state is restored after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


__all__ = ["seeded"]
