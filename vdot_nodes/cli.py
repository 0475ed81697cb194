"""The ``vdot`` command line: ``vdot tasks``, ``vdot generate``, ``vdot preprocess``, ``vdot convert``.

Bad input exits with status 2 and one line saying what to fix; nothing the user made is overwritten
unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .core.errors import VDOTInputError, one_line_parser_class, run_subcommand
from .core.sampling import DEFAULT_PRESET, SAMPLER_PRESETS
from .core.tasks import TASKS


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_generate_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a video for one task",
        description="Generate a video with a sampler preset (default: the official VDOT-14B 4-step sampler). "
        "With no --model, the embedded default model is used.",
    )
    p.add_argument("--task", default="t2v", choices=list(TASKS), metavar="TASK",
                   help="task name (see `vdot tasks`); default t2v")
    p.add_argument("--prompt", default="", help="text prompt")
    p.add_argument("--negative-prompt", default="", help="negative prompt (only used when --cfg > 1)")
    inputs = p.add_argument_group("condition inputs (which ones a task needs: `vdot tasks`)")
    inputs.add_argument("--control", help="control video (depth/pose/flow/grey/scribble) file or frame folder")
    inputs.add_argument("--source", help="source video for outpaint / extension / inpaint")
    inputs.add_argument("--mask", help="mask video or image for inpaint (white = generate)")
    inputs.add_argument("--ref", nargs="+", default=[], metavar="IMG", help="reference image(s) for r2v / reference_* tasks")
    inputs.add_argument("--first-frame", help="first-frame image for firstframe_* tasks")
    inputs.add_argument("--outpaint", type=_int_list, metavar="T,B,L,R",
                        help="outpaint: pixels to add on top,bottom,left,right of the source (default 0,0,64,64)")
    inputs.add_argument("--extension-mode", choices=["first", "last", "random"],
                        help="extension: which clip of the source to keep (default first)")
    inputs.add_argument("--keep-frames", type=int, help="extension: number of source frames to keep (default: a quarter)")
    inputs.add_argument("--box", type=_int_list, metavar="X0,Y0,X1,Y1", help="inpaint: box to regenerate instead of --mask")
    shape = p.add_argument_group("output shape")
    shape.add_argument("--frames", type=int, help="frame count, 4k+1 (default: from the control/source video, up to "
                                                   "81 (5 on the embedded toy model); else 81 / 5 toy); more than "
                                                   "--window frames are made as chained extension windows")
    shape.add_argument("--window", type=int, default=81,
                       help="long video: frames per window, 4k+1 (default 81, what Wan/VDOT were trained on)")
    shape.add_argument("--overlap", type=int, default=17,
                       help="long video: at least this many frames of the previous window are kept in the next (default 17)")
    shape.add_argument("--no-colour-match", dest="colour_match", action="store_false",
                       help="long video: do not match each window's colours to the frames already made")
    shape.add_argument("--height", type=int,
                       help="height, multiple of 16 (default: the control/source video's aspect ratio at area 480·832 "
                            "(64·64 toy), else 480 / 64 toy); the video is resized to cover and centre-cropped")
    shape.add_argument("--width", type=int,
                       help="width, multiple of 16 (default: as --height; else 832 / 64 toy)")
    shape.add_argument("--fps", type=float, default=16.0, help="output fps (default 16, Wan's rate)")
    shape.add_argument("--frame-sampling", choices=["uniform", "first"], default="uniform",
                       help="which frames of a control/source video: uniform = spread over the whole clip (default, "
                            "as the official VDOT loader); first = the first --frames frames")
    samp = p.add_argument_group("sampling")
    samp.add_argument("--preset", choices=list(SAMPLER_PRESETS), default=None,
                      help=f"sampler preset (default {DEFAULT_PRESET}, the official VDOT-14B sampler: FlowUniPC, 4 steps, shift 16; "
                           "renoise without --model: the embedded toy was distilled with it); renoise = the re-noising "
                           "sampler of lightx2v-style LoRAs; "
                           "teacher_unipc / teacher_euler = undistilled Wan (use --cfg 5). README: Sampling")
    samp.add_argument("--steps", type=int, help="override the preset's step count")
    samp.add_argument("--shift", type=float, help="override the preset's timestep shift")
    samp.add_argument("--timesteps", type=_int_list,
                      help="explicit unshifted step positions for the renoise preset, e.g. 1000,750,500,250")
    samp.add_argument("--seed", type=int, default=0, help="seed (video i uses seed+i)")
    samp.add_argument("--num-videos", type=int, default=1, help="videos to generate (default 1)")
    samp.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance (default 1 = off; VDOT's guidance is distilled)")
    samp.add_argument("--cfg-start", type=float, default=0.0,
                      help="guide (--cfg > 1) only from this part of the denoising on: 0 = pure noise (default), "
                           "1 = the clean video, as ComfyUI's start percent")
    samp.add_argument("--cfg-end", type=float, default=1.0,
                      help="guide only until this part of the denoising (default 1 = to the end); e.g. 0.8 leaves "
                           "the last, low-noise fifth unguided (a guidance interval). README: Sampling")
    samp.add_argument("--control-scale", type=float, default=1.0, help="strength of the VACE context (default 1.0)")
    model = p.add_argument_group("model (default: the embedded model)")
    model.add_argument("--model", help="VACE transformer: .safetensors file or diffusers folder")
    model.add_argument("--vae", help="Wan VAE: .safetensors file or diffusers folder")
    model.add_argument("--text-encoder", help="UMT5 text encoder: .safetensors file or diffusers folder")
    model.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16", "fp8_e4m3fn", "fp8_e5m2"],
                       help="transformer weight precision (default bf16; fp8 = fp8 storage, bf16 compute)")
    model.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                       help="Wan LoRA (.safetensors: ComfyUI/Kijai, musubi/kohya or diffusers format) merged into the "
                       "transformer, applied on the fly with fp8 storage; strength default 1; repeatable")
    model.add_argument("--device", help="cuda, cuda:1, cpu, ... (default: cuda if available)")
    model.add_argument("--offload", choices=["model", "none"], default="model",
                       help="model = each component on the device only while it runs (default)")
    mem = p.add_argument_group("memory and speed (a real --model loads one large component at a time)")
    mem.add_argument("--text-precision", default="bf16", choices=["bf16", "fp16", "fp32", "fp8_e4m3fn"],
                     help="text encoder precision (default bf16, ~11 GB for UMT5-XXL; fp8_e4m3fn ~7 GB)")
    mem.add_argument("--ram-budget", type=float, metavar="GB",
                     help="host memory this run may use; a plan above it is refused before loading (default: all RAM)")
    mem.add_argument("--vram-budget", type=float, metavar="GB",
                     help="GPU memory this run may use; transformer blocks that do not fit are streamed (block swap)")
    mem.add_argument("--prompt-cache", metavar="DIR",
                     help="prompt-embedding cache (default: $VDOT_CACHE_DIR/prompt_embeds, else the user cache folder's "
                          "vdot/prompt_embeds, e.g. ~/.cache/vdot/prompt_embeds); a cached prompt never loads the text "
                          "encoder")
    mem.add_argument("--no-prompt-cache", action="store_true", help="always run the text encoder")
    mem.add_argument("--attention", default="sdpa", choices=["auto", "sdpa", "flash", "sage"],
                     help="attention backend (default sdpa; flash/sage need flash-attn/sageattention on CUDA, else sdpa)")
    mem.add_argument("--compile", action="store_true", help="torch.compile the repeated transformer block")
    mem.add_argument("--fp8-matmul", action="store_true",
                     help="with --precision fp8_e4m3fn: multiply in fp8 (torch._scaled_mm) where supported, else bf16")
    mem.add_argument("--preview-decoder", metavar="FILE",
                     help="decode the video with TAEW2.1 (taew2_1.safetensors or .pth from github.com/madebyollin/taehv) "
                          "instead of the VAE: a quick, softer draft; Wan 2.1 VAE only")
    p.add_argument("--out", required=True, help="output .mp4, or a folder for PNG frames")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --out")


def _named(flag: str, read, path):
    """Run ``read(path)`` so that a file error names the CLI flag the path came from."""
    try:
        return read(path)
    except VDOTInputError as exc:
        # A file error keeps the file's name after the flag; an error about the input itself
        # (core names it semantically: "mask" for --mask) is simply renamed to the flag.
        problem, fix = exc.templates  # with their input references, which main renames to flags
        problem = problem if exc.input_name == flag.lstrip("-") else f"{exc.input_name}: {problem}"
        raise VDOTInputError(flag, problem, fix) from None


def _source_path(args) -> tuple[str | None, str]:
    """The video that sets frames and size (control, else source) and its flag."""
    return (args.control, "--control") if args.control else (args.source, "--source")


def _source_timestamps(args):
    """(probe of the driving video, timestamps of the frames usable with the mask video too)."""
    from .core.video_io import IMAGE_EXTENSIONS, probe_video

    path, flag = _source_path(args)
    probe = _named(flag, probe_video, path)
    timestamps = probe.timestamps
    if args.mask and Path(args.mask).suffix.lower() not in IMAGE_EXTENSIONS:
        # A video and its mask video are read as a pair: only the frames both have are used.
        timestamps = timestamps[: _named("--mask", probe_video, args.mask).num_frames]
    return probe, timestamps


def _source_plan(args):
    """Frame ids and size for the driving video, after resolve_output_shape filled frames/height/width."""
    from .core.source_prep import plan_source

    probe, timestamps = _source_timestamps(args)
    return plan_source(timestamps, probe.height, probe.width, frames=args.frames, height=args.height,
                       width=args.width, sampling=args.frame_sampling, name=_source_path(args)[1])


def _load_video_input(path: str | None, plan, name: str):
    """A user video for the VCU: the plan's frames, resized to cover its size and centre-cropped."""
    if path is None:
        return None
    from .core.source_prep import load_video

    return _named(f"--{name}", lambda p: load_video(p, plan), path)


def _load_mask_input(path: str | None, plan):
    """The --mask video (same frames and crop as the video) or image, as a soft mask 0..1."""
    if path is None:
        return None
    from .core.source_prep import load_mask

    return _named("--mask", lambda p: load_mask(p, plan), path)


def resolve_output_shape(args, is_toy: bool) -> None:
    """Fill in --frames/--height/--width left unset, as the official VDOT loader does.

    With a control/source video: frame count and size from the video (up to 81 frames spread over
    the whole clip, size at the model's area keeping the aspect ratio; ``core.source_prep``).
    Without one: 81×480×832 (5×64×64 on the embedded toy model). Given values always win.
    """
    from .core.source_prep import OFFICIAL_POLICY, TOY_POLICY, plan_source

    policy = TOY_POLICY if is_toy else OFFICIAL_POLICY
    args.frame_sampling = getattr(args, "frame_sampling", "uniform")
    path, flag = _source_path(args)
    if path:
        probe, timestamps = _source_timestamps(args)
        if args.frames is not None and args.frames > len(timestamps):
            raise VDOTInputError(
                flag, f"{path} has {len(timestamps)} frames but --frames is {args.frames}",
                f"use --frames {max(1, (len(timestamps) - 1) // 4 * 4 + 1)} or a longer video",
            )
        plan = plan_source(timestamps, probe.height, probe.width, policy, frames=args.frames, height=args.height,
                           width=args.width, sampling=args.frame_sampling, name=flag)
        args.frames, args.height, args.width = plan.num_frames, plan.height, plan.width
        return
    args.frames = policy.default_frames if args.frames is None else args.frames
    args.height = policy.height if args.height is None else args.height
    args.width = policy.width if args.width is None else args.width


def build_vcu_from_args(args):
    from .core.tasks import build_vcu, get_task
    from .core.video_io import read_image

    spec = get_task(args.task)
    f, h, w = args.frames, args.height, args.width
    inputs = dict(prompt=args.prompt, negative_prompt=args.negative_prompt, num_frames=f, height=h, width=w)
    plan = _source_plan(args) if (args.control or args.source) else None
    if args.control:
        inputs["control"] = _load_video_input(args.control, plan, "control")
    if args.source:
        inputs["source"] = _load_video_input(args.source, plan, "source")
    if args.mask:
        if plan is None:
            from .core.source_prep import SourcePlan

            plan = SourcePlan(tuple(range(f)), h, w)
        inputs["mask"] = _load_mask_input(args.mask, plan)
    if args.ref:
        inputs["references"] = [_named("--ref", read_image, p) for p in args.ref]
    if args.first_frame:
        image = _named("--first-frame", read_image, args.first_frame)
        if plan is not None:  # the first frame is part of the source in VACE: the same cover + crop
            from .core.source_prep import fit_clip

            image = fit_clip(image[None], h, w)[0]
        inputs["first_frame"] = image
    if args.outpaint is not None and len(args.outpaint) != 4:
        raise VDOTInputError("--outpaint", f"expected 4 pixel counts T,B,L,R, got {len(args.outpaint)}",
                             "e.g. --outpaint 0,0,64,64 adds 64 pixels left and right")
    # A flag the user gave always goes in, so one the task does not use is refused (not ignored);
    # the defaults only where the task takes them.
    flags = {"expand": args.outpaint, "mode": args.extension_mode, "keep_frames": args.keep_frames, "box": args.box}
    inputs.update({k: tuple(v) if isinstance(v, list) else v for k, v in flags.items() if v is not None})
    defaults = {"expand": (0, 0, 64, 64), "mode": "first", "seed": args.seed}
    inputs.update({k: v for k, v in defaults.items() if k in spec.accepted_inputs and k not in inputs})
    return build_vcu(args.task, **inputs)  # its errors name semantic inputs: main prints them as flags


# Core's semantic input names (core.validate, the task registry's inputs, the loaders and the memory plan), as
# `vdot generate` spells them: every error main prints is renamed with this table (run_subcommand).
CLI_NAMES = {"num_frames": "--frames", "height": "--height", "width": "--width", "height/width": "--height/--width",
             "fps": "--fps", "steps": "--steps", "timesteps": "--timesteps", "shift": "--shift", "seed": "--seed",
             "num_videos": "--num-videos", "cfg": "--cfg", "cfg_start": "--cfg-start", "cfg_end": "--cfg-end",
             "control_scale": "--control-scale",
             "keep_frames": "--keep-frames", "device": "--device", "out": "--out", "prompt": "--prompt",
             "negative_prompt": "--negative-prompt", "control": "--control", "source": "--source", "mask": "--mask",
             "box": "--box", "references": "--ref", "reference": "--ref", "first_frame": "--first-frame",
             "expand": "--outpaint", "mode": "--extension-mode", "preset": "--preset", "window": "--window",
             "overlap": "--overlap", "model": "--model", "vae": "--vae", "text_encoder": "--text-encoder",
             "lora": "--lora", "precision": "--precision", "text_precision": "--text-precision",
             "ram_budget": "--ram-budget", "vram_budget": "--vram-budget", "overwrite": "--overwrite",
             "preview_decoder": "--preview-decoder",
             **{f"expand.{side}": f"--outpaint ({side})" for side in ("top", "bottom", "left", "right")}}
# How to give each task input on the command line, for "task X needs ..." errors.
CLI_HOW_TO_GIVE = {name: f"pass {usage}" for name, usage in (
    ("control", "--control <video|frame folder>"), ("source", "--source <video|frame folder>"),
    ("mask", "--mask <image|video>"), ("box", "--box X0,Y0,X1,Y1"), ("references", "--ref IMG [IMG ...]"),
    ("first_frame", "--first-frame IMG"), ("expand", "--outpaint T,B,L,R"))}


def cmd_generate(args) -> int:
    from .core.components import default_model_description, load_pipeline
    from .core.models import tqdm_load_progress
    from .core.sampling import check_cfg_interval, get_preset
    from .core.validate import numbered_outputs, validate_generate
    from .core.video_io import write_output

    # Inputs are checked before any model loads: a bad flag should not cost a 14B load.
    is_toy = args.model is None and args.vae is None and args.text_encoder is None
    resolve_output_shape(args, is_toy=is_toy)
    validate_generate({**vars(args), "num_frames": args.frames})
    for flag, budget in (("--ram-budget", args.ram_budget), ("--vram-budget", args.vram_budget)):
        if budget is not None and not 0 < budget < 1e6:  # also NaN
            raise VDOTInputError(flag, f"{budget} GB is not a usable budget", "give a positive number of GB, e.g. 24")
    # The embedded toy student was distilled with the re-noising rollout: it defaults to that preset.
    default = "renoise" if (args.timesteps or is_toy) else DEFAULT_PRESET
    preset = get_preset(args.preset or default, steps=args.steps, shift=args.shift, unshifted_timesteps=args.timesteps)
    check_cfg_interval(preset, args.cfg, args.cfg_start, args.cfg_end)
    vcu = build_vcu_from_args(args)
    windows = _plan_long_video(args)
    loras = _read_loras(args)
    tae = _read_preview_decoder(args, is_toy, len(windows))
    started = time.perf_counter()
    cache_dir = None
    if not args.no_prompt_cache:
        from .core.memory import default_cache_dir

        cache_dir = Path(args.prompt_cache) if args.prompt_cache else default_cache_dir() / "prompt_embeds"
    prompts = (args.prompt,) + ((args.negative_prompt,) if args.cfg != 1.0 else ())
    pipe = load_pipeline(args.model, args.vae, args.text_encoder, precision=args.precision,
                         text_precision=args.text_precision, device=args.device, offload=args.offload, lazy=True,
                         prompt_cache_dir=cache_dir, plan_shape=(windows[0].length, args.height, args.width),
                         plan_prompts=prompts, num_videos=args.num_videos, cfg=args.cfg, ram_budget_gb=args.ram_budget,
                         vram_budget_gb=args.vram_budget, attention=args.attention, compile_blocks=args.compile,
                         fp8_matmul=args.fp8_matmul, loras=loras, load_progress=tqdm_load_progress)
    if tae is not None:  # a VAE from a diffusers folder is known only now (lazy: before the other models load)
        from .core.preview import check_preview_applies

        check_preview_applies(pipe.vae, what="the VAE")
    if pipe.memory_plan is not None:
        print(f"vdot: memory plan: {pipe.memory_plan.describe()}", file=sys.stderr)
    if is_toy:
        hint = "" if preset.name == "renoise" else " (it was distilled for --preset renoise, its default)"
        print(f"vdot: no --model given, using {default_model_description()}{hint}", file=sys.stderr)
    desc = f"{args.task} ({preset.name}" + (f", {len(windows)} windows)" if len(windows) > 1 else ")")
    from .core.progress import TqdmProgress

    with TqdmProgress(preset.steps * len(windows), desc) as progress:  # VAE chunks show as its postfix
        common = dict(preset=preset, cfg=args.cfg, cfg_start=args.cfg_start, cfg_end=args.cfg_end,
                      control_scale=args.control_scale, progress=progress)
        if len(windows) > 1:
            from .core.long_video import generate_long_video

            videos = generate_long_video(pipe, vcu, window=args.window, overlap=args.overlap,
                                         colour_match=args.colour_match, seed=args.seed, **common).unsqueeze(0)
        elif tae is not None:  # a draft: the VAE only encodes, TAEW2.1 decodes
            import torch

            from .core.preview import decode_draft

            latents = pipe.generate(vcu, seed=args.seed, num_videos=args.num_videos, return_latents=True, **common)
            progress.note("TAEW2.1 decode")
            videos = decode_draft(pipe.vae, tae.to(pipe.device, torch.float16 if pipe.device.type == "cuda" else
                                                   torch.float32), latents)
        else:
            videos = pipe.generate(vcu, seed=args.seed, num_videos=args.num_videos, **common)
    if pipe.speed_notes:
        print(f"vdot: ran with {', '.join(pipe.speed_notes)}", file=sys.stderr)
    for report in pipe.lora_reports:  # a lazy pipeline loads the transformer (and applies the LoRAs) while sampling
        print(f"vdot: {report.summary()}", file=sys.stderr)
    written = []
    for video, target in zip(videos, numbered_outputs(args.out, args.num_videos)):
        written.append(write_output(video, target, fps=args.fps, overwrite=args.overwrite))
    elapsed = time.perf_counter() - started
    for path in written:
        print(f"wrote {path} ({videos.shape[1]} frames, {videos.shape[3]}x{videos.shape[2]}) in {elapsed:.1f}s")
    return 0


def _plan_long_video(args):
    """The windows of ``--frames`` (one unless it exceeds ``--window``), checked before any model loads."""
    from .core.long_video import plan_windows

    windows = plan_windows(args.frames, args.window, args.overlap)
    from .core.validate import MAX_SEED

    if args.seed + len(windows) - 1 > MAX_SEED:  # window i uses seed + i
        raise VDOTInputError("--seed", f"{args.seed} + {len(windows) - 1} (one seed per window) passes 2^64 - 1",
                             f"use a seed of at most {MAX_SEED - len(windows) + 1}")
    if len(windows) > 1 and args.num_videos != 1:
        raise VDOTInputError("--num-videos", f"a long video (--frames {args.frames} > --window {args.window}) is made "
                             "one at a time", "use --num-videos 1 and run again with another --seed")
    return windows


def _read_preview_decoder(args, is_toy: bool, num_windows: int):
    """The ``--preview-decoder`` TAEW2.1, read and checked (and checked against the VAE's header) before the
    models load; None without the flag."""
    if args.preview_decoder is None:
        return None
    from .core.preview import check_preview_applies, load_preview_decoder

    if is_toy:
        raise VDOTInputError("--preview-decoder", "TAEW2.1 decodes Wan 2.1 latents; the embedded toy model's VAE makes "
                             "other latents (4x spatial) and has no tiny decoder", "drop --preview-decoder, or give "
                             "--model/--vae/--text-encoder for Wan2.1-VACE")
    if num_windows > 1:
        raise VDOTInputError("--preview-decoder", f"a long video ({num_windows} windows) carries each window's decoded "
                             "frames into the next, so it is decoded with the VAE", "drop --preview-decoder")
    if args.vae is not None:
        from .core.models import describe_checkpoint

        config = describe_checkpoint(args.vae).get("config")
        if config is not None:
            check_preview_applies(config, what=f"--vae {Path(args.vae).name}")
    return load_preview_decoder(args.preview_decoder)


def _read_loras(args) -> list:
    """Every ``--lora FILE[:STRENGTH]`` read and checked against the transformer's architecture (from the
    checkpoint's header) before the model loads."""
    if not args.lora:
        return []
    from .core.components import TOY_DIR, TOY_FILES, toy_checkpoints_available
    from .core.lora import LoraSpec, check_lora_for_checkpoint, parse_lora_arg, read_lora

    loras = [LoraSpec(read_lora(path), strength) for path, strength in (parse_lora_arg(text) for text in args.lora)]
    checkpoint = args.model or (TOY_DIR / TOY_FILES["transformer"] if toy_checkpoints_available() else None)
    if checkpoint is not None:
        check_lora_for_checkpoint(checkpoint, loras)
    return loras


def cmd_tasks(args) -> int:
    width = max(len(name) for name in TASKS)
    print(f"{'task':<{width}}  {'family':<9}  {'UVCBench':<8}  needs / description")
    for name, spec in TASKS.items():
        print(f"{name:<{width}}  {spec.family:<9}  {'yes' if spec.uvcbench else 'no':<8}  {spec.description}")
    print(f"\n{sum(s.uvcbench for s in TASKS.values())} UVCBench tasks, {len(TASKS)} in all")
    return 0


_Parser = one_line_parser_class()  # errors are one line, exit status 2


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vdot", description="VDOT 4-step unified video creation (Wan2.1-VACE distilled).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks", help="list the tasks and what each needs")
    _add_generate_parser(sub)
    sub.add_parser("preprocess", help="make a control video (grey, scribble, flow, depth, pose): vdot preprocess --help",
                   add_help=False)
    sub.add_parser("convert", help="convert the official VDOT release (.pt/.pth from huggingface.co/yutongwang1012/VDOT) "
                                   "to safetensors: vdot convert --help", add_help=False)
    sub.add_parser("train", help="distil a VDOT checkpoint from a YAML config: vdot train --help", add_help=False)
    sub.add_parser("train-reward", help="fit a DOLLAR latent reward model to a manifest's \"reward\" labels: "
                                        "vdot train-reward --help", add_help=False)
    sub.add_parser("toy", help="build / report the embedded toy world model: vdot toy --help", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "preprocess":
        from .preprocess_cli import preprocess_main

        return preprocess_main(argv[1:])
    if argv and argv[0] == "convert":
        from .convert_cli import convert_main

        return convert_main(argv[1:])
    if argv and argv[0] == "train":
        from training.cli import train_main

        return train_main(argv[1:])
    if argv and argv[0] == "train-reward":
        from training.reward import reward_main

        return reward_main(argv[1:])
    if argv and argv[0] == "toy":
        from training.toy.cli import toy_main

        return toy_main(argv[1:])
    return run_subcommand("vdot", build_parser(), argv, _run, names=CLI_NAMES, how_to_give=CLI_HOW_TO_GIVE)


def _run(args) -> int:
    return cmd_tasks(args) if args.command == "tasks" else cmd_generate(args)


if __name__ == "__main__":
    sys.exit(main())
