"""Where a component runs while its step runs (model offload: CPU between uses, the device during use)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def compute_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, or CUDA when there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@contextlib.contextmanager
def on_device(module: torch.nn.Module | None, device: torch.device, offload: bool) -> Iterator[None]:
    """Run a block with ``module`` on ``device``; with offload, move it back to the CPU afterwards."""
    if module is None:
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        if offload and torch.device(device).type != "cpu":
            module.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def free_memory() -> None:
    """Return freed host and accelerator memory now (after dropping a large component)."""
    import gc

    gc.collect()
    trim_host_heap()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def trim_host_heap() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``); False where there is none.

    Why: glibc keeps freed blocks of up to 32 MB in its heap (its mmap threshold rises after the first
    large free), so a released text encoder's or transformer's weights stayed resident and the next
    phase's activations came on top: a 1.3B 480p run peaked at 12.8 GB against 6.4 GB planned."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):  # musl and other C libraries: nothing to trim
        return False


__all__ = ["compute_device", "free_memory", "on_device", "trim_host_heap"]
