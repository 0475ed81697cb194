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
from vdot_nodes.core.speed import apply_speed_options  # noqa: E402

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


def build(cfg: dict, device: str, dtype: torch.dtype, storage: torch.dtype | None):
    from diffusers import WanVACETransformer3DModel

    with torch.device("meta"):
        model = WanVACETransformer3DModel(**cfg)
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # random weights, small enough to stay finite through 40 blocks
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    model = _fresh_rope(model, cfg)  # its tables were computed on meta: rebuild them
    model = model.to(dtype)
    if storage is not None:
        model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=dtype)
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


def time_forward(model, kwargs, device, repeats: int) -> tuple[float, bool]:
    with torch.no_grad():
        out = model(**kwargs)[0]  # warm-up (and compile)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            out = model(**kwargs)[0]
        sync(device)
    return (time.perf_counter() - start) / repeats, bool(torch.isfinite(out).all())


def bench_transformer(args, size: str, frames: int, height: int, width: int, options: list[str]) -> list[str]:
    cfg = load_config(SIZES[size])
    cuda = args.device == "cuda"
    if not cuda:  # reduced: the real width, fewer blocks
        layers = args.cpu_layers
        cfg.update(num_layers=layers, vace_layers=list(range(0, layers, 2)))
    tokens = video_tokens(frames, height, width, tuple(cfg["patch_size"]))
    flops = forward_flops(cfg, tokens)
    rows = []
    for option in options:
        storage = torch.float8_e4m3fn if option in ("fp8", "fp8-compute") else None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        peak_rss_reset()
        model = build(cfg, "cpu", torch.bfloat16, storage)
        attention = option.split(":")[1] if option.startswith("attention:") else "sdpa"
        notes = apply_speed_options(model, args.device, attention=attention, compile_blocks=option == "compile",
                                    fp8_matmul=option == "fp8-compute")
        swap = None
        if option.startswith("swap:"):
            swap = BlockSwap(model, args.device, int(option.split(":")[1]))
        else:
            model.to(args.device)
        kwargs = inputs(cfg, frames, height, width, args.device, torch.bfloat16)
        try:
            seconds, finite = time_forward(model, kwargs, args.device, args.repeats)
        except Exception as e:  # one option failing (e.g. compile) must not lose the table
            rows.append(f"| {size} | {frames}x{height}x{width} | {option} | failed: {type(e).__name__}: {str(e)[:80]} | | | | |")
            continue
        gpu = f"{torch.cuda.max_memory_allocated() / GiB:.2f}" if cuda else "–"
        floor = flops / (args.peak_tflops * 1e12) if cuda else None
        ratio = f"{seconds / floor:.2f}" if floor else f"{flops / seconds / 1e9:.0f} GFLOP/s"
        what = "; ".join(notes) + (f"; {swap.stats['swapped_in']} block copies" if swap else "")
        rows.append(f"| {size} | {frames}x{height}x{width} ({tokens} tok) | {option} | {seconds:.3f} | {gpu} | "
                    f"{peak_rss_gib():.2f} | {ratio} | {'finite' if finite else 'NaN/inf'}; {what} |")
        if swap:
            swap.remove()
        del model, swap, kwargs
    return rows


def bench_vae(args, frames: int, height: int, width: int) -> str:
    from diffusers import AutoencoderKLWan

    cfg = load_config("wan2.1_vae.json")
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**cfg).to(args.device).eval()
    video = torch.rand(1, 3, frames, height, width, device=args.device) * 2 - 1
    peak_rss_reset()
    with torch.no_grad():
        sync(args.device)
        t0 = time.perf_counter()
        z = vae.encode(video).latent_dist.mode()
        sync(args.device)
        t1 = time.perf_counter()
        vae.decode(z)
        sync(args.device)
        t2 = time.perf_counter()
    gpu = f"{torch.cuda.max_memory_allocated() / GiB:.2f}" if args.device == "cuda" else "–"
    return f"| Wan2.1 VAE fp32 | {frames}x{height}x{width} | {t1 - t0:.2f} | {t2 - t1:.2f} | {gpu} | {peak_rss_gib():.2f} |"


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
    args = parser.parse_args()
    cuda = args.device == "cuda"
    print(f"# bench_scale on {torch.cuda.get_device_name() if cuda else 'CPU'} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)\n")
    print("| model | shape | option | s / forward | peak GPU GiB | peak RSS GiB | ratio to FLOP floor | notes |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    if cuda:
        shapes = {"1.3B": [(81, 480, 832)], "14B": [(81, 480, 832), (81, 720, 1280)]}
        options = ["bf16", "fp8", "fp8-compute", "swap:20", "compile", "attention:flash", "attention:sage"]
    else:
        shapes = {"1.3B": [(9, 128, 128)], "14B": [(9, 128, 128)]}
        options = ["bf16", "fp8", "fp8-compute", "swap:1", "attention:flash"]
    for size in args.sizes.split(","):
        for frames, height, width in shapes[size]:
            for row in bench_transformer(args, size, frames, height, width, options):
                print(row, flush=True)
    if not cuda:
        print("| 1.3B, 14B | 832x480x81, 1280x720x81 | every option on a GPU | not measured (no GPU) | | | | |")
    print("\n| VAE | shape | encode s | decode s | peak GPU GiB | peak RSS GiB |")
    print("|---|---|---:|---:|---:|---:|")
    vae_shapes = [(81, 480, 832), (81, 720, 1280)] if cuda else [(9, 128, 128)]
    for frames, height, width in vae_shapes:
        print(bench_vae(args, frames, height, width), flush=True)
    if not cuda:
        print("| Wan2.1 VAE | 81x480x832 on a GPU | not measured (no GPU) | | | |")
    print("\nFLOP floor: 14B at 32,760 tokens is about "
          f"{forward_flops(load_config(SIZES['14B']), 32760) / 1e15:.2f} PFLOP per forward; "
          f"at {args.peak_tflops:.0f} TFLOP/s that is "
          f"{forward_flops(load_config(SIZES['14B']), 32760) / (args.peak_tflops * 1e12):.1f} s.")


if __name__ == "__main__":
    main()
