"""Speed of the preprocessors on this machine (CPU, or CUDA for the learned ones). Prints a table; asserts nothing.

Synthetic 832×480 video (a moving texture with drawn shapes), whole-video calls through
``run_preprocessor`` (batching, uint8 conversion and colourising included). Target: ≥ 10 frames/s.

``--learned`` adds Depth Anything V2, HED and RAFT at their real, full-size architectures. Without
``--weights DIR`` (holding the files named in ``vdot_nodes/core/preprocess/weights.py``) they run with
*random* weights written to a temp folder — the timing of the real architecture, not real output.
DWPose (ONNX) is timed only when its two .onnx files are in DIR and onnxruntime is installed.

    python benchmarks/bench_preprocess.py
    python benchmarks/bench_preprocess.py --frames 81 --width 1280 --height 720 --repeats 3
    python benchmarks/bench_preprocess.py --learned --frames 9 [--weights DIR] [--depth-size small|base|large]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vdot_nodes.core.atomic import atomic_save_safetensors
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


DEPTH_SIZES = {  # Depth Anything V2 -hf configs: (DINOv2 width, layers, neck widths, fusion width)
    "small": (384, 12, [48, 96, 192, 384], 64),
    "base": (768, 12, [96, 192, 384, 768], 128),
    "large": (1024, 24, [256, 512, 1024, 1024], 256),
}


def random_learned_weights(folder: Path, depth_size: str) -> None:
    """Full-size random-weight files for depth / HED / RAFT in ``folder`` (timing only)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    from vdot_nodes.core.preprocess.hed import ControlNetHED
    from vdot_nodes.core.preprocess.raft import RAFT, RAFT_LARGE

    hidden, layers, neck, fusion = DEPTH_SIZES[depth_size]
    out_indices = [3, 6, 9, 12] if layers == 12 else [5, 12, 18, 24]
    config = DepthAnythingConfig(
        backbone_config=Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                                     image_size=518, out_indices=out_indices, reshape_hidden_states=False),
        reassemble_hidden_size=hidden, neck_hidden_sizes=neck, fusion_hidden_size=fusion)
    for model, name in ((DepthAnythingForDepthEstimation(config), "depth_anything_v2_vitl.safetensors"),
                        (ControlNetHED(), "ControlNetHED.safetensors"),
                        (RAFT(RAFT_LARGE), "raft_large_C_T_SKHT_V2.safetensors")):
        atomic_save_safetensors(model.state_dict(), folder / name, overwrite=True)


def learned_cases(folder: Path) -> list:
    cases = [("depth (DAv2)", "depth", {"weights": str(folder)}),
             ("scribble_hed", "scribble_hed", {"weights": str(folder)}),
             ("flow_raft large 20it", "flow_raft", {"weights": str(folder)})]
    if (folder / "dw-ll_ucoco_384.onnx").is_file() and (folder / "yolox_l.onnx").is_file():
        cases.append(("pose (DWPose onnx)", "pose", {"weights": str(folder)}))
    return cases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per case; the fastest is reported")
    p.add_argument("--learned", action="store_true", help="time only the learned annotators")
    p.add_argument("--weights", type=Path, help="folder with real annotator weights (default: random full-size)")
    p.add_argument("--depth-size", choices=list(DEPTH_SIZES), default="large", help="random depth model size")
    args = p.parse_args()
    cases = CASES
    if args.learned:
        folder = args.weights
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="vdot_bench_"))
            random_learned_weights(folder, args.depth_size)
            print(f"learned annotators: RANDOM full-size weights (depth: {args.depth_size}) — timing only")
        cases = learned_cases(folder)

    video = synthetic_video(args.frames, args.height, args.width)
    print(f"{args.frames} frames {args.width}x{args.height}, CPU: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), torch {torch.__version__}"
          + (f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"{'preprocessor':<20} {'s/frame':>9} {'frames/s':>9}  target ≥{TARGET_FPS:g} f/s")
    for label, kind, opts in cases:
        run_preprocessor(kind, video[:2], **opts)  # warm-up (imports, OpenCV init)
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            run_preprocessor(kind, video, **opts)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        per_frame = best / args.frames
        fps = 1.0 / per_frame
        print(f"{label:<20} {per_frame:>9.4f} {fps:>9.1f}  {'yes' if fps >= TARGET_FPS else 'NO'}")


if __name__ == "__main__":
    main()
