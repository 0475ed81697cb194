"""Procedural toy-world clips with exact ground truth.

A scene is a plain, striped or checkered background (a patterned one seen by a panning camera),
plus 1 to ``max_objects`` large flat-coloured objects (circles, squares, triangles, thick stick figures;
the toy recipe draws one per clip, the dataclass default two) at distinct depths, each translating
at a constant non-zero integer velocity in pixels per frame, fully in view.
The world is sized for what a 2-core CPU can learn in minutes: few, large, flat shapes with clear
motion, 5 frames long (the toy VAE does not compress time, so the latent has 5 frames: see the README's
toy-world section). Everything is rasterised without anti-aliasing at integer pixel positions,
so the motion model is exact. With ``WorldConfig.cell`` c > 1 the world is a grid of c×c-pixel cells:
centres, sizes, speeds, pans and pattern bands are whole cells, every cell shows the surface at its
first pixel, and silhouette edges are whole cells (the rules below hold for cells as for pixels):

- frame ``t`` shows, at pixel ``p``, the nearest surface covering ``p`` (painter's algorithm, far to near);
- the background is an infinite periodic texture ``T`` sampled at ``p + pan·t`` — the camera moves by
  ``pan`` per frame, the background content by ``−pan``;
- forward flow ``flow[t](p)`` (t → t+1) is the velocity of the surface visible at ``p`` (object
  velocity, or ``−pan`` for the background), so ``frame[t+1](p + flow) == frame[t](p)`` wherever the
  same surface is still visible at ``p + flow`` (not occluded, not out of view);
- depth is per surface (background far, objects nearer); ``ids`` say which surface each pixel shows;
- stick figures carry OpenPose-18 body keypoints (nose, neck, r/l shoulder-elbow-wrist, r/l
  hip-knee-ankle, r/l eye, r/l ear); they translate rigidly (limbs do not swing: that would make the
  flow of limb pixels non-rigid, and exactness is the point of this world).

Everything is a pure function of the seed (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from vdot_nodes.core.errors import VDOTInputError

from .captions import BACKGROUND_COLORS, FIGURE, OBJECT_COLORS, PATTERNS, SHAPES, scene_caption

BACKGROUND_DEPTH = 10.0
NEAR_DEPTH, FAR_DEPTH = 1.0, BACKGROUND_DEPTH  # range used to render depth control videos

# OpenPose-18 keypoints of a standing figure, in units of the figure's half height, relative to the
# body centre (x right, y down). Variants lift the arms so figures differ.
_BODY = {
    "nose": (0.0, -0.80), "neck": (0.0, -0.55),
    "r_shoulder": (-0.22, -0.55), "r_elbow": (-0.30, -0.28), "r_wrist": (-0.34, -0.02),
    "l_shoulder": (0.22, -0.55), "l_elbow": (0.30, -0.28), "l_wrist": (0.34, -0.02),
    "r_hip": (-0.14, 0.05), "r_knee": (-0.18, 0.50), "r_ankle": (-0.20, 0.95),
    "l_hip": (0.14, 0.05), "l_knee": (0.18, 0.50), "l_ankle": (0.20, 0.95),
    "r_eye": (-0.06, -0.86), "l_eye": (0.06, -0.86), "r_ear": (-0.12, -0.82), "l_ear": (0.12, -0.82),
}
KEYPOINT_NAMES = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
                  "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
_ARM_VARIANTS = {
    "down": {},
    "up": {"r_elbow": (-0.30, -0.80), "r_wrist": (-0.34, -1.05), "l_elbow": (0.30, -0.80), "l_wrist": (0.34, -1.05)},
    "out": {"r_elbow": (-0.50, -0.55), "r_wrist": (-0.78, -0.55), "l_elbow": (0.50, -0.55), "l_wrist": (0.78, -0.55)},
}
# Stick-figure segments drawn as the body (keypoint index pairs): spine, arms, legs, hips, shoulders.
_BODY_SEGMENTS = ((1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (8, 11))


@dataclass
class WorldConfig:
    height: int = 64
    width: int = 64
    num_frames: int = 5
    max_objects: int = 2
    figure_probability: float = 0.3
    max_speed: int = 2  # pixels per frame, per axis
    max_pan: int = 1  # camera pixels per frame, per axis
    # Pixels per side of the world's square cell: centres, sizes, speeds, pans and pattern bands are whole
    # cells (speeds and pans rounded up) and each cell is one flat colour. At 2 (the toy9 build): scribble
    # strokes 4 px wide instead of 2, every object moving 2 px a frame per axis it moves on (8 px over a clip,
    # where a 1-px speed moved 4). It does not help the 2× toy VAE: one trained on that world reconstructs it
    # at 23.9 dB (48 held-out clips), the cell-1 one at 24.2, and the error stays at object edges (80 % of it).
    # The recipe keeps 1 (training/toy/HISTORY.md, "toy9").
    cell: int = 1

    def check(self) -> None:
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise VDOTInputError("num_frames", f"{self.num_frames} is not 4k+1", "use 5, 9, 17, ...")
        if self.height < 32 or self.width < 32 or self.height % 16 or self.width % 16:
            raise VDOTInputError("height/width", f"{self.height}x{self.width}: need multiples of 16, at least 32",
                                 "use e.g. 64x64")
        if not 1 <= self.max_objects <= 6:
            raise VDOTInputError("max_objects", f"{self.max_objects} is outside 1..6", "use 1..6")
        if self.cell not in (1, 2, 4):  # divides 16, so it divides height and width
            raise VDOTInputError("cell", f"{self.cell} is not 1, 2 or 4", "use 1 (the toy recipe's) or 2")


@dataclass
class SceneObject:
    kind: str  # circle | square | triangle | figure
    color: str
    size: int  # radius / half side / half height in pixels
    x0: int  # centre at frame 0 (integer pixels)
    y0: int
    vx: int
    vy: int
    depth: float
    arms: str = "down"  # stick figures only

    @property
    def rgb(self) -> np.ndarray:
        return np.asarray(OBJECT_COLORS[self.color], np.float32)

    def centre(self, t: int) -> tuple[int, int]:
        return self.x0 + self.vx * t, self.y0 + self.vy * t

    def keypoint_offsets(self) -> np.ndarray:
        """``[18, 2]`` offsets of the OpenPose keypoints from the centre, in pixels."""
        body = {**_BODY, **_ARM_VARIANTS[self.arms]}
        return np.asarray([body[n] for n in KEYPOINT_NAMES], np.float64) * self.size

    def mask_at(self, xs: np.ndarray, ys: np.ndarray, t: int) -> np.ndarray:
        """Boolean coverage of the pixel grid at frame t (depends only on p − centre: exact translation)."""
        cx, cy = self.centre(t)
        dx, dy = xs - cx, ys - cy
        r = self.size
        if self.kind == "circle":
            return dx * dx + dy * dy <= r * r
        if self.kind == "square":
            return (np.abs(dx) <= r) & (np.abs(dy) <= r)
        if self.kind == "triangle":  # apex up, base at dy = r
            return (dy <= r) & (dy >= -r) & (2 * np.abs(dx) <= dy + r)
        if self.kind == FIGURE:
            pts = self.keypoint_offsets()
            thickness = max(2.0, self.size / 6)  # limbs ≥ 2 pixels wide: one token is 8×8 pixels
            cover = (dx - pts[0, 0]) ** 2 + (dy - pts[0, 1] + 0.02 * r) ** 2 <= (0.2 * r) ** 2  # head
            for a, b in _BODY_SEGMENTS:
                cover |= _segment_distance(dx, dy, pts[a], pts[b]) <= thickness
            return cover
        raise ValueError(f"unknown object kind {self.kind!r}")


def _segment_distance(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    denom = float(ab @ ab) or 1.0
    s = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / denom, 0.0, 1.0)
    return np.hypot(x - (a[0] + s * ab[0]), y - (a[1] + s * ab[1]))


@dataclass
class Scene:
    seed: int
    config: WorldConfig
    background: str  # colour name
    pattern: str
    period: int
    pan: tuple[int, int]  # camera motion per frame (the background moves by -pan)
    objects: list[SceneObject] = field(default_factory=list)  # far to near

    def texture(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Background colour at world coordinates (integer arrays) → ``[..., 3]``."""
        a, b = (np.asarray(c, np.float32) for c in BACKGROUND_COLORS[self.background])
        p = self.period
        if self.pattern == "plain":
            return np.broadcast_to(a, (*np.shape(u), 3)).copy()
        if self.pattern == "striped":
            second = ((u + v) // p) % 2 == 1
        elif self.pattern == "checkered":
            second = ((u // p) + (v // p)) % 2 == 1
        else:
            raise ValueError(f"unknown pattern {self.pattern!r}")
        return np.where(second[..., None], b, a)

    @property
    def caption(self) -> str:
        front_first = [(o.kind, o.color, o.vx, o.vy) for o in reversed(self.objects)]
        return scene_caption(front_first, self.background, self.pattern, self.pan)


@dataclass
class Clip:
    """One rendered clip and its ground truth (numpy, ``F`` frames of ``H×W``).

    ``frames`` [F,H,W,3] float32 0..1; ``depth`` [F,H,W] float32 (larger = farther); ``ids`` [F,H,W]
    int16 (0 background, k+1 object k in ``scene.objects`` order); ``flow`` [F−1,H,W,2] float32
    forward flow (dx, dy) from t to t+1; ``object_masks`` [K,F,H,W] bool full (unoccluded) coverage;
    ``poses`` [F,P,18,3] float32 (x, y, visible) of the P stick figures; ``edges`` [F,H,W] bool
    silhouette boundaries (cells whose id differs from a 4-neighbour cell's; a cell is a pixel at
    ``cell`` 1).
    """

    scene: Scene
    frames: np.ndarray
    depth: np.ndarray
    ids: np.ndarray
    flow: np.ndarray
    object_masks: np.ndarray
    poses: np.ndarray
    edges: np.ndarray

    @property
    def caption(self) -> str:
        return self.scene.caption

    def visible_mask(self, k: int) -> np.ndarray:
        """``[F,H,W]`` bool: where object k is what the camera sees."""
        return self.ids == k + 1

    def figure_indices(self) -> list[int]:
        return [k for k, o in enumerate(self.scene.objects) if o.kind == FIGURE]


def sample_scene(seed: int, config: WorldConfig | None = None) -> Scene:
    """Draw a scene from ``seed``: background, camera pan, objects with speeds that keep them in view.
    With ``config.cell`` > 1 the scene is drawn on the grid of cells and scaled to pixels."""
    config = config or WorldConfig()
    config.check()
    c = config.cell
    rng = np.random.default_rng(seed)
    h, w, n = config.height // c, config.width // c, config.num_frames
    max_speed, max_pan = -(-config.max_speed // c), -(-config.max_pan // c)
    background = str(rng.choice(list(BACKGROUND_COLORS)))
    pattern = str(rng.choice(PATTERNS))
    period = int(rng.choice((12, 16))) // c  # 6–8 pixels per band: most of a token
    pan = tuple(int(v) for v in rng.integers(-max_pan, max_pan + 1, size=2))
    if pattern == "plain":
        pan = (0, 0)  # a pan over a plain colour is invisible: the caption must not claim one
    count = int(rng.integers(1, config.max_objects + 1))
    colors = list(rng.permutation(list(OBJECT_COLORS)))[:count]
    depths = np.sort(rng.uniform(2.0, 8.0, size=count))[::-1]  # far to near
    objects = []
    for k in range(count):
        kind = FIGURE if rng.random() < config.figure_probability else str(rng.choice(SHAPES))
        # Large objects (≥ 2 tokens of 8×8 pixels across): what a tiny model can localise.
        size = int(rng.integers(max(h, w) // 4, max(h, w) // 3 + 1)) if kind == FIGURE else \
            int(rng.integers(max(h, w) // 8, max(h, w) // 5 + 1))
        while True:  # a non-zero velocity whose path keeps the centre inside the frame
            vx, vy = (int(v) for v in rng.integers(-max_speed, max_speed + 1, size=2))
            if (vx or vy) and abs(vx) * (n - 1) < w - 2 * size and abs(vy) * (n - 1) < h - 2 * size:
                break
        x_lo, x_hi = max(size, -vx * (n - 1) + size), min(w - 1 - size, w - 1 - size - vx * (n - 1))
        y_lo, y_hi = max(size, -vy * (n - 1) + size), min(h - 1 - size, h - 1 - size - vy * (n - 1))
        x0 = int(rng.integers(x_lo, x_hi + 1)) if x_hi >= x_lo else w // 2
        y0 = int(rng.integers(y_lo, y_hi + 1)) if y_hi >= y_lo else h // 2
        arms = str(rng.choice(list(_ARM_VARIANTS))) if kind == FIGURE else "down"
        objects.append(SceneObject(kind, str(colors[k]), size * c, x0 * c, y0 * c, vx * c, vy * c,
                                   float(depths[k]), arms))
    return Scene(seed, config, background, pattern, period * c, (pan[0] * c, pan[1] * c), objects)


def _cell_grid(h: int, w: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(ys, xs)`` snapped to their cell's first pixel: every cell renders one sample."""
    ys, xs = np.mgrid[0:h, 0:w]
    return ys // cell * cell, xs // cell * cell


def render_scene(scene: Scene) -> Clip:
    """Rasterise a scene and its ground truth (see :class:`Clip`)."""
    cfg = scene.config
    h, w, n, k_count = cfg.height, cfg.width, cfg.num_frames, len(scene.objects)
    ys, xs = _cell_grid(h, w, cfg.cell)
    frames = np.empty((n, h, w, 3), np.float32)
    depth = np.full((n, h, w), BACKGROUND_DEPTH, np.float32)
    ids = np.zeros((n, h, w), np.int16)
    masks = np.zeros((k_count, n, h, w), bool)
    figures = [k for k, o in enumerate(scene.objects) if o.kind == FIGURE]
    poses = np.zeros((n, len(figures), 18, 3), np.float32)
    for t in range(n):
        frames[t] = scene.texture(xs + scene.pan[0] * t, ys + scene.pan[1] * t)
        for k, obj in enumerate(scene.objects):  # far to near: nearer objects paint over
            cover = obj.mask_at(xs, ys, t)
            masks[k, t] = cover
            frames[t][cover] = obj.rgb
            depth[t][cover] = obj.depth
            ids[t][cover] = k + 1
        for p, k in enumerate(figures):
            cx, cy = scene.objects[k].centre(t)
            pts = scene.objects[k].keypoint_offsets() + (cx, cy)
            inside = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
            poses[t, p] = np.concatenate([pts, inside[:, None]], axis=1)
    # Forward flow: velocity of the visible surface.
    velocity = np.zeros((k_count + 1, 2), np.float32)
    velocity[0] = (-scene.pan[0], -scene.pan[1])
    for k, obj in enumerate(scene.objects):
        velocity[k + 1] = (obj.vx, obj.vy)
    flow = velocity[ids[:-1].astype(np.int64)]
    c = cfg.cell  # silhouette edges between cells, whole cells thick (a scribble stroke the VAE keeps)
    cells = ids[:, ::c, ::c]
    edges = np.zeros_like(cells, dtype=bool)
    edges[:, 1:, :] |= cells[:, 1:, :] != cells[:, :-1, :]
    edges[:, :-1, :] |= cells[:, 1:, :] != cells[:, :-1, :]
    edges[:, :, 1:] |= cells[:, :, 1:] != cells[:, :, :-1]
    edges[:, :, :-1] |= cells[:, :, 1:] != cells[:, :, :-1]
    edges = edges.repeat(c, axis=1).repeat(c, axis=2)
    return Clip(scene, frames, depth, ids, flow, masks, poses, edges)


def make_clip(seed: int, config: WorldConfig | None = None) -> Clip:
    """The clip of ``seed``: :func:`sample_scene` then :func:`render_scene`."""
    return render_scene(sample_scene(seed, config))


def object_reference(clip: Clip, k: int) -> np.ndarray:
    """Object k as a reference image: its frame-0 appearance, unoccluded, cropped to its box, on white."""
    obj = clip.scene.objects[k]
    mask = clip.object_masks[k, 0]
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError(f"object {k} is not in frame 0")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.ones((y1 - y0, x1 - x0, 3), np.float32)
    crop[mask[y0:y1, x0:x1]] = obj.rgb
    pad = 2  # a white margin, like a product shot
    return np.pad(crop, ((pad, pad), (pad, pad), (0, 0)), constant_values=1.0)


def depth_to_video(depth: np.ndarray) -> torch.Tensor:
    """GT depth ``[F,H,W]`` → depth control video ``[F,H,W,3]`` 0..1, near = bright (as MiDaS/VACE)."""
    value = (FAR_DEPTH - np.clip(depth, NEAR_DEPTH, FAR_DEPTH)) / (FAR_DEPTH - NEAR_DEPTH)
    return torch.from_numpy(np.repeat(value[..., None], 3, axis=-1).astype(np.float32))


def edges_to_scribble(edges: np.ndarray) -> torch.Tensor:
    """GT edges ``[F,H,W]`` → scribble video: dark strokes on white (VACE's scribble polarity)."""
    value = 1.0 - edges.astype(np.float32)
    return torch.from_numpy(np.repeat(value[..., None], 3, axis=-1))


def flow_for_video(flow: np.ndarray) -> np.ndarray:
    """``F−1`` forward flows → ``F`` by VACE's padding (first rendering repeated): out[0]=flow(0→1),
    out[t]=flow(t−1→t)."""
    return np.concatenate([flow[:1], flow], axis=0)
