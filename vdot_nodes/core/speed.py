"""Speed options, each with a fallback that never breaks a run, and one log line saying what ran.

* attention: ``sdpa`` (PyTorch's scaled_dot_product_attention, the default), ``flash`` (flash-attn)
  or ``sage`` (SageAttention) through diffusers' attention dispatcher; ``auto`` takes the first of
  sage / flash that is installed on a CUDA device, else SDPA. A backend that is not installed falls
  back to SDPA with a note.
* ``compile``: ``torch.compile`` of each repeated transformer block (regional compile: one graph,
  reused by every block); off by default; a compile failure leaves the block eager.
* TF32 matmuls on CUDA (fp32 parts: the VAE in fp32, norms): on by default.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

logger = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("auto", "sdpa", "flash", "sage")
_DIFFUSERS_NAMES = {"sdpa": "native", "flash": "flash", "sage": "sage"}
_PACKAGES = {"flash": "flash_attn", "sage": "sageattention"}


def _installed(backend: str) -> bool:
    pkg = _PACKAGES.get(backend)
    return pkg is None or importlib.util.find_spec(pkg) is not None


def choose_attention(requested: str, device) -> tuple[str, str]:
    """``(backend that will run, note)`` for a requested backend on ``device``."""
    if requested not in ATTENTION_BACKENDS:
        from .errors import VDOTInputError

        raise VDOTInputError("attention", f"unknown attention backend {requested!r}", f"use one of {', '.join(ATTENTION_BACKENDS)}")
    cuda = torch.device(device).type == "cuda"
    if requested == "auto":
        for b in ("sage", "flash"):
            if cuda and _installed(b):
                return b, f"{b} (auto)"
        return "sdpa", "sdpa (auto: no sageattention / flash-attn on a CUDA device)"
    if requested != "sdpa" and (not cuda or not _installed(requested)):
        why = "needs a CUDA device" if not cuda else f"{_PACKAGES[requested]} is not installed"
        return "sdpa", f"sdpa ({requested} {why})"
    return requested, requested


def apply_speed_options(transformer, device, *, attention: str = "sdpa", compile_blocks: bool = False,
                        tf32: bool = True) -> list[str]:
    """Set the options on ``transformer``; returns what ran, one item per option (also logged)."""
    ran = []
    backend, note = choose_attention(attention, device)
    try:
        if backend != "sdpa" and hasattr(transformer, "set_attention_backend"):  # SDPA is diffusers' default
            transformer.set_attention_backend(_DIFFUSERS_NAMES[backend])
    except Exception as e:  # a backend that fails its own checks: SDPA
        transformer.set_attention_backend("native")
        note = f"sdpa ({backend} refused: {e})"
    ran.append(f"attention {note}")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        ran.append(f"tf32 {'on' if tf32 else 'off'}")
    if compile_blocks:
        from .block_swap import swappable_blocks

        try:
            for block in swappable_blocks(transformer):
                block.compile()
            ran.append("compile: every block (torch.compile)")
        except Exception as e:
            ran.append(f"compile off ({e})")
    logger.info("speed options: %s", "; ".join(ran))
    return ran


__all__ = ["ATTENTION_BACKENDS", "apply_speed_options", "choose_attention"]
