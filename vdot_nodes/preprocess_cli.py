"""``vdot preprocess --kind K IN OUT``: turn a video into a control video from the command line.

IN and OUT are a video file (OUT: ``.mp4``, H.264 via PyAV) or a folder of PNG/JPG frames (OUT: a
folder path without extension, written as ``frame_00000.png …``). ``--frames`` takes the first N
frames, ``--width``/``--height`` fit before preprocessing, covering and centre-cropping as
``vdot generate`` fits a video (one of them alone keeps the aspect ratio). Kind options (``--sigma``, ``--method``, ...) are passed to the preprocessor; giving one
that the kind does not have is an error. Bad input exits with status 2 and one line saying what to
fix. An existing OUT is never replaced without ``--overwrite`` (an empty folder counts as absent).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .core.errors import VDOTInputError, one_line_parser_class, run_subcommand
from .core.preprocess import PREPROCESSORS, resolve_name, run_preprocessor
from .core.preprocess.video_ops import DEFAULT_BATCH_SIZE, fit_video
from .core.validate import validate_preprocess

PROG = "vdot preprocess"

# CLI flag → preprocessor option name. Only flags the user gave are passed on.
KIND_OPTIONS = {
    "weights": "weights", "sigma": "sigma", "k": "k", "tau": "tau", "threshold": "threshold", "phi": "phi",
    "thin": "thin", "background": "background", "low": "low", "high": "high", "blur": "blur",
    "method": "method", "preset": "preset", "pad": "pad", "max_magnitude": "max_magnitude",
    "normalize": "normalize", "input_size": "input_size", "detector": "detector", "no_hands": "hands",
    "no_face": "face", "no_body": "body", "num_flow_updates": "num_flow_updates",
}


_Parser = one_line_parser_class()  # errors are one line, exit status 2


def build_parser() -> argparse.ArgumentParser:
    kinds = ", ".join(f"{name} ({spec.description})" for name, spec in PREPROCESSORS.items())
    p = _Parser(prog=PROG, description="Make a control video (grey, scribble, flow, ...) from a video. "
                f"Kinds: {kinds}.")
    p.add_argument("--kind", required=True, help=f"preprocessor: {', '.join(PREPROCESSORS)}")
    p.add_argument("input", metavar="IN", help="input video file or folder of frames")
    p.add_argument("output", metavar="OUT", help="output .mp4, or a folder for PNG frames")
    p.add_argument("--width", type=int, help="output width (default: input's; alone: keep aspect ratio)")
    p.add_argument("--height", type=int, help="output height (default: input's; alone: keep aspect ratio)")
    p.add_argument("--frames", type=int, help="use the first N frames (default: all)")
    p.add_argument("--fps", type=float, help="output mp4 frame rate (default: the input's; 16 for frame folders)")
    p.add_argument("--crf", type=int, default=17, help="mp4 quality, lower = better (default 17)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"frames per batch (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("grey options")
    g.add_argument("--weights", help="grey: rgb = 0.299R+0.587G+0.114B (default) or vace = R/B swapped, as VACE's "
                   "annotator; depth/pose/scribble_hed: the weight file or its folder (default: $VDOT_ANNOTATOR_DIR, "
                   "then ComfyUI's models/vdot_annotators)")
    s = p.add_argument_group("scribble options (scribble_xdog, scribble_canny)")
    s.add_argument("--sigma", type=float, help="xdog: inner Gaussian sigma in px (default 1.0)")
    s.add_argument("--k", type=float, help="xdog: outer/inner sigma ratio (default 1.6)")
    s.add_argument("--tau", type=float, help="xdog: outer Gaussian weight (default 1.0)")
    s.add_argument("--threshold", type=float, help="xdog: darkness (0..1) a stroke needs (default 0.02)")
    s.add_argument("--phi", type=float, help="xdog: soft strokes with this tanh sharpness (default: binary)")
    s.add_argument("--low", type=float, help="canny: low hysteresis threshold (default 100)")
    s.add_argument("--high", type=float, help="canny: high hysteresis threshold (default 200)")
    s.add_argument("--blur", type=float, help="canny: Gaussian sigma before edges (default 0)")
    s.add_argument("--thin", action="store_const", const=True, help="Zhang-Suen thinning to one-pixel strokes")
    s.add_argument("--background", choices=["white", "black"],
                   help="white = dark strokes on white, as VACE (default); black = white lines on black")
    f = p.add_argument_group("flow options")
    f.add_argument("--method", choices=["dis", "farneback"], help="flow estimator (default dis)")
    f.add_argument("--preset", choices=["ultrafast", "fast", "medium"], help="DIS preset (default medium)")
    f.add_argument("--pad", choices=["first", "last"],
                   help="first = VACE (out[t] = flow t-1→t, first repeated; default); last = out[t] = flow t→t+1")
    f.add_argument("--max-magnitude", type=float, help="flow length (px) of full saturation (default: per-frame max, as VACE)")
    a = p.add_argument_group("learned annotators (depth, pose, scribble_hed; weights via --weights)")
    a.add_argument("--normalize", choices=["frame", "video"], help="depth: min-max per frame (VACE, default) or per video")
    a.add_argument("--input-size", type=int, help="depth: network short side in px, multiple of 14 (default 518)")
    a.add_argument("--detector", help="pose: yolox_l.onnx path (default: next to the pose model)")
    a.add_argument("--no-body", action="store_const", const=False, help="pose: do not draw the body")
    a.add_argument("--no-hands", action="store_const", const=False, help="pose: do not draw hands")
    a.add_argument("--no-face", action="store_const", const=False, help="pose: do not draw the face")
    a.add_argument("--num-flow-updates", type=int, help="flow_raft: RAFT refinement iterations (default 20, as VACE)")
    return p


# Core's semantic input names (core.validate, core.atomic), as `vdot preprocess` spells them.
PREPROCESS_NAMES = {"num_frames": "--frames", "width": "--width", "height": "--height", "fps": "--fps",
                    "crf": "--crf", "batch_size": "--batch-size", "overwrite": "--overwrite", "out": "OUT"}


def _check_output(out: Path, src: Path, overwrite: bool) -> bool:
    """Validate OUT; returns True when OUT is an mp4 file, False for a frame folder."""
    suffix = out.suffix.lower()
    if suffix not in ("", ".mp4"):
        raise VDOTInputError("OUT", f"{out} is neither an .mp4 file nor a folder path",
                             "name it something.mp4, or a folder without an extension for PNG frames")
    if out.resolve() == src.resolve():
        raise VDOTInputError("OUT", "is the same path as IN", "choose a different output path")
    is_file = suffix == ".mp4"
    if out.exists():
        if is_file and out.is_dir():
            raise VDOTInputError("OUT", f"{out} is an existing folder", "choose a file name that is not a folder")
        if not is_file and not out.is_dir():
            raise VDOTInputError("OUT", f"{out} is an existing file, not a folder", "choose another name")
        occupied = is_file or any(out.iterdir())
        if occupied and not overwrite:
            raise VDOTInputError("OUT", f"{out} already exists", "choose another name or pass --overwrite")
    if not out.parent.exists():
        raise VDOTInputError("OUT", f"folder {out.parent} does not exist", "create it first")
    return is_file


def _kind_options(args) -> dict:
    return {opt: getattr(args, flag) for flag, opt in KIND_OPTIONS.items() if getattr(args, flag) is not None}


def _run(args) -> int:
    from .core.progress import TqdmProgress
    from .core.video_io import read_video, write_frames, write_video

    kind = resolve_name(args.kind)
    opts = _kind_options(args)
    known = PREPROCESSORS[kind].options
    for key in opts:
        if key not in known:
            raise VDOTInputError(f"--{key.replace('_', '-')}", f"is not an option of --kind {kind}",
                                 f"its options are {', '.join('--' + o.replace('_', '-') for o in known) or 'none'}")
    for name in ("frames", "width", "height", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise VDOTInputError(f"--{name.replace('_', '-')}", f"must be ≥ 1, got {value}", "give a positive integer")
    if args.fps is not None and not args.fps > 0:
        raise VDOTInputError("--fps", f"must be > 0, got {args.fps}", "use e.g. 16")
    validate_preprocess({"num_frames": args.frames, "width": args.width, "height": args.height, "fps": args.fps,
                         "crf": args.crf, "batch_size": args.batch_size})
    src, out = Path(args.input), Path(args.output)
    if not src.exists():
        raise VDOTInputError("IN", f"{src} does not exist", "check the path")
    is_file = _check_output(out, src, args.overwrite)

    started = time.perf_counter()
    video, fps = read_video(src, max_frames=args.frames)
    video = fit_video(video, frames=args.frames, height=args.height, width=args.width, name=f"IN ({src})")
    total = video.shape[0]
    # delay: nothing is drawn for runs that fail at once (bad option values) or finish at once
    with TqdmProgress(total, kind, unit="frame", disable=args.quiet, file=sys.stderr, delay=0.5) as bar:
        result = run_preprocessor(kind, video, batch_size=args.batch_size, progress=bar, **opts)
    if is_file:
        write_video(result, out, fps=args.fps or fps, overwrite=args.overwrite, crf=args.crf)
    else:
        out.mkdir(exist_ok=True)
        write_frames(result, out, overwrite=args.overwrite)
    f, h, w = result.shape[:3]
    print(f"wrote {out} ({kind}: {f} frames, {w}x{h}) in {time.perf_counter() - started:.1f}s")
    return 0


def preprocess_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vdot preprocess``; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_subcommand(PROG, build_parser(), argv, _run, names=PREPROCESS_NAMES)


if __name__ == "__main__":
    sys.exit(preprocess_main())
