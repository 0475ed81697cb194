"""Peak memory and time of ``vdot convert`` on a 1.3B-shaped file in the VDOT release format (not in CI).

Writes ``{'generator': {'model.<original key>': random bf16 tensor}}`` for the shipped 1.3B config
(1264 tensors, ~4.3 GB) with ``torch.save``, then runs ``vdot convert`` on it in a subprocess per
``--dtype`` and samples that process's ``/proc/<pid>/status`` every 50 ms: VmRSS (all resident
pages), RssAnon (memory the process owns; cannot be reclaimed) and RssFile (mapped file pages,
i.e. page cache the kernel can drop). Prints a table; deletes the big files unless ``--keep``.

    python benchmarks/bench_convert.py [--workdir /tmp/vdot_bench_convert] [--dtypes bf16,fp8_e4m3fn]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_release_file(path: Path) -> None:
    """The generator dict of a 1.3B Wan2.1-VACE in release format, random bf16 (run in a child process)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from vdot_nodes.core.models import TRANSFORMER_CONFIGS, load_config, meta_shapes
    from vdot_nodes.core.models.convert.wan_transformer import comfy_key_names

    shapes = meta_shapes("transformer", load_config(TRANSFORMER_CONFIGS["1.3B"]))
    names = comfy_key_names(shapes)
    g = torch.Generator().manual_seed(0)
    state = {f"model.{names[k]}": torch.randn(shape, generator=g, dtype=torch.bfloat16) * 0.02 for k, shape in shapes.items()}
    torch.save({"generator": state}, path)


def status_kib(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(val.split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return out


def measure(cmd: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    while proc.poll() is None:
        for k, v in status_kib(proc.pid).items():
            peak[k] = max(peak[k], v)
        time.sleep(0.05)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return {"wall_s": wall, **{k: v / 2**20 for k, v in peak.items()}, "stdout": out.strip()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/vdot_bench_convert")
    ap.add_argument("--dtypes", default="bf16,fp8_e4m3fn")
    ap.add_argument("--keep", action="store_true", help="keep the written files")
    ap.add_argument("--write-only", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_only:
        write_release_file(Path(args.write_only))
        return 0
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    need = 4.4e9 * (1 + len(args.dtypes.split(",")))
    if free < need * 1.2:
        raise SystemExit(f"{work}: {free / 1e9:.1f} GB free, need ~{need / 1e9:.1f} GB")
    src = work / "vdot_1.3b.pt"
    rows = []
    try:
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--write-only", str(src)], check=True)
        print(f"wrote {src} ({src.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        for dtype in args.dtypes.split(","):
            out = work / f"out_{dtype}"
            r = measure([sys.executable, "-m", "vdot_nodes.cli", "convert", str(src), str(out), "--dtype", dtype, "--overwrite"])
            size = sum(p.stat().st_size for p in out.iterdir())
            rows.append((dtype, r, size))
            shutil.rmtree(out)
    finally:
        if not args.keep:
            src.unlink(missing_ok=True)
            for p in work.glob("out_*"):
                shutil.rmtree(p, ignore_errors=True)
    print(f"source: {src.name}, 1.3B Wan2.1-VACE in release format (1264 bf16 tensors)")
    print("| --dtype | output GB | wall s | peak RSS GiB | peak anon GiB | peak file-mapped GiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for dtype, r, size in rows:
        print(f"| {dtype} | {size / 1e9:.2f} | {r['wall_s']:.1f} | {max(r['VmHWM'], r['VmRSS']):.2f} | {r['RssAnon']:.2f} | {r['RssFile']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
