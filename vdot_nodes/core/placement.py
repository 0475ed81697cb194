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
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["compute_device", "free_memory", "on_device"]
