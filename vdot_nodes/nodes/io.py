"""Load / save nodes, so a workflow runs with this pack alone.

Outputs are standard IMAGE (frames as the batch) / MASK plus fps, so core CreateVideo / SaveVideo
and VideoHelperSuite plug in too. Loads read only ComfyUI's input folder and the pack's bundled
examples (copied into ``input/vdot_examples/`` so the frontend can preview them); saves write only
under the output folder, previews only under the temp folder, never over an existing file.
"""

from __future__ import annotations

import hashlib
import logging

import torch

from ..core import video_io
from ..core.atomic import atomic_write_bytes
from ..core.errors import VDOTInputError, inputs_named
from ..core.preprocess.masks import MASK_CHANNELS, binarize_mask, image_to_mask
from ..core.preprocess.video_ops import FIT_MODES, fit_video
from ..core.source_prep import FIT_FRAME_SAMPLING, fit_frame_ids
from ..core.validate import validate_generate
from ..core.vcu import check_frame_count, check_size
from . import comfy

logger = logging.getLogger(__name__)


def copy_examples_to_input() -> list:
    """Copy the bundled examples into ``input/vdot_examples/`` so the frontend can preview them (it
    shows only files of the input folder). Runs when the load nodes are listed; a file already there
    is never replaced (a user's file of that name stays and is what runs). Returns the copies made."""
    try:
        target = comfy.input_dir() / comfy.EXAMPLES_PREFIX.rstrip("/")
    except VDOTInputError:  # no ComfyUI and no folder root: nothing to copy into
        return []
    made = []
    for src in sorted(comfy.EXAMPLES_DIR.iterdir()):
        dst = target / src.name
        if not src.is_file() or src.name.startswith(".") or dst.exists() or dst.is_symlink():
            continue
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dst, src.read_bytes())  # a few tens of kB each
            made.append(dst)
        except (OSError, VDOTInputError) as exc:  # a read-only input folder: examples still run, unpreviewed
            logger.warning("VDOT: could not copy example %s into %s (%s)", src.name, target, exc)
            break
    return made


def _file_hash(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class VDOTLoadVideo:
    DESCRIPTION = "Load a video from ComfyUI's input folder (or the pack's examples) as frames."
    CATEGORY = "VDOT/io"
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("frames", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("The frames (batch = frames).", "The video's frame rate.", "How many frames were loaded.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        copy_examples_to_input()
        return {"required": {
            "video": (comfy.list_inputs(comfy.VIDEO_EXTENSIONS), {
                "video_upload": True, "tooltip": "A video in ComfyUI/input (upload one), or a bundled example."}),
            "frame_load_cap": ("INT", {"default": 0, "min": 0, "max": 4096,
                                       "tooltip": "Load at most this many frames (0 = all)."}),
            "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": 100000,
                                          "tooltip": "Skip this many frames at the start."}),
            "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 64,
                                         "tooltip": "Take every n-th frame (2 halves the frame rate)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, video, **_):
        return _file_hash(comfy.input_path(video, comfy.VIDEO_EXTENSIONS, "video"))

    def load(self, video, frame_load_cap, skip_first_frames, select_every_nth):
        validate_generate(dict(frame_load_cap=frame_load_cap, skip_first_frames=skip_first_frames,
                               select_every_nth=select_every_nth))
        path = comfy.input_path(video, comfy.VIDEO_EXTENSIONS, "video")
        last = skip_first_frames + frame_load_cap * select_every_nth if frame_load_cap else None
        frames, fps = video_io.read_video(path, max_frames=last)
        frames = frames[skip_first_frames::select_every_nth]
        if frame_load_cap:
            frames = frames[:frame_load_cap]
        if frames.shape[0] == 0:
            raise VDOTInputError("skip_first_frames", f"skips all frames of {video}", "lower skip_first_frames")
        return (frames, fps / select_every_nth, int(frames.shape[0]))


class VDOTLoadImage:
    DESCRIPTION = "Load an image from ComfyUI's input folder (or the pack's examples); the mask is its transparency."
    CATEGORY = "VDOT/io"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The image as a batch of one.", "1 where the image is transparent (as core Load Image).")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        copy_examples_to_input()
        return {"required": {"image": (comfy.list_inputs(comfy.IMAGE_EXTENSIONS), {
            "image_upload": True, "tooltip": "An image in ComfyUI/input (upload one), or a bundled example."})}}

    @classmethod
    def IS_CHANGED(cls, image):
        return _file_hash(comfy.input_path(image, comfy.IMAGE_EXTENSIONS, "image"))

    def load(self, image):
        path = comfy.input_path(image, comfy.IMAGE_EXTENSIONS, "image")
        rgb = video_io.read_image(path)
        alpha = video_io.read_image_alpha(path)
        mask = torch.zeros(rgb.shape[:2]) if alpha is None else 1.0 - alpha
        return (rgb.unsqueeze(0), mask.unsqueeze(0))


class VDOTImageToMask:
    DESCRIPTION = "Turn frames (e.g. a black-and-white mask video) into a binary MASK: 1 where the channel is bright."
    CATEGORY = "VDOT/io"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("Binary mask, one per frame.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames to read the mask from."}),
            "channel": (list(MASK_CHANNELS), {"default": "luminance", "tooltip": "Which value becomes the mask."}),
            "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.99, "step": 0.01,
                                    "tooltip": "Values above this become 1."}),
        }}

    def convert(self, images, channel, threshold):
        return (binarize_mask(image_to_mask(images, channel, "images"), threshold, "images"),)


# How VDOT Fit Video's missing inputs are given (a fix for core's "needs the source's frame rate").
FIT_HOW_TO_GIVE = {"fps": "connect VDOT Load Video's fps output to fps, or set frame_sampling to uniform or first"}


class VDOTFitVideo:
    DESCRIPTION = ("Pick num_frames frames of a video (spread over the whole clip, the first ones, or at a target "
                   "frame rate) and resize them to width×height — the one explicit place frames are picked or "
                   "resized (VDOT never pads or resizes silently). VACE needs 4k+1 frames and multiples of 16.")
    CATEGORY = "VDOT/io"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The fitted frames.",)
    FUNCTION = "fit"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames to fit (a single image is repeated only if num_frames is 1)."}),
            "width": ("INT", {"default": 832, "min": 16, "max": 2048, "step": 16, "tooltip": "Output width."}),
            "height": ("INT", {"default": 480, "min": 16, "max": 2048, "step": 16, "tooltip": "Output height."}),
            "num_frames": ("INT", {"default": 81, "min": 1, "max": 1025, "step": 4,
                                   "tooltip": "Frames to keep (4k+1), picked by frame_sampling. Fewer frames in the "
                                              "video is an error."}),
            "mode": (list(FIT_MODES), {"default": "crop", "tooltip": "crop: keep aspect, cover and cut the overflow "
                                                                    "(the official VDOT resize); pad: keep aspect, black "
                                                                    "bars; stretch: distort to fit."}),
        }, "optional": {
            "frame_sampling": (list(FIT_FRAME_SAMPLING), {
                "default": "uniform", "tooltip": "uniform: spread over the whole clip (the official rule, as vdot "
                                                 "generate); first: the first num_frames frames; target_fps: from the "
                                                 "start at target_fps (needs fps connected)."}),
            "target_fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                     "tooltip": "Frame rate for frame_sampling target_fps (Wan makes 16 fps); at most "
                                                "the source's."}),
            "fps": ("FLOAT", {"forceInput": True, "tooltip": "The source's frame rate (VDOT Load Video's fps), for "
                                                             "target_fps."}),
        }}

    def fit(self, images, width, height, num_frames, mode, frame_sampling="uniform", target_fps=16.0, fps=None):
        # This node's promise is a VACE-ready video: 4k+1 frames, sizes multiples of 16 (an API-format
        # workflow bypasses the widgets' step), within the sampler's caps.
        validate_generate({"num_frames": num_frames, "height": height, "width": width})
        check_frame_count(num_frames, "num_frames")
        check_size(height, width, "width/height")
        available = 1 if images.ndim == 3 else int(images.shape[0])
        if available > 1 or num_frames > 1:
            with inputs_named({}, FIT_HOW_TO_GIVE):
                ids = fit_frame_ids(available, num_frames, frame_sampling, fps, target_fps, name="images")
            images = images[ids]
        return (fit_video(images, num_frames, height, width, name="images", mode=mode),)


# The frames and frame rate every video output node takes (Save Video, Preview Video).
_VIDEO_OUT_INPUTS = {
    "frames": ("IMAGE", {"tooltip": "The video's frames."}),
    "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": "Frame rate (Wan makes 16 fps)."}),
}


class VDOTSaveVideo:
    DESCRIPTION = "Save frames as an H.264 mp4 (or PNG frames) under ComfyUI's output folder. Never overwrites."
    CATEGORY = "VDOT/io"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **_VIDEO_OUT_INPUTS,
            "filename_prefix": ("STRING", {"default": "VDOT/video",
                                           "tooltip": "Path under ComfyUI/output; a counter is appended."}),
            "format": (["mp4", "png-frames"], {"default": "mp4", "tooltip": "mp4 (H.264, yuv420p) or a folder of PNGs."}),
            "crf": ("INT", {"default": 17, "min": 0, "max": 51, "tooltip": "mp4 quality: lower is better, 17 ≈ lossless-looking."}),
        }}

    def save(self, frames, fps, filename_prefix, format, crf):
        # Everything is checked before a folder is made or a counter taken.
        validate_generate({"fps": fps, "crf": crf})
        video_io.check_frames(frames, "frames")
        if format not in ("mp4", "png-frames"):
            raise VDOTInputError("format", f"unknown format {format!r}", "use mp4 or png-frames")
        if format == "mp4":
            path = comfy.unique_output_path(filename_prefix, "mp4")
            video_io.write_video(frames, path, fps=fps, crf=crf)
        else:
            path = comfy.unique_output_path(filename_prefix, "")
            video_io.write_frames(frames, path)
        subfolder = path.parent.relative_to(comfy.output_dir()).as_posix()
        result = {"filename": path.name, "subfolder": "" if subfolder == "." else subfolder, "type": "output"}
        return {"ui": {"images": [result], "animated": [True]}, "result": ()}


class VDOTPreviewVideo:
    DESCRIPTION = ("Show frames as a video on the node (an H.264 mp4 in ComfyUI's temp folder, which ComfyUI empties "
                   "when it starts); nothing is written to the output folder.")
    CATEGORY = "VDOT/io"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "preview"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **_VIDEO_OUT_INPUTS,
        }}

    def preview(self, frames, fps):
        validate_generate({"fps": fps})
        video_io.check_frames(frames, "frames")
        root = comfy.temp_dir()
        path = comfy.unique_output_path("VDOT/preview", "mp4", root=root)
        video_io.write_video(frames, path, fps=fps, crf=17)
        subfolder = path.parent.relative_to(root).as_posix()
        result = {"filename": path.name, "subfolder": "" if subfolder == "." else subfolder, "type": "temp"}
        return {"ui": {"images": [result], "animated": [True]}, "result": ()}


NODE_CLASS_MAPPINGS = {
    "VDOTLoadVideo": VDOTLoadVideo,
    "VDOTLoadImage": VDOTLoadImage,
    "VDOTImageToMask": VDOTImageToMask,
    "VDOTFitVideo": VDOTFitVideo,
    "VDOTSaveVideo": VDOTSaveVideo,
    "VDOTPreviewVideo": VDOTPreviewVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VDOTLoadVideo": "VDOT Load Video",
    "VDOTLoadImage": "VDOT Load Image",
    "VDOTImageToMask": "VDOT Image to Mask",
    "VDOTFitVideo": "VDOT Fit Video",
    "VDOTSaveVideo": "VDOT Save Video",
    "VDOTPreviewVideo": "VDOT Preview Video",
}
