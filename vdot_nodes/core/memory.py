"""Memory you can predict: what a run will hold at its peak, decided before any weight is read.

* :func:`plan_memory` reads the three checkpoints' headers (through :func:`models.empty_model`, which
  builds each model on the meta device in its final dtypes), adds activation estimates for the output
  size, and walks the phases a generation goes through — text encoder (only on a prompt-cache miss),
  VAE encode, transformer, VAE decode — each component loaded when its phase starts and released
  after it. On a GPU it picks how many transformer blocks stay resident (block swap) from the VRAM
  budget. A plan that cannot fit raises :class:`VDOTInputError` naming what to change.
* :class:`PromptCache` keeps prompt embeddings on disk keyed by prompt, max length and the encoder
  file's identity, so a re-run never loads the text encoder.
* The activation estimates here are the ones ``benchmarks/bench_sampler.py``'s 14B plan prints.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import VDOTInputError, input_ref

GB = 1e9
GiB = 2**30
# Interpreter, torch and library code resident before any model (measured 0.45 GB after the imports
# on CPU torch 2.13) plus allocator slack a released component leaves behind (measured ~0.5 GB after
# the UMT5-XXL encoder is dropped).
BASE_RSS = int(1.0 * GB)
TEXT_TOKENS = 512


# --------------------------------------------------------------------------------------------
# Activation estimates (inference, no grad)
# --------------------------------------------------------------------------------------------


def video_tokens(frames: int, height: int, width: int, patch=(1, 2, 2), spatial: int = 8, temporal: int = 4) -> int:
    f, h, w = (frames - 1) // temporal + 1, height // spatial, width // spatial
    return (f // patch[0]) * (h // patch[1]) * (w // patch[2])


def transformer_activation_bytes(config, tokens: int, batch: int = 1) -> int:
    """One forward, no grad: the hidden and VACE hidden streams (fp32 residual form), the FFN
    intermediate and q/k/v/o in bf16 (SDPA/flash never materialise L×L), plus the text stream."""
    dim = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    ffn = int(config["ffn_dim"])
    return batch * (tokens * (2 * dim * 4 + ffn * 2 + 4 * dim * 2) + TEXT_TOKENS * dim * 2 * 2)


def vae_activation_bytes(height: int, width: int, base_dim: int = 96, itemsize: int = 4) -> int:
    """The Wan VAE works causally, one latent frame (4 pixel frames) at a time; its widest tensors
    are ``base_dim`` channels × 4 frames at full resolution, and with the causal caches of every
    full-resolution conv about eleven of them are alive at once (measured on the real VAE in fp32 on a
    CPU at 480×832: encode 6.6 GB, decode 5.9 GB above the rest of the run)."""
    return 11 * base_dim * 4 * height * width * itemsize


def text_activation_bytes(d_model: int) -> int:
    return TEXT_TOKENS * d_model * 4 * 6


# --------------------------------------------------------------------------------------------
# Prompt-embedding cache
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$VDOT_CACHE_DIR`` or ``~/.cache/vdot`` (``%LOCALAPPDATA%\\vdot`` on Windows)."""
    env = os.environ.get("VDOT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("LOCALAPPDATA") if os.name == "nt" else os.environ.get("XDG_CACHE_HOME")
    return Path(base).expanduser() / "vdot" if base else Path.home() / ".cache" / "vdot"


def file_identity(path) -> str:
    """Path, size and modification time of every safetensors file of a checkpoint (file or folder)."""
    path = Path(path).expanduser().resolve()
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    parts = []
    for f in files:
        st = f.stat()
        parts.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
    return "\n".join(parts)


class PromptCache:
    """Prompt embeddings on disk: ``<dir>/prompt-<sha256>.safetensors``, one per (prompt, encoder).

    ``encoder_id`` names the encoder exactly (:func:`file_identity` + precision); a changed, moved or
    re-downloaded encoder file gives new keys, never a stale hit. Only the prompt's own tokens are
    stored (the rest of the ``max_length`` rows are zeros by Wan's convention).
    """

    def __init__(self, directory, encoder_id: str):
        self.directory = Path(directory)
        self.encoder_id = encoder_id
        self.hits = self.misses = 0

    def path(self, prompt: str, max_length: int) -> Path:
        key = json.dumps({"prompt": prompt, "max_length": max_length, "encoder": self.encoder_id}, sort_keys=True)
        return self.directory / f"prompt-{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"

    def get(self, prompt: str, max_length: int) -> torch.Tensor | None:
        """``[max_length, D]`` float32, or None."""
        from safetensors.torch import load_file

        p = self.path(prompt, max_length)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            tokens = load_file(str(p))["embeds"]
        except Exception:  # a damaged entry is a miss; it is rewritten
            self.misses += 1
            return None
        out = torch.zeros(max_length, tokens.shape[-1], dtype=torch.float32)
        out[: tokens.shape[0]] = tokens
        self.hits += 1
        return out

    def put(self, prompt: str, max_length: int, embeds: torch.Tensor, length: int) -> None:
        from .atomic import atomic_save_safetensors

        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            atomic_save_safetensors({"embeds": embeds[:length].float().contiguous()}, self.path(prompt, max_length),
                                    metadata={"prompt": prompt[:2000], "max_length": str(max_length)}, overwrite=True)
        except OSError:  # a read-only cache costs a re-encode next time, never the run
            pass


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass
class MemoryPlan:
    """What a run will hold. Bytes; ``resident_blocks`` None = the whole transformer on the device."""

    ram_peak: int
    vram_peak: int | None
    resident_blocks: int | None
    phases: list[tuple[str, int, int | None]] = field(default_factory=list)  # (phase, ram, vram)
    notes: list[str] = field(default_factory=list)
    vae_tiling: bool = False  # the VAE works in spatial tiles (above 480p, or to fit the budget)

    def describe(self) -> str:
        rows = [f"{name}: RAM {ram / GB:.1f} GB" + (f", VRAM {vram / GB:.1f} GB" if vram is not None else "")
                for name, ram, vram in self.phases]
        return "; ".join(rows + self.notes)


def system_ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def plan_memory(
    transformer, vae, text_encoder, *, precision: str, vae_precision: str, text_precision: str,
    frames: int, height: int, width: int, device: str | torch.device = "cpu", num_videos: int = 1, cfg: float = 1.0,
    ram_budget_gb: float | None = None, vram_budget_gb: float | None = None, prompt_cached: bool = False,
    text_stream: bool = False,
) -> MemoryPlan:
    """The peak RAM (and VRAM on a GPU) of one generation, or a :class:`VDOTInputError` naming what to
    change. ``transformer`` / ``vae`` / ``text_encoder`` are checkpoint paths; only headers are read.

    Without a budget, RAM is checked against the machine's physical memory and VRAM against the
    device's total memory: a plan above those cannot run at all. ``text_stream``: the text encoder
    reads its blocks from the file as they run (``load_text_encoder(stream=True)``), so only its
    embedding and one block are resident.
    """
    from . import models
    from .block_swap import swappable_blocks

    device = torch.device(device)
    gpu = device.type != "cpu"
    t_model = models.empty_model(transformer, "transformer", precision, input_name="model")
    v_model = models.empty_model(vae, "vae", vae_precision, input_name="vae")
    t_bytes, v_bytes = models.module_bytes(t_model), models.module_bytes(v_model)
    te_bytes = 0
    te_dim = 4096
    if not prompt_cached:
        te_model = models.empty_model(text_encoder, "text_encoder", text_precision, input_name="text_encoder")
        te_bytes, te_dim = models.module_bytes(te_model), int(te_model.config.d_model)
        if text_stream:
            blocks = [models.module_bytes(b) for b in te_model.encoder.block]
            te_bytes = te_bytes - sum(blocks) + max(blocks)
    tcfg = dict(t_model.config)
    tokens = video_tokens(frames, height, width, tuple(tcfg["patch_size"]))
    batch = num_videos * (2 if cfg != 1.0 else 1)
    t_act = transformer_activation_bytes(tcfg, tokens, batch)
    base_dim = int(v_model.config.base_dim)
    v_item = 4 if vae_precision == "fp32" else 2
    ram_budget = int(ram_budget_gb * GB) if ram_budget_gb else system_ram_bytes()
    vram_budget = int(vram_budget_gb * GB) if vram_budget_gb else (_device_total(device) if gpu else None)
    from .vae_tiling import TILE

    def vae_act(tiled: bool) -> int:
        return vae_activation_bytes(min(height, TILE) if tiled else height, min(width, TILE) if tiled else width,
                                    base_dim, v_item)

    video = 3 * frames * height * width * 4 * 3  # input video, masks, output frames in fp32
    # The VAE phases' own need (RAM on a CPU, VRAM on a GPU); above 480p it always tiles. At or below it,
    # an untiled VAE that would not fit the budget tiles instead (256-px tiles: output within the blend's
    # tolerance of untiled, see vae_tiling.py) — a CPU run at 480p otherwise peaks in the VAE.
    vae_tiling = _vae_tiles(height, width)
    own = (lambda act: v_bytes + act) if gpu else (lambda act: BASE_RSS + v_bytes + video + act)
    budget = vram_budget if gpu else ram_budget
    notes = []
    untiled = own(vae_act(False))
    if not vae_tiling and budget is not None and untiled > budget and own(vae_act(True)) < untiled:
        vae_tiling = True
        notes.append(f"VAE in {TILE}-px tiles to fit the {'VRAM' if gpu else 'RAM'} budget (untiled it needs about "
                     f"{untiled / GB:.1f} GB)")
    v_act = vae_act(vae_tiling)
    phases = []
    # On the CPU every phase is RAM; on a GPU the host holds the weights of the component in use
    # (to move them in) and the device holds weights + activations.
    if not prompt_cached:
        phases.append(("text encoder", BASE_RSS + v_bytes + te_bytes + (0 if gpu else text_activation_bytes(te_dim)),
                       te_bytes + text_activation_bytes(te_dim) if gpu else None))
    phases.append(("VAE encode", BASE_RSS + v_bytes + video + (0 if gpu else v_act), v_bytes + v_act if gpu else None))
    resident = None
    t_vram = None
    if gpu:
        t_vram = t_bytes + t_act
        if vram_budget is not None and t_vram > vram_budget:
            resident = resident_blocks_for(t_model, vram_budget, tokens, batch, precision, (frames, height, width))
            blocks = swappable_blocks(t_model)
            rest = t_bytes - sum(models.module_bytes(b) for b in blocks)
            t_vram = rest + t_act + sum(models.module_bytes(b) for b in blocks[:resident]) + 2 * max(
                models.module_bytes(b) for b in blocks)
            notes.append(f"block swap: {resident} of {len(blocks)} blocks resident, the rest streamed from RAM")
    phases.append(("transformer", BASE_RSS + v_bytes + t_bytes + video + (0 if gpu else t_act), t_vram))
    phases.append(("VAE decode", BASE_RSS + v_bytes + video + (0 if gpu else v_act), v_bytes + v_act if gpu else None))
    ram_peak = max(p[1] for p in phases)
    vram_peak = max((p[2] for p in phases if p[2] is not None), default=None)
    plan = MemoryPlan(ram_peak, vram_peak, resident, phases, notes, vae_tiling)
    if ram_budget is not None and ram_peak > ram_budget:
        worst = max(phases, key=lambda p: p[1])
        name = "ram_budget" if ram_budget_gb else "memory"
        if worst[0] == "text encoder":
            fix = (f"use {input_ref('text_precision')} fp8_e4m3fn" if text_precision != "fp8_e4m3fn" else
                   "encode the prompt once on a machine with more memory (the prompt cache then skips the encoder)")
        else:
            fix = _fixes(precision, height, width, frames)
        raise VDOTInputError(
            name, f"this run needs about {ram_peak / GB:.1f} GB of RAM at its peak ({worst[0]} phase; "
            f"{plan.describe()}), more than the {ram_budget / GB:.1f} GB " + ("budget" if ram_budget_gb else "this machine has"),
            fix)
    if gpu and vram_budget_gb is None and vram_peak is not None and resident is None:
        vram_total = _device_total(device)
        if vram_total is not None and vram_peak > vram_total:
            raise VDOTInputError("vram_budget", f"this run needs about {vram_peak / GB:.1f} GB of GPU memory, the GPU has "
                                 f"{vram_total / GB:.1f} GB", _fixes(precision, height, width, frames))
    return plan


def resident_blocks_for(transformer, vram_budget: int, tokens: int, batch: int = 1, precision: str = "",
                        shape: tuple[int, int, int] | None = None) -> int | None:
    """Transformer blocks to keep on the GPU within ``vram_budget`` bytes (None: the whole model fits);
    a budget that cannot hold even one block next to the activations raises :class:`VDOTInputError`."""
    from . import models
    from .block_swap import blocks_that_fit, swappable_blocks

    t_bytes = models.module_bytes(transformer)
    t_act = transformer_activation_bytes(dict(transformer.config), tokens, batch)
    if t_bytes + t_act <= vram_budget:
        return None
    blocks = swappable_blocks(transformer)
    rest = t_bytes - sum(models.module_bytes(b) for b in blocks)
    resident = blocks_that_fit(transformer, vram_budget - rest - t_act)
    if resident < 1:
        frames, height, width = shape or (0, 0, 0)
        size = f" at {width}x{height}x{frames}" if shape else ""
        raise VDOTInputError(
            "vram_budget", f"the transformer ({t_bytes / GB:.1f} GB{' in ' + precision if precision else ''}) cannot "
            f"run in {vram_budget / GB:.1f} GB of GPU memory even with block swap: its activations{size} need "
            f"{t_act / GB:.1f} GB", _fixes(precision, height, width, frames) if shape else
            "use fp8 precision, a larger VRAM budget, or a smaller video")
    return resident


def _vae_tiles(height: int, width: int) -> bool:
    from .vae_tiling import AUTO_TILE_PIXELS

    return height * width > AUTO_TILE_PIXELS


def _fixes(precision: str, height: int, width: int, frames: int) -> str:
    fixes = []
    if not precision.startswith("fp8"):
        fixes.append(f"{input_ref('precision')} fp8_e4m3fn (half the transformer's memory)")
    fixes.append(f"a larger {input_ref('vram_budget')} on a GPU (block swap streams the blocks that do not fit)")
    fixes.append(f"a smaller output (e.g. {input_ref('height')} {max(16, height // 32 * 16)} "
                 f"{input_ref('width')} {max(16, width // 32 * 16)} "
                 f"or {input_ref('num_frames')} {max(1, (frames - 1) // 8 * 4 + 1)})")
    return "use " + ", or ".join(fixes)


def _device_total(device: torch.device) -> int | None:
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    return None


__all__ = [
    "MemoryPlan", "PromptCache", "default_cache_dir", "file_identity", "plan_memory", "resident_blocks_for",
    "text_activation_bytes",
    "transformer_activation_bytes", "vae_activation_bytes", "video_tokens",
]
