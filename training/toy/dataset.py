"""Write toy-world clips, every task's inputs derived from ground truth, and a JSONL manifest.

Layout under ``out/``::

    manifest.jsonl                  one line per (clip, task): 20 tasks × N clips (format of
                                    training/data/manifest.py, read by the teacher and the trainer)
    clips/00000/video/              the clip, lossless PNG frames
    clips/00000/depth/ flow/ pose/ grey/ scribble/   control videos (PNG frames)
    clips/00000/mask/               inpaint mask: where the front object is visible (white = generate)
    clips/00000/ref_0.png ...       each object's frame-0 crop on white (reference images)
    clips/00000/truth.safetensors   exact ground truth: depth, flow, ids, poses, edges, object masks

Controls: depth from GT depth (near = bright), flow = ``flow_to_color`` of the exact GT flow padded as
VACE does, pose = ``draw_pose`` of the GT keypoints (the preprocess package's renderer when present,
else a minimal OpenPose-style renderer here), grey = the ``grey`` preprocessor, scribble = GT
silhouette edges as dark strokes on white. Outpaint / extension geometry is drawn when the VCU is
built (``sample_to_vcu``), so every epoch sees new masks. PNG frames, not mp4: yuv420p would smear
the 64×64 colours and the exact flow/depth colours.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vdot_nodes.core.atomic import atomic_save_safetensors, atomic_write_text
from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.preprocess import flow_to_color, grey
from vdot_nodes.core.tasks import TASKS
from vdot_nodes.core.video_io import write_frames, write_image

from .captions import FIGURE
from .world import (Clip, WorldConfig, depth_to_video, edges_to_scribble, flow_for_video, make_clip,
                    object_reference)

MANIFEST_NAME = "manifest.jsonl"

# OpenPose body limbs (keypoint index pairs) and their colours, as OpenPose / VACE's pose annotator draw them.
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
OPENPOSE_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                   (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                   (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))


def _fallback_draw_pose(poses: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Minimal OpenPose renderer: coloured limbs + joints on black. ``poses`` [F, P, 18, 3] (x, y, visible)."""
    import cv2

    out = np.zeros((poses.shape[0], height, width, 3), np.uint8)
    thickness = max(1, round(min(height, width) / 64))
    for t, people in enumerate(poses):
        canvas = out[t]
        for person in people:
            for i, (a, b) in enumerate(OPENPOSE_LIMBS):
                if person[a, 2] > 0 and person[b, 2] > 0:
                    pa = (int(round(person[a, 0])), int(round(person[a, 1])))
                    pb = (int(round(person[b, 0])), int(round(person[b, 1])))
                    cv2.line(canvas, pa, pb, OPENPOSE_COLORS[i], thickness)
            for j in range(18):
                if person[j, 2] > 0:
                    cv2.circle(canvas, (int(round(person[j, 0])), int(round(person[j, 1]))), thickness,
                               OPENPOSE_COLORS[j], -1)
    return torch.from_numpy(out.astype(np.float32) / 255.0)


def render_pose(poses: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Pose control video ``[F, H, W, 3]``: the preprocess package's ``draw_pose`` if it exists."""
    try:
        from vdot_nodes.core.preprocess.pose import draw_pose
    except ImportError:
        return _fallback_draw_pose(poses, height, width)
    frames = [draw_pose([{"body": person} for person in people], height, width) for people in poses]
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)


def _cell_pose(poses: np.ndarray, height: int, width: int, cell: int) -> torch.Tensor:
    """:func:`render_pose` made flat per world cell: each cell shows its first pixel, as the frames do. (Drawing
    on the coarse grid instead and enlarging it doubles the renderer's joint discs and limb widths: toy9's pose
    controls were blobs, lit pixels overlapping the full-size drawing's at IoU 0.55 against 0.9 this way.)"""
    video = render_pose(poses, height, width).float()
    if cell == 1:
        return video
    return video[:, ::cell, ::cell].repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)


CONTROL_KINDS = ("depth", "flow", "pose", "grey", "scribble")


def control_video(clip: Clip, kind: str) -> torch.Tensor:
    """One control video of a clip (``kind`` one of :data:`CONTROL_KINDS`), ``[F, H, W, 3]`` float32 0..1."""
    cfg = clip.scene.config
    if kind == "depth":
        return depth_to_video(clip.depth)
    if kind == "flow":
        return flow_to_color(flow_for_video(clip.flow))
    if kind == "pose":
        return _cell_pose(clip.poses, cfg.height, cfg.width, cfg.cell)
    if kind == "grey":
        return grey(torch.from_numpy(clip.frames))
    if kind == "scribble":
        return edges_to_scribble(clip.edges)
    raise ValueError(f"unknown control kind {kind!r}; the toy world renders {', '.join(CONTROL_KINDS)}")


def clip_controls(clip: Clip) -> dict[str, torch.Tensor]:
    """The five control videos of a clip (:data:`CONTROL_KINDS`), each ``[F, H, W, 3]`` float32 0..1."""
    return {kind: control_video(clip, kind) for kind in CONTROL_KINDS}


def task_row(task: str, clip_dir: str, caption: str, num_refs: int, meta: dict) -> dict:
    """One manifest line for ``task`` over a clip's files (paths relative to the manifest)."""
    spec = TASKS[task]
    row: dict = {"task": task, "caption": caption, "video": f"{clip_dir}/video"}
    if spec.control_kind is not None:
        row["control"] = f"{clip_dir}/{spec.control_kind}"
    if "references" in spec.required:
        row["references"] = [f"{clip_dir}/ref_{k}.png" for k in range(num_refs)]
    if task == "inpaint":
        row["mask"] = f"{clip_dir}/mask"
    row["meta"] = meta
    return row


def write_clip(clip: Clip, root: Path, index: int, tasks=None) -> list[dict]:
    """Write one clip's files under ``root/clips/<index>``; return its manifest rows (``tasks``, default all)."""
    rel = f"clips/{index:05d}"
    folder = root / rel
    if folder.exists():
        raise VDOTInputError(str(folder), "already exists", "write the dataset into a new, empty folder")
    folder.mkdir(parents=True)
    write_frames(torch.from_numpy(clip.frames), folder / "video")
    for kind, video in clip_controls(clip).items():
        write_frames(video, folder / kind)
    front = len(clip.scene.objects) - 1  # nearest object: always fully visible, a fair inpaint target
    mask = clip.visible_mask(front).astype(np.float32)
    write_frames(torch.from_numpy(np.repeat(mask[..., None], 3, axis=-1)), folder / "mask")
    for k in range(len(clip.scene.objects)):
        write_image(torch.from_numpy(object_reference(clip, k)), folder / f"ref_{k}.png")
    truth = {
        "depth": torch.from_numpy(clip.depth), "flow": torch.from_numpy(clip.flow),
        "ids": torch.from_numpy(clip.ids.astype(np.int32)), "poses": torch.from_numpy(clip.poses),
        "edges": torch.from_numpy(clip.edges.astype(np.uint8)),
        "object_masks": torch.from_numpy(clip.object_masks.astype(np.uint8)),
    }
    atomic_save_safetensors(truth, folder / "truth.safetensors", {"caption": clip.caption, "seed": str(clip.scene.seed)},
                            overwrite=True)
    scene = clip.scene
    meta = {"toy_seed": scene.seed, "clip": index,
            "objects": [{"kind": o.kind, "color": o.color, "velocity": [o.vx, o.vy], "depth": round(o.depth, 3)}
                        for o in scene.objects],
            "background": f"{scene.background} {scene.pattern}", "pan": list(scene.pan)}
    return [task_row(task, rel, clip.caption, len(scene.objects), meta) for task in (tasks or TASKS)
            if task_applies(task, meta)]


def task_applies(task: str, meta: dict) -> bool:
    """Whether a clip (its manifest ``meta``) can pose ``task``: a control must show an object, or the row
    asks for one where the control shows nothing (no row is written, and the report measures none).

    A pose control shows stick figures only. A flow control shows an object only where it moves
    differently from the background (whose flow is −pan): when every object moves with the background
    the flow field is one colour over the whole frame (4 % of the recipe's clips; 2 of the first 16
    held-out ones, where every model left the first one's video without an object). With a first frame
    the object is given and such a flow says where it goes: that row stays."""
    spec = TASKS[task]
    if spec.control_kind == "pose":
        return any(o["kind"] == FIGURE for o in meta["objects"])
    # worlds written before the pan was recorded keep their rows
    if spec.control_kind == "flow" and not spec.needs_first_frame and meta.get("pan") is not None:
        background_flow = [-p for p in meta["pan"]]  # pan and velocities are recorded together, in pixels per frame
        return any(o["velocity"] != background_flow for o in meta["objects"])
    return True


def write_toy_dataset(
    out: str | os.PathLike,
    num_clips: int,
    *,
    seed: int = 0,
    config: WorldConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    tasks=None,
) -> Path:
    """Render ``num_clips`` clips (seeds ``seed .. seed+N-1``) into ``out`` and write the manifest
    (one row per clip and task of ``tasks``, default every task).

    ``out`` must be new or empty (nothing is overwritten). The manifest is written last, atomically, so
    a half-written dataset has none. Returns the manifest path.
    """
    from vdot_nodes.core.errors import VDOTCancelled

    out = Path(out)
    if num_clips < 1:
        raise VDOTInputError("num_clips", f"must be at least 1, got {num_clips}", "ask for e.g. 64 clips")
    if out.exists() and any(out.iterdir()):
        raise VDOTInputError(str(out), "folder is not empty", "give a new folder for the toy dataset")
    out.mkdir(parents=True, exist_ok=True)
    config = config or WorldConfig()
    unknown = sorted(set(tasks or ()) - set(TASKS))
    if unknown:
        raise VDOTInputError("tasks", f"unknown task(s) {unknown}", f"use names from {', '.join(TASKS)}")
    rows: list[dict] = []
    for i in range(num_clips):
        if cancel is not None and cancel():
            raise VDOTCancelled("toy dataset cancelled")
        rows += write_clip(make_clip(seed + i, config), out, i, tasks)
        if progress is not None:
            progress(i + 1, num_clips)
    manifest = out / MANIFEST_NAME
    atomic_write_text(manifest, "".join(json.dumps(row) + "\n" for row in rows), overwrite=True)
    return manifest


def time_clip_generation(count: int = 20, config: WorldConfig | None = None) -> float:
    """Seconds per clip for render + ground truth (no file I/O)."""
    start = time.perf_counter()
    for s in range(count):
        make_clip(s, config)
    return (time.perf_counter() - start) / count
