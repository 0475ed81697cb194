"""Write the small example inputs bundled in vdot_nodes/assets/examples/ (used by the workflows).

Procedural, so they are reproducible and license-free: a ball rolling over a striped floor, its
depth map, a walking stick figure (OpenPose colours), a reference object on white, a first frame,
and an inpaint mask. 81 frames at 416×240 (the workflows fit them to 832×480).

    python tools/make_examples.py [--overwrite]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from vdot_nodes.core.video_io import write_image, write_video

OUT = Path(__file__).resolve().parent.parent / "vdot_nodes" / "assets" / "examples"
F, H, W = 81, 240, 416


def _grid():
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return y, x


def ball_scene(t: int):
    """RGB frame and depth (near = bright) of a red ball rolling left to right over stripes."""
    y, x = _grid()
    horizon = H * 0.45
    floor = y > horizon
    sky = np.stack([0.55 + 0.3 * (1 - y / H), 0.7 + 0.2 * (1 - y / H), np.full_like(y, 0.95)], -1)
    stripes = ((x + 6 * t) // 24 % 2).astype(np.float32)
    ground = np.stack([0.3 + 0.3 * stripes, 0.5 + 0.2 * stripes, 0.25 + 0.1 * stripes], -1)
    rgb = np.where(floor[..., None], ground, sky)
    depth = np.where(floor, 0.25 + 0.6 * (y - horizon) / (H - horizon), 0.05)
    cx, cy, r = 40 + 4.2 * t, H * 0.68 + 10 * math.sin(t / 6), 34
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    ball = d < r
    shade = np.clip(1.0 - 0.6 * ((x - cx + 10) ** 2 + (y - cy + 10) ** 2) / (r * r), 0.3, 1.0)
    rgb = np.where(ball[..., None], np.stack([0.9 * shade, 0.15 * shade, 0.1 * shade], -1), rgb)
    depth = np.where(ball, 0.95 - 0.25 * (d / r) ** 2, depth)
    return rgb.astype(np.float32), depth.astype(np.float32)


LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]


def pose_frame(t: int) -> np.ndarray:
    """An OpenPose-style skeleton (18 body keypoints, standard limb colours) walking right."""
    import cv2

    s = math.sin(t / 4)
    cx, top = 80 + 3 * t, 40
    k = {0: (cx, top + 10), 1: (cx, top + 40), 2: (cx - 22, top + 42), 5: (cx + 22, top + 42),
         3: (cx - 28 - 10 * s, top + 80), 6: (cx + 28 + 10 * s, top + 80),
         4: (cx - 26 - 18 * s, top + 115), 7: (cx + 26 + 18 * s, top + 115),
         8: (cx - 12, top + 110), 11: (cx + 12, top + 110),
         9: (cx - 12 + 22 * s, top + 150), 12: (cx + 12 - 22 * s, top + 150),
         10: (cx - 12 + 30 * s, top + 190), 13: (cx + 12 - 30 * s, top + 190),
         14: (cx - 5, top + 5), 15: (cx + 5, top + 5), 16: (cx - 11, top + 8), 17: (cx + 11, top + 8)}
    canvas = np.zeros((H, W, 3), np.uint8)
    for i, (a, b) in enumerate(LIMBS):
        (xa, ya), (xb, yb) = k[a], k[b]
        mx, my = (xa + xb) / 2, (ya + yb) / 2
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        poly = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), 4), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, [int(c * 0.6) for c in COLOURS[i]])
    for i, (x, y) in k.items():
        cv2.circle(canvas, (int(x), int(y)), 4, COLOURS[i], thickness=-1)
    return canvas.astype(np.float32) / 255.0


def reference_image() -> np.ndarray:
    """A yellow star on white (the reference subject)."""
    import cv2

    img = np.full((256, 256, 3), 255, np.uint8)
    pts = []
    for i in range(10):
        r = 110 if i % 2 == 0 else 45
        a = math.pi / 2 + i * math.pi / 5
        pts.append((128 + r * math.cos(a), 128 - r * math.sin(a)))
    cv2.fillPoly(img, [np.array(pts, np.int32)], (250, 200, 20))
    return img.astype(np.float32) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    scenes = [ball_scene(t) for t in range(F)]
    video = torch.from_numpy(np.stack([s[0] for s in scenes]))
    depth = torch.from_numpy(np.stack([s[1] for s in scenes]))[..., None].expand(-1, -1, -1, 3)
    pose = torch.from_numpy(np.stack([pose_frame(t) for t in range(F)]))
    write_video(video, OUT / "ball.mp4", fps=16, overwrite=args.overwrite, crf=28)
    write_video(depth, OUT / "ball_depth.mp4", fps=16, overwrite=args.overwrite, crf=28)
    write_video(pose, OUT / "walk_pose.mp4", fps=16, overwrite=args.overwrite, crf=28)
    write_image(video[0], OUT / "ball_first_frame.png", overwrite=args.overwrite)
    write_image(torch.from_numpy(reference_image()), OUT / "star_reference.png", overwrite=args.overwrite)
    mask = torch.zeros(H, W, 3)
    mask[60:200, 150:300] = 1.0
    write_image(mask, OUT / "box_mask.png", overwrite=args.overwrite)
    for p in sorted(OUT.iterdir()):
        print(f"{p.name:24s} {p.stat().st_size / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
