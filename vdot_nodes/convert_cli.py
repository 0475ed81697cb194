"""``vdot convert SRC OUT``: the official VDOT release (PyTorch pickles) as safetensors for ComfyUI and ``vdot``.

Bad input exits with status 2 and one line; Ctrl-C exits 130 and leaves no partial file; nothing
is overwritten without ``--overwrite``, and every target is checked before the first byte is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .core.errors import VDOTInputError, one_line_parser_class, run_subcommand

PROG = "vdot convert"
# Core's semantic input names (core.release, core.atomic, the models' readers), as `vdot convert` spells them.
CONVERT_NAMES = {"source": "SRC", "output": "OUT", "dtype": "--dtype", "tokenizer": "--tokenizer",
                 "overwrite": "--overwrite", "model": "vdot generate --model", "vae": "--vae",
                 "text_encoder": "--text-encoder"}

DESCRIPTION = """\
Convert the official VDOT release to safetensors files that ComfyUI's own loaders and `vdot generate` read.

The release is on Hugging Face, huggingface.co/yutongwang1012/VDOT:
  vdot-weights/vdot_14b.pt           the VDOT-14B transformer (pickled {'generator': state dict})
  models_t5_umt5-xxl-enc-bf16.pth    the UMT5-XXL text encoder (Wan's module names)
  Wan2.1_VAE.pth                     the Wan2.1 VAE
  google/umt5-xxl/                   the tokenizer (its spiece.model goes into the text encoder file)

SRC is the downloaded folder (all files present are converted) or one of those files. OUT is a folder;
it gets, in ComfyUI's layouts:
  vdot_14b_<dtype>.safetensors       original Wan/VACE key names  -> ComfyUI/models/diffusion_models
  umt5_xxl_<dtype>.safetensors       HF UMT5 names + spiece_model -> ComfyUI/models/text_encoders
  wan_2.1_vae.safetensors            original VAE names, source dtype -> ComfyUI/models/vae

The pickles are read only through torch's restricted weights-only unpickler (torch.load(weights_only=True)),
which refuses anything but tensors and plain containers, so no code in a file can run. Tensors are
memory-mapped and written one chunk at a time: memory stays near one chunk, not the model."""

EPILOG = """\
--dtype fp8_e4m3fn stores 2-D weight matrices in float8 e4m3fn with values clamped to +-448 (the count
is printed) and keeps biases, norms, modulation, embeddings and T5's wo in bf16. The VAE always keeps
its source dtype.

example: vdot convert ~/Downloads/VDOT ComfyUI/models/vdot --dtype bf16"""


_Parser = one_line_parser_class()  # errors are one line, exit status 2


def build_parser() -> argparse.ArgumentParser:
    from .core.release import CONVERT_DTYPES

    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="the downloaded release folder, or one of its .pt/.pth files")
    p.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    p.add_argument("--dtype", choices=list(CONVERT_DTYPES), default="bf16",
                   help="stored precision of the transformer and text encoder (default bf16: bit-exact for a bf16 source)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="the google/umt5-xxl tokenizer folder (default: google/umt5-xxl beside the text encoder file)")
    p.add_argument("--overwrite", action="store_true", help="allow replacing existing files in OUT")
    return p


def convert_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vdot convert``; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_subcommand(PROG, build_parser(), argv, _run,
                          "interrupted; the file being written was removed, finished files are complete",
                          names=CONVERT_NAMES)


def _sources(src: Path) -> list[tuple[str | None, Path]]:
    from .core.release import HF_REPO, RELEASE_FILES, RELEASE_TOKENIZER, expected_kind, find_release_files

    if not src.exists():
        raise VDOTInputError("SRC", f"{src} does not exist", f"download the release from huggingface.co/{HF_REPO}")
    if src.is_file():
        return [(expected_kind(src), src)]
    found = find_release_files(src)
    if not found:
        names = ", ".join(list(RELEASE_FILES.values()) + [RELEASE_TOKENIZER + "/"])
        raise VDOTInputError("SRC", f"{src} holds none of the release files ({names})",
                             f"give the folder downloaded from huggingface.co/{HF_REPO}, or one of its files")
    return [(kind, found[kind]) for kind in RELEASE_FILES if kind in found]


def _run(args) -> int:
    from .core.atomic import check_target
    from .core.progress import TqdmProgress
    from .core.release import (
        RELEASE_FILES, open_release_file, output_dtypes, output_metadata, output_name, output_nbytes, output_tensors,
        write_streaming,
    )

    src, out = Path(args.src).expanduser(), Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise VDOTInputError("OUT", f"{out} is a file", "give a folder for the converted files")
    sources = _sources(src)
    # Everything is read, identified and checked before anything is written.
    plans = []
    for kind, path in sources:
        comp = open_release_file(path, expect=kind, tokenizer=args.tokenizer)
        tensors = output_tensors(comp)
        dtypes = output_dtypes(comp, args.dtype)
        target = out / output_name(comp, args.dtype)
        plans.append((comp, tensors, dtypes, target))
    targets = [p[3] for p in plans]
    if len(set(targets)) != len(targets):
        raise VDOTInputError("SRC", "two source files convert to the same output name", "convert them one at a time")
    if out.is_dir():
        for target in targets:
            check_target(target, args.overwrite, "OUT")
    for comp, tensors, dtypes, target in plans:
        size = output_nbytes(tensors, dtypes)
        print(f"{comp.path}: {comp.description} -> {target} ({len(tensors)} tensors, {size / 1e9:.2f} GB)", file=sys.stderr)
        for note in comp.notes:
            print(f"  note: {note}", file=sys.stderr)
    if src.is_dir():
        missing = [rel for kind, rel in RELEASE_FILES.items() if kind not in {c.kind for c, *_ in plans}]
        if missing:
            print(f"not in {src} (skipped): {', '.join(missing)}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    total = sum(output_nbytes(t, d) for _, t, d, _ in plans)
    started = time.perf_counter()
    reports = []
    with TqdmProgress(total, "convert", unit="B", unit_scale=True, unit_divisor=1024) as bar:
        for comp, tensors, dtypes, target in plans:
            bar.note(target.name)
            reports.append(write_streaming(tensors, dtypes, target, output_metadata(comp, args.dtype),
                                           overwrite=args.overwrite, progress=bar.update,
                                           source_name=str(comp.path)))
    elapsed = time.perf_counter() - started
    for report in reports:
        clamp = f", {report.clamped} values clamped to ±448 for fp8" if args.dtype == "fp8_e4m3fn" else ""
        print(f"wrote {report.path} ({report.num_tensors} tensors, {report.nbytes / 1e9:.2f} GB{clamp})")
    print(f"converted in {elapsed:.1f}s", file=sys.stderr)
    flags = {"transformer": "--model", "text_encoder": "--text-encoder", "vae": "--vae"}
    use = " ".join(f"{flags[c.kind]} {r.path}" for (c, *_), r in zip(plans, reports))
    print(f"use them with: vdot generate {use} ... (or from ComfyUI's models folders)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(convert_main())
