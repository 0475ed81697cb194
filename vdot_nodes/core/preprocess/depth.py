"""Depth control videos with Depth Anything V2 (transformers ``DepthAnythingForDepthEstimation``).

The weight file is the ``model.safetensors`` of the ``depth-anything/Depth-Anything-V2-{Small,Base,Large}-hf``
repos (any name; see :mod:`.weights`). Its config is built offline from the tensor shapes — DINOv2 width and
depth, neck and fusion widths — using the V2 conversion's backbone taps (``out_indices`` 3/6/9/12 for the
12-layer Small/Base, 5/12/18/24 for the 24-layer Large), so no ``config.json`` or hub access is needed.

Inference follows Depth Anything V2's ``infer_image``: resize keeping the aspect ratio so the shorter side
is 518 (``input_size``) and both sides are multiples of 14, ImageNet normalisation, bilinear resize of the
predicted relative inverse depth back to the frame. Rendered like VACE's depth annotator: min-max
normalised to 0..1 (per frame by default, or over the whole video) so near is bright, on 3 channels.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..errors import VDOTInputError
from .video_ops import DEFAULT_BATCH_SIZE, CancelFn, ProgressFn, batch_ranges, check_cancel, check_video
from .weights import find_weights, load_safetensors

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
V2_OUT_INDICES = {12: [3, 6, 9, 12], 24: [5, 12, 18, 24]}
DEPTH_NORMALIZE = ("frame", "video")
HEAD_DIM = 64  # DINOv2 S/B/L/g all use 64-wide attention heads


def depth_anything_config(state: dict):
    """A ``DepthAnythingConfig`` matching the tensor shapes of a Depth Anything (V2) state dict."""
    from transformers import DepthAnythingConfig, Dinov2Config

    try:
        patch = state["backbone.embeddings.patch_embeddings.projection.weight"]
        hidden, patch_size = int(patch.shape[0]), int(patch.shape[-1])
        positions = int(state["backbone.embeddings.position_embeddings"].shape[1]) - 1
        layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("backbone.encoder.layer."))
        neck = [int(state[f"neck.reassemble_stage.layers.{i}.projection.weight"].shape[0]) for i in range(4)]
        fusion = int(state["neck.convs.0.weight"].shape[0])
        head_hidden = int(state["head.conv2.weight"].shape[0])
    except (KeyError, ValueError, IndexError) as exc:
        raise VDOTInputError("weights", f"is not a Depth Anything (transformers) state dict (missing {exc})",
                             "use model.safetensors from depth-anything/Depth-Anything-V2-*-hf") from None
    out_indices = V2_OUT_INDICES.get(layers, [round(layers * (i + 1) / 4) for i in range(4)])
    backbone = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=max(1, hidden // HEAD_DIM), patch_size=patch_size,
                            image_size=int(round(math.sqrt(positions))) * patch_size, out_indices=out_indices,
                            apply_layernorm=True, reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, patch_size=patch_size, reassemble_hidden_size=hidden,
                               neck_hidden_sizes=neck, fusion_hidden_size=fusion, head_hidden_size=head_hidden,
                               depth_estimation_type="relative")


# The published -hf checkpoints use transformers 4.x DINOv2 names; transformers 5 renamed the attention
# projections (and renames on ``from_pretrained`` only). Both spellings load: a key the model lacks is
# tried with each (old, new) pair in either direction.
DINOV2_RENAMES = (("attention.attention.query.", "attention.q_proj."), ("attention.attention.key.", "attention.k_proj."),
                  ("attention.attention.value.", "attention.v_proj."), ("attention.output.dense.", "attention.o_proj."))


def match_key_names(state: dict, expected: set[str]) -> dict:
    """``state`` with DINOv2 attention keys renamed to the spelling in ``expected`` where needed."""
    out = {}
    for key, value in state.items():
        if key not in expected:
            for old, new in DINOV2_RENAMES:
                for a, b in ((old, new), (new, old)):
                    if a in key and key.replace(a, b) in expected:
                        key = key.replace(a, b)
                        break
        out[key] = value
    return out


def depth_anything_from_state_dict(state: dict, device="cpu", dtype=torch.float32):
    """Build ``DepthAnythingForDepthEstimation`` for ``state`` and load it strictly (no hub, no config file)."""
    from transformers import DepthAnythingForDepthEstimation

    config = depth_anything_config(state)
    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(config)
    state = match_key_names(state, set(model.state_dict()))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise VDOTInputError("weights", f"does not match the Depth Anything architecture ({str(exc)[:300]})",
                             "use model.safetensors from depth-anything/Depth-Anything-V2-*-hf") from None
    return model.to(device=device, dtype=dtype).eval()


@lru_cache(maxsize=2)
def _load(path: str, device: str, dtype: torch.dtype, _mtime: int = 0):  # mtime: a replaced file reloads
    return depth_anything_from_state_dict(load_safetensors(path), device, dtype)


def network_size(height: int, width: int, input_size: int, multiple: int = 14) -> tuple[int, int]:
    """Depth Anything V2's resize: keep the aspect ratio, shorter side ≥ ``input_size``, multiples of 14."""
    scale = max(input_size / height, input_size / width)

    def snap(x: float) -> int:
        y = round(x / multiple) * multiple
        return int(y if y >= input_size else math.ceil(x / multiple) * multiple)  # never below input_size

    return snap(height * scale), snap(width * scale)


@torch.no_grad()
def predict_depth(model, frames: torch.Tensor, input_size: int = 518) -> torch.Tensor:
    """``[B, H, W, 3]`` RGB 0..1 → relative inverse depth ``[B, H, W]`` (larger = nearer), float32."""
    param = next(model.parameters())
    h, w = frames.shape[1:3]
    x = frames.to(param.device, torch.float32).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=network_size(h, w, input_size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    depth = model(pixel_values=((x - mean) / std).to(param.dtype)).predicted_depth
    return F.interpolate(depth[:, None].float(), size=(h, w), mode="bilinear", align_corners=True)[:, 0].cpu()


def _normalise(depth: torch.Tensor, dims) -> torch.Tensor:
    lo, hi = depth.amin(dim=dims, keepdim=True), depth.amax(dim=dims, keepdim=True)
    return ((depth - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


def depth_video(video: torch.Tensor, *, weights: str | None = None, normalize: str = "frame",
                input_size: int = 518, batch_size: int = DEFAULT_BATCH_SIZE,
                progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> torch.Tensor:
    """Depth Anything V2 depth for every frame, near = bright, 3 channels (as VACE's depth annotator).

    ``normalize``: ``frame`` (VACE: min-max per frame) or ``video`` (one min-max for the whole clip —
    steadier brightness when the scene's depth range changes).
    """
    if normalize not in DEPTH_NORMALIZE:
        raise VDOTInputError("normalize", f"unknown normalisation {normalize!r}", f"use one of {', '.join(DEPTH_NORMALIZE)}")
    if int(input_size) != input_size or input_size < 14:
        raise VDOTInputError("input_size", f"must be an integer ≥ 14, got {input_size}", "use 518 (the model's training size)")
    video = check_video(video)
    cuda = torch.cuda.is_available()
    path = find_weights("depth_anything_v2", weights)
    model = _load(str(path), "cuda" if cuda else "cpu", torch.float16 if cuda else torch.float32, path.stat().st_mtime_ns)
    total = video.shape[0]
    depth = torch.empty(video.shape[:3], dtype=torch.float32)
    for start, stop in batch_ranges(total, batch_size):
        check_cancel(cancel)
        depth[start:stop] = predict_depth(model, video[start:stop], int(input_size))
        if progress is not None:
            progress(stop, total)
    depth = _normalise(depth, (1, 2) if normalize == "frame" else (0, 1, 2))
    return depth.unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()


__all__ = ["DEPTH_NORMALIZE", "depth_anything_config", "depth_anything_from_state_dict", "depth_video",
           "network_size", "predict_depth"]
