"""Sampler cost and the 14B memory plan. Prints tables; asserts nothing (targets are read, not enforced).

1. On identical shapes: 4 bare transformer forwards vs each 4-step preset of ``SAMPLER_PRESETS`` (``vdot``,
   the official FlowUniPC; ``renoise``; the rollouts) — target ≤ 3% overhead.
2. The ``vdot`` preset vs a teacher preset with CFG 5 (target ≥ 20× faster; 4 vs 100 transformer calls).
3. Memory plan for Wan2.1-VACE-14B at 832×480×81 with offload on: per-component weights computed
   from the shipped configs (models built on the meta device), activation estimates, and — with
   ``--measure`` on a CUDA machine — peak memory measured with random weights.

    python benchmarks/bench_sampler.py                # tiny model, CPU
    python benchmarks/bench_sampler.py --size 1.3B --device cuda --frames 33 --height 480 --width 832
    python benchmarks/bench_sampler.py --memory-only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import sys

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's code, not an installed copy

from vdot_nodes.core.sampling import SAMPLER_PRESETS, SeededNoise, cfg_velocity, get_preset, sample

CONFIGS = Path(__file__).resolve().parent.parent / "vdot_nodes" / "core" / "configs"
GiB = 1024**3


def build_transformer(size: str, device: str, dtype: torch.dtype):
    from diffusers import WanVACETransformer3DModel

    from vdot_nodes.core.tiny import build_tiny_transformer

    if size == "tiny":
        return build_tiny_transformer().to(device, dtype)
    config = json.loads((CONFIGS / f"wan2.1_vace_{size.lower()}_transformer.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device(device):
        return WanVACETransformer3DModel(**config).to(dtype).eval()


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bench_speed(args) -> None:
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    model = build_transformer(args.size, args.device, dtype)
    cfg = model.config
    f, h, w = (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8
    shape = (16, f, h, w)
    text = torch.randn(1, 512, cfg.text_dim, device=args.device, dtype=dtype)
    null = torch.zeros_like(text)
    control = torch.randn(1, 96, f, h, w, device=args.device, dtype=dtype)
    scale = torch.ones(len(cfg.vace_layers), device=args.device, dtype=dtype)
    calls = {"n": 0}

    def velocity_with(embeds):
        @torch.no_grad()
        def velocity(x, t):
            calls["n"] += 1
            return model(x.to(dtype), t, embeds, control_hidden_states=control, control_hidden_states_scale=scale,
                         return_dict=False)[0]
        return velocity

    x = torch.randn(1, *shape, device=args.device, dtype=dtype)
    t = torch.full((1,), 1000.0, device=args.device)
    cond = velocity_with(text)

    def bare():
        for _ in range(4):
            cond(x, t)

    def run_preset(name):
        return lambda: sample(cond, SeededNoise([0]), shape, name, device=args.device)

    teacher_preset = get_preset(args.teacher, steps=args.teacher_steps)

    def teacher():
        sample(cfg_velocity(cond, velocity_with(null), 5.0), SeededNoise([0]), shape, teacher_preset, device=args.device)

    few_step = [name for name, p in SAMPLER_PRESETS.items() if p.steps == 4]  # vdot first: the table's order
    runs = [("4 bare forwards", bare, args.repeats)]
    runs += [(f"preset {name} ({SAMPLER_PRESETS[name].solver}, 4 steps)", run_preset(name), args.repeats)
             for name in few_step]
    runs += [(f"preset {teacher_preset.name}, {teacher_preset.steps} steps, cfg 5", teacher, 1)]
    rows = []
    for name, fn, repeats in runs:
        calls["n"] = 0
        seconds = timed(fn, args.device, repeats)
        rows.append((name, seconds, calls["n"] // (repeats + 1)))
    print(f"\n## Speed ({args.size} transformer, {args.frames}x{args.height}x{args.width}, {args.device}, {dtype})\n")
    print("| run | transformer calls | seconds | vs 4 bare forwards |")
    print("|---|---:|---:|---:|")
    for name, seconds, n in rows:
        print(f"| {name} | {n} | {seconds:.4f} | {seconds / rows[0][1]:.3f}x |")
    for name, seconds, _ in rows[1:-1]:
        print(f"\n{name}: overhead over bare forwards {(seconds / rows[0][1] - 1) * 100:+.2f}% (target ≤ 3%)", end="")
    speedup = rows[-1][1] / rows[1][1]
    print(f"\n\nvdot preset vs {teacher_preset.steps}-step CFG teacher: {speedup:.1f}x faster (target ≥ 20x)")


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def memory_plan(args) -> None:
    from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    def load(name):
        cfg = json.loads((CONFIGS / name).read_text())
        return {k: v for k, v in cfg.items() if not k.startswith("_")}

    with torch.device("meta"):
        transformer = WanVACETransformer3DModel(**load("wan2.1_vace_14b_transformer.json"))
        vae = AutoencoderKLWan(**load("wan2.1_vae.json"))
        encoder = UMT5EncoderModel(UMT5Config(**load("umt5_xxl_encoder.json")))
    frames, height, width = 81, 480, 832
    f, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    tokens = f * (h // 2) * (w // 2)
    # The activation estimates are the memory planner's (vdot_nodes/core/memory.py), so this table
    # and `vdot generate`'s refusal agree.
    from vdot_nodes.core.memory import text_activation_bytes, transformer_activation_bytes, vae_activation_bytes

    act_transformer = transformer_activation_bytes(dict(transformer.config), tokens)
    act_vae = vae_activation_bytes(height, width)
    act_text = text_activation_bytes(encoder.config.d_model)
    rows = [
        ("text encoder (UMT5-XXL)", count_params(encoder), {"bf16": 2}, act_text),
        ("transformer (VACE 14B)", count_params(transformer), {"bf16": 2, "fp8_e4m3fn": 1}, act_transformer),
        ("VAE (Wan2.1)", count_params(vae), {"fp32": 4, "bf16": 2}, act_vae),
    ]
    print(f"\n## Memory plan: Wan2.1-VACE-14B at {width}x{height}x{frames} ({tokens} video tokens), offload='model'\n")
    print("| component | parameters | precision | weights GiB | activations GiB (est.) | peak while it runs GiB |")
    print("|---|---:|---|---:|---:|---:|")
    peaks = {}
    for name, n, precisions, act in rows:
        for precision, nbytes in precisions.items():
            weights = n * nbytes / GiB
            peak = weights + act / GiB
            peaks[(name, precision)] = peak
            print(f"| {name} | {n / 1e9:.2f} B | {precision} | {weights:.2f} | {act / GiB:.2f} | {peak:.2f} |")
    fp8_peak = max(peaks[("text encoder (UMT5-XXL)", "bf16")], peaks[("transformer (VACE 14B)", "fp8_e4m3fn")],
                   peaks[("VAE (Wan2.1)", "bf16")])
    bf16_peak = peaks[("transformer (VACE 14B)", "bf16")]
    print(f"\npeak with offload='model': transformer fp8 storage → {fp8_peak:.1f} GiB (fits 24 GB: {fp8_peak < 22.3});"
          f" transformer bf16 → {bf16_peak:.1f} GiB (does not fit 24 GB: use fp8, or a GPU with ≥ 40 GB)")


def measure(args) -> None:
    """Peak CUDA memory of one 14B transformer forward at 832x480x81 with random (uninitialised) weights."""
    if not torch.cuda.is_available():
        print("\n(--measure needs a CUDA GPU: not measured here)")
        return
    from diffusers import WanVACETransformer3DModel

    config = json.loads((CONFIGS / "wan2.1_vace_14b_transformer.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    print("\n| transformer storage | weights GiB (measured) | peak forward GiB (measured) |\n|---|---:|---:|")
    for storage in ("fp8_e4m3fn", "bf16"):
        with torch.device("meta"):
            model = WanVACETransformer3DModel(**config).eval()
        model = model.to_empty(device="cuda").to(torch.bfloat16)
        if storage != "bf16":
            model.enable_layerwise_casting(storage_dtype=getattr(torch, "float8_e4m3fn"), compute_dtype=torch.bfloat16)
        torch.cuda.synchronize()
        weights = torch.cuda.memory_allocated() / GiB
        torch.cuda.reset_peak_memory_stats()
        f, h, w = 21, 60, 104
        with torch.no_grad():
            x = torch.randn(1, 16, f, h, w, device="cuda", dtype=torch.bfloat16)
            model(x, torch.tensor([999.0], device="cuda"), torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16),
                  control_hidden_states=torch.randn(1, 96, f, h, w, device="cuda", dtype=torch.bfloat16),
                  control_hidden_states_scale=torch.ones(8, device="cuda", dtype=torch.bfloat16))
        torch.cuda.synchronize()
        print(f"| {storage} | {weights:.2f} | {torch.cuda.max_memory_allocated() / GiB:.2f} |")
        del model
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=["tiny", "1.3B", "14B"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--teacher", default="teacher_unipc", choices=[n for n in SAMPLER_PRESETS if "teacher" in n])
    parser.add_argument("--teacher-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--measure", action="store_true", help="on a CUDA GPU: measure the 14B forward's peak memory")
    args = parser.parse_args()
    if not args.memory_only:
        bench_speed(args)
    memory_plan(args)
    if args.measure:
        measure(args)


if __name__ == "__main__":
    main()
