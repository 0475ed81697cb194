"""Speed options, each with a fallback that never breaks a run, and one log line saying what ran.

* attention: ``sdpa`` (PyTorch's scaled_dot_product_attention, the default), ``flash`` (flash-attn)
  or ``sage`` (SageAttention) through diffusers' attention dispatcher; ``auto`` takes the first of
  sage / flash that is installed on a CUDA device, else SDPA. A backend that is not installed falls
  back to SDPA with a note.
* ``compile``: ``torch.compile`` of each repeated transformer block (regional compile: one graph,
  reused by every block); off by default; a compile failure leaves the block eager.
* TF32 matmuls on CUDA (fp32 parts: the VAE in fp32, norms): on by default.
* ``fp8_matmul`` (with fp8_e4m3fn storage): the blocks' Linear layers multiply in fp8 with
  ``torch._scaled_mm`` (activations scaled per tensor to the e4m3 range, weights as stored) instead
  of upcasting the weight to bf16; where ``_scaled_mm`` is not supported the model keeps bf16
  compute, and a matmul that fails at run time falls back to bf16 for that layer.
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


FP8_MAX = 448.0  # largest finite float8_e4m3fn


class FP8Linear(torch.nn.Module):
    """A Linear with an fp8 e4m3 weight that multiplies fp8-quantised activations via ``torch._scaled_mm``."""

    def __init__(self, linear: torch.nn.Linear, compute_dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # same Parameters: state dict unchanged
        self.compute_dtype = compute_dtype
        self.fallback = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16, torch.float32) else self.compute_dtype
        bias = None if self.bias is None else self.bias.to(out_dtype)
        if not self.fallback:
            try:
                x2 = x.reshape(-1, self.in_features)
                scale = (x2.abs().amax().float() / FP8_MAX).clamp(min=1e-12)
                xq = (x2.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
                one = torch.ones((), device=x.device, dtype=torch.float32)
                y = torch._scaled_mm(xq, self.weight.t(), scale_a=scale, scale_b=one, out_dtype=out_dtype)
                y = y if bias is None else y + bias
                return y.reshape(*x.shape[:-1], self.out_features)
            except (RuntimeError, NotImplementedError) as e:  # never break a run: bf16 for this layer
                logger.warning("fp8 matmul failed (%s); this layer computes in %s", e, self.compute_dtype)
                self.fallback = True
        return torch.nn.functional.linear(x.to(self.compute_dtype), self.weight.to(self.compute_dtype),
                                          None if bias is None else bias.to(self.compute_dtype)).to(out_dtype)


def fp8_matmul_supported(device) -> tuple[bool, str]:
    try:
        a = torch.zeros(16, 16, device=device).to(torch.float8_e4m3fn)
        one = torch.ones((), device=device)
        torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        return True, ""
    except Exception as e:
        return False, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"


def enable_fp8_matmul(transformer, device, compute_dtype=torch.bfloat16) -> str:
    """Swap the blocks' fp8-e4m3 Linear layers for :class:`FP8Linear`; returns what ran."""
    from .block_swap import swappable_blocks

    ok, why = fp8_matmul_supported(device)
    if not ok:
        return f"fp8 matmul unsupported here ({why}): fp8 storage, {str(compute_dtype).replace('torch.', '')} compute"
    swapped = 0
    for block in swappable_blocks(transformer):
        for name, module in list(block.named_modules()):
            if isinstance(module, torch.nn.Linear) and module.weight.dtype == torch.float8_e4m3fn:
                parent = block.get_submodule(name.rpartition(".")[0]) if "." in name else block
                setattr(parent, name.rpartition(".")[2], FP8Linear(module, compute_dtype))
                swapped += 1
    if not swapped:
        return "fp8 matmul off (needs precision fp8_e4m3fn)"
    return f"fp8 matmul (torch._scaled_mm) in {swapped} linear layers"


def apply_speed_options(transformer, device, *, attention: str = "sdpa", compile_blocks: bool = False,
                        tf32: bool = True, fp8_matmul: bool = False) -> list[str]:
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
    if fp8_matmul:
        ran.append(enable_fp8_matmul(transformer, device))
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


__all__ = ["ATTENTION_BACKENDS", "FP8Linear", "apply_speed_options", "choose_attention", "enable_fp8_matmul"]
