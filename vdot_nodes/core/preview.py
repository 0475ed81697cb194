"""Fast previews of Wan 2.1 latents: the tiny TAEW2.1 decoder and a fixed latent-to-RGB projection.

**TAEW2.1** (madebyollin's taehv family, file ``taew2_1.pth`` / ``taew2_1.safetensors``) is a small
convolutional decoder trained to imitate the Wan 2.1 VAE decoder: about 10 M parameters instead of
the VAE's 127 M and no 3-D convolutions, so a frame costs a small fraction of a VAE frame. It reads
the *raw* Wan latents (the VAE's, before the pipeline's ``(z − mean) / std`` normalisation) and gives
frames in 0..1. Its layout, as the key names of the file say (``decoder.<index>.…``):

====  =============================================================  ============================
idx   layer                                                          tensors
====  =============================================================  ============================
0     soft clamp ``3·tanh(x/3)``                                     –
1–2   3×3 conv 16 → 256, ReLU                                        ``1.weight``, ``1.bias``
3–5   three memory blocks (256): each sees its input and the          ``N.conv.{0,2,4}.{weight,bias}``
      previous frame's input, 3 convs, residual, ReLU
6–8   2× nearest upsample, time-grow ×1 (1×1 conv), 3×3 conv → 128    ``7.conv.weight``, ``8.weight``
9–14  three memory blocks (128), 2× upsample, time-grow ×2, → 64      ``13.conv.weight``, ``14.weight``
15–20 three memory blocks (64), 2× upsample, time-grow ×2, → 64       ``19.conv.weight``, ``20.weight``
21–22 ReLU, 3×3 conv 64 → 3                                           ``22.weight``, ``22.bias``
====  =============================================================  ============================

A time-grow layer turns each frame into ``stride`` frames (a 1×1 conv to ``stride·C`` channels, split
in order), so T latent frames become 4T frames; the first 3 are dropped, giving 4(T − 1) + 1, the
Wan VAE's own count. Everything is causal (a memory block only looks back one frame), so the video
is decoded a few latent frames at a time with each memory block's last input carried over: memory
stays bounded, and cancel / progress are checked between chunks. Encoder tensors (``encoder.*``) in
the file are ignored; only the decoder is built.

**Latent RGB**: ComfyUI's fixed 16 → 3 projection for Wan 2.1 latents (``comfy/latent_formats.py``,
class ``Wan21``, ``latent_rgb_factors`` and ``latent_rgb_factors_bias``), applied like ComfyUI's
Latent2RGB previewer to the *normalised* latents the sampler works on: a colour sketch at latent
resolution for free, used when no TAE is given.

Both only apply to Wan 2.1's latent layout (16 channels, 8× spatial, 4× temporal). The embedded toy
model's VAE compresses 2× spatially into 4 channels, another latent space: for it a TAE is refused before
loading and there is no latent-RGB projection (no preview image, progress only).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .errors import VDOTInputError
from .sampling import CancelFn, ProgressFn, check_cancel

LATENT_CHANNELS = 16
LATENT_SPATIAL = 8
LATENT_TEMPORAL = 4
TAE_SOURCE = "github.com/madebyollin/taehv (taew2_1.safetensors or taew2_1.pth)"
WEIGHT_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pth", ".pt")
# Widths of the three decoder stages and the final one; the time-grow stride of each stage.
STAGE_WIDTHS = (256, 128, 64, 64)
STAGE_TIME_GROW = (1, 2, 2)
DEFAULT_CHUNK = 1  # latent frames decoded at once: 4 output frames in flight at 64 channels

# ComfyUI comfy/latent_formats.py, Wan21 (checked at a125cd84): row c is latent channel c's RGB weight.
WAN21_LATENT_RGB_FACTORS = (
    (-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747), (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665), (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364), (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950), (0.1984, 0.0913, 0.1861),
)
WAN21_LATENT_RGB_BIAS = (-0.1835, -0.0868, -0.3360)


# --------------------------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------------------------


def _conv3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class _SoftClamp(nn.Module):
    def forward(self, x):
        return 3 * torch.tanh(x / 3)


class _MemoryBlock(nn.Module):
    """Residual block that also reads the previous frame's input (zeros before the first frame)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Sequential(_conv3(2 * width, width), nn.ReLU(), _conv3(width, width), nn.ReLU(),
                                  _conv3(width, width))

    def forward(self, x, previous):
        return torch.relu(self.conv(torch.cat([x, previous], dim=1)) + x)


class _TimeGrow(nn.Module):
    """Each frame becomes ``stride`` frames: a 1×1 conv to ``stride`` channel groups, taken in order."""

    def __init__(self, width: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(width, width * stride, 1, bias=False)

    def forward(self, x):
        n, c, h, w = x.shape
        return self.conv(x).reshape(n * self.stride, c, h, w)


class TinyWanDecoder(nn.Module):
    """The TAEW2.1 decoder (layout in the module docstring); :meth:`decode` is the entry point."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [_SoftClamp(), _conv3(LATENT_CHANNELS, STAGE_WIDTHS[0]), nn.ReLU()]
        for stage, grow in enumerate(STAGE_TIME_GROW):
            width, nxt = STAGE_WIDTHS[stage], STAGE_WIDTHS[stage + 1]
            layers += [_MemoryBlock(width), _MemoryBlock(width), _MemoryBlock(width),
                       nn.Upsample(scale_factor=2), _TimeGrow(width, grow), _conv3(width, nxt, bias=False)]
        layers += [nn.ReLU(), _conv3(STAGE_WIDTHS[-1], 3)]
        self.decoder = nn.Sequential(*layers)  # attribute name and indices = the file's key names
        self.time_upscale = 1
        for grow in STAGE_TIME_GROW:
            self.time_upscale *= grow
        self.frames_to_trim = self.time_upscale - 1

    def output_frames(self, latent_frames: int) -> int:
        return self.time_upscale * latent_frames - self.frames_to_trim

    def _run_chunk(self, x: torch.Tensor, carry: dict[int, torch.Tensor]) -> torch.Tensor:
        """``[B, T, 16, h, w]`` raw latents → ``[B, T·4, 3, 8h, 8w]``; ``carry`` holds each memory
        block's input of the last frame seen so far, and is updated."""
        b, t = x.shape[:2]
        x = x.reshape(b * t, *x.shape[2:])
        for i, layer in enumerate(self.decoder):
            if isinstance(layer, _MemoryBlock):
                frames = x.reshape(b, t, *x.shape[1:])
                first = carry.get(i)
                first = torch.zeros_like(frames[:, :1]) if first is None else first.unsqueeze(1)
                previous = torch.cat([first, frames[:, :-1]], dim=1)
                carry[i] = frames[:, -1]
                x = layer(x, previous.reshape(x.shape))
            else:
                x = layer(x)
                if isinstance(layer, _TimeGrow):
                    t *= layer.stride
        return x.reshape(b, t, *x.shape[1:])

    @torch.no_grad()
    def decode(self, raw_latents: torch.Tensor, chunk: int = DEFAULT_CHUNK, cancel: CancelFn | None = None,
               progress: ProgressFn | None = None) -> torch.Tensor:
        """Raw Wan latents ``[B, 16, T, h, w]`` → frames ``[B, 4(T−1)+1, 8h, 8w, 3]`` float32 in 0..1.

        ``chunk`` latent frames at a time (the result does not depend on it); ``cancel`` is honoured
        and ``progress(done, total)`` reported before / after each chunk.
        """
        param = next(self.parameters())
        total = raw_latents.shape[2]
        carry: dict[int, torch.Tensor] = {}
        out = []
        for start in range(0, total, chunk):
            check_cancel(cancel)
            x = raw_latents[:, :, start:start + chunk].to(param.device, param.dtype).transpose(1, 2)
            frames = self._run_chunk(x, carry)
            out.append(frames.clamp(0, 1).float().permute(0, 1, 3, 4, 2).cpu())
            if progress is not None:
                progress(min(start + chunk, total), total)
        return torch.cat(out, dim=1)[:, self.frames_to_trim:]


# --------------------------------------------------------------------------------------------
# Loading a TAEW2.1 file
# --------------------------------------------------------------------------------------------


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of every decoder tensor a TAEW2.1 file holds."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in TinyWanDecoder().state_dict().items()}


def _read_state(path: Path, input_name: str) -> tuple[dict[str, tuple[int, ...]], Callable[[], dict[str, torch.Tensor]]]:
    """``(shapes, read)``: the file's tensor shapes (cheap), and a function reading the decoder tensors."""
    suffix = path.suffix.lower()
    if suffix in WEIGHT_SUFFIXES:
        from .models import CheckpointFileError, TensorReader, read_safetensors_header, read_tensor

        try:
            entries, _ = read_safetensors_header(path)
        except CheckpointFileError as e:
            what = "truncated" if e.truncated else "not a readable safetensors file"
            raise VDOTInputError(input_name, f"{path.name} is {what} ({e})", f"download it again from {TAE_SOURCE}") from None
        shapes = {k: shape for k, (_, shape, _, _) in entries.items()}

        def read():
            with TensorReader() as reader:
                return {k: read_tensor(reader, path, start, end, shape, dtype, torch.float32)
                        for k, (dtype, shape, start, end) in entries.items() if k.startswith("decoder.")}

        return shapes, read
    if suffix in PICKLE_SUFFIXES:
        from .models.files import read_pickle_weights  # the one pickle reader (weights-only unpickler)

        state = read_pickle_weights(path, input_name, TAE_SOURCE)
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise VDOTInputError(input_name, f"{path.name} holds {type(state).__name__}, not a state dict of tensors",
                                 f"give taew2_1 from {TAE_SOURCE}")
        return {k: tuple(v.shape) for k, v in state.items()}, lambda: {k: v for k, v in state.items() if k.startswith("decoder.")}
    raise VDOTInputError(input_name, f"{path.name} is neither .safetensors nor .pth",
                         f"give the TAEW2.1 file from {TAE_SOURCE}")


def _check_layout(name: str, shapes: dict[str, tuple[int, ...]], input_name: str) -> None:
    """Refuse anything but a TAEW2.1 decoder, naming what the file is where that can be told."""
    expected = expected_shapes()
    decoder = {k: s for k, s in shapes.items() if k.startswith("decoder.")}
    first = decoder.get("decoder.1.weight")
    if first is None or len(first) != 4:
        hint = " (it looks like the full Wan2.1 VAE: that one goes to the VAE input)" if any(
            k.startswith(("decoder.conv1.", "decoder.conv_in.", "decoder.head.")) for k in shapes) else ""
        sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
        raise VDOTInputError(input_name, f"{name} is not a TAEW2.1 / taehv tiny decoder{hint}: it holds {len(shapes)} "
                             f"tensors ({sample}, …) and no decoder.1.weight", f"give taew2_1 from {TAE_SOURCE}")
    channels = first[1]
    out = decoder.get("decoder.22.weight", (0,))[0]
    if channels != LATENT_CHANNELS or out != 3:
        known = {48: "Wan 2.2 (taew2_2)", 32: "HunyuanVideo 1.5 (taehv1_5)", 128: "LTX-Video (taeltx)"}
        what = known.get(channels, f"{channels}-channel latents" + (f" with {out // 3}× pixel patches" if out % 3 == 0 and out > 3 else ""))
        raise VDOTInputError(input_name, f"{name} is a tiny decoder for {what}; VDOT's latents are Wan 2.1's "
                             f"({LATENT_CHANNELS} channels)", f"give taew2_1 from {TAE_SOURCE}")
    missing = [k for k in expected if k not in decoder]
    unexpected = [k for k in decoder if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:4])}" + (" …" if len(missing) > 4 else "")] if missing else []) + (
            [f"unexpected {', '.join(unexpected[:4])}" + (" …" if len(unexpected) > 4 else "")] if unexpected else [])
        raise VDOTInputError(input_name, f"{name} does not match the TAEW2.1 decoder ({len(expected)} tensors): "
                             + "; ".join(parts), f"download taew2_1 again from {TAE_SOURCE}")
    for k, want in expected.items():
        have = decoder[k]
        # Index 7 grows time ×1; a file trained with ×2 there keeps the last frame's channels (taehv's rule).
        if have != want and not (k == "decoder.7.conv.weight" and have[1:] == want[1:] and have[0] > want[0]):
            if k in ("decoder.13.conv.weight", "decoder.19.conv.weight") and have[0] == want[1]:
                raise VDOTInputError(input_name, f"{name} is a tiny decoder without temporal upsampling at {k}; "
                                     "VDOT needs one frame count per Wan latent", f"give taew2_1 from {TAE_SOURCE}")
            raise VDOTInputError(input_name, f"{name}: tensor {k} has shape {list(have)}, TAEW2.1 needs {list(want)}",
                                 f"download taew2_1 again from {TAE_SOURCE}")


def load_preview_decoder(path, device="cpu", dtype: torch.dtype | None = None,
                         input_name: str = "preview_decoder") -> TinyWanDecoder:
    """A TAEW2.1 decoder from a local ``.safetensors`` or ``.pth`` file (never downloaded).

    The file is checked key by key from its header (or the weights-only unpickler's result) before a
    tensor is read; NaN/inf weights are refused. ``dtype`` defaults to fp16 on CUDA, fp32 elsewhere.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise VDOTInputError(input_name, f"{path} does not exist" if not path.exists() else f"{path} is a folder",
                             f"download taew2_1.safetensors from {TAE_SOURCE} and give its path")
    shapes, read = _read_state(path, input_name)
    _check_layout(path.name, shapes, input_name)
    state = read()
    expected = expected_shapes()
    key = "decoder.7.conv.weight"
    if tuple(state[key].shape) != expected[key]:
        state[key] = state[key][-expected[key][0]:]
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise VDOTInputError(input_name, f"{path.name}: tensor {bad[0]} holds NaN or infinite values",
                             f"download taew2_1 again from {TAE_SOURCE}")
    device = torch.device(device or "cpu")
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    decoder = TinyWanDecoder()
    decoder.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return decoder.to(device, dtype).eval()


# --------------------------------------------------------------------------------------------
# Which latents these apply to, and previews
# --------------------------------------------------------------------------------------------


def vae_latent_layout(vae) -> tuple[int, int, int]:
    """``(channels, spatial, temporal)`` of a diffusers ``AutoencoderKLWan`` (or its config)."""
    cfg = getattr(vae, "config", vae)
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    down = list(get("temperal_downsample", None) or [False, True, True])
    spatial = get("scale_factor_spatial", None) or 2 ** len(down)
    temporal = get("scale_factor_temporal", None) or 2 ** sum(bool(d) for d in down)
    return int(get("z_dim", LATENT_CHANNELS)), int(spatial), int(temporal)


def is_wan21_layout(vae) -> bool:
    return vae_latent_layout(vae) == (LATENT_CHANNELS, LATENT_SPATIAL, LATENT_TEMPORAL)


def check_preview_applies(vae, input_name: str = "preview_decoder", what: str = "this VAE") -> None:
    """Refuse a TAEW2.1 for a VAE whose latents are not Wan 2.1's (the toy VAE: 4 channels, 2× spatial)."""
    if not is_wan21_layout(vae):
        c, s, t = vae_latent_layout(vae)
        raise VDOTInputError(input_name, f"TAEW2.1 decodes Wan 2.1 latents (16 channels, 8× spatial, 4× temporal); "
                             f"{what} makes {c} channels at {s}× spatial, {t}× temporal (the toy model's VAE)",
                             "leave the preview decoder out for the toy model (it has no tiny decoder); use it with "
                             "the Wan2.1 VAE")


def raw_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """The pipeline's normalised latents ``(z − mean) / std`` back to the raw ones the VAE (and TAE) read."""
    cfg = vae.config
    shape = (1, len(cfg.latents_mean), 1, 1, 1)
    mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(shape)
    std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(shape)
    return latents.float().cpu() * std + mean


def latent_rgb(latents: torch.Tensor) -> torch.Tensor:
    """Normalised Wan 2.1 latents ``[..., 16, h, w]`` → RGB ``[..., h, w, 3]`` in 0..1 (ComfyUI's projection)."""
    factors = torch.tensor(WAN21_LATENT_RGB_FACTORS, dtype=torch.float32)
    bias = torch.tensor(WAN21_LATENT_RGB_BIAS, dtype=torch.float32)
    rgb = torch.nn.functional.linear(latents.float().cpu().movedim(-3, -1), factors.T, bias)
    return ((rgb + 1) / 2).clamp(0, 1)


StepPreviewFn = Callable[[torch.Tensor], torch.Tensor]  # normalised x0 [B, 16, f, h, w] → one frame [H, W, 3] 0..1


def make_step_preview(vae, decoder: TinyWanDecoder | None = None) -> StepPreviewFn | None:
    """What the sampler shows after each step: the first frame of video 0's x0-prediction, decoded by
    the TAE when one is given, else by the latent-RGB projection; None for latents neither applies to
    (the toy VAE). A TAE given for such latents is an error (:func:`check_preview_applies`)."""
    if decoder is not None:
        check_preview_applies(vae)

        def tae_frame(x0: torch.Tensor) -> torch.Tensor:
            return decoder.decode(raw_latents(vae, x0[:1, :, :1]))[0, 0]

        return tae_frame
    if not is_wan21_layout(vae):
        return None
    return lambda x0: latent_rgb(x0[0, :, 0])


def decode_draft(vae, decoder: TinyWanDecoder, latents: torch.Tensor, cancel: CancelFn | None = None,
                 progress: ProgressFn | None = None, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Normalised latents ``[B, 16, f, h, w]`` → frames ``[B, F, H, W, 3]`` in 0..1 with the TAE instead of
    the VAE (a quick draft; the layout ``VDOTPipeline.decode`` returns). NaN/inf output is an error."""
    check_preview_applies(vae)
    videos = []
    for i, latent in enumerate(latents):
        done = i * latent.shape[1]
        step = (lambda d, _t, base=done: progress(base + d, latents.shape[0] * latent.shape[1])) if progress else None
        videos.append(decoder.decode(raw_latents(vae, latent.unsqueeze(0)), chunk=chunk, cancel=cancel, progress=step)[0])
    frames = torch.stack(videos)
    if not torch.isfinite(frames).all():
        raise VDOTInputError("preview_decoder", "the tiny decoder produced NaN/inf", "decode with the full VAE instead")
    return frames


__all__ = [
    "TAE_SOURCE", "WAN21_LATENT_RGB_BIAS", "WAN21_LATENT_RGB_FACTORS", "StepPreviewFn", "TinyWanDecoder",
    "check_preview_applies", "decode_draft", "expected_shapes", "is_wan21_layout", "latent_rgb", "load_preview_decoder",
    "make_step_preview", "raw_latents", "vae_latent_layout",
]
