"""Trainer cost: generator and critic update times with DMD vs OTD, and memory per component.

Runs the real :class:`training.trainer.Trainer` (stage 2, VACE, CFG real score, DM objective; no GAN
head, so the generator update times DM alone) on tiny-architecture models with random weights. For each size, one trainer per DM objective with the same seed (so the same exit
steps, σ and noise): timed generator updates (DM objective only) and critic updates on one fixed
encoded batch. Target: OTD adds ≤ 5% to a generator step. Prints a table; asserts nothing.

The released VDOT OT (``otd_cloud: pooled_positions``: per-frame 2×2-pooled positions, 60 unrolled Sinkhorn
sweeps, autograd through them) is timed on each size's latents next to its generator step, and at a 1.3B-shaped
480p latent [16, 21, 60, 104] (``--ot-480p-frames`` frames timed, scaled to 21). A 1.3B generator step cannot run
here; its time on this machine is estimated from its FLOPs (Wan-VACE-1.3B forward at 32760 tokens, ×11.5 forwards
for a DM micro-step of the recipe: rollout ≈ 2.5 forwards + backward of the exit step ≈ 3, DMD 3, OT 3) at the
measured fp32 matmul rate of this machine. Target: OT ≤ 10 % of a generator step.

    python benchmarks/bench_train.py                       # tiny + mid, CPU
    python benchmarks/bench_train.py --sizes mid --repeats 5 --device cuda
    python benchmarks/bench_train.py --sizes tiny --repeats 2 --ot-480p-frames 1
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.batches import encode_batch  # noqa: E402
from training.config import config_from_dict  # noqa: E402
from training.trainer import Trainer  # noqa: E402
from vdot_nodes.core.atomic import atomic_write_text  # noqa: E402
from vdot_nodes.core.video_io import write_video  # noqa: E402

SIZES = {
    # name: (transformer overrides, num_frames, height, width, batch)
    "tiny": ({}, 5, 16, 16, 2),
    "mid": ({"num_attention_heads": 4, "attention_head_dim": 32, "ffn_dim": 512, "num_layers": 4, "vace_layers": [0, 2]},
            17, 96, 96, 2),
}
MiB = 1024**2


def _manifest(folder: Path, frames: int, height: int, width: int, n: int) -> Path:
    lines = []
    for i in range(n):
        video = torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(i))
        write_video(video, folder / f"clip{i}.mp4", fps=8)
        lines.append(json.dumps({"video": f"clip{i}.mp4", "caption": f"a red ball {i}", "task": "inpaint"}))
    atomic_write_text(folder / "train.jsonl", "\n".join(lines) + "\n", overwrite=True)
    return folder / "train.jsonl"


def _bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) if module is not None else 0


def _opt_bytes(opt) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))


def _peak(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / MiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)


def run(size: str, dm: str, device: str, repeats: int, folder: Path) -> dict:
    overrides, frames, height, width, batch = SIZES[size]
    cfg = config_from_dict({
        "stage": 2, "seed": 0, "out": str(folder / f"run_{size}_{dm}"), "max_steps": 1,
        "models": {"teacher_precision": "fp32", "tiny_layers": overrides.get("num_layers", 2),
                   "tiny_overrides": {k: v for k, v in overrides.items() if k != "num_layers"}},
        "guidance": {"cfg_scale": 3.0},
        "loss": {"dm": dm, "otd_cloud": "samples"},
        "schedule": {"ttur": 1, "generator_objectives": ["dm"]},
        "runtime": {"device": device, "mixed_precision": "fp32", "gradient_checkpointing": True},
        "data": {"manifest": str(folder / f"{size}.jsonl"), "num_frames": frames, "height": height, "width": width,
                 "batch_size": batch},
    })
    trainer = Trainer(cfg)
    enc = encode_batch(cfg, trainer.pipeline, next(iter(trainer.loader)), trainer.data_rng, need_real=True)
    dev = trainer.device
    gen_times, critic_times, mem = [], [], {}
    for i in range(repeats + 1):  # the first round warms up
        if dev.type == "cuda":
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        logs = trainer.generator_step([enc], "dm")
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        mem["generator_step_peak_MiB"] = _peak(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.critic_step([enc])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        mem["critic_step_peak_MiB"] = _peak(dev)
        if i:
            gen_times.append(t1 - t0)
            critic_times.append(t2 - t1)
    mem.update({
        "generator_params_MiB": _bytes(trainer.generator) / MiB,
        "generator_adamw_MiB": _opt_bytes(trainer.gen_opt) / MiB,
        "fake_score_params_MiB": _bytes(trainer.fake_score) / MiB,
        "discriminator_params_MiB": _bytes(trainer.discriminator) / MiB,
        "critic_adamw_MiB": _opt_bytes(trainer.critic_opt) / MiB,
        "teacher_params_MiB": _bytes(trainer.teacher) / MiB,
        "ema_MiB": sum(t.numel() * 4 for t in trainer.ema.shadow.values()) / MiB,
    })
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    # The DM loss alone, on the step's tensor sizes: what OTD adds is measured here without the noise of
    # a whole step on a shared machine (both losses see the same x̂0 / f / r).
    from training.losses import dmd_loss, otd_loss, pooled_otd_loss

    g = torch.Generator().manual_seed(1)
    shape = (batch, *enc.latent_shape)
    x0 = torch.randn(shape, generator=g).to(dev).requires_grad_(True)
    fake, real = torch.randn(shape, generator=g).to(dev), torch.randn(shape, generator=g).to(dev)
    loss_times = []
    for _ in range(repeats * 4):
        t0 = time.perf_counter()
        (otd_loss(x0, fake, real, cfg.loss.otd_eps)[0] if dm == "otd" else dmd_loss(x0, fake, real)[0]).backward()
        loss_times.append(time.perf_counter() - t0)
    official = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pooled_otd_loss(x0, fake, real)[0].backward()
        official.append(time.perf_counter() - t0)
    return {"loss_s": med(loss_times), "official_ot_s": med(official), "size": size, "dm": dm, "generator_step_s": med(gen_times), "critic_step_s": med(critic_times),
            "latents": list(enc.latent_shape), "otd_plan_diag_mass": float(logs.get("otd_plan_diag_mass", float("nan"))),
            **mem}


def _matmul_gflops(device: str) -> float:
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
    a @ b
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 10 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9


def wan_forward_flops(tokens: int = 21 * 30 * 52, dim: int = 1536, ffn: int = 8960, blocks: int = 30 + 15,
                      text: int = 512) -> float:
    """Matmul FLOPs of one Wan-VACE forward (1.3B: 30 blocks + 15 VACE blocks, dim 1536, FFN 8960)."""
    linear = tokens * (2 * 4 * dim * dim + 2 * 2 * dim * ffn + 2 * 2 * dim * dim) + text * 2 * 2 * dim * dim
    attention = 2 * 2 * tokens * tokens * dim + 2 * 2 * tokens * text * dim
    return blocks * (linear + attention)


def official_ot_480p(device: str, frames: int) -> dict:
    """The released OT at a 1.3B 480p latent: per-frame times (envelope / autograd) scaled to 21 frames, and the
    cosine between the two gradients on the frames timed (fake = real + 0.5·N(0, 1), as the sheet's toy)."""
    from training.losses import pooled_ot_gradient

    g = torch.Generator().manual_seed(0)
    real = torch.randn(1, 16, frames, 60, 104, generator=g).to(device)
    fake = real + 0.5 * torch.randn(real.shape, generator=g).to(device)
    out = {}
    for mode in ("envelope", "autograd"):
        t0 = time.perf_counter()
        grad, logs = pooled_ot_gradient(fake, real, gradient=mode, frame_chunk=1)
        if device == "cuda":
            torch.cuda.synchronize()
        out[mode] = (time.perf_counter() - t0) / frames * 21
        out[mode + "_grad"] = grad
        out["diag"], out["row_err"] = float(logs["ot_plan_diag_mass"]), float(logs["ot_row_marginal_error"])
    out["cosine"] = float(torch.nn.functional.cosine_similarity(out.pop("envelope_grad").flatten(),
                                                                out.pop("autograd_grad").flatten(), dim=0))
    out["gflops"] = _matmul_gflops(device)
    out["gen_step_est_s"] = 11.5 * wan_forward_flops() / (out["gflops"] * 1e9)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=list(SIZES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--ot-480p-frames", type=int, default=1, help="frames of the 1.3B-shaped OT timing (0 = skip)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in args.sizes:
            _, frames, height, width, batch = SIZES[size]
            sub = folder / size
            sub.mkdir()
            atomic_write_text(folder / f"{size}.jsonl", _manifest(sub, frames, height, width, 2 * batch).read_text()
                              .replace('"clip', f'"{size}/clip'))
            for dm in ("dmd", "otd"):
                rows.append(run(size, dm, args.device, args.repeats, folder))
    print(f"\n{'size':5} {'DM':4} {'latents':>16} {'gen step s':>11} {'critic s':>9} {'DM loss ms':>11} {'OTD extra':>10} "
          f"{'VDOT OT ms':>11} {'VDOT OT':>8}")
    for r in rows:
        base = next(x for x in rows if x["size"] == r["size"] and x["dm"] == "dmd")
        extra = (r["loss_s"] - base["loss_s"]) / base["generator_step_s"]  # share of a DMD generator step
        official = r["official_ot_s"] / base["generator_step_s"]
        print(f"{r['size']:5} {r['dm']:4} {str(r['latents']):>16} {r['generator_step_s']:11.4f} {r['critic_step_s']:9.4f} "
              f"{1000 * r['loss_s']:11.3f} {100 * extra:9.2f}% {1000 * r['official_ot_s']:11.3f} {100 * official:7.2f}%")
    if args.ot_480p_frames:
        o = official_ot_480p(args.device, args.ot_480p_frames)
        print(f"\nreleased OT at a 1.3B 480p latent [16, 21, 60, 104] ({args.ot_480p_frames} frame(s) timed, x21/frames): "
              f"envelope {o['envelope']:.1f} s, autograd through 60 sweeps {o['autograd']:.1f} s; "
              f"cosine(autograd, envelope) {o['cosine']:.5f}; plan diagonal mass {o['diag']:.4f}, row-marginal L1 error "
              f"{o['row_err']:.2e}")
        print(f"1.3B DM generator micro-step estimated on this machine: 11.5 x {wan_forward_flops() / 1e12:.0f} TFLOP at "
              f"{o['gflops']:.1f} GFLOP/s = {o['gen_step_est_s']:.0f} s -> autograd OT = "
              f"{100 * o['autograd'] / o['gen_step_est_s']:.2f} % of it (target <= 10 %)")
    print("\nmemory (MiB): params / AdamW state / EMA per component, and peak "
          f"({'CUDA allocated' if args.device == 'cuda' else 'process max RSS'}) per update")
    keys = [k for k in rows[0] if k.endswith("MiB")]
    for r in rows:
        print(f"{r['size']:5} {r['dm']:4} " + "  ".join(f"{k[:-4]}={r[k]:.2f}" for k in keys))


if __name__ == "__main__":
    main()
