"""Speed of the weight-free preprocessors on this machine's CPU. Prints a table; asserts nothing.

Synthetic 832×480 video (a moving texture with drawn shapes), whole-video calls through
``run_preprocessor`` (batching, uint8 conversion and colourising included). Target: ≥ 10 frames/s.

    python benchmarks/bench_preprocess.py
    python benchmarks/bench_preprocess.py --frames 81 --width 1280 --height 720 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import cv2
import numpy as np
import torch

from vdot_nodes.core.preprocess import run_preprocessor

TARGET_FPS = 10.0

CASES = [
    ("grey", "grey", {}),
    ("scribble_xdog", "scribble_xdog", {}),
    ("scribble_xdog thin", "scribble_xdog", {"thin": True}),
    ("scribble_canny", "scribble_canny", {}),
    ("flow dis medium", "flow", {"method": "dis", "preset": "medium"}),
    ("flow dis fast", "flow", {"method": "dis", "preset": "fast"}),
    ("flow farneback", "flow", {"method": "farneback"}),
]


def synthetic_video(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    pad = 4 * frames + 8
    tex = cv2.GaussianBlur(rng.random((height + 2 * pad, width + 2 * pad, 3)).astype(np.float32), (0, 0), 3.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    out = []
    for t in range(frames):
        frame = np.ascontiguousarray(tex[pad - 2 * t:pad - 2 * t + height, pad + 3 * t:pad + 3 * t + width])
        cv2.circle(frame, (width // 3 + 4 * t, height // 2), height // 5, (0.1, 0.1, 0.1), 3)
        cv2.rectangle(frame, (width // 2, height // 4), (width // 2 + width // 5, height // 4 + height // 3),
                      (0.9, 0.9, 0.2), -1)
        out.append(frame)
    return torch.from_numpy(np.stack(out)).float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per case; the fastest is reported")
    args = p.parse_args()

    video = synthetic_video(args.frames, args.height, args.width)
    print(f"{args.frames} frames {args.width}x{args.height}, CPU: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), torch {torch.__version__}")
    print(f"{'preprocessor':<20} {'s/frame':>9} {'frames/s':>9}  target ≥{TARGET_FPS:g} f/s")
    for label, kind, opts in CASES:
        run_preprocessor(kind, video[:2], **opts)  # warm-up (imports, OpenCV init)
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            run_preprocessor(kind, video, **opts)
            best = min(best, time.perf_counter() - start)
        per_frame = best / args.frames
        fps = 1.0 / per_frame
        print(f"{label:<20} {per_frame:>9.4f} {fps:>9.1f}  {'yes' if fps >= TARGET_FPS else 'NO'}")


if __name__ == "__main__":
    main()
