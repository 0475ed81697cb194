"""RAFT optical flow (Teed & Deng 2020) with torchvision's module layout, without torchvision.

Our own implementation whose parameter names match ``torchvision.models.optical_flow.raft_large`` /
``raft_small`` exactly (``feature_encoder.convnormrelu.0.weight``, ``update_block.recurrent_block.convgru1.convz.weight``,
``mask_predictor.conv.weight``, ...), so their weights load after a safetensors conversion that the user runs
once with torchvision installed (see :mod:`.weights`). torchvision itself is never imported.

The forward pass is RAFT's: 1/8-resolution features of both frames, an all-pairs correlation pyramid
(4 levels) looked up in a (2r+1)² window round the current match, a ConvGRU that refines the flow
``num_flow_updates`` times, and convex (large) or bilinear (small) ×8 upsampling. Input frames are
mapped to [-1, 1] and padded to multiples of 8 (replicate); the flow is cropped back. Colourised with
the Middlebury wheel of :func:`.flow.flow_to_color`, as VACE's RAFT flow annotator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VDOTInputError
from .flow import FLOW_PADS, flow_to_color_uint8
from .video_ops import DEFAULT_BATCH_SIZE, CancelFn, ProgressFn, batch_ranges, check_cancel, check_video, uint8_to_video
from .weights import find_weights, load_safetensors


@dataclass(frozen=True)
class RAFTConfig:
    feature_layers: tuple[int, ...]
    context_layers: tuple[int, ...]
    bottleneck: bool  # small: bottleneck blocks; large: residual blocks
    context_norm: bool  # large: BatchNorm in the context encoder; small: none (feature encoder: InstanceNorm)
    radius: int
    corr_layers: tuple[int, ...]
    flow_layers: tuple[int, int]
    motion_out: int
    hidden: int
    gru_kernels: tuple  # ((kh, kw), ...) one ConvGRU per entry
    flow_head_hidden: int
    mask_predictor: bool
    levels: int = 4


RAFT_LARGE = RAFTConfig((64, 64, 96, 128, 256), (64, 64, 96, 128, 256), False, True, 4, (256, 192), (128, 64), 128,
                        128, ((1, 5), (5, 1)), 256, True)
RAFT_SMALL = RAFTConfig((32, 32, 64, 96, 128), (32, 32, 64, 96, 160), True, False, 3, (96,), (64, 32), 82,
                        96, ((3, 3),), 128, False)


def conv_norm_act(cin: int, cout: int, kernel: int, stride: int = 1, norm: str | None = None,
                  act: bool = True) -> nn.Sequential:
    """torchvision ``Conv2dNormActivation`` layout: ``0`` conv (with bias), ``1`` norm, then ReLU."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, bias=True)]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(cout))
    elif norm == "instance":
        layers.append(nn.InstanceNorm2d(cout))  # affine=False: no parameters, as torchvision
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str | None, stride: int = 1):
        super().__init__()
        self.convnormrelu1 = conv_norm_act(cin, cout, 3, stride, norm)
        self.convnormrelu2 = conv_norm_act(cout, cout, 3, 1, norm)
        self.downsample = nn.Identity() if stride == 1 else conv_norm_act(cin, cout, 1, stride, norm, act=False)

    def forward(self, x):
        return F.relu(self.downsample(x) + self.convnormrelu2(self.convnormrelu1(x)))


class BottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str | None, stride: int = 1):
        super().__init__()
        self.convnormrelu1 = conv_norm_act(cin, cout // 4, 1, 1, norm)
        self.convnormrelu2 = conv_norm_act(cout // 4, cout // 4, 3, stride, norm)
        self.convnormrelu3 = conv_norm_act(cout // 4, cout, 1, 1, norm)
        self.downsample = nn.Identity() if stride == 1 else conv_norm_act(cin, cout, 1, stride, norm, act=False)

    def forward(self, x):
        return F.relu(self.downsample(x) + self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x))))


class FeatureEncoder(nn.Module):
    """7×7/2 stem, three stages of two blocks (strides 1, 2, 2) and a 1×1 projection: 1/8 resolution."""

    def __init__(self, layers, bottleneck: bool, norm: str | None):
        super().__init__()
        block = BottleneckBlock if bottleneck else ResidualBlock
        self.convnormrelu = conv_norm_act(3, layers[0], 7, 2, norm)
        for i, stride in enumerate((1, 2, 2)):
            setattr(self, f"layer{i + 1}", nn.Sequential(block(layers[i], layers[i + 1], norm, stride),
                                                         block(layers[i + 1], layers[i + 1], norm, 1)))
        self.conv = nn.Conv2d(layers[3], layers[4], 1)

    def forward(self, x):
        return self.conv(self.layer3(self.layer2(self.layer1(self.convnormrelu(x)))))


class MotionEncoder(nn.Module):
    def __init__(self, corr_channels: int, corr_layers, flow_layers, out_channels: int):
        super().__init__()
        self.convcorr1 = conv_norm_act(corr_channels, corr_layers[0], 1)
        self.convcorr2 = conv_norm_act(corr_layers[0], corr_layers[1], 3) if len(corr_layers) == 2 else nn.Identity()
        self.convflow1 = conv_norm_act(2, flow_layers[0], 7)
        self.convflow2 = conv_norm_act(flow_layers[0], flow_layers[1], 3)
        self.conv = conv_norm_act(corr_layers[-1] + flow_layers[1], out_channels - 2, 3)

    def forward(self, flow, corr):
        corr = self.convcorr2(self.convcorr1(corr))
        motion = self.conv(torch.cat([corr, self.convflow2(self.convflow1(flow))], 1))
        return torch.cat([motion, flow], 1)


class ConvGRU(nn.Module):
    def __init__(self, input_size: int, hidden: int, kernel):
        super().__init__()
        pad = tuple((k - 1) // 2 for k in kernel)
        self.convz = nn.Conv2d(hidden + input_size, hidden, kernel, padding=pad)
        self.convr = nn.Conv2d(hidden + input_size, hidden, kernel, padding=pad)
        self.convq = nn.Conv2d(hidden + input_size, hidden, kernel, padding=pad)

    def forward(self, h, x):
        hx = torch.cat([h, x], 1)
        z, r = torch.sigmoid(self.convz(hx)), torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q


class RecurrentBlock(nn.Module):
    def __init__(self, input_size: int, hidden: int, kernels):
        super().__init__()
        for i, kernel in enumerate(kernels):
            setattr(self, f"convgru{i + 1}", ConvGRU(input_size, hidden, kernel))
        self.count = len(kernels)

    def forward(self, h, x):
        for i in range(self.count):
            h = getattr(self, f"convgru{i + 1}")(h, x)
        return h


class FlowHead(nn.Module):
    def __init__(self, cin: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    def __init__(self, cfg: RAFTConfig):
        super().__init__()
        corr_channels = cfg.levels * (2 * cfg.radius + 1) ** 2
        self.motion_encoder = MotionEncoder(corr_channels, cfg.corr_layers, cfg.flow_layers, cfg.motion_out)
        context = cfg.context_layers[-1] - cfg.hidden
        self.recurrent_block = RecurrentBlock(cfg.motion_out + context, cfg.hidden, cfg.gru_kernels)
        self.flow_head = FlowHead(cfg.hidden, cfg.flow_head_hidden)

    def forward(self, hidden, context, corr, flow):
        hidden = self.recurrent_block(hidden, torch.cat([context, self.motion_encoder(flow, corr)], 1))
        return hidden, self.flow_head(hidden)


class MaskPredictor(nn.Module):
    def __init__(self, cin: int, hidden: int = 256):
        super().__init__()
        self.convrelu = conv_norm_act(cin, hidden, 3)
        self.conv = nn.Conv2d(hidden, 8 * 8 * 9, 1)

    def forward(self, x):
        return 0.25 * self.conv(self.convrelu(x))  # RAFT's gradient down-weighting, kept for identical outputs


def coords_grid(batch: int, h: int, w: int, device) -> torch.Tensor:
    """``[B, 2, h, w]`` pixel coordinates (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys]).float()[None].expand(batch, -1, -1, -1)


def sample_at(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of ``volume`` at pixel ``coords`` (..., 2) (x, y), zero outside (align_corners=True)."""
    h, w = volume.shape[-2:]
    x = 2 * coords[..., 0] / max(w - 1, 1) - 1
    y = 2 * coords[..., 1] / max(h - 1, 1) - 1
    return F.grid_sample(volume, torch.stack([x, y], -1), mode="bilinear", align_corners=True)


def upsample_flow(flow: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """×8 flow: bilinear, or RAFT's convex combination of the 3×3 neighbours with a softmax ``mask``."""
    b, _, h, w = flow.shape
    if mask is None:
        return 8 * F.interpolate(flow, size=(8 * h, 8 * w), mode="bilinear", align_corners=True)
    mask = torch.softmax(mask.view(b, 1, 9, 8, 8, h, w), dim=2)
    neighbours = F.unfold(8 * flow, kernel_size=3, padding=1).view(b, 2, 9, 1, 1, h, w)
    up = (mask * neighbours).sum(2)  # [b, 2, 8, 8, h, w]
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, 8 * h, 8 * w)


class RAFT(nn.Module):
    def __init__(self, cfg: RAFTConfig = RAFT_LARGE):
        super().__init__()
        self.cfg = cfg
        self.feature_encoder = FeatureEncoder(cfg.feature_layers, cfg.bottleneck, "instance")
        self.context_encoder = FeatureEncoder(cfg.context_layers, cfg.bottleneck, "batch" if cfg.context_norm else None)
        self.update_block = UpdateBlock(cfg)
        self.mask_predictor = MaskPredictor(cfg.hidden) if cfg.mask_predictor else None

    def correlation_pyramid(self, f1: torch.Tensor, f2: torch.Tensor) -> list[torch.Tensor]:
        b, c, h, w = f1.shape
        corr = torch.matmul(f1.flatten(2).transpose(1, 2), f2.flatten(2)) / c ** 0.5  # [b, hw, hw]
        corr = corr.reshape(b * h * w, 1, h, w)
        pyramid = [corr]
        for _ in range(self.cfg.levels - 1):
            corr = F.avg_pool2d(corr, 2, 2)
            pyramid.append(corr)
        return pyramid

    def lookup(self, pyramid: list[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
        """Correlation features ``[B, levels·(2r+1)², h, w]`` round ``coords`` (torchvision's window order)."""
        r = self.cfg.radius
        d = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
        delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), -1).view(1, 2 * r + 1, 2 * r + 1, 2)
        b, _, h, w = coords.shape
        centres = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        features = []
        for level, volume in enumerate(pyramid):
            features.append(sample_at(volume, centres / 2 ** level + delta).view(b, h, w, -1))
        return torch.cat(features, -1).permute(0, 3, 1, 2).contiguous()

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, num_flow_updates: int = 20) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1], H and W multiples of 8 → final flow ``[B, 2, H, W]`` (pixels)."""
        b, _, h, w = image1.shape
        f1, f2 = self.feature_encoder(torch.cat([image1, image2])).chunk(2)
        pyramid = self.correlation_pyramid(f1, f2)
        hidden, context = self.context_encoder(image1).split([self.cfg.hidden, self.cfg.context_layers[-1] - self.cfg.hidden], 1)
        hidden, context = torch.tanh(hidden), F.relu(context)
        coords0 = coords_grid(b, h // 8, w // 8, image1.device)
        coords1 = coords0.clone()
        for _ in range(num_flow_updates):
            hidden, delta = self.update_block(hidden, context, self.lookup(pyramid, coords1), coords1 - coords0)
            coords1 = coords1 + delta
        mask = None if self.mask_predictor is None else self.mask_predictor(hidden)
        return upsample_flow(coords1 - coords0, mask)


def raft_from_state_dict(state: dict) -> RAFT:
    """RAFT large or small (told apart by ``mask_predictor.*`` keys), loaded strictly."""
    cfg = RAFT_LARGE if any(k.startswith("mask_predictor.") for k in state) else RAFT_SMALL
    model = RAFT(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise VDOTInputError("weights", f"is not a torchvision raft_large/raft_small state dict ({str(exc)[:300]})",
                             "convert raft_large_C_T_SKHT_V2 (or raft_small_C_T_V2) weights as weights.py shows") from None
    return model.eval()


@lru_cache(maxsize=2)
def _load(path: str, device: str, _mtime: int = 0) -> RAFT:  # mtime: a replaced file reloads
    return raft_from_state_dict(load_safetensors(path)).to(device)


PAIRS_PER_CALL = 4  # 832×480: 4 × 156 MB correlation volumes (level 0)


@torch.no_grad()
def raft_pair_flows(model: RAFT, frames: torch.Tensor, num_flow_updates: int = 20) -> torch.Tensor:
    """Flows t→t+1 for consecutive frames ``[N, H, W, 3]`` 0..1 → ``[N-1, H, W, 2]`` float32 (pixels)."""
    device = next(model.parameters()).device
    x = frames.to(device, torch.float32).permute(0, 3, 1, 2) * 2 - 1
    h, w = x.shape[-2:]
    least = 8 * 2 ** (model.cfg.levels - 1)  # the coarsest correlation level needs ≥ 1 pixel
    ph, pw = max(least, h + (-h) % 8) - h, max(least, w + (-w) % 8) - w
    x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    flows = []
    for i in range(0, x.shape[0] - 1, PAIRS_PER_CALL):  # the all-pairs volume is (HW/64)² per pair
        j = min(i + PAIRS_PER_CALL, x.shape[0] - 1)
        flows.append(model(x[i:j], x[i + 1:j + 1], num_flow_updates)[..., :h, :w].float().cpu())
    return torch.cat(flows).permute(0, 2, 3, 1)


def raft_flow_video(video: torch.Tensor, *, weights: str | None = None, pad: str = "first",
                    num_flow_updates: int = 20, max_magnitude: float | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, progress: ProgressFn | None = None,
                    cancel: CancelFn | None = None) -> torch.Tensor:
    """RAFT flow between consecutive frames, colourised (same F/H/W as ``video``; ``pad`` as :func:`.flow.flow_video`)."""
    if pad not in FLOW_PADS:
        raise VDOTInputError("pad", f"unknown value {pad!r}", f"use one of {', '.join(FLOW_PADS)}")
    if int(num_flow_updates) != num_flow_updates or num_flow_updates < 1:
        raise VDOTInputError("num_flow_updates", f"must be a positive integer, got {num_flow_updates}", "use 20 (VACE)")
    video = check_video(video)
    total, h, w = video.shape[:3]
    path = find_weights("raft", weights)
    model = _load(str(path), "cuda" if torch.cuda.is_available() else "cpu", path.stat().st_mtime_ns)
    flows = np.zeros((max(total - 1, 1), h, w, 2), np.float32)
    for start, stop in batch_ranges(max(total - 1, 0), batch_size) if total > 1 else []:
        check_cancel(cancel)
        flows[start:stop] = raft_pair_flows(model, video[start:stop + 1], int(num_flow_updates)).numpy()
        if progress is not None:
            progress(min(total, stop + 1), total)
    if total > 1:  # pair i (i → i+1) lands at output i+1 ("first", VACE) or i ("last"); the gap repeats a neighbour
        flows = np.concatenate([flows[:1], flows]) if pad == "first" else np.concatenate([flows, flows[-1:]])
    elif progress is not None:
        progress(1, 1)
    return uint8_to_video(flow_to_color_uint8(flows, max_magnitude))


__all__ = ["RAFT", "RAFTConfig", "RAFT_LARGE", "RAFT_SMALL", "raft_flow_video", "raft_from_state_dict", "raft_pair_flows"]
