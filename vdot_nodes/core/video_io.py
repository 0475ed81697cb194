"""Video and image I/O in ComfyUI layout: frames ``[F, H, W, 3]`` float32 in 0..1.

mp4 (and anything FFmpeg reads) goes through PyAV; image sequences are folders of PNG/JPG frames
read in name order. Writers never overwrite an existing file unless asked to, and write to a
temporary name first so an interrupted write leaves nothing half-made under the final name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .errors import VDOTInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")


def pyav(name: str = "video"):
    """The ``av`` module (PyAV reads and writes mp4), or a one-line error naming ``name`` when it is missing."""
    try:
        import av
    except ImportError:
        raise VDOTInputError(name, "needs PyAV to read or write mp4, and it is not installed",
                             "pip install av (ComfyUI-VDOT's install brings it), or use a folder of PNG frames") from None
    return av


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def from_uint8(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0


def read_image_alpha(path: str | Path) -> torch.Tensor | None:
    """The alpha channel of an image as ``[H, W]`` float32 0..1 (1 = opaque), or None if it has none."""
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None or data.ndim != 3 or data.shape[2] != 4:
        return None
    scale = 65535.0 if data.dtype == np.uint16 else 255.0
    return torch.from_numpy(data[..., 3].astype(np.float32) / scale)


def read_image(path: str | Path) -> torch.Tensor:
    """One image → ``[H, W, 3]`` float32 0..1 (alpha dropped, greyscale expanded)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise VDOTInputError(str(path), "image file not found", "check the path")
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise VDOTInputError(str(path), "not a readable image", f"use one of {', '.join(IMAGE_EXTENSIONS)}")
    if data.ndim == 2:
        data = cv2.cvtColor(data, cv2.COLOR_GRAY2RGB)
    elif data.shape[2] == 4:
        data = cv2.cvtColor(data, cv2.COLOR_BGRA2RGB)
    else:
        data = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
    if data.dtype == np.uint16:
        return torch.from_numpy(data.astype(np.float32) / 65535.0)
    return from_uint8(data)


def write_image(image: torch.Tensor, path: str | Path, overwrite: bool = False, input_name: str = "image") -> Path:
    import cv2

    path = Path(path)
    check_frames(image[None] if isinstance(image, torch.Tensor) and image.ndim == 3 else image, input_name)
    with atomic_path(path, overwrite) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(to_uint8(image), cv2.COLOR_RGB2BGR)):
            raise VDOTInputError(str(path), "could not write the image", "check the folder exists and the extension")
    return path


def frame_files(folder: Path) -> list[Path]:
    """The image frames of a frame folder in name order; a folder without any is an error."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise VDOTInputError(str(folder), "folder holds no image frames", f"put {'/'.join(IMAGE_EXTENSIONS)} frames in it")
    return files


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[torch.Tensor, float]:
    """A video file or a folder of frames → (frames ``[F, H, W, 3]`` 0..1, fps)."""
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        files = files[:max_frames] if max_frames else files
        frames = [read_image(p) for p in files]
        sizes = {tuple(f.shape) for f in frames}
        if len(sizes) > 1:
            raise VDOTInputError(str(path), f"frames have different sizes {sorted(sizes)}", "make all frames one size")
        return torch.stack(frames), 16.0
    if not path.is_file():
        raise VDOTInputError(str(path), "video file not found", "check the path")
    av = pyav(str(path))

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 16)
            frames = []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, IndexError) as exc:
        raise VDOTInputError(str(path), f"not a readable video ({exc})", "use an mp4/webm/mov file or a folder of frames") from None
    if not frames:
        raise VDOTInputError(str(path), "video has no frames", "check the file")
    return from_uint8(np.stack(frames)), fps


@dataclass(frozen=True)
class VideoProbe:
    """What frame sampling needs to know about a video, without decoding it.

    ``timestamps``: float32 ``[num_frames, 2]`` (start, stop) seconds per frame in presentation
    order, measured from the stream's start: ``(pts - start_time) * time_base`` and
    ``(pts + duration - start_time) * time_base`` of each packet (the same numbers decord gives, which
    the official VDOT loader uses). A folder of frames has no timestamps: frame i spans
    ``[i/fps, (i+1)/fps]`` at ``fps`` 16.
    """

    num_frames: int
    height: int
    width: int
    fps: float
    timestamps: np.ndarray


def constant_rate_timestamps(num_frames: int, fps: float) -> np.ndarray:
    """float32 ``[n, 2]`` (start, stop) seconds for ``n`` frames at a constant ``fps``."""
    start = np.arange(num_frames, dtype=np.float64) / fps
    return np.stack([start, start + 1.0 / fps], axis=1).astype(np.float32)


def probe_video(path: str | Path) -> VideoProbe:
    """Frame count, size, fps and per-frame timestamps of a video file or frame folder (demux only)."""
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        h, w = read_image(files[0]).shape[:2]
        return VideoProbe(len(files), int(h), int(w), 16.0, constant_rate_timestamps(len(files), 16.0))
    if not path.is_file():
        raise VDOTInputError(str(path), "video file not found", "check the path")
    av = pyav(str(path))

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 16)
            height, width = int(stream.codec_context.height), int(stream.codec_context.width)
            start = stream.start_time or 0
            tb = float(stream.time_base) if stream.time_base else 0.0
            packets = sorted((p.pts, p.duration or 0) for p in container.demux(stream) if p.pts is not None)
    except (av.error.FFmpegError, IndexError) as exc:
        raise VDOTInputError(str(path), f"not a readable video ({exc})", "use an mp4/webm/mov file or a folder of frames") from None
    if not packets:
        raise VDOTInputError(str(path), "video has no frames", "check the file")
    pts = np.array(packets, dtype=np.int64)
    # decord subtracts the start time as C++ float (int64 pts rounded to float32), then scales in double.
    offset = np.float32(start)
    begin = (pts[:, 0].astype(np.float32) - offset).astype(np.float64) * tb
    end = ((pts[:, 0] + pts[:, 1]).astype(np.float32) - offset).astype(np.float64) * tb
    return VideoProbe(len(packets), height, width, fps, np.stack([begin, end], axis=1).astype(np.float32))


def read_video_frames(path: str | Path, frame_ids: Sequence[int]) -> np.ndarray:
    """The frames at ``frame_ids`` (presentation order, repeats allowed) as uint8 ``[n, H, W, 3]``.

    Decodes the video once and keeps only the frames asked for, so a long clip sampled down to 81
    frames never holds every decoded frame in memory.
    """
    path = Path(path)
    wanted = sorted(set(int(i) for i in frame_ids))
    if not wanted:
        raise VDOTInputError(str(path), "no frames asked for", "ask for at least one frame")
    kept: dict[int, np.ndarray] = {}
    if path.is_dir():
        files = frame_files(path)
        for i in wanted:
            if i < len(files):
                kept[i] = to_uint8(read_image(files[i]))
    else:
        if not path.is_file():
            raise VDOTInputError(str(path), "video file not found", "check the path")
        av = pyav(str(path))

        wanted_set, last = set(wanted), wanted[-1]
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                for index, frame in enumerate(container.decode(stream)):
                    if index in wanted_set:
                        kept[index] = frame.to_ndarray(format="rgb24")
                    if index >= last:
                        break
        except (av.error.FFmpegError, IndexError) as exc:
            raise VDOTInputError(str(path), f"not a readable video ({exc})", "use an mp4/webm/mov file or a folder of frames") from None
    missing = [i for i in wanted if i not in kept]
    if missing:
        raise VDOTInputError(str(path), f"has no frame {missing[0]}: it decodes to fewer frames than its index lists",
                             "check the file is complete (re-encode it)")
    sizes = {kept[i].shape for i in wanted}
    if len(sizes) > 1:
        raise VDOTInputError(str(path), f"frames have different sizes {sorted(sizes)}", "make all frames one size")
    return np.stack([kept[int(i)] for i in frame_ids])


def check_frames(frames, name: str = "frames") -> torch.Tensor:
    """Frames about to be written: a non-empty ``[F, H, W, 3]`` tensor with no NaN / inf.

    NaN would otherwise become black pixels in a file that looks like a result (uint8 has no NaN).
    """
    if not isinstance(frames, torch.Tensor):
        raise VDOTInputError(name, f"expected frames as a tensor, got {type(frames).__name__}",
                             "give the frames as a [F, H, W, 3] tensor (a ComfyUI IMAGE)")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VDOTInputError(name, f"expected [F, H, W, 3], got {tuple(frames.shape)}", "pass RGB frames")
    if frames.numel() == 0:
        raise VDOTInputError(name, f"is empty (shape {tuple(frames.shape)})", "give at least one frame")
    finite = torch.isfinite(frames)
    if not finite.all():
        bad = int((~finite).any(dim=(1, 2, 3)).sum())
        raise VDOTInputError(name, f"{bad} of {frames.shape[0]} frames contain NaN/inf values",
                             "fix what produced them (a VAE decoding in fp16/bf16 can overflow: "
                             "decode in fp32)")
    return frames


def write_video(frames: torch.Tensor, path: str | Path, fps: float = 16.0, overwrite: bool = False, crf: int = 17,
                input_name: str = "frames") -> Path:
    """Frames ``[F, H, W, 3]`` 0..1 → H.264 mp4 (yuv420p, so H and W are rounded up to even by padding)."""
    av = pyav(input_name)

    path = Path(path)
    check_frames(frames, input_name)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps < 1:
        raise VDOTInputError("fps", f"must be a finite number ≥ 1, got {fps!r}", "use e.g. 16 (Wan's rate)")
    if path.suffix.lower() != ".mp4":
        raise VDOTInputError(str(path), f"write_video makes .mp4 files, not {path.suffix or 'folders'}",
                             "name the output something.mp4")
    data = to_uint8(frames)
    f, h, w, _ = data.shape
    with atomic_path(path, overwrite) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(round(fps)))
            stream.width, stream.height = w + w % 2, h + h % 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in data:
                if h % 2 or w % 2:
                    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def write_frames(frames: torch.Tensor, folder: str | Path, prefix: str = "frame", overwrite: bool = False,
                 input_name: str = "frames") -> Path:
    """Frames → ``folder/prefix_00000.png …`` (the folder must not hold those names already).

    With ``overwrite``, our own ``prefix_NNNNN.png`` beyond the new count are removed too, so the
    folder never mixes frames of two runs."""
    folder = Path(folder)
    check_frames(frames, input_name)
    if folder.exists() and not folder.is_dir():
        raise VDOTInputError(str(folder), "is an existing file, not a folder", "choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        write_image(frame, folder / f"{prefix}_{i:05d}.png", overwrite=overwrite, input_name=input_name)
    if overwrite:
        for path in folder.glob(f"{prefix}_*.png"):
            index = path.stem[len(prefix) + 1:]
            if index.isdigit() and len(index) == 5 and int(index) >= len(frames):
                path.unlink()
    return folder


def write_output(frames: torch.Tensor, out: str | Path, fps: float = 16.0, overwrite: bool = False, crf: int = 17,
                 input_name: str = "frames") -> Path:
    """The one way a finished video is written: ``.mp4`` → H.264 file; no suffix (or a trailing ``/``) →
    a folder of PNG frames; any other suffix is refused (never a folder where a file was asked for)."""
    from .validate import output_kind

    if output_kind(out) == "video":
        return write_video(frames, out, fps=fps, overwrite=overwrite, crf=crf, input_name=input_name)
    return write_frames(frames, out, overwrite=overwrite, input_name=input_name)
