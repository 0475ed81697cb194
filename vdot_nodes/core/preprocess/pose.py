"""Pose control videos: DWPose (YOLOX person detector + DWPose whole-body SimCC model, both ONNX)
and the OpenPose-style skeleton renderer VACE's pose annotator uses.

* :func:`draw_pose` — pure numpy/OpenCV renderer. A pose is ``{"body": [18, 3], "hands": [[21, 3], ...],
  "face": [68, 3] or None}`` with ``(x, y, confidence)`` in pixels. Body limbs are ellipses in the
  standard OpenPose colours dimmed to 60 % (as controlnet_aux/DWPose ``draw_bodypose``), joints full-colour
  discs of radius 4; hand bones are 2-px lines coloured round the HSV wheel with red joints; face points
  are white dots. Points with confidence below ``threshold`` or outside the canvas are skipped.
* :func:`dwpose_keypoints` — one RGB frame → list of poses (the DWPose pipeline of controlnet_aux:
  letterboxed 640² YOLOX, top-down affine crop 288×384 per person, SimCC arg-max decoding, COCO-WholeBody
  133 points → OpenPose 18 body + 68 face + 2×21 hands).
* :func:`pose_video` — the registered ``pose`` preprocessor.

ONNX Runtime is optional and imported lazily (``pip install onnxruntime``).
"""

from __future__ import annotations

import colorsys
import math
from functools import lru_cache

import numpy as np
import torch

from ..errors import VDOTInputError
from .video_ops import DEFAULT_BATCH_SIZE, CancelFn, ProgressFn, cv2, map_frames
from .weights import find_weights

# OpenPose body: 18 keypoints (nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist,
# r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear); limbs as 0-based pairs.
BODY_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
              (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
BODY_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
               (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
               (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_DIM = 0.6  # limbs are drawn, then the whole canvas is scaled by 0.6 before joints go on top
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
HAND_COLORS = tuple(tuple(int(c * 255) for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
                    for i in range(len(HAND_EDGES)))
STICK_WIDTH = 4


def _visible(point, threshold: float, height: int, width: int) -> bool:
    x, y, conf = float(point[0]), float(point[1]), float(point[2])
    return conf >= threshold and 0 <= x < width and 0 <= y < height and math.isfinite(x + y)


def _check_points(array, shape: int, name: str) -> np.ndarray:
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 2 or arr.shape != (shape, 3):
        raise VDOTInputError(name, f"expected an array [{shape}, 3] of (x, y, confidence), got shape {arr.shape}",
                             "give pixel coordinates and a confidence per keypoint")
    return arr


def draw_pose(poses, height: int, width: int, threshold: float = 0.3) -> np.ndarray:
    """Render ``poses`` (list of pose dicts, see module doc) on a black uint8 ``[height, width, 3]`` RGB canvas."""
    if isinstance(poses, dict):
        poses = [poses]
    cv = cv2()
    canvas = np.zeros((int(height), int(width), 3), dtype=np.uint8)
    bodies = [_check_points(p["body"], 18, "body") for p in poses if p.get("body") is not None]
    for i, (a, b) in enumerate(BODY_LIMBS):
        for body in bodies:
            if not (_visible(body[a], threshold, height, width) and _visible(body[b], threshold, height, width)):
                continue
            (x0, y0), (x1, y1) = body[a, :2], body[b, :2]
            length = math.hypot(x0 - x1, y0 - y1)
            angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
            polygon = cv.ellipse2Poly((int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), STICK_WIDTH),
                                      int(angle), 0, 360, 1)
            cv.fillConvexPoly(canvas, polygon, BODY_COLORS[i])
    canvas = (canvas * LIMB_DIM).astype(np.uint8)
    for body in bodies:
        for i in range(18):
            if _visible(body[i], threshold, height, width):
                cv.circle(canvas, (int(body[i, 0]), int(body[i, 1])), 4, BODY_COLORS[i], thickness=-1)
    for pose in poses:
        for hand in pose.get("hands") or []:
            hand = _check_points(hand, 21, "hands")
            for i, (a, b) in enumerate(HAND_EDGES):
                if _visible(hand[a], threshold, height, width) and _visible(hand[b], threshold, height, width):
                    cv.line(canvas, (int(hand[a, 0]), int(hand[a, 1])), (int(hand[b, 0]), int(hand[b, 1])),
                            HAND_COLORS[i], thickness=2)
            for point in hand:
                if _visible(point, threshold, height, width):
                    cv.circle(canvas, (int(point[0]), int(point[1])), 4, (255, 0, 0), thickness=-1)
        if pose.get("face") is not None:
            for point in _check_points(pose["face"], 68, "face"):
                if _visible(point, threshold, height, width):
                    cv.circle(canvas, (int(point[0]), int(point[1])), 3, (255, 255, 255), thickness=-1)
    return canvas


# ---------------------------------------------------------------------------------------------- DWPose (ONNX)
DET_SIZE = (640, 640)  # YOLOX input (h, w)
POSE_SIZE = (288, 384)  # DWPose dw-ll_ucoco_384 input (w, h)
POSE_MEAN = np.array([123.675, 116.28, 103.53])
POSE_STD = np.array([58.395, 57.12, 57.375])
SIMCC_SPLIT = 2.0
# COCO-WholeBody (with a neck inserted at 17) → OpenPose body order.
_MMPOSE_IDX = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]
_OPENPOSE_IDX = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]


def yolox_decode(raw: np.ndarray, size=DET_SIZE, strides=(8, 16, 32)) -> np.ndarray:
    """YOLOX head output ``[N, 5 + classes]`` (grid offsets, log sizes) → centre/size boxes in input pixels."""
    grids, expanded = [], []
    for stride in strides:
        h, w = size[0] // stride, size[1] // stride
        xv, yv = np.meshgrid(np.arange(w), np.arange(h))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        expanded.append(np.full((h * w, 1), stride))
    grid, stride = np.concatenate(grids), np.concatenate(expanded)
    out = raw.astype(np.float64).copy()
    out[:, :2] = (out[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(out[:, 2:4]) * stride
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression of xyxy ``boxes``; indices kept, best first."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x1[i], x1[order[1:]]) - np.maximum(x0[i], x0[order[1:]]))
        h = np.maximum(0.0, np.minimum(y1[i], y1[order[1:]]) - np.maximum(y0[i], y0[order[1:]]))
        inter = w * h
        overlap = inter / (areas[i] + areas[order[1:]] - inter + 1e-12)
        order = order[1:][overlap <= iou]
    return keep


def detect_people(session, bgr: np.ndarray, score: float = 0.3, iou: float = 0.45) -> np.ndarray:
    """Person boxes ``[K, 4]`` xyxy in frame pixels from the YOLOX ONNX ``session``."""
    cv = cv2()
    r = min(DET_SIZE[0] / bgr.shape[0], DET_SIZE[1] / bgr.shape[1])
    padded = np.full((*DET_SIZE, 3), 114, dtype=np.uint8)  # YOLOX letterbox: grey padding bottom/right
    h, w = int(bgr.shape[0] * r), int(bgr.shape[1] * r)
    padded[:h, :w] = cv.resize(bgr, (w, h), interpolation=cv.INTER_LINEAR)
    blob = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
    raw = session.run(None, {session.get_inputs()[0].name: blob})[0][0]
    pred = yolox_decode(raw)
    boxes = np.stack([pred[:, 0] - pred[:, 2] / 2, pred[:, 1] - pred[:, 3] / 2,
                      pred[:, 0] + pred[:, 2] / 2, pred[:, 1] + pred[:, 3] / 2], 1) / r
    person = pred[:, 4] * pred[:, 5]  # objectness × class-0 (person) probability
    cand = np.nonzero(person > 0.1)[0]
    kept = [cand[i] for i in nms(boxes[cand], person[cand], iou)] if cand.size else []
    kept = [i for i in kept if person[i] > score]
    return boxes[kept] if kept else np.zeros((0, 4))


def crop_transform(box: np.ndarray, size=POSE_SIZE, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-down crop of ``box`` grown by ``padding`` to the model's aspect ratio → (2×3 affine, centre, scale)."""
    x0, y0, x1, y1 = box
    center = np.array([x0 + x1, y0 + y1]) * 0.5
    bw, bh = (x1 - x0) * padding, (y1 - y0) * padding
    aspect = size[0] / size[1]
    scale = np.array([bw, bw / aspect]) if bw > bh * aspect else np.array([bh * aspect, bh])
    s = size[0] / scale[0]
    warp = np.array([[s, 0.0, size[0] / 2 - center[0] * s], [0.0, s, size[1] / 2 - center[1] * s]])
    return warp, center, scale


def simcc_decode(simcc_x: np.ndarray, simcc_y: np.ndarray, split: float = SIMCC_SPLIT) -> tuple[np.ndarray, np.ndarray]:
    """SimCC ``[K, Wx]``, ``[K, Wy]`` → keypoints ``[K, 2]`` in crop pixels and scores (min of the two maxima)."""
    locs = np.stack([simcc_x.argmax(1), simcc_y.argmax(1)], -1).astype(np.float64) / split
    scores = np.minimum(simcc_x.max(1), simcc_y.max(1))
    locs[scores <= 0] = -1
    return locs, scores


def wholebody_to_openpose(keypoints: np.ndarray, scores: np.ndarray, threshold: float = 0.3) -> dict:
    """COCO-WholeBody 133 keypoints (pixels) + scores → an OpenPose pose dict (body 18, face 68, 2 hands)."""
    info = np.concatenate([keypoints, scores[:, None]], 1)
    neck = info[[5, 6]].mean(0)
    neck[2] = float(info[5, 2] > threshold and info[6, 2] > threshold)  # DWPose: neck seen iff both shoulders
    info = np.insert(info, 17, neck, axis=0)
    info[_OPENPOSE_IDX] = info[_MMPOSE_IDX]
    return {"body": info[:18], "face": info[24:92], "hands": [info[92:113], info[113:134]]}


def estimate_poses(session, bgr: np.ndarray, boxes: np.ndarray, threshold: float = 0.3) -> list[dict]:
    """Run the DWPose ONNX ``session`` on each person box of ``bgr`` (whole frame if none)."""
    cv = cv2()
    if len(boxes) == 0:
        boxes = np.array([[0, 0, bgr.shape[1], bgr.shape[0]]], dtype=np.float64)
    poses = []
    for box in boxes:
        warp, center, scale = crop_transform(box)
        crop = cv.warpAffine(bgr, warp, POSE_SIZE, flags=cv.INTER_LINEAR)
        blob = ((crop - POSE_MEAN) / POSE_STD).transpose(2, 0, 1)[None].astype(np.float32)
        simcc_x, simcc_y = session.run(None, {session.get_inputs()[0].name: blob})[:2]
        locs, scores = simcc_decode(simcc_x[0], simcc_y[0])
        points = locs / np.array(POSE_SIZE) * scale + center - scale / 2
        poses.append(wholebody_to_openpose(points, scores, threshold))
    return poses


def _onnxruntime():
    try:
        import onnxruntime
    except Exception as exc:
        raise VDOTInputError("onnxruntime", f"ONNX Runtime is needed for DWPose but could not be imported ({exc})",
                             "pip install onnxruntime (CPU) or onnxruntime-gpu, or pip install '.[annotators]'") from None
    return onnxruntime


@lru_cache(maxsize=4)
def _session(path: str):
    ort = _onnxruntime()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(path, providers=providers)
    except Exception as exc:
        raise VDOTInputError("weights", f"{path} is not a usable ONNX model ({exc})", "re-download it") from None


def dwpose_keypoints(rgb: np.ndarray, det_session, pose_session, threshold: float = 0.3) -> list[dict]:
    """One uint8 RGB frame → OpenPose pose dicts, pixel coordinates (models take BGR, as VACE feeds them)."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    return estimate_poses(pose_session, bgr, detect_people(det_session, bgr), threshold)


def pose_video(video: torch.Tensor, *, weights: str | None = None, detector: str | None = None,
               threshold: float = 0.3, body: bool = True, hands: bool = True, face: bool = True,
               batch_size: int = DEFAULT_BATCH_SIZE, progress: ProgressFn | None = None,
               cancel: CancelFn | None = None) -> torch.Tensor:
    """DWPose skeletons (OpenPose colours on black) for every frame, as VACE's pose annotator.

    ``weights``: ``dw-ll_ucoco_384.onnx`` or its folder; ``detector``: ``yolox_l.onnx`` (default: next to it
    / the annotator folders). ``body``/``hands``/``face`` choose what is drawn.
    """
    pose_path = find_weights("dwpose_pose", weights)
    det_path = find_weights("dwpose_det", detector if detector is not None else pose_path.parent, "detector")
    det, pose = _session(str(det_path)), _session(str(pose_path))

    def one(frame: np.ndarray) -> np.ndarray:
        poses = dwpose_keypoints(frame, det, pose, threshold)
        poses = [{"body": p["body"] if body else None, "hands": p["hands"] if hands else [],
                  "face": p["face"] if face else None} for p in poses]
        return draw_pose(poses, frame.shape[0], frame.shape[1], threshold)

    return map_frames(video, one, batch_size=batch_size, progress=progress, cancel=cancel)


__all__ = ["BODY_COLORS", "BODY_LIMBS", "HAND_COLORS", "HAND_EDGES", "crop_transform", "draw_pose",
           "dwpose_keypoints", "nms", "pose_video", "simcc_decode", "wholebody_to_openpose", "yolox_decode"]
