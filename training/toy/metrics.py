"""Measurements of generated toy videos against the toy world's ground truth.

Each generated video answers a held-out manifest row whose clip can be re-rendered exactly from its
seed (``meta.toy_seed``), so quality is measured against truth, not against another model:

- **Fréchet distance** (:func:`frechet_distance`) between Gaussian fits of :func:`video_features` of
  generated and real held-out videos. The feature encoder is fixed and hand-designed (no learning, no
  weights to download): 28 statistics of colour, sharpness (gradient magnitudes), motion (frame
  differences), background contrast and the saturated "object" pixels (coverage, centroid, spread,
  colour at the first and last frame) — few enough that the covariances of a few dozen videos are well
  conditioned, and sensitive to the failures a small generator has (blur, mean-colour collapse, frozen
  or flickering frames). Lower is better; the distance between two disjoint sets of real clips is
  the noise floor. Features are standardised by their spread over real clips (:func:`feature_scale`).
- **Object IoU** (:func:`object_iou`): pixels whose colour is nearer to an object colour of the palette
  than to either background colour of the scene are "object"; IoU with the true object pixels. For
  depth / pose / flow / scribble / layout controls this is condition adherence: the control fixes where
  the objects are. (A fixed distance from the background colours instead counted every background pixel
  a VAE left 0.12 off as "object": the toy VAE's own round trip of the truth scored 0.52, so the metric
  measured background noise more than placement.)
- **Colour-bound IoU** (:func:`colour_bound_iou`): the same per object, counting only the pixels in that
  object's own colour, averaged over the objects: whether each caption colour went to the object it
  names (object IoU scores a scene with its objects' colours swapped as 1).
- **Flow error** (:func:`flow_epe`): DIS optical flow of the generated video against the exact flow,
  mean end-point error in pixels over the true object pixels (motion adherence).
- **Kept-region PSNR** (:func:`kept_psnr`): for inpaint / outpaint, PSNR to the source inside the
  region the mask says to keep (mask fidelity).
- **Videos without an object** (:func:`lost_object`): the share of videos with a frame where (almost) no
  pixel is saturated — the object is gone. Every real clip's frames hold ≥ 3.5 % object pixels, and an
  empty first or last frame sits far outside the real clips' object statistics (an empty frame's spread
  is 0.5, real clips' 0.08 ± 0.02), so a few such videos dominate the Fréchet distance: this count says
  when they do.
- **Seed diversity** (:func:`seed_diversity`): mean pairwise RMS difference between videos of the same
  row generated with different seeds (0 = mode collapse).
- **Caption truth** (:func:`object_colour_name`, :func:`object_track`): the palette colour nearest to a
  generated video's object pixels, and their centroid per frame — what a caption of the grammar says
  about its object (colour, direction of motion) checked on the video.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

from .captions import BACKGROUND_COLORS, OBJECT_COLORS
from .components import psnr
from .world import Clip

FEATURE_DIM = 28
SATURATED = 0.3  # channel range above which a pixel is an object's: object colours are saturated, backgrounds not
# A frame with fewer object pixels than this has lost its object: 20 px at 64×64, where the emptiest frame of 400
# real clips holds 3.5 % (145 px).
EMPTY_FRAME_FRACTION = 0.005
OBJECT_COLOR_DISTANCE = 0.12  # RGB (0..1) radius around a named object colour (object_track's colour filter)


def _object_stats(sat: torch.Tensor, frame: torch.Tensor) -> list[torch.Tensor]:
    """Coverage, centroid and spread of the saturated ("object") pixels of one frame, and their mean colour."""
    h, w = sat.shape
    area = sat.float().mean()
    if not sat.any():
        return [area, *torch.full((4,), 0.5), *torch.zeros(3)]
    ys, xs = torch.nonzero(sat, as_tuple=True)
    pos = [xs.float().mean() / w, ys.float().mean() / h, xs.float().std(correction=0) / w, ys.float().std(correction=0) / h]
    return [area, *pos, *frame[sat].mean(0)]


def _raw_features(video: torch.Tensor) -> torch.Tensor:
    """``[F, H, W, 3]`` 0..1 → 28 hand-designed statistics of how a toy video looks and moves."""
    v = video.float().clamp(0, 1)
    n = v.shape[0]
    sat = _saturated(v)
    grey = v.mean(-1)
    gx, gy = grey[:, :, 1:] - grey[:, :, :-1], grey[:, 1:] - grey[:, :-1]
    grad = torch.cat([gx.abs().flatten(), gy.abs().flatten()])
    change = (v[1:] - v[:-1]).abs().mean(-1) if n > 1 else torch.zeros_like(grey)
    background = grey[~sat] if (~sat).any() else grey.flatten()
    feats = [*v.mean((0, 1, 2)), *v.std((0, 1, 2)),  # colour
             grad.mean(), (grad > 0.1).float().mean(), (grad > 0.3).float().mean(),  # sharpness / edges
             change.mean(), (change > 0.1).float().mean(),  # motion
             background.std(),  # background texture contrast
             *_object_stats(sat[0], v[0]), *_object_stats(sat[-1], v[-1])]  # objects at the start / end
    return torch.stack([torch.as_tensor(f, dtype=torch.float32) for f in feats])


def _saturated(video: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` → the pixels whose channels span more than :data:`SATURATED` (object colours; backgrounds
    are greys and browns)."""
    return (video.amax(-1) - video.amin(-1)) > SATURATED


def lost_object(video: torch.Tensor) -> bool:
    """Whether some frame of ``[F, H, W, 3]`` holds almost no object pixel (< :data:`EMPTY_FRAME_FRACTION`)."""
    share = _saturated(video.float().clamp(0, 1)).flatten(1).float().mean(1)
    return bool((share < EMPTY_FRAME_FRACTION).any())


def video_features(videos: list[torch.Tensor] | torch.Tensor) -> np.ndarray:
    """Features of the fixed toy encoder: ``[N, 28]`` float64 for N videos ``[F, H, W, 3]`` in 0..1."""
    return torch.stack([_raw_features(v) for v in videos]).double().numpy()


def feature_scale(reference: np.ndarray) -> np.ndarray:
    """Per-feature scale (std over real clips, + 1e-3): divide features by it before
    :func:`frechet_distance` so every statistic counts, not only those with large raw variance."""
    return reference.std(0) + 1e-3


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½) of Gaussians fitted to the rows of ``a`` and ``b``."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two [N≥2, D] feature sets of the same D, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())
    return max(value, 0.0)


def _colour_distances(video: torch.Tensor, colours) -> torch.Tensor:
    """``[len(colours), F, H, W]``: RGB distance of every pixel to each colour."""
    v = video.float()
    return torch.stack([torch.linalg.vector_norm(v - torch.tensor(c), dim=-1) for c in colours])


def _classify(video: torch.Tensor, background: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`object_mask` and, per pixel, the index of the nearest :data:`OBJECT_COLORS` entry."""
    to_object = _colour_distances(video, OBJECT_COLORS.values())
    nearest = to_object.min(0)
    return nearest.values < _colour_distances(video, BACKGROUND_COLORS[background]).amin(0), nearest.indices


def object_mask(video: torch.Tensor, background: str) -> torch.Tensor:
    """``[F, H, W]`` bool: pixels nearer (RGB) to one of the :data:`OBJECT_COLORS` than to both colours of
    the scene's background (``background`` = the colour name, e.g. ``"grey"``) — the nearest of the
    two known classes, so a background rendered a little off stays background and a blurred object edge
    counts on the side it is nearer to."""
    return _classify(video, background)[0]


def object_iou(video: torch.Tensor, clip: Clip, objects: list[int] | None = None) -> float:
    """IoU of :func:`object_mask` of ``video`` with the clip's true object pixels (``ids > 0``).

    ``objects`` (indices into the scene's objects) limits both sides to those objects: the true pixels
    of those objects, and the object pixels whose nearest palette colour is one of theirs (a scene's
    objects have distinct colours) — e.g. the stick figures a pose control places, not the shapes
    beside them that it says nothing about."""
    pred, nearest = _classify(video, clip.scene.background)
    truth = torch.from_numpy(clip.ids > 0)
    if objects is not None:
        names = list(OBJECT_COLORS)
        wanted = [names.index(clip.scene.objects[k].color) for k in objects]
        pred &= torch.isin(nearest, torch.tensor(wanted))
        truth = torch.from_numpy(np.isin(clip.ids, [k + 1 for k in objects]))
    union = (pred | truth).sum().item()
    return float((pred & truth).sum().item() / union) if union else 1.0


def colour_bound_iou(video: torch.Tensor, clip: Clip, objects: list[int] | None = None) -> float:
    """Mean over ``objects`` (default: every object of the scene) of :func:`object_iou` of that object alone:
    its true pixels against the object pixels in its own colour. :func:`object_iou` counts an object pixel
    of any colour, so a scene drawn in the right places with its two objects' colours swapped scores 1 there
    and 0 here — this is the measure of binding each caption colour to the object it names."""
    objects = list(range(len(clip.scene.objects))) if objects is None else objects
    if not objects:
        return 1.0
    return float(np.mean([object_iou(video, clip, [k]) for k in objects]))


def flow_epe(video: torch.Tensor, clip: Clip) -> float:
    """Mean end-point error (pixels) of DIS flow of ``video`` vs the exact flow, on true object pixels."""
    from vdot_nodes.core.preprocess.flow import optical_flow

    est = optical_flow(video.float().clamp(0, 1), method="dis", pad="last")[:-1]  # [F-1, H, W, 2]: t → t+1
    truth = torch.from_numpy(clip.flow)
    where = torch.from_numpy(clip.ids[:-1] > 0)
    if not where.any():
        return 0.0
    return float(torch.linalg.vector_norm(est - truth, dim=-1)[where].mean())


def kept_psnr(video: torch.Tensor, source: torch.Tensor, masks: torch.Tensor) -> float:
    """PSNR to ``source`` where the VCU mask is 0 (keep); ``masks`` ``[F, H, W]`` in 0..1."""
    return psnr(video, source, masks < 0.5)


def seed_diversity(videos: list[torch.Tensor]) -> float:
    """Mean pairwise RMS difference (0..1 pixels) between videos of one row from different seeds."""
    if len(videos) < 2:
        raise ValueError("diversity needs at least two videos of the same row")
    return float(np.mean([torch.sqrt(((a.float() - b.float()) ** 2).mean()).item()
                          for a, b in itertools.combinations(videos, 2)]))


def object_colour_name(video: torch.Tensor, background: str) -> str | None:
    """Name of the :data:`OBJECT_COLORS` entry nearest (RGB) to the mean of the video's object pixels
    (:func:`object_mask`); None if there are none."""
    mask = object_mask(video, background)
    if not mask.any():
        return None
    mean = video.float()[mask].mean(0)
    return min(OBJECT_COLORS, key=lambda name: float(torch.linalg.vector_norm(mean - torch.tensor(OBJECT_COLORS[name]))))


def object_track(video: torch.Tensor, background: str, color: str | None = None) -> torch.Tensor:
    """``[F, 2]`` (x, y) centroid per frame of the object pixels (of the pixels within
    :data:`OBJECT_COLOR_DISTANCE` of ``color`` when given), NaN where a frame has none."""
    v = video.float()
    mask = object_mask(v, background)
    if color is not None:
        mask &= torch.linalg.vector_norm(v - torch.tensor(OBJECT_COLORS[color]), dim=-1) < 2 * OBJECT_COLOR_DISTANCE
    ys, xs = torch.meshgrid(torch.arange(v.shape[1], dtype=torch.float32), torch.arange(v.shape[2], dtype=torch.float32),
                            indexing="ij")
    count = mask.sum((1, 2)).float()
    cx = (mask * xs).sum((1, 2)) / count
    cy = (mask * ys).sum((1, 2)) / count
    return torch.stack([cx, cy], dim=1)  # 0/0 = NaN where a frame has no object pixels
