"""Colour drift of chained long-video windows, with and without colour matching, on a real model.

Generates one long T2V video window by window (:func:`vdot_nodes.core.long_video.generate_long_video`)
twice — colour matching off and on — and prints, per window, how the window's re-rendering of the kept
overlap differs from the frames already made there (the drift the matching measures), then the last
window's mean RGB and contrast against the first window's. Prints; asserts nothing.

    python benchmarks/bench_long_video.py                                   # embedded toy model, 49 frames
                                                                             # in windows of its native 5
    python benchmarks/bench_long_video.py --model M --vae V --text-encoder T --frames 161 --window 81 \\
        --overlap 17 --height 480 --width 832
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vdot_nodes.core.components import load_pipeline  # noqa: E402
from vdot_nodes.core.long_video import colour_stats, generate_long_video, plan_windows  # noqa: E402
from vdot_nodes.core.vcu import build_t2v_vcu  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model"), p.add_argument("--vae"), p.add_argument("--text-encoder")
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--overlap", type=int, default=1)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--prompt", default="a green square moves right over a white checkered background")
    args = p.parse_args(argv)
    pipe = load_pipeline(args.model, args.vae, args.text_encoder)
    rendered = []
    generate = pipe.generate

    def recording_generate(*a, **k):  # keep each window's own frames, overlap included
        frames = generate(*a, **k)
        rendered.append(frames[0].clone())
        return frames

    pipe.generate = recording_generate
    vcu = build_t2v_vcu(args.frames, args.height, args.width, prompt=args.prompt)
    plan = plan_windows(args.frames, args.window, args.overlap)
    print(f"{len(plan)} windows: " + ", ".join(f"{w.start}-{w.end - 1} (keep {w.keep})" for w in plan))
    for match in (False, True):
        rendered.clear()
        made = generate_long_video(pipe, vcu, window=args.window, overlap=args.overlap, colour_match=match, seed=args.seed)
        print(f"colour matching {'on' if match else 'off'}:")
        for w in plan[1:]:
            mean_r, std_r = colour_stats(rendered[w.index][: w.keep])
            mean_m, std_m = colour_stats(made[w.start:w.start + w.keep])
            print(f"  window {w.index}: overlap re-render vs made: mean RGB shift {(mean_r - mean_m).abs().max():.4f}, "
                  f"std ratio {(std_r / std_m).min():.2f}-{(std_r / std_m).max():.2f}")
        first, last = plan[0], plan[-1]
        mean_0, std_0 = colour_stats(made[first.start:first.end])
        mean_l, std_l = colour_stats(made[last.start + last.keep:last.end])
        print(f"  last window's new frames vs first window: mean RGB {[round(float(x), 3) for x in mean_l - mean_0]}, "
              f"contrast (std) {float(std_l.mean() / std_0.mean() - 1) * 100:+.0f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
