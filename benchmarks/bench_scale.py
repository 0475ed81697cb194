"""Real-scale speed and memory per option, with random weights at the shipped configs' shapes.

Prints one markdown table: per model size and option (bf16, fp8 storage, block swap N, compile,
attention backend) seconds per transformer forward, peak GPU memory, peak RSS, and the ratio of a
forward to the FLOP floor; then VAE encode / decode seconds. Asserts nothing.

On a CUDA GPU it runs the issue's shapes (1.3B and 14B at 832x480x81, 14B also 1280x720x81) and the
floor is ``--peak-tflops`` (H200 dense bf16 ≈ 790). On a CPU the same table runs at reduced shapes
(the real block width, ``--cpu-layers`` blocks, a small video) and the GPU rows print "not measured".

    python benchmarks/bench_scale.py                   # CPU: reduced shapes
    python benchmarks/bench_scale.py --device cuda     # GPU: the full table
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vdot_nodes.core.block_swap import BlockSwap  # noqa: E402
from vdot_nodes.core.memory import video_tokens  # noqa: E402
from vdot_nodes.core.speed import apply_speed_options, choose_attention  # noqa: E402

CONFIGS = ROOT / "vdot_nodes" / "core" / "configs"
SIZES = {"1.3B": "wan2.1_vace_1.3b_transformer.json", "14B": "wan2.1_vace_14b_transformer.json"}
GiB = 2**30
TEXT_TOKENS = 512


def load_config(name: str) -> dict:
    return {k: v for k, v in json.loads((CONFIGS / name).read_text()).items() if not k.startswith("_")}


def peak_rss_reset() -> None:
    """Linux: reset VmHWM so each row reports its own peak (needs /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_gib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GiB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB


def forward_flops(cfg: dict, tokens: int) -> float:
    """Matmul FLOPs of one forward: 2·params·tokens for every block linear (VACE blocks included),
    plus self-attention 4·L²·dim and cross-attention 4·L·512·dim per block."""
    dim, ffn = cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["ffn_dim"]
    per_block = 4 * dim * dim + 4 * dim * dim + 2 * dim * ffn  # self-attn qkvo, cross-attn qkvo, FFN
    blocks = cfg["num_layers"] + len(cfg["vace_layers"])
    linear = 2 * per_block * tokens * blocks
    attention = (4 * tokens * tokens * dim + 4 * tokens * TEXT_TOKENS * dim) * blocks
    return float(linear + attention)


def build(cfg: dict, device: str, storage: torch.dtype | None, home: str | None = None):
    """Random bf16 weights made on ``device`` (seeded: every row of a size gets the same weights, so rows
    compare against the bf16 row's output), then moved to ``home`` (block swap starts from host memory)."""
    from diffusers import WanVACETransformer3DModel

    with torch.device("meta"):
        model = WanVACETransformer3DModel(**cfg).to(torch.bfloat16)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # small enough to stay finite through 40 blocks
            p.copy_(torch.randn(p.shape, generator=gen, device=device) * 0.02)
    model = _fresh_rope(model, cfg).to(device)  # its tables were computed on meta: rebuild them
    if home is not None:
        model = model.to(home)
    if storage is not None:
        model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=torch.bfloat16)
    return model.eval()


def _fresh_rope(model, cfg):
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    model.rope = WanRotaryPosEmbed(cfg["attention_head_dim"], cfg["patch_size"], cfg.get("rope_max_seq_len", 1024))
    return model


def inputs(cfg: dict, frames: int, height: int, width: int, device, dtype, batch: int = 1):
    f, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, cfg["in_channels"], f, h, w, generator=g).to(device, dtype)
    ctx = torch.randn(batch, cfg["vace_in_channels"], f, h, w, generator=g).to(device, dtype)
    text = torch.randn(batch, TEXT_TOKENS, cfg["text_dim"], generator=g).to(device, dtype)
    return dict(hidden_states=x, timestep=torch.full((batch,), 500.0, device=device), encoder_hidden_states=text,
                control_hidden_states=ctx, control_hidden_states_scale=torch.ones(len(cfg["vace_layers"]), device=device, dtype=dtype),
                return_dict=False)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_forward(model, kwargs, device, repeats: int) -> tuple[float, float, torch.Tensor]:
    """``(warm-up seconds (compile included), seconds per timed forward, output on the CPU)``."""
    with torch.no_grad():
        sync(device)
        start = time.perf_counter()
        out = model(**kwargs)[0]
        sync(device)
        warm = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(repeats):
            out = model(**kwargs)[0]
        sync(device)
    return warm, (time.perf_counter() - start) / repeats, out.float().cpu()


def compare(out: torch.Tensor, reference: torch.Tensor | None) -> str:
    if not torch.isfinite(out).all():
        return "NaN/inf in the output"
    if reference is None:
        return "finite"
    if torch.equal(out, reference):
        return "bitwise equal to bf16"
    rel = ((out - reference).norm() / reference.norm()).item()
    return f"rel. L2 diff to bf16 {rel:.3g}"


class Clock:
    """The run's time budget: rows past it print "skipped" (the table still comes back whole)."""

    def __init__(self, budget_s: float):
        self.start, self.budget_s = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)


def bench_transformer(args, clock: Clock, size: str, frames: int, height: int, width: int, options: list[str]) -> None:
    cfg = load_config(SIZES[size])
    cuda = args.device == "cuda"
    if not cuda:  # reduced: the real width, fewer blocks
        layers = args.cpu_layers
        cfg.update(num_layers=layers, vace_layers=list(range(0, layers, 2)))
    tokens = video_tokens(frames, height, width, tuple(cfg["patch_size"]))
    flops = forward_flops(cfg, tokens)
    shape = f"{frames}x{height}x{width} ({tokens} tok)"
    reference = None
    for option in options:
        if clock.left() <= 0:
            print(f"| {size} | {shape} | {option} | skipped (time budget spent) | | | | |", flush=True)
            continue
        storage = torch.float8_e4m3fn if option in ("fp8", "fp8-compute") else None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        peak_rss_reset()
        swap, model = None, None
        try:
            swapped = option.startswith("swap:")
            model = build(cfg, args.device, storage, home="cpu" if swapped and cuda else None)
            attention = option.split(":")[1] if option.startswith("attention:") else "sdpa"
            notes = apply_speed_options(model, args.device, attention=attention, compile_blocks=option == "compile",
                                        fp8_matmul=option == "fp8-compute")
            if swapped:
                swap = BlockSwap(model, args.device, int(option.split(":")[1]))
            kwargs = inputs(cfg, frames, height, width, args.device, torch.bfloat16)
            if cuda:  # the peak of a forward (resident weights included), not of building random weights
                torch.cuda.reset_peak_memory_stats()
            warm, seconds, out = time_forward(model, kwargs, args.device, args.repeats)
        except Exception as e:  # one option failing (e.g. compile) must not lose the table
            print(f"| {size} | {shape} | {option} | failed: {type(e).__name__}: {str(e)[:160]} | | | | |", flush=True)
            continue
        finally:
            if swap:
                swap.remove()
            del model, swap
        if option == "bf16":
            reference = out
        gpu = f"{torch.cuda.max_memory_allocated() / GiB:.2f}" if cuda else "–"
        floor = flops / (args.peak_tflops * 1e12) if cuda else None
        ratio = f"{seconds / floor:.2f}" if floor else f"{flops / seconds / 1e9:.0f} GFLOP/s"
        what = "; ".join([compare(out, reference if option != "bf16" else None), *notes])
        if option == "compile":
            what += f"; first call {warm:.1f} s (compile)"
        print(f"| {size} | {shape} | {option} | {seconds:.3f} | {gpu} | {peak_rss_gib():.2f} | {ratio} | {what} |",
              flush=True)


def bench_vae(args, clock: Clock, frames: int, height: int, width: int) -> str:
    if clock.left() <= 0:
        return f"| Wan2.1 VAE fp32 | {frames}x{height}x{width} | | skipped (time budget spent) | | | |"
    try:
        return _bench_vae(args, frames, height, width)
    except Exception as e:
        return f"| Wan2.1 VAE fp32 | {frames}x{height}x{width} | | failed: {type(e).__name__}: {str(e)[:160]} | | | |"


def _bench_vae(args, frames: int, height: int, width: int) -> str:
    """One encode and one decode as the pipeline runs them (spatial tiles above 480p: ``vae_tiling`` auto),
    after a small warm-up call (kernel selection is not part of the row)."""
    from diffusers import AutoencoderKLWan

    from vdot_nodes.core.vae_tiling import vae_tiling

    cfg = load_config("wan2.1_vae.json")
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**cfg).to(args.device).eval()
    with torch.no_grad():
        vae.decode(vae.encode(torch.zeros(1, 3, 5, 64, 64, device=args.device)).latent_dist.mode())
    video = torch.rand(1, 3, frames, height, width, device=args.device) * 2 - 1
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    peak_rss_reset()
    with torch.no_grad(), vae_tiling(vae, "auto", height, width) as tiled:
        sync(args.device)
        t0 = time.perf_counter()
        z = vae.encode(video).latent_dist.mode()
        sync(args.device)
        t1 = time.perf_counter()
        vae.decode(z)
        sync(args.device)
        t2 = time.perf_counter()
    gpu = f"{torch.cuda.max_memory_allocated() / GiB:.2f}" if args.device == "cuda" else "–"
    return (f"| Wan2.1 VAE fp32 | {frames}x{height}x{width} | {'tiled' if tiled else 'untiled'} | {t1 - t0:.2f} | "
            f"{t2 - t1:.2f} | {gpu} | {peak_rss_gib():.2f} |")


def main() -> None:
    import logging

    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="dense bf16 peak of the GPU (H200: 790)")
    parser.add_argument("--cpu-layers", type=int, default=2, help="CPU: blocks per reduced model")
    parser.add_argument("--sizes", default="1.3B,14B")
    parser.add_argument("--budget-s", type=float, default=1e9,
                        help="start no new row after this many seconds (a lent GPU's time is short)")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    clock = Clock(args.budget_s)
    print(f"# bench_scale on {torch.cuda.get_device_name() if cuda else 'CPU'} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)\n")
    print("| model | shape | option | s / forward | peak GPU GiB | peak RSS GiB | ratio to FLOP floor | notes |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    missing = [b for b in ("flash", "sage") if choose_attention(b, args.device)[0] == "sdpa"]
    attention = [f"attention:{b}" for b in ("flash", "sage") if b not in missing]
    p480, p720 = (81, 480, 832), (81, 720, 1280)
    if cuda:  # most wanted first: the time budget cuts from the end
        plan = [("14B", p480, ["bf16", "fp8", "fp8-compute", "swap:20", *attention]),
                ("1.3B", p480, ["bf16", "fp8", "fp8-compute", "swap:10", "compile", *attention]),
                ("VAE", p480, None),
                ("14B", p720, ["bf16", "fp8", "swap:20"]),
                ("14B", p480, ["bf16", "compile"]),
                ("VAE", p720, None)]
    else:
        plan = [("1.3B", (9, 128, 128), ["bf16", "fp8", "fp8-compute", "swap:1", "attention:flash"]),
                ("14B", (9, 128, 128), ["bf16", "fp8", "fp8-compute", "swap:1"]),
                ("VAE", (9, 128, 128), None)]
    vae_rows = []
    for size, (frames, height, width), options in plan:
        if size == "VAE":
            vae_rows.append(bench_vae(args, clock, frames, height, width))
        elif size in args.sizes.split(","):
            bench_transformer(args, clock, size, frames, height, width, options)
    if missing:
        print(f"| 1.3B, 14B | | attention {', '.join(missing)} | not measured: "
              f"{'; '.join(choose_attention(b, args.device)[1] for b in missing)} | | | | |")
    if not cuda:
        print("| 1.3B, 14B | 832x480x81, 1280x720x81 | every option on a GPU | not measured (no GPU) | | | | |")
    print("\n| VAE | shape | tiling (auto) | encode s | decode s | peak GPU GiB | peak RSS GiB |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in vae_rows:
        print(row)
    if not cuda:
        print("| Wan2.1 VAE | 81x480x832 on a GPU | | not measured (no GPU) | | | |")
    print("\nFLOP floor: 14B at 32,760 tokens is about "
          f"{forward_flops(load_config(SIZES['14B']), 32760) / 1e15:.2f} PFLOP per forward; "
          f"at {args.peak_tflops:.0f} TFLOP/s that is "
          f"{forward_flops(load_config(SIZES['14B']), 32760) / (args.peak_tflops * 1e12):.1f} s.")


if __name__ == "__main__":
    main()
