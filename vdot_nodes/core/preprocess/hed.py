"""Learned scribble: HED soft edges with lllyasviel's ``ControlNetHED_Apache2`` network.

The architecture (and so the state-dict keys ``norm``, ``block{1..5}.convs.{i}.{weight,bias}``,
``block{1..5}.projection.{weight,bias}``) follows ``ControlNetHED_Apache2`` from lllyasviel's
ControlNet annotators / controlnet_aux (Apache License 2.0), so the public ``ControlNetHED.pth`` loads
after a one-line safetensors conversion (see :mod:`.weights`; we never unpickle). The network takes RGB
0..255; the edge map is ``sigmoid(mean_k upsample(projection_k))`` over its five side outputs.

Rendered with the same polarity as the weight-free scribbles: dark strokes on white (VACE's
scribble annotator) by default, ``background="black"`` for white edges on black (ControlNet's HED).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VDOTInputError
from .scribble import SCRIBBLE_BACKGROUNDS, _check_background
from .video_ops import DEFAULT_BATCH_SIZE, CancelFn, ProgressFn, batch_ranges, check_cancel, check_video
from .weights import find_weights, load_safetensors


class DoubleConvBlock(nn.Module):
    """``layer_number`` 3×3 conv+ReLU layers (after an optional 2×2 max-pool) and a 1×1 side projection."""

    def __init__(self, input_channel: int, output_channel: int, layer_number: int):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(input_channel if i == 0 else output_channel, output_channel, 3, padding=1)
                                     for i in range(layer_number)])
        self.projection = nn.Conv2d(output_channel, 1, 1)

    def forward(self, x: torch.Tensor, down_sampling: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.max_pool2d(x, 2, 2) if down_sampling else x
        for conv in self.convs:
            h = F.relu(conv(h))
        return h, self.projection(h)


class ControlNetHED(nn.Module):
    """``ControlNetHED_Apache2``: a VGG-like trunk with five side outputs (1, 1/2, ..., 1/16 resolution)."""

    def __init__(self, widths=(64, 128, 256, 512, 512), layers=(2, 2, 3, 3, 3)):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))  # learned input mean, subtracted from RGB 0..255
        ins = (3,) + tuple(widths[:-1])
        for i, (cin, cout, n) in enumerate(zip(ins, widths, layers)):
            setattr(self, f"block{i + 1}", DoubleConvBlock(cin, cout, n))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x - self.norm
        sides = []
        for i in range(5):
            h, side = getattr(self, f"block{i + 1}")(h, down_sampling=i > 0)
            sides.append(side)
        return sides

    def edges(self, rgb255: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` RGB 0..255 → edge probability ``[B, H, W]`` in 0..1."""
        size = rgb255.shape[-2:]
        sides = [F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in self(rgb255)]
        return torch.sigmoid(torch.cat(sides, 1).mean(1))


def hed_from_state_dict(state: dict) -> ControlNetHED:
    """Build the network with the widths found in ``state`` (full size: 64..512) and load it strictly."""
    try:
        widths = tuple(int(state[f"block{i}.projection.weight"].shape[1]) for i in range(1, 6))
        layers = tuple(len({k.split(".")[2] for k in state if k.startswith(f"block{i}.convs.")}) for i in range(1, 6))
        model = ControlNetHED(widths, layers)
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise VDOTInputError("weights", f"is not a ControlNetHED_Apache2 state dict ({str(exc)[:200]})",
                             "use ControlNetHED.pth from lllyasviel/Annotators converted to safetensors") from None
    return model.eval()


@lru_cache(maxsize=2)
def _load(path: str, device: str, _mtime: int = 0) -> ControlNetHED:  # mtime: a replaced file reloads
    return hed_from_state_dict(load_safetensors(path)).to(device)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@torch.no_grad()
def scribble_hed(video: torch.Tensor, *, weights: str | None = None, background: str = "white",
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None) -> torch.Tensor:
    """HED soft-edge scribble for every frame (same F/H/W); strokes dark on white unless ``background='black'``."""
    _check_background(background)
    video = check_video(video)
    device = _device()
    path = find_weights("hed", weights)
    model = _load(str(path), device, path.stat().st_mtime_ns)
    total = video.shape[0]
    out = torch.empty_like(video)
    for start, stop in batch_ranges(total, batch_size):
        check_cancel(cancel)
        rgb = video[start:stop].to(device).permute(0, 3, 1, 2)
        # ControlNet feeds uint8 values: quantise the same way so results match the annotator's
        edge = model.edges(torch.round(rgb.clamp(0, 1) * 255.0)).float().cpu()
        edge = 1.0 - edge if background == SCRIBBLE_BACKGROUNDS[0] else edge
        out[start:stop] = edge.unsqueeze(-1).expand(-1, -1, -1, 3)
        if progress is not None:
            progress(stop, total)
    return out


__all__ = ["ControlNetHED", "DoubleConvBlock", "hed_from_state_dict", "scribble_hed"]
