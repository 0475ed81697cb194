"""The two host-memory targets of issue #16, with random weights written in the real layouts. Not CI.

1. Wan2.1-VACE 1.3B, t2v 480p x 17 frames: peak RSS <= 8 GB.
2. Wan2.1-VACE 14B with fp8 storage, from the 35 GB fp16 file: loads and runs one step at a small
   shape, peak RSS <= 20 GB.

Writes (streamed, tensor by tensor; a few hundred MB of RAM) into ``--dir``: the transformer in the
original Wan/ComfyUI layout in fp16 (1.3B: 4.3 GB, 14B: 34.7 GB), the real-size Wan2.1 VAE (VDOT
format, fp32), and UMT5-XXL in ComfyUI's layout (HF names, fp16, 11.4 GB) with a valid
``spiece_model`` (a small SentencePiece model trained here: the real one is not downloadable
offline; the embedding keeps the real 256,384 rows). Then runs ``vdot generate`` in a child process
per target, with ``--ram-budget`` set to the target, and prints its peak RSS (``ru_maxrss``) next to the
memory planner's prediction.

    python benchmarks/bench_memory_targets.py --dir /tmp/vdot-targets --target 1.3B
    python benchmarks/bench_memory_targets.py --dir /tmp/vdot-targets --target 14B   # needs ~19 GB RAM, 47 GB disk
    python benchmarks/bench_memory_targets.py --dir /tmp/vdot-targets --target both --plan-only  # dry run, seconds

Deletes the files it wrote unless ``--keep``. ``--shape FxHxW`` runs a smaller video than the target's
(on a CPU a 480p forward of the 1.3B model takes about an hour); the plan line still shows the target.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vdot_nodes.core.atomic import atomic_path  # noqa: E402

GB = 1e9
CONFIGS = ROOT / "vdot_nodes" / "core" / "configs"
TARGETS = {
    "1.3B": dict(config="wan2.1_vace_1.3b_transformer.json", precision="bf16", shape=(17, 480, 832), limit_gb=8.0, steps=4),
    "14B": dict(config="wan2.1_vace_14b_transformer.json", precision="fp8_e4m3fn", shape=(5, 64, 64), limit_gb=20.0, steps=1),
}
_ST = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16", torch.uint8: "U8"}


def _config(name: str) -> dict:
    return {k: v for k, v in json.loads((CONFIGS / name).read_text()).items() if not k.startswith("_")}


def write_random_safetensors(path: Path, specs: list[tuple[str, tuple, torch.dtype]], raw: dict[str, bytes],
                             metadata: dict[str, str], header_only: bool = False) -> Path:
    """An fp16 safetensors file written tensor by tensor: N(0, 0.02) values cycled from a 64 MB pool
    (norm weights 1), ``raw`` tensors (uint8) as given. Memory stays at the pool's size.
    ``header_only``: the real header, then a hole to the full size (a sparse file: no disk, no time);
    enough for the memory planner, which reads headers only."""
    header, offset = {}, 0
    for name, shape, dtype in specs:
        n = int(torch.Size(shape).numel()) * (1 if dtype == torch.uint8 else torch.tensor([], dtype=dtype).element_size())
        header[name] = {"dtype": _ST[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = metadata
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    gen = torch.Generator().manual_seed(0)
    pool = (torch.randn(32 * 2**20, generator=gen) * 0.02).to(torch.float16).numpy().tobytes()
    ones = torch.ones(2**20, dtype=torch.float16).numpy().tobytes()
    cursor = 0
    with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        if header_only:
            f.truncate(8 + len(blob) + offset)
            return path
        for name, shape, dtype in specs:
            size = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            if name in raw:
                f.write(raw[name])
                continue
            is_norm_weight = len(shape) == 1 and name.endswith(".weight") and "norm" in name.split(".")[-2]
            source = ones if is_norm_weight else pool
            while size:
                start = cursor % (len(source) - 2)
                start -= start % 2
                chunk = source[start: start + min(size, len(source) - start)]
                f.write(chunk)
                size -= len(chunk)
                cursor += len(chunk) + 2 * 7919  # shift so tensors do not repeat each other exactly
    return path


def write_transformer(path: Path, config_name: str, header_only: bool = False) -> Path:
    from diffusers import WanVACETransformer3DModel

    from training.export import comfy_key_names

    with torch.device("meta"):
        model = WanVACETransformer3DModel(**_config(config_name))
    state = model.state_dict()
    names = comfy_key_names(list(state))
    specs = [(names[k], tuple(v.shape), torch.float16) for k, v in state.items()]
    return write_random_safetensors(path, specs, {}, {}, header_only)


def write_vae(path: Path) -> Path:
    from diffusers import AutoencoderKLWan

    from vdot_nodes.core.models import save_vae

    torch.manual_seed(0)
    return save_vae(AutoencoderKLWan(**_config("wan2.1_vae.json")), path)


def small_spiece_model() -> bytes:
    """A valid T5-style SentencePiece model (pad 0, eos 1, unk 2), trained on generated text."""
    import sentencepiece

    words = "a the red blue green cat dog person walks runs across street city night rain light camera slow".split()
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(2000)]
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, vocab_size=40,
                                             model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                             minloglevel=2)
    return out.getvalue()


def write_text_encoder(path: Path, header_only: bool = False) -> Path:
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**_config("umt5_xxl_encoder.json")))
    state = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    spiece = small_spiece_model()
    specs = [(k, tuple(v.shape), torch.float16) for k, v in state.items()] + [("spiece_model", (len(spiece),), torch.uint8)]
    return write_random_safetensors(path, specs, {"spiece_model": spiece}, {}, header_only)


def run_measured(cmd: list[str], timeout: float | None = None) -> tuple[int | None, float, float, str]:
    """``(exit status, peak RSS GB of the child, seconds, stderr tail)``; the status is None when the run
    was stopped after ``timeout`` seconds (the peak is then the peak up to that moment)."""
    probe = ("import resource, subprocess, sys\n"
             "t = float(sys.argv[1]) or None\n"
             "try:\n"
             "    r = subprocess.run(sys.argv[2:], stderr=subprocess.PIPE, text=True, timeout=t); code, err = r.returncode, r.stderr\n"
             "except subprocess.TimeoutExpired as e:\n"
             "    code, err = 'timeout', (e.stderr or b'').decode(errors='replace') if isinstance(e.stderr, bytes) else (e.stderr or '')\n"
             "sys.stderr.write(err[-3000:])\n"
             "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, str(timeout or 0), *cmd], capture_output=True, text=True, cwd=ROOT)
    code, kib = done.stdout.split()[-2:]
    return (None if code == "timeout" else int(code)), int(kib) * 1024 / GB, time.perf_counter() - start, done.stderr


def plan_only(out: Path, targets: list[str]) -> None:
    """Dry run: write each file's real header over a hole (sparse: no disk), print the memory plan of each
    target and what a real run needs, and the command; delete the files."""
    from vdot_nodes.core.memory import plan_memory

    files = [write_vae(out / "wan_2.1_vae_plan.safetensors"),
             write_text_encoder(out / "umt5_xxl_plan_fp16.safetensors", header_only=True)]
    try:
        for name in targets:
            spec = TARGETS[name]
            model = write_transformer(out / f"wan2.1_vace_{name}_plan_fp16.safetensors", spec["config"], header_only=True)
            files.append(model)
            frames, height, width = spec["shape"]
            plan = plan_memory(model, files[0], files[1], precision=spec["precision"], vae_precision="fp32",
                               text_precision="bf16", frames=frames, height=height, width=width, device="cpu",
                               text_stream=True, ram_budget_gb=spec["limit_gb"])
            disk = sum(f.stat().st_size for f in (model, *files[:2])) / GB
            print(f"{name}: {spec['precision']} at {frames}x{height}x{width}, {spec['steps']} step(s): planned peak RSS "
                  f"{plan.ram_peak / GB:.1f} GB (limit {spec['limit_gb']:.0f} GB); a real run writes {disk:.1f} GB "
                  f"(transformer {model.stat().st_size / GB:.1f} GB) and needs that much free disk")
            print(f"  {plan.describe()}")
            print(f"  run: python benchmarks/bench_memory_targets.py --dir DIR --target {name} --timeout 1800")
    finally:
        for f in files:
            f.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="where to write the weight files (needs 16 GB; 51 GB with 14B)")
    parser.add_argument("--target", choices=["1.3B", "14B", "both"], default="1.3B")
    parser.add_argument("--shape", help="FxHxW to run instead of the target's own shape (plan still printed for it)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the target's)")
    parser.add_argument("--keep", action="store_true", help="keep the written files")
    parser.add_argument("--timeout", type=float, help="stop a run after this many seconds and report its peak so far")
    parser.add_argument("--first-run-only", action="store_true",
                        help="skip the re-run with the prompt cached (a CPU run at the target shape takes an hour)")
    parser.add_argument("--plan-only", action="store_true",
                        help="dry run: header-only (sparse) files, print each target's memory plan and needs, delete them")
    args = parser.parse_args()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.plan_only:
        return plan_only(out, ["1.3B", "14B"] if args.target == "both" else [args.target])
    need = 16 + (35 if args.target != "1.3B" else 0)
    free = shutil.disk_usage(out).free / GB
    if free < need:
        sys.exit(f"{out}: {free:.0f} GB free, these files need about {need} GB")
    from vdot_nodes.core.memory import plan_memory

    written = []
    try:
        t0 = time.perf_counter()
        vae = out / "wan_2.1_vae_random.safetensors"
        te = out / "umt5_xxl_random_fp16.safetensors"
        if not vae.exists():
            written.append(write_vae(vae))
        if not te.exists():
            written.append(write_text_encoder(te))
        print(f"VAE + UMT5-XXL written in {time.perf_counter() - t0:.0f} s", flush=True)
        targets = ["1.3B", "14B"] if args.target == "both" else [args.target]
        print("\n| target | run shape | steps | precision | planned peak RSS GB (target shape) | measured peak RSS GB "
              "| limit GB | s | result |")
        print("|---|---|---:|---|---:|---:|---:|---:|---|")
        for name in targets:
            spec = TARGETS[name]
            model = out / f"wan2.1_vace_{name}_random_fp16.safetensors"
            if not model.exists():
                t0 = time.perf_counter()
                written.append(write_transformer(model, spec["config"]))
                print(f"{model.name}: {model.stat().st_size / GB:.2f} GB written in {time.perf_counter() - t0:.0f} s",
                      flush=True)
            frames, height, width = spec["shape"]
            plan = plan_memory(model, vae, te, precision=spec["precision"], vae_precision="fp32", text_precision="bf16",
                               frames=frames, height=height, width=width, device="cpu", text_stream=True,
                               ram_budget_gb=spec["limit_gb"])
            run = tuple(int(v) for v in args.shape.split("x")) if args.shape else spec["shape"]
            steps = args.steps or spec["steps"]
            cache = out / "prompt_cache"
            shutil.rmtree(cache, ignore_errors=True)  # the first run encodes: the text encoder is part of the peak
            cmd = [sys.executable, "-m", "vdot_nodes.cli", "generate", "--task", "t2v", "--prompt", "a red cat walks",
                   "--model", str(model), "--vae", str(vae), "--text-encoder", str(te), "--precision", spec["precision"],
                   "--frames", str(run[0]), "--height", str(run[1]), "--width", str(run[2]), "--steps", str(steps),
                   "--device", "cpu", "--ram-budget", str(spec["limit_gb"]),  # the target is the budget
                   "--prompt-cache", str(cache), "--out", str(out / f"out_{name}.mp4"), "--overwrite"]
            labels = ("first run",) if args.first_run_only else ("first run", "re-run (prompt cached)")
            for label in labels:
                code, peak, seconds, err = run_measured(cmd, args.timeout)
                if code is None:
                    result = (f"stopped after {args.timeout:.0f} s (peak so far; "
                              f"{'under' if peak <= spec['limit_gb'] else 'OVER'} the limit)")
                else:
                    result = f"FAIL (exit {code})" if code else "OK" if peak <= spec["limit_gb"] else "OVER the limit"
                print(f"| {name} {label} | {'x'.join(map(str, run))} | {steps} | {spec['precision']} | "
                      f"{plan.ram_peak / GB:.1f} | {peak:.2f} | {spec['limit_gb']:.0f} | {seconds:.0f} | "
                      f"{result} |", flush=True)
                if code != 0:
                    print(err[-1500:], file=sys.stderr)
                    break
    finally:
        if not args.keep:
            for p in written:
                Path(p).unlink(missing_ok=True)
            shutil.rmtree(out / "prompt_cache", ignore_errors=True)


if __name__ == "__main__":
    main()
