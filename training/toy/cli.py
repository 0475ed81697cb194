"""``vdot toy``: build and measure the embedded toy-world model.

    vdot toy world      --out DIR [--clips N]          synthetic clips + task inputs + manifest.jsonl
    vdot toy components --out DIR [--vae-steps N]      toy tokenizer/UMT5 + Wan VAE trained on the world
    vdot toy teacher    --data M --components DIR --out DIR [--steps N] [--minutes M]
    vdot toy build      --out DIR [--variants all]     all of the above, then the distillation trainer
                                                       (stage 1, stage 2 for the full method, or once
                                                       per student variant with --variants all)
    vdot toy install    --build DIR                    make the build's full-method student the embedded default
    vdot toy report     --build DIR [--clips 4 --seeds 3]  teacher vs students on held-out clips

Defaults come from ``training/configs/toy_teacher.yaml`` (``--config`` for another). Every step writes
into its own sub-folder of the build folder and is skipped when its outputs exist, so an interrupted
``build`` continues where it stopped (the teacher resumes from its last checkpoint).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import yaml

from vdot_nodes.core.atomic import atomic_path, atomic_write_text
from vdot_nodes.core.errors import VDOTInputError, one_line_parser_class, run_subcommand
from vdot_nodes.core.tasks import TASKS
from vdot_nodes.core.validate import check_device

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"  # training/configs: the toy recipe's YAMLs
DEFAULT_CONFIG = CONFIGS_DIR / "toy_teacher.yaml"
TEACHER_VACE = "teacher_vace.safetensors"
TEACHER_T2V = "teacher_t2v"  # diffusers folder (WanTransformer3DModel), stage 1's teacher
ENCODE_CACHE = "encode_cache"  # VAE encodings of the manifest rows, shared by the teacher and the stage-2 runs


# Every key of the toy recipe (toy_teacher.yaml), per section; anything else is a typo and an error.
TOY_CONFIG_KEYS = {
    "world": {"clips", "seed", "height", "width", "num_frames", "max_objects", "cell", "tasks"},
    "vae": {"steps", "crop", "train_frames", "lr", "latent_noise", "batch_size", "long_steps", "long_lr", "long_crop",
            "long_batch_size", "object_weight", "long_object_weight", "edge_weight", "long_edge_weight", "kl_weight",
            "seed", "cell", "control_share"},
    "text_encoder": {"seed"},
    "teacher": {"seed", "steps", "time_limit_minutes", "batch_size", "lr", "betas", "weight_decay", "warmup", "shift",
                "text_dropout", "ema_decay", "grad_clip", "checkpoint_every", "keep_last", "task_weights"},
}


def load_toy_config(path: str | Path | None) -> dict:
    """The toy recipe YAML as a dict of its four sections; unknown sections or keys are a
    :class:`VDOTInputError` naming the dotted key (before anything runs)."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise VDOTInputError("--config", f"{path} not found", f"use {DEFAULT_CONFIG}")
    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise VDOTInputError("--config", f"{path} is not a mapping of sections", f"see {DEFAULT_CONFIG}")
    for section, value in cfg.items():
        if section not in TOY_CONFIG_KEYS:
            raise VDOTInputError(f"--config {section}", "is not a section of the toy recipe",
                                 f"use {', '.join(TOY_CONFIG_KEYS)}")
        for key in value or {}:
            if key not in TOY_CONFIG_KEYS[section]:
                raise VDOTInputError(f"--config {section}.{key}", "is not a key of the toy recipe",
                                     f"use {', '.join(sorted(TOY_CONFIG_KEYS[section]))}")
    for section in TOY_CONFIG_KEYS:
        cfg[section] = dict(cfg.get(section) or {})
    return cfg


def _world_config(cfg: dict):
    from .world import WorldConfig

    w, default = cfg["world"], WorldConfig()
    return WorldConfig(**{key: int(w.get(key, getattr(default, key)))
                          for key in ("height", "width", "num_frames", "max_objects", "cell")})


def _bar(total: int, desc: str):
    from vdot_nodes.core.progress import TqdmProgress

    return TqdmProgress(total, desc, dynamic_ncols=True)


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
                                     progress=lambda done, total: bar.update(1), tasks=cfg["world"].get("tasks"))
    print(f"world: {clips} clips with all task inputs in {time.perf_counter() - start:.1f} s → {manifest}")
    return manifest


def run_components(cfg: dict, out: Path) -> tuple[Path, Path]:
    import dataclasses

    from vdot_nodes.core.models import save_text_encoder, save_vae
    from .components import build_toy_text_encoder, build_toy_tokenizer, build_toy_vae, train_vae

    out.mkdir(parents=True, exist_ok=True)
    vae_path, text_path = out / "vae.safetensors", out / "text_encoder.safetensors"
    if not text_path.is_file():
        save_text_encoder(build_toy_text_encoder(seed=int(cfg["text_encoder"].get("seed", 0))), build_toy_tokenizer(), text_path)
        print(f"components: text encoder → {text_path}")
    if not vae_path.is_file():
        v = cfg["vae"]
        vae = build_toy_vae(seed=int(v.get("seed", 0)))
        # The VAE may learn on a finer world than the teacher's (vae.cell): edges anywhere, not only between cells.
        world = _world_config(cfg)
        vae_world = dataclasses.replace(world, cell=int(v.get("cell", world.cell)))

        def train_phase(steps: int, desc: str, **kwargs) -> dict:
            with _bar(steps, desc) as bar:
                def progress(step, total, record):
                    bar.note(f"loss={record['loss']:.4f}, psnr={record['train_psnr']:.1f}")
                    bar.update(1)

                return train_vae(vae, steps=steps, config=vae_world, kl_weight=float(v.get("kl_weight", 1e-6)),
                                 latent_noise=float(v.get("latent_noise", 0.05)), metrics_path=out / "metrics.jsonl",
                                 progress=progress, **kwargs)

        train_frames = int(v.get("train_frames", 5))
        result = train_phase(int(v.get("steps", 300)), "toy VAE", lr=float(v.get("lr", 1e-3)),
                             batch_size=int(v.get("batch_size", 2)), seed=int(v.get("seed", 0)),
                             train_frames=train_frames, object_weight=float(v.get("object_weight", 0.0)),
                             edge_weight=float(v.get("edge_weight", 0.0)), crop=v.get("crop"),
                             control_share=float(v.get("control_share", 0.0)))
        long_steps = int(v.get("long_steps", 0))
        if long_steps:  # phase 2: a second cosine run from a lower learning rate, same clips' length
            phase2 = train_phase(long_steps, "toy VAE, phase 2", lr=float(v.get("long_lr", 5e-4)),
                                 batch_size=int(v.get("long_batch_size", 1)), crop=v.get("long_crop"),
                                 seed=int(v.get("seed", 0)) + 1, train_frames=train_frames,
                                 object_weight=float(v.get("long_object_weight", 0.0)),
                                 edge_weight=float(v.get("long_edge_weight", 0.0)),
                                 control_share=float(v.get("control_share", 0.0)))
            result = {**result, "psnr_after_phase1": result["psnr_after"], "psnr_after": phase2["psnr_after"],
                      "object_psnr_after": phase2["object_psnr_after"], "control_psnr_after": phase2["control_psnr_after"],
                      "seconds": result["seconds"] + phase2["seconds"], "long_steps": long_steps}
        save_vae(vae, vae_path)
        print(f"components: VAE reconstruction PSNR {result['psnr_before']:.2f} → {result['psnr_after']:.2f} dB "
              f"(objects {result['object_psnr_after']:.2f} dB) in {result['seconds']:.0f} s → {vae_path}")
        print("components: the control videos' round trip (VACE encodes them with this VAE): "
              + ", ".join(f"{k} {v:.2f} dB" for k, v in result["control_psnr_after"].items()))
        atomic_write_text(out / "vae_result.json", json.dumps(result, indent=1), overwrite=True)
    return vae_path, text_path


def _toy_components(components: Path) -> tuple:
    """The build's toy VAE, text encoder and tokenizer (frozen: every pipeline of a report shares them)."""
    from vdot_nodes.core.models import load_text_encoder, load_vae

    vae = load_vae(components / "vae.safetensors", precision="fp32", input_name="--components")
    encoder, tokenizer = load_text_encoder(components / "text_encoder.safetensors", precision="fp32", input_name="--components")
    return vae, encoder, tokenizer


def _toy_pipeline(transformer, parts: tuple):
    """A CPU pipeline of ``transformer`` over :func:`_toy_components`."""
    from vdot_nodes.core.pipeline import VDOTPipeline

    return VDOTPipeline(transformer, *parts, device="cpu", offload="none")


def run_teacher(cfg: dict, manifest: Path, components: Path, out: Path, steps: int | None = None,
                minutes: float | None = None, encode_cache: Path | None = None, device: str | None = None) -> Path:
    """Train (or resume) the toy teacher on ``device`` (default the CPU); rows' VAE encodings are made on
    the CPU and kept in ``encode_cache`` (default ``out/encode_cache``) for the stage-2 runs to reuse."""
    from training.data.manifest import read_manifest

    from .teacher import (EncodedManifest, TeacherTrainer, build_t2v_teacher, build_toy_teacher, check_teacher_data,
                          task_row_weights)

    check_teacher_data(manifest)
    t, world = cfg["teacher"], _world_config(cfg)
    steps = int(steps if steps is not None else t.get("steps", 2000))
    minutes = float(minutes if minutes is not None else t.get("time_limit_minutes", 30))
    # A bad task_weights key fails now, before any model loads or row is encoded.
    task_row_weights([row.task for row in read_manifest(manifest, check_files=False)], t.get("task_weights"))
    teacher = build_toy_teacher(seed=int(t.get("seed", 0)))
    pipe = _toy_pipeline(teacher, _toy_components(components))
    data = EncodedManifest(pipe, manifest, world.num_frames, world.height, world.width, seed=int(t.get("seed", 0)),
                           encode_cache=encode_cache or out / ENCODE_CACHE)
    if data.disk is not None:  # rows in manifest order, before training: a clip's rows share VAE passes
        with _bar(len(data), "encoding rows") as bar:
            data.encode_all(progress=lambda done, total: bar.update(1))
        print(f"teacher: {len(data)} rows encoded ({data.disk.misses} new) with {data.disk.codec.passes} VAE passes")
    teacher.to(device or "cpu")  # the trainer runs where its model is; encodings stay on the CPU
    trainer = TeacherTrainer(teacher, data, out, t)
    if trainer.resume():
        print(f"teacher: resumed at step {trainer.step}")
    with _bar(steps, "toy teacher") as bar:
        bar.update(trainer.step)

        def progress(step, total, record):
            bar.note(f"loss={record['loss']:.4f}, cached={len(data.cache)}")
            bar.update(1)

        trainer.train(steps, progress=progress, time_limit_s=60 * minutes)
    teacher.to("cpu")  # the exports and the T2V twin are written from the CPU
    path = trainer.export(out / TEACHER_VACE)
    trainer.ema.copy_to(teacher)
    build_t2v_teacher(teacher).save_pretrained(out / TEACHER_T2V, safe_serialization=True)
    print(f"teacher: step {trainer.step} → {path} and {out / TEACHER_T2V}/ (T2V twin)")
    return path


# The report's ablation: stage-2 loss overrides per student. The full method is written to stage2/ and is
# what `vdot toy install` makes the embedded default; the others go to stage2_<name>/.
STUDENT_VARIANTS = {
    "dmd+otd+gan": {"loss": {"dm": "otd"}},
    "dmd": {"loss": {"dm": "dmd", "gan_weight": 0.0}, "schedule": {"generator_objectives": ["dm"]}},
    "dmd+otd": {"loss": {"dm": "otd", "gan_weight": 0.0}, "schedule": {"generator_objectives": ["dm"]}},
    "dmd+gan": {"loss": {"dm": "dmd"}},
    # The released recipe (#17) and its DMD-only ablation: same recipe, iterations and σ-weighted DMD, no OT, no GAN.
    "vdot": {},
    "vdot-dmd": {"loss": {"dm": "dmd", "gan_weight": 0.0},
                 "schedule": {"generator_objectives": ["dm"], "critic_objectives": ["denoise"]}},
}
# The stage-2 YAML each variant starts from (the others: toy_stage2.yaml).
VARIANT_CONFIGS = {"vdot": "toy_stage2_vdot.yaml", "vdot-dmd": "toy_stage2_vdot.yaml"}
FULL_VARIANT = "dmd+otd+gan"
UNDISTILLED = "teacher@4 steps"  # report baseline: the teacher on the 4-step VDOT sampler, no CFG, not distilled


def variant_dir(out: Path, name: str, seed: int = 0) -> Path:
    """Where a variant's stage-2 run lives; training seeds after the first get their own ``_seedK`` folder."""
    base = "stage2" if name == FULL_VARIANT else "stage2_" + name.replace("+", "_").replace("-", "_")
    return out / (base if seed == 0 else f"{base}_seed{seed}")


def check_variants(names: list[str], input_name: str = "--variants") -> list[str]:
    """``names`` if every one is a :data:`STUDENT_VARIANTS` key, else the one-line error."""
    for name in names:
        if name not in STUDENT_VARIANTS:
            raise VDOTInputError(input_name, f"unknown variant {name!r}", f"use some of {', '.join(STUDENT_VARIANTS)}")
    return names


def _variants_arg(text: str) -> list[str]:
    """A ``--variants`` value: ``all`` or a comma list, checked."""
    return list(STUDENT_VARIANTS) if text == "all" else check_variants([v.strip() for v in text.split(",") if v.strip()])


def variant_label(name: str, seed: int = 0) -> str:
    return name if seed == 0 else f"{name} seed{seed}"


def _run_stage(out: Path, name: str, run: dict) -> int:
    from training.cli import train_main

    path = out / f"{name}.yaml"
    atomic_write_text(path, yaml.safe_dump(run, sort_keys=False), overwrite=True)
    print(f"build: {name} ({path})")
    resume = Path(run["out"]).is_dir()  # continue whatever is there (no checkpoint yet: from step 0)
    return train_main([str(path), "--resume"] if resume else [str(path)])


def stage_run(out: Path, cfg: dict, file: str) -> dict:
    """A training YAML of ``training/configs`` with the build's world, toy VAE / text encoder and manifest."""
    world = _world_config(cfg)
    with open(CONFIGS_DIR / file, encoding="utf-8") as f:
        run = yaml.safe_load(f)
    run["models"].update({"vae": str(out / "components" / "vae.safetensors"),
                          "text_encoder": str(out / "components" / "text_encoder.safetensors")})
    run["data"] = {**{k: v for k, v in run.get("data", {}).items() if k not in ("captions", "manifest")},
                   "num_frames": world.num_frames, "height": world.height, "width": world.width,
                   "manifest": str(out / "world" / "manifest.jsonl")}
    return run


def student_run(out: Path, cfg: dict, name: str, seed: int, generator_init: Path, stage2_steps: int | None = None) -> dict:
    """The stage-2 run of one student variant and training seed (the config's seed + ``seed``)."""
    run = stage_run(out, cfg, VARIANT_CONFIGS.get(name, "toy_stage2.yaml"))
    run["seed"] = int(run.get("seed", 0)) + seed
    if stage2_steps is not None:
        run["max_steps"] = stage2_steps
    run["out"] = str(variant_dir(out, name, seed))
    run["models"]["teacher"] = str(out / "teacher" / TEACHER_VACE)
    run["models"]["generator_init"] = str(generator_init)
    run["data"]["encode_cache"] = str(out / ENCODE_CACHE)  # the teacher's encodings (same seed, same VAE)
    # The student learns the rows in the mix its teacher learned them (toy12_t2v3_stage2: with the teacher's
    # t2v×3 in stage 2 too, the student's FD went 72.4 → 44.3 at the same IoU; training/toy/HISTORY.md).
    if cfg["teacher"].get("task_weights") and "task_weights" not in run["data"]:
        run["data"]["task_weights"] = dict(cfg["teacher"]["task_weights"])
    for section, values in STUDENT_VARIANTS[name].items():
        run.setdefault(section, {}).update(values)
    return run


def run_distillation(out: Path, cfg: dict, variants: list[str] | None = None, train_seeds: int = 1,
                     stage2_steps: int | None = None) -> int:
    """Stage 1, then stage 2 once per student variant (:data:`STUDENT_VARIANTS`) and training seed (the
    config's seed + 0 … ``train_seeds`` − 1), with ``training.trainer``; ``stage2_steps`` replaces each
    stage-2 config's ``max_steps`` (a shorter ablation)."""
    variants = check_variants(variants or list(STUDENT_VARIANTS))
    # Absolute paths in the stage YAMLs: the trainer reads a YAML's relative paths from the YAML's own folder
    # (the build folder), so `--out runs/b` would have sent stage 1 to runs/b/runs/b/world.
    out = out.resolve()
    run = stage_run(out, cfg, "toy_stage1.yaml")
    run["out"] = str(out / "stage1")
    run["models"]["teacher"] = str(out / "teacher" / TEACHER_T2V)
    code = _run_stage(out, "toy_stage1", run)
    if code:
        return code
    exports = sorted((out / "stage1" / "exports").glob("*.safetensors"))
    if not exports:
        print("build: stage 1 left no export; stage 2 needs it", file=sys.stderr)
        return 1
    for seed in range(train_seeds):
        for name in variants:
            run = student_run(out, cfg, name, seed, exports[-1], stage2_steps)
            code = _run_stage(out, Path(run["out"]).name.replace("stage2", "toy_stage2", 1), run)
            if code:
                return code
    return 0


def _student(export: Path) -> dict:
    """A trainer export as a report model: 4 steps on the sampler preset it was trained for (its
    ``vdot_inference_preset``; the toy recipe's students, which have none: ``renoise``), with the OTD
    diagnostics of its run (``RUN/exports/x.safetensors``)."""
    from vdot_nodes.core.models import read_safetensors_header

    preset = read_safetensors_header(export)[1].get("vdot_inference_preset") or "renoise"
    return {"path": export, "steps": 4, "preset": preset, "extra": _otd_diagnostics(export.parent.parent)}


# ------------------------------------------------------------------------------------------ report
EVAL_SEED = 1_000_000  # held-out clips: the training world uses seeds 0..clips-1
REAL_SEED = 2_000_000  # real reference sets for the Fréchet distance (two disjoint ones: the noise floor)
# Tasks whose condition fixes the layout (object IoU and flow error against the clip apply): the registry says which.
SPATIAL_TASKS = tuple(name for name, spec in TASKS.items() if spec.spatial)


def _otd_diagnostics(run: Path) -> dict:
    """Mean OTD plan diagonal mass and ‖g_OT − g_DMD‖/‖g_DMD‖ over a run's logged generator steps."""
    import math

    diag, rel = [], []
    path = run / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            # otd_plan_diag_mass: our OTD (training/losses/otd.py); ot_plan_diag_mass: the released OT (otd_pooled.py)
            mass = rec.get("otd_plan_diag_mass", rec.get("ot_plan_diag_mass"))
            if mass is not None and math.isfinite(mass):
                diag.append(mass)
            if math.isfinite(rec.get("otd_rel_diff_dmd", float("nan"))):
                rel.append(rec["otd_rel_diff_dmd"])
    if not diag:
        return {}
    return {"otd_plan_diag_mass": sum(diag) / len(diag), "otd_steps": len(diag),
            "otd_rel_diff_dmd": sum(rel) / len(rel) if rel else float("nan"), "otd_rel_diff_steps": len(rel)}


def _measure_row(per_task: dict, sample: dict, clip, vcu, videos) -> None:
    """Add one held-out row's measurements (its videos, one per seed, against the clip's truth) to
    ``per_task[task]``."""
    import numpy as np

    from . import metrics
    from .components import psnr

    m = per_task.setdefault(sample["task"], {})
    m.setdefault("psnr", []).append(np.mean([psnr(v, sample["video"]) for v in videos]))
    # A pose control places the stick figures only: measure those.
    objects = clip.figure_indices() if TASKS[sample["task"]].control_kind == "pose" else None
    m.setdefault("object_iou", []).append(np.mean([metrics.object_iou(v, clip, objects) for v in videos]))
    m.setdefault("colour_iou", []).append(np.mean([metrics.colour_bound_iou(v, clip, objects) for v in videos]))
    m.setdefault("flow_epe", []).append(np.mean([metrics.flow_epe(v, clip) for v in videos]))
    m.setdefault("no_object", []).append(np.mean([metrics.lost_object(v) for v in videos]))
    if sample["task"] in ("inpaint", "outpaint"):
        m.setdefault("kept_psnr", []).append(np.mean([metrics.kept_psnr(v, sample["video"], vcu.masks) for v in videos]))
    if len(videos) > 1:
        m.setdefault("diversity", []).append(metrics.seed_diversity(list(videos)))


def _summarise(per_task: dict) -> dict:
    """Per-task means of :func:`_measure_row`'s lists, and the report's headline averages over them
    (IoU and EPE over the spatially controlled tasks, kept PSNR over inpaint/outpaint)."""
    import numpy as np

    task_means = {t: {k: float(np.mean(v)) for k, v in m.items()} for t, m in per_task.items()}

    def over(key, names):
        vals = [task_means[t][key] for t in names if key in task_means.get(t, {})]
        return float(np.mean(vals)) if vals else float("nan")

    spatial = [t for t in task_means if t in SPATIAL_TASKS]
    return {"object_iou": over("object_iou", spatial), "colour_iou": over("colour_iou", spatial),
            "flow_epe": over("flow_epe", spatial),
            "kept_psnr": over("kept_psnr", ["inpaint", "outpaint"]), "no_object": over("no_object", list(task_means)),
            "diversity": over("diversity", list(task_means)),
            "diversity_t2v": over("diversity", ["t2v"]), "tasks": task_means}


def run_report(cfg: dict, build: Path, models: dict[str, dict], clips: int, seeds: int, tasks: list[str],
               out_dir: Path | None, cfg_scale: float, cfg_interval: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Generate every held-out row with every model (``seeds`` seeds each) and measure it against truth
    (``training.toy.metrics``); write ``report.json``, ``REPORT.md`` (table) and ``report.svg`` (plot).
    ``cfg_interval``: the guided teacher rows' ``(cfg_start, cfg_end)`` (the sampler's guidance interval)."""
    import dataclasses

    import numpy as np
    import torch

    from training.data.manifest import ManifestDataset, sample_to_vcu
    from vdot_nodes.core.models import load_transformer
    from vdot_nodes.core.sampling import get_preset, guided_steps

    from . import metrics
    from .dataset import task_applies, write_toy_dataset
    from .world import make_clip

    world = _world_config(cfg)
    # Held-out clips EVAL_SEED + k: a world of n clips is the first n of a larger one, so each size has its folder.
    eval_dir = build / f"eval_world_{clips}"
    if not (eval_dir / "manifest.jsonl").is_file():
        write_toy_dataset(eval_dir, clips, seed=EVAL_SEED, config=world)
    data = ManifestDataset(eval_dir / "manifest.jsonl", world.num_frames, world.height, world.width, tasks=tasks)
    # task_applies: a held-out world written before pose rows needed a figure still has such rows.
    # Each held-out row once: its inputs, the clip's truth and its VCU (open choices drawn from the row index),
    # shared by every model and the ceiling row.
    rows = [(i, data[i]) for i in range(len(data)) if data.samples[i].meta.get("clip", 0) < clips
            and task_applies(data.samples[i].task, data.samples[i].meta)]
    rows = [(i, sample, make_clip(int(sample["meta"]["toy_seed"]), world),
             sample_to_vcu(sample, generator=torch.Generator().manual_seed(i))) for i, sample in rows]
    parts = _toy_components(build / "components")
    results: dict = {}
    sheet: dict[str, dict] = {}
    for name, spec in models.items():
        pipe = _toy_pipeline(load_transformer(spec["path"], precision="fp32", input_name=name), parts)
        teacher = spec["steps"] != 4
        guidance = spec.get("cfg", cfg_scale) if teacher else 1.0  # the 4-step rows sample without CFG
        # The toy student was distilled with the re-noising sampler; the teacher runs plain Euler.
        preset = get_preset("teacher_euler", steps=spec["steps"]) if teacher else get_preset(spec.get("preset", "renoise"))
        cfg_start, cfg_end = cfg_interval if guidance != 1 else (0.0, 1.0)
        evals = preset.steps + (guided_steps(preset, cfg_start, cfg_end) if guidance != 1 else 0)
        per_task: dict[str, dict[str, list]] = {}
        features, seconds = [], []
        with _bar(len(rows), f"report {name}") as bar:
            for i, sample, clip, vcu in rows:
                start = time.perf_counter()
                videos = pipe.generate(vcu, seed=1000 * i, num_videos=seeds, preset=preset, cfg=guidance,
                                       cfg_start=cfg_start, cfg_end=cfg_end)
                seconds.append((time.perf_counter() - start) / seeds)
                features.append(metrics.video_features(list(videos)))
                if sample["meta"].get("clip") == 0:  # contact sheet: first held-out clip, seed 0, per task
                    sheet.setdefault(sample["task"], {"truth": sample["video"]})[name] = videos[0]
                _measure_row(per_task, sample, clip, vcu, videos)
                bar.update(1)
        results[name] = {
            "steps": spec["steps"], "preset": preset.name, "cfg": guidance, "cfg_start": cfg_start, "cfg_end": cfg_end,
            "transformer_evals": evals,
            "seconds_per_video": float(np.mean(seconds)), "features": np.concatenate(features),
            **_summarise(per_task), **spec.get("extra", {}),
        }
    # What the toy VAE alone allows: the held-out truth encoded and decoded by the build's VAE, measured
    # like a model — what a generator that reproduced the encoder's latents exactly would score (one
    # could only beat it with latents that decode better than the encoder's own).
    per_task, features = {}, []
    with torch.no_grad():
        for _, sample, clip, vcu in rows:
            videos = pipe.decode(pipe.encode_latents(sample["video"])).float()
            features.append(metrics.video_features(list(videos)))
            _measure_row(per_task, sample, clip, vcu, videos)
    ceiling = {"features": np.concatenate(features), **_summarise(per_task)}
    n = max(len(r["features"]) for r in results.values())
    real = metrics.video_features([torch.from_numpy(make_clip(REAL_SEED + k, world).frames) for k in range(n)])
    real2 = metrics.video_features([torch.from_numpy(make_clip(REAL_SEED + n + k, world).frames) for k in range(n)])
    scale = metrics.feature_scale(np.concatenate([real, real2]))
    floor = metrics.frechet_distance(real / scale, real2 / scale)
    for r in [*results.values(), ceiling]:
        r["fd"] = metrics.frechet_distance(r.pop("features") / scale, real / scale)
    # The rows' own truth scored like a model: what a model reproducing every row exactly would score.
    # A few held-out clips (each shown in several tasks) are far from the world's spread (4 clips: about
    # 10× the real-vs-real floor), so this, not that floor, is the scale to read FD against; --clips shrinks it.
    truth = metrics.video_features([sample["video"] for _, sample, _, _ in rows])
    report = {"world": dataclasses.asdict(world), "clips": clips, "rows": len(rows), "seeds": seeds, "tasks": tasks,
              "cfg_scale": cfg_scale, "cfg_interval": list(cfg_interval), "fd_real_vs_real": floor,
              "fd_truth_rows": metrics.frechet_distance(truth / scale, real / scale),
              "vae_round_trip": ceiling, "models": results}
    for name, r in results.items():
        print(f"{name:>14}: {r['transformer_evals']:>3} evals, {r['seconds_per_video']:.2f} s/video, FD {r['fd']:.3f}, "
              f"IoU {r['object_iou']:.3f} (colour-bound {r['colour_iou']:.3f}), EPE {r['flow_epe']:.2f}, "
              f"kept PSNR {r['kept_psnr']:.2f}, diversity {r['diversity']:.3f}")
    print(f"{'real vs real':>14}: FD {floor:.3f} (noise floor)")
    print(f"{'held-out truth':>14}: FD {report['fd_truth_rows']:.3f} (the rows' own truth: an exact model on {clips} clips)")
    print(f"{'VAE round trip':>14}: FD {ceiling['fd']:.3f}, IoU {ceiling['object_iou']:.3f}, "
          f"kept PSNR {ceiling['kept_psnr']:.2f} (the truth through the toy VAE: the ceiling)")
    if out_dir is not None:
        from .report import write_report

        write_report(report, out_dir, sheet)
        print(f"report: {out_dir}/REPORT.md, report.svg, report.json")
    return report


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
        with atomic_path(dest / TOY_FILES[kind], overwrite=True, input_name="--dest") as tmp:  # existing: checked above
            shutil.copyfile(src, tmp)
        print(f"install: {src} → {dest / TOY_FILES[kind]}")
    return dest


# ------------------------------------------------------------------------------------------ parser
def _parser() -> argparse.ArgumentParser:
    p = one_line_parser_class()(prog="vdot toy", description="Build / measure the toy-world VDOT model.")
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
    t.add_argument("--device", help="where the teacher trains: cpu (default), cuda or cuda:N")
    b = sub.add_parser("build", help="world → components → teacher → distillation (stages 1 and 2)")
    b.add_argument("--out", default="runs/toy", help="build folder (default runs/toy)")
    b.add_argument("--clips", type=int)
    b.add_argument("--vae-steps", type=int)
    b.add_argument("--teacher-steps", type=int)
    b.add_argument("--teacher-minutes", type=float)
    b.add_argument("--teacher-device", help="where the teacher trains: cpu (default), cuda or cuda:N (the VAE "
                                             "and the rows' encodings stay on the CPU; stages 1-2 follow their "
                                             "configs' runtime.device)")
    b.add_argument("--no-distill", action="store_true", help="stop after the teacher")
    b.add_argument("--variants", default=FULL_VARIANT,
                   help=f"stage-2 students to train: a comma list of {', '.join(STUDENT_VARIANTS)}, or all (the "
                        f"report's ablation, ~9 min each at 1000 steps on 2 cores); default {FULL_VARIANT}, the full method and the one "
                        f"`install` uses")
    b.add_argument("--stage2-steps", type=int, help="stage-2 iterations per student (default: each config's max_steps)")
    b.add_argument("--train-seeds", type=int, default=1,
                   help="train each stage-2 variant with this many seeds (the config's seed, +1, …; default 1)")
    i = sub.add_parser("install", help="make a build's student the embedded default (vdot_nodes/assets/toy)")
    i.add_argument("--build", default="runs/toy", help="build folder from `vdot toy build` (default runs/toy)")
    i.add_argument("--dest", default=None, help="target folder (default: the package's assets/toy)")
    i.add_argument("--overwrite", action="store_true", help="replace an installed embedded model")
    r = sub.add_parser("report", help="teacher vs students on held-out clips: Fréchet distance, condition "
                                      "adherence, diversity, seconds per video → REPORT.md + report.svg")
    r.add_argument("--build", default="runs/toy", help="build folder from `vdot toy build` (default runs/toy)")
    r.add_argument("--teacher-steps", type=int, default=50, help="teacher Euler steps (default 50)")
    r.add_argument("--cfg", default=None,
                   help="teacher CFG scale, or a comma list (e.g. 1,3): the first is the teacher the percentages "
                        "compare with, each other adds a row 'teacher CFG W' (default: guidance.cfg_scale of toy_stage2.yaml)")
    r.add_argument("--cfg-start", type=float, default=0.0,
                   help="guide the teacher rows with CFG above 1 only from this part of the denoising on (0 = pure "
                        "noise, default; as `vdot generate --cfg-start`)")
    r.add_argument("--cfg-end", type=float, default=1.0,
                   help="… and only until this part (default 1 = to the end; e.g. 0.83 leaves the teacher's last "
                        "8 of 50 steps unguided); the evals column counts the guided steps' second calls")
    r.add_argument("--student", action="append", default=[], metavar="NAME=FILE",
                   help="a 4-step student to include (repeatable; default: every variant the build trained, and the "
                        "teacher on the same 4-step sampler as the undistilled baseline)")
    r.add_argument("--variants", default="all",
                   help=f"the build's students to include: a comma list of {', '.join(STUDENT_VARIANTS)}, or all (default)")
    r.add_argument("--clips", type=int, default=4, help="held-out clips per task (default 4)")
    r.add_argument("--seeds", type=int, default=3, help="seeds per clip (default 3)")
    r.add_argument("--tasks", default="t2v,depth,pose,flow,scribble,inpaint,outpaint", help="comma-separated tasks")
    r.add_argument("--out", default=None, help="folder for REPORT.md, report.svg, report.json (default BUILD/report)")
    return p


def _cfg_scales(text: str | None) -> list[float]:
    """``--cfg``: one scale or a comma list, each a number > 0; None gives stage 2's ``guidance.cfg_scale``."""
    if text is None:
        with open(CONFIGS_DIR / "toy_stage2.yaml", encoding="utf-8") as f:
            return [float(yaml.safe_load(f)["guidance"]["cfg_scale"])]
    scales = []
    for item in text.split(","):
        try:
            scale = float(item)
        except ValueError:
            scale = float("nan")
        if not scale > 0 or math.isinf(scale) or scale in scales:
            raise VDOTInputError("--cfg", f"{text!r} is not a list of distinct numbers > 0", "e.g. --cfg 3 or --cfg 1,3")
        scales.append(scale)
    return scales


def toy_main(argv: list[str] | None = None) -> int:
    """Run a ``vdot toy`` subcommand; returns 0 ok, 2 bad input, 130 interrupted, else the failed stage's status."""
    return run_subcommand("vdot toy", _parser(), argv, _run, "interrupted; run the same command again to continue",
                          names={"overwrite": "--overwrite", "cfg_start": "--cfg-start", "cfg_end": "--cfg-end",
                                 "cfg": "--cfg"})


def _run(args) -> int:
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
        device = check_device(args.device, "--device")
        run_teacher(cfg, Path(args.data), Path(args.components), Path(args.out), args.steps, args.minutes,
                    device=device)
    elif args.command == "build":
        out = Path(args.out)
        if args.train_seeds < 1:
            raise VDOTInputError("--train-seeds", f"is {args.train_seeds}", "use 1 or more")
        if args.stage2_steps is not None and args.stage2_steps < 1:
            raise VDOTInputError("--stage2-steps", f"is {args.stage2_steps}", "use 1 or more, or leave it out")
        variants = _variants_arg(args.variants)  # checked before anything builds
        device = check_device(args.teacher_device, "--teacher-device")
        if args.clips is not None:
            cfg["world"]["clips"] = args.clips
        if args.vae_steps is not None:
            cfg["vae"]["steps"] = args.vae_steps
        manifest = run_world(cfg, out / "world")
        run_components(cfg, out / "components")
        run_teacher(cfg, manifest, out / "components", out / "teacher", args.teacher_steps, args.teacher_minutes,
                    encode_cache=out / ENCODE_CACHE, device=device)
        if not args.no_distill:
            return run_distillation(out, cfg, variants, args.train_seeds, args.stage2_steps)
    elif args.command == "install":
        run_install(Path(args.build), Path(args.dest) if args.dest else None, args.overwrite)
    elif args.command == "report":
        build = Path(args.build)
        from vdot_nodes.core.sampling import check_cfg_interval, get_preset

        scales = _cfg_scales(args.cfg)  # checked before anything loads
        for scale in scales:
            if scale != 1:
                check_cfg_interval(get_preset("teacher_euler", steps=args.teacher_steps), scale, args.cfg_start,
                                   args.cfg_end)
        models = {"teacher": {"path": build / "teacher" / TEACHER_VACE, "steps": args.teacher_steps, "cfg": scales[0]}}
        for scale in scales[1:]:  # the same teacher at other guidance scales, beside it
            models[f"teacher CFG {scale:g}"] = {**models["teacher"], "cfg": scale}
        if args.student:
            for item in args.student:
                name, sep, path = item.partition("=")
                if not sep:
                    raise VDOTInputError("--student", f"{item!r} is not NAME=FILE", "e.g. --student mine=runs/x.safetensors")
                # A trainer export (RUN/exports/x.safetensors) brings its run's OTD diagnostics.
                if not Path(path).is_file():
                    raise VDOTInputError("--student", f"{path} not found", "pass an export such as RUN/exports/x.safetensors")
                models[name] = _student(Path(path))
        else:
            # The baseline distillation must beat: the teacher itself on the students' 4-step sampler.
            models[UNDISTILLED] = {"path": build / "teacher" / TEACHER_VACE, "steps": 4}
            for name in _variants_arg(args.variants):
                for seed in range(100):  # every training seed the build ran (stops at the first missing)
                    exports = sorted((variant_dir(build, name, seed) / "exports").glob("generator_vace_step*.safetensors"))
                    if not exports:
                        break
                    student = _student(exports[-1])
                    student["extra"].update(variant=name, train_seed=seed)
                    models[variant_label(name, seed)] = student
        for name, spec in models.items():
            if not Path(spec["path"]).is_file():
                raise VDOTInputError(name, f"{spec['path']} not found", "run `vdot toy build` first, or pass --student NAME=FILE")
        run_report(cfg, build, models, args.clips, args.seeds, [t.strip() for t in args.tasks.split(",") if t.strip()],
                   Path(args.out) if args.out else build / "report", scales[0], (args.cfg_start, args.cfg_end))
    return 0
