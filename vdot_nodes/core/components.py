"""Build a ready :class:`VDOTPipeline` from user paths, or from the embedded default.

The one place the CLI and the nodes turn "which weights?" into models. With no paths, the embedded
default is used: the toy-world checkpoints shipped in ``vdot_nodes/assets/toy`` when present, else
tiny randomly initialised components (noise-like output, for trying the plumbing); the CLI says
which (:func:`default_model_description`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import VDOTInputError, input_ref
from .pipeline import VDOTPipeline

TOY_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy"
TOY_FILES = {"transformer": "transformer.safetensors", "vae": "vae.safetensors", "text_encoder": "text_encoder.safetensors"}


def toy_checkpoints_available() -> bool:
    return all((TOY_DIR / name).is_file() for name in TOY_FILES.values())


def default_model_description() -> str:
    if toy_checkpoints_available():
        return f"the embedded toy-world VDOT model ({TOY_DIR}); it knows only the toy world's synthetic scenes"
    return "a tiny randomly initialised Wan-VACE (no toy checkpoints found): output is noise, for testing the plumbing"


def load_pipeline(
    model: str | Path | None = None,
    vae: str | Path | None = None,
    text_encoder: str | Path | None = None,
    *,
    precision: str = "bf16",
    vae_precision: str = "fp32",
    text_precision: str = "bf16",
    device: str | None = None,
    offload: str = "model",
    lazy: bool = False,
    prompt_cache_dir: str | Path | None = None,
    plan_shape: tuple[int, int, int] | None = None,
    plan_prompts: tuple[str, ...] = (),
    num_videos: int = 1,
    cfg: float = 1.0,
    ram_budget_gb: float | None = None,
    vram_budget_gb: float | None = None,
    attention: str = "sdpa",
    compile_blocks: bool = False,
    fp8_matmul: bool = False,
    loras: Sequence = (),
    load_progress=None,
) -> VDOTPipeline:
    """Load the transformer, VAE and text encoder (each a file or a diffusers folder).

    A diffusers pipeline root given as ``model`` also provides the VAE and text encoder when those
    are not given. With nothing given, returns the embedded default (see module docstring).

    ``lazy``: only the VAE loads now; the text encoder loads when a prompt is not in the prompt cache
    (``prompt_cache_dir``), streaming its blocks from the file, and is released after encoding, then the transformer loads for sampling
    and is released before decoding — one large component in memory at a time. With ``plan_shape``
    (frames, height, width) the run's memory is planned from the headers first
    (:func:`memory.plan_memory`): a plan over ``ram_budget_gb`` / ``vram_budget_gb`` is refused
    before anything loads, and on a GPU the VRAM budget decides how many blocks stay resident
    (block swap). The plan is kept as ``pipeline.memory_plan``; what the speed options ran as
    ``pipeline.speed_notes``.

    ``load_progress(what)`` returns a ``progress(done_bytes, total_bytes)`` callback for the load of
    ``what`` (e.g. :func:`models.tqdm_load_progress`, the CLI's bar); None shows nothing.

    ``loras``: ``(file or LoraFile, strength)`` pairs applied to the transformer each time it loads
    (merged, or on the fly when it is stored in fp8; :mod:`vdot_nodes.core.lora`); their reports are in
    ``pipeline.lora_reports``.
    """
    if model is None and vae is None and text_encoder is None:
        from .speed import apply_speed_options

        pipe = _with_loras(default_pipeline(device=device, offload=offload), loras)
        # The embedded model is small and stored in fp32: precision and budgets are for loaded models; the
        # speed options still apply, and the notes say what ran (never silently ignored).
        pipe.speed_notes = [f"fp32 weights (the embedded toy model; precision {precision} applies to a loaded model)",
                            *apply_speed_options(pipe.transformer, pipe.device, attention=attention,
                                                 compile_blocks=compile_blocks, fp8_matmul=fp8_matmul)]
        return pipe
    if model is None:
        raise VDOTInputError("model", "a VAE or text encoder was given but no transformer",
                             f"pass {input_ref('model')} too")
    from . import models

    model = Path(model)
    is_pipeline_root = model.is_dir() and (model / "transformer").is_dir()
    if vae is None:
        if not is_pipeline_root:
            raise VDOTInputError("vae", "no VAE given", f"pass {input_ref('vae')} wan_2.1_vae.safetensors "
                                 f"(or a diffusers folder as {input_ref('model')})")
        vae = model
    if text_encoder is None:
        if not is_pipeline_root:
            raise VDOTInputError(
                "text_encoder", "no text encoder given",
                f"pass {input_ref('text_encoder')} umt5_xxl_fp16.safetensors (or a diffusers folder as {input_ref('model')})"
            )
        text_encoder = model
    cache = None
    if prompt_cache_dir is not None:
        from .memory import PromptCache, file_identity

        cache = PromptCache(prompt_cache_dir, f"{file_identity(text_encoder)}\n{text_precision}")
    plan = None
    run_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if plan_shape is not None:
        from .memory import plan_memory
        from .pipeline import MAX_TEXT_TOKENS, clean_prompt

        cached = cache is not None and all(cache.path(clean_prompt(p), MAX_TEXT_TOKENS).is_file() for p in plan_prompts)
        frames, height, width = plan_shape
        plan = plan_memory(model, vae, text_encoder, precision=precision, vae_precision=vae_precision,
                           text_precision=text_precision, frames=frames, height=height, width=width, device=run_device,
                           num_videos=num_videos, cfg=cfg, ram_budget_gb=ram_budget_gb, vram_budget_gb=vram_budget_gb,
                           prompt_cached=cached, text_stream=lazy)
    speed_notes: list[str] = []
    lora_reports: list = []

    def shown(what: str) -> dict:
        return {"progress": load_progress(what)} if load_progress is not None else {}

    def load_transformer():
        from .speed import apply_speed_options

        module = models.load_transformer(model, precision=precision, **shown("transformer"))
        if loras:  # before the speed options (compile) see the module; a lazy pipeline reloads, so re-applied
            from .lora import apply_loras

            lora_reports[:] = apply_loras(module, loras).reports
        speed_notes[:] = apply_speed_options(module, run_device, attention=attention, compile_blocks=compile_blocks,
                                             fp8_matmul=fp8_matmul)
        return module

    def load_text_encoder():
        # Lazy (one prompt per run): the encoder's blocks are read from the file as they run.
        return models.load_text_encoder(text_encoder, precision=text_precision, stream=lazy, **shown("text encoder"))

    vae_model = models.load_vae(vae, precision=vae_precision, **shown("VAE"))
    resident = plan.resident_blocks if plan is not None else None
    if lazy:
        config = models.empty_model(model, "transformer", precision, input_name="model").config
        pipe = VDOTPipeline(None, vae_model, device=run_device, offload=offload, text_encoder_loader=load_text_encoder,
                            transformer_loader=load_transformer, transformer_config=config, prompt_cache=cache,
                            resident_blocks=resident, release_after_use=True)
    else:
        encoder, tokenizer = load_text_encoder()
        pipe = VDOTPipeline(load_transformer(), vae_model, encoder, tokenizer, device=run_device, offload=offload,
                            prompt_cache=cache, resident_blocks=resident)
    pipe.memory_plan, pipe.speed_notes = plan, speed_notes
    if plan is not None and plan.vae_tiling:
        pipe.vae_tiling = "on"  # the plan tiles to fit its budget; otherwise the codec's own "auto" decides
    pipe.lora_reports = lora_reports
    return pipe


def _with_loras(pipe: VDOTPipeline, loras: Sequence) -> VDOTPipeline:
    if loras:
        from .lora import apply_loras

        pipe.lora_reports = apply_loras(pipe.transformer, loras).reports
    return pipe


def default_pipeline(device: str | None = None, offload: str = "model") -> VDOTPipeline:
    if toy_checkpoints_available():
        from . import models

        transformer = models.load_transformer(TOY_DIR / TOY_FILES["transformer"], precision="fp32")
        vae = models.load_vae(TOY_DIR / TOY_FILES["vae"], precision="fp32")
        encoder, tokenizer = models.load_text_encoder(TOY_DIR / TOY_FILES["text_encoder"], precision="fp32")
        return VDOTPipeline(transformer, vae, encoder, tokenizer, device=device or "cpu", offload=offload)
    from .tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_transformer, build_tiny_vae

    with torch.no_grad():
        return VDOTPipeline(
            build_tiny_transformer(),
            build_tiny_vae(),
            build_tiny_text_encoder(),
            build_tiny_tokenizer(),
            device=device or "cpu",
            offload=offload,
        )
