"""``vdot toy``: build and measure the embedded toy-world model.

    vdot toy world      --out DIR [--clips N]          synthetic clips + task inputs + manifest.jsonl
    vdot toy components --out DIR [--vae-steps N]      toy tokenizer/UMT5 + Wan VAE trained on the world
    vdot toy teacher    --data M --components DIR --out DIR [--steps N] [--minutes M]
    vdot toy build      --out DIR                      all of the above, then the distillation trainer
    vdot toy report     --data M --components DIR --teacher F [--student F ...]

Defaults come from ``training/configs/toy_teacher.yaml`` (``--config`` for another). Every step writes
into its own sub-folder of the build folder and is skipped when its outputs exist, so an interrupted
``build`` continues where it stopped (the teacher resumes from its last checkpoint).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import yaml

from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy_teacher.yaml"
TEACHER_VACE = "teacher_vace.safetensors"
TEACHER_T2V = "teacher_t2v"  # diffusers folder (WanTransformer3DModel), stage 1's teacher


def load_toy_config(path: str | Path | None) -> dict:
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise VDOTInputError("--config", f"{path} not found", f"use {DEFAULT_CONFIG}")
    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    for section in ("world", "vae", "text_encoder", "teacher"):
        cfg.setdefault(section, {})
    return cfg


def _world_config(cfg: dict):
    from .world import WorldConfig

    w = cfg["world"]
    return WorldConfig(height=int(w.get("height", 64)), width=int(w.get("width", 64)),
                       num_frames=int(w.get("num_frames", 17)), max_objects=int(w.get("max_objects", 3)))


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


# ------------------------------------------------------------------------------------------ steps
def run_world(cfg: dict, out: Path) -> Path:
    from .dataset import MANIFEST_NAME, time_clip_generation, write_toy_dataset

    manifest = out / MANIFEST_NAME
    if manifest.is_file():
        print(f"world: {manifest} exists, kept")
        return manifest
    clips, world = int(cfg["world"].get("clips", 48)), _world_config(cfg)
    print(f"world: {1000 * time_clip_generation(5, world):.1f} ms per clip (render + ground truth)")
    with _bar(clips, "toy clips") as bar:
        start = time.perf_counter()
        manifest = write_toy_dataset(out, clips, seed=int(cfg["world"].get("seed", 0)), config=world,
                                     progress=lambda done, total: bar.update(1))
    print(f"world: {clips} clips with all task inputs in {time.perf_counter() - start:.1f} s → {manifest}")
    return manifest


def run_components(cfg: dict, out: Path) -> tuple[Path, Path]:
    from vdot_nodes.core.models import save_text_encoder, save_vae
    from vdot_nodes.core.tiny import build_tiny_vae

    from .components import build_toy_text_encoder, build_toy_tokenizer, train_vae

    out.mkdir(parents=True, exist_ok=True)
    vae_path, text_path = out / "vae.safetensors", out / "text_encoder.safetensors"
    if not text_path.is_file():
        save_text_encoder(build_toy_text_encoder(seed=int(cfg["text_encoder"].get("seed", 0))), build_toy_tokenizer(), text_path)
        print(f"components: text encoder → {text_path}")
    if not vae_path.is_file():
        v = cfg["vae"]
        steps = int(v.get("steps", 300))
        vae = build_tiny_vae(seed=int(v.get("seed", 0)))
        with _bar(steps, "toy VAE") as bar:
            def progress(step, total, record):
                bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{record['train_psnr']:.1f}", refresh=False)
                bar.update(1)

            result = train_vae(vae, steps=steps, config=_world_config(cfg), lr=float(v.get("lr", 1e-3)),
                               batch_size=int(v.get("batch_size", 2)), kl_weight=float(v.get("kl_weight", 1e-6)),
                               seed=int(v.get("seed", 0)), train_frames=int(v.get("train_frames", 5)),
                               metrics_path=out / "metrics.jsonl", progress=progress)
        save_vae(vae, vae_path)
        print(f"components: VAE reconstruction PSNR {result['psnr_before']:.2f} → {result['psnr_after']:.2f} dB "
              f"in {result['seconds']:.0f} s → {vae_path}")
        with open(out / "vae_result.json", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return vae_path, text_path


def _toy_pipeline(transformer, components: Path):
    from vdot_nodes.core.models import load_text_encoder, load_vae
    from vdot_nodes.core.pipeline import VDOTPipeline

    vae = load_vae(components / "vae.safetensors", precision="fp32", input_name="--components")
    encoder, tokenizer = load_text_encoder(components / "text_encoder.safetensors", precision="fp32", input_name="--components")
    return VDOTPipeline(transformer, vae, encoder, tokenizer, device="cpu", offload="none", is_toy=True)


def run_teacher(cfg: dict, manifest: Path, components: Path, out: Path, steps: int | None = None,
                minutes: float | None = None) -> Path:
    from .teacher import EncodedManifest, TeacherTrainer, build_t2v_teacher, build_toy_teacher, check_teacher_data

    check_teacher_data(manifest)
    t, world = cfg["teacher"], _world_config(cfg)
    steps = int(steps if steps is not None else t.get("steps", 2000))
    minutes = float(minutes if minutes is not None else t.get("time_limit_minutes", 30))
    teacher = build_toy_teacher(seed=int(t.get("seed", 0)))
    pipe = _toy_pipeline(teacher, components)
    data = EncodedManifest(pipe, manifest, world.num_frames, world.height, world.width, seed=int(t.get("seed", 0)))
    trainer = TeacherTrainer(teacher, data, out, t)
    if trainer.resume():
        print(f"teacher: resumed at step {trainer.step}")
    with _bar(steps, "toy teacher") as bar:
        bar.update(trainer.step)

        def progress(step, total, record):
            bar.set_postfix(loss=f"{record['loss']:.4f}", cached=len(data.cache), refresh=False)
            bar.update(1)

        trainer.train(steps, progress=progress, time_limit_s=60 * minutes)
    path = trainer.export(out / TEACHER_VACE)
    trainer.ema.copy_to(teacher)
    build_t2v_teacher(teacher).save_pretrained(out / TEACHER_T2V, safe_serialization=True)
    print(f"teacher: step {trainer.step} → {path} and {out / TEACHER_T2V}/ (T2V twin)")
    return path


def run_distillation(out: Path, cfg: dict) -> int:
    """Stage 1 then stage 2 of ``training.trainer`` on the toy world, with run configs written into ``out``."""
    if importlib.util.find_spec("training.trainer") is None:
        print("build: the toy teacher is ready, but the distillation trainer (training/trainer.py) is not "
              "installed in this checkout; run `vdot train` once it is.", file=sys.stderr)
        return 3
    from training.cli import train_main

    configs = Path(__file__).resolve().parent.parent / "configs"
    world = _world_config(cfg)
    common_models = {"vae": str(out / "components" / "vae.safetensors"),
                     "text_encoder": str(out / "components" / "text_encoder.safetensors")}
    data = {"num_frames": world.num_frames, "height": world.height, "width": world.width}
    for stage in (1, 2):
        with open(configs / f"toy_stage{stage}.yaml", encoding="utf-8") as f:
            run = yaml.safe_load(f)
        run["out"] = str(out / f"stage{stage}")
        run["models"].update(common_models)
        run["data"] = {**{k: v for k, v in run.get("data", {}).items() if k not in ("captions", "manifest")}, **data,
                       "manifest": str(out / "world" / "manifest.jsonl")}
        if stage == 1:
            run["models"]["teacher"] = str(out / "teacher" / TEACHER_T2V)
        else:
            run["models"]["teacher"] = str(out / "teacher" / TEACHER_VACE)
            exports = sorted((out / "stage1" / "exports").glob("*.safetensors"))
            if not exports:
                print("build: stage 1 left no export; stage 2 needs it", file=sys.stderr)
                return 1
            run["models"]["generator_init"] = str(exports[-1])
        path = out / f"toy_stage{stage}.yaml"
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(run, f, sort_keys=False)
        print(f"build: distillation stage {stage} ({path})")
        code = train_main([str(path), "--resume"] if (out / f"stage{stage}" / "checkpoints").is_dir() else [str(path)])
        if code:
            return code
    return 0


# ------------------------------------------------------------------------------------------ report
def run_report(cfg: dict, manifest: Path, components: Path, models: dict[str, tuple[str, int]], clips: int,
               tasks: list[str], out_json: Path | None) -> dict:
    """Generate each eval row with each model; PSNR against the clip (the ground truth) and seconds per video."""
    import torch

    from training.data.manifest import ManifestDataset, sample_to_vcu
    from vdot_nodes.core.models import load_transformer

    from .components import psnr

    world = _world_config(cfg)
    data = ManifestDataset(manifest, world.num_frames, world.height, world.width, tasks=tasks)
    rows = list(range(min(len(data), clips * len(tasks))))
    results: dict = {}
    for name, (path, steps) in models.items():
        pipe = _toy_pipeline(load_transformer(path, precision="fp32", input_name=name), components)
        scores, seconds = {}, []
        for i in rows:
            sample = data[i]
            vcu = sample_to_vcu(sample, generator=torch.Generator().manual_seed(i))
            start = time.perf_counter()
            video = pipe.generate(vcu, seed=i, sampler="vdot" if steps == 4 else "euler", num_inference_steps=steps)[0]
            seconds.append(time.perf_counter() - start)
            scores.setdefault(sample["task"], []).append(psnr(video, sample["video"]))
        results[name] = {"steps": steps, "seconds_per_video": sum(seconds) / len(seconds),
                         "psnr": {k: sum(v) / len(v) for k, v in scores.items()}}
        print(f"{name:>10} ({steps:>2} steps): {results[name]['seconds_per_video']:.2f} s/video, PSNR "
              + ", ".join(f"{k} {v:.2f}" for k, v in results[name]["psnr"].items()))
    if out_json is not None:
        with open(out_json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return results


# ------------------------------------------------------------------------------------------ install
def run_install(build: Path, dest: Path | None = None, overwrite: bool = False) -> Path:
    """Copy a build's newest stage-2 student and its toy VAE / text encoder into the embedded-default
    folder (``vdot_nodes/assets/toy``), after loading each through the real loaders."""
    import shutil

    from vdot_nodes.core.components import TOY_DIR, TOY_FILES
    from vdot_nodes.core.models import load_text_encoder, load_transformer, load_vae

    dest = TOY_DIR if dest is None else Path(dest)
    exports = sorted((build / "stage2" / "exports").glob("generator_vace_step*.safetensors"))
    if not exports:
        raise VDOTInputError("--build", f"{build}/stage2/exports holds no generator_vace_step*.safetensors",
                             "run `vdot toy build` to the end first (stage 2 writes the student)")
    sources = {"transformer": exports[-1], "vae": build / "components" / "vae.safetensors",
               "text_encoder": build / "components" / "text_encoder.safetensors"}
    load_transformer(sources["transformer"], precision="fp32", input_name="--build")
    load_vae(sources["vae"], precision="fp32", input_name="--build")
    load_text_encoder(sources["text_encoder"], precision="fp32", input_name="--build")
    existing = [dest / name for name in TOY_FILES.values() if (dest / name).exists()]
    if existing and not overwrite:
        raise VDOTInputError("--dest", f"{existing[0]} already exists", "pass --overwrite to replace the embedded model")
    dest.mkdir(parents=True, exist_ok=True)
    for kind, src in sources.items():
        tmp = dest / f".{TOY_FILES[kind]}.partial"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest / TOY_FILES[kind])
        print(f"install: {src} → {dest / TOY_FILES[kind]}")
    return dest


# ------------------------------------------------------------------------------------------ parser
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vdot toy", description="Build / measure the toy-world VDOT model.")
    p.add_argument("--config", default=None, help=f"toy recipe YAML (default {DEFAULT_CONFIG.name})")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("world", help="render clips + task inputs + manifest.jsonl")
    w.add_argument("--out", required=True, help="new folder")
    w.add_argument("--clips", type=int, help="number of clips")
    w.add_argument("--seed", type=int, help="first clip seed")
    c = sub.add_parser("components", help="toy text encoder + train the toy VAE")
    c.add_argument("--out", required=True)
    c.add_argument("--vae-steps", type=int)
    t = sub.add_parser("teacher", help="flow-matching pre-training of the toy VACE teacher")
    t.add_argument("--data", required=True, help="manifest.jsonl from `vdot toy world`")
    t.add_argument("--components", required=True, help="folder from `vdot toy components`")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int)
    t.add_argument("--minutes", type=float, help="time limit")
    b = sub.add_parser("build", help="world → components → teacher → distillation (stages 1 and 2)")
    b.add_argument("--out", default="runs/toy", help="build folder (default runs/toy)")
    b.add_argument("--clips", type=int)
    b.add_argument("--vae-steps", type=int)
    b.add_argument("--teacher-steps", type=int)
    b.add_argument("--teacher-minutes", type=float)
    b.add_argument("--no-distill", action="store_true", help="stop after the teacher")
    i = sub.add_parser("install", help="make a build's student the embedded default (vdot_nodes/assets/toy)")
    i.add_argument("--build", default="runs/toy", help="build folder from `vdot toy build` (default runs/toy)")
    i.add_argument("--dest", default=None, help="target folder (default: the package's assets/toy)")
    i.add_argument("--overwrite", action="store_true", help="replace an installed embedded model")
    r = sub.add_parser("report", help="teacher vs students: PSNR to ground truth and seconds per video")
    r.add_argument("--data", required=True)
    r.add_argument("--components", required=True)
    r.add_argument("--teacher", required=True, help="VACE teacher .safetensors")
    r.add_argument("--teacher-steps", type=int, default=20)
    r.add_argument("--student", action="append", default=[], help="4-step student .safetensors (repeatable)")
    r.add_argument("--clips", type=int, default=2, help="eval rows per task")
    r.add_argument("--tasks", default="t2v,depth,pose,flow,inpaint", help="comma-separated tasks")
    r.add_argument("--json", default=None, help="write the numbers here")
    return p


def toy_main(argv: list[str] | None = None) -> int:
    """Run a ``vdot toy`` subcommand; returns 0 ok, 2 bad input, 3 trainer missing, 130 interrupted."""
    args = _parser().parse_args(argv)
    try:
        cfg = load_toy_config(args.config)
        if args.command == "world":
            for key, value in (("clips", args.clips), ("seed", args.seed)):
                if value is not None:
                    cfg["world"][key] = value
            run_world(cfg, Path(args.out))
        elif args.command == "components":
            if args.vae_steps is not None:
                cfg["vae"]["steps"] = args.vae_steps
            run_components(cfg, Path(args.out))
        elif args.command == "teacher":
            run_teacher(cfg, Path(args.data), Path(args.components), Path(args.out), args.steps, args.minutes)
        elif args.command == "build":
            out = Path(args.out)
            if args.clips is not None:
                cfg["world"]["clips"] = args.clips
            if args.vae_steps is not None:
                cfg["vae"]["steps"] = args.vae_steps
            manifest = run_world(cfg, out / "world")
            run_components(cfg, out / "components")
            run_teacher(cfg, manifest, out / "components", out / "teacher", args.teacher_steps, args.teacher_minutes)
            if not args.no_distill:
                return run_distillation(out, cfg)
        elif args.command == "install":
            run_install(Path(args.build), Path(args.dest) if args.dest else None, args.overwrite)
        elif args.command == "report":
            models = {"teacher": (args.teacher, args.teacher_steps)}
            models.update({f"student{i}": (s, 4) for i, s in enumerate(args.student)})
            run_report(cfg, Path(args.data), Path(args.components), models, args.clips,
                       [t.strip() for t in args.tasks.split(",") if t.strip()], Path(args.json) if args.json else None)
        return 0
    except VDOTInputError as exc:
        print(f"vdot toy: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, VDOTCancelled):
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
