"""VCU nodes: one per task family, each a socket declaration over the task registry
(``vdot_nodes.core.tasks``): the tasks a node builds, and its ``kind`` list, are the registry's entries
naming that node; its sockets are the tasks' semantic inputs (``expand`` is four side sockets).

A VCU (video condition unit) is the frames, masks (1 = generate) and reference images that tell
VDOT what to make. Videos are ComfyUI IMAGE batches ``[F, H, W, 3]``; frame counts must be 4k+1 and
sizes multiples of 16 — use VDOT Fit Video to get there explicitly.
"""

from __future__ import annotations

from ..core import vcu as core
from ..core.errors import VDOTInputError, inputs_named
from ..core.preprocess.masks import binarize_mask
from ..core.tasks import build_vcu, tasks_of_node

_SIZE = {"min": 16, "max": 2048, "step": 16}
_W = ("INT", {"default": 832, **_SIZE, "tooltip": "Video width in pixels (multiple of 16)."})
_H = ("INT", {"default": 480, **_SIZE, "tooltip": "Video height in pixels (multiple of 16)."})
_FRAMES = ("INT", {"default": 81, "min": 1, "max": 1025, "step": 4,
                   "tooltip": "Frame count, 4k+1 (81 = 5 s at Wan's 16 fps)."})


def _kind(node: str):
    """The ``kind`` combo of a node building one task per control kind: those tasks' kinds."""
    kinds = [spec.control_kind for spec in tasks_of_node(node)]
    return (kinds, {"default": kinds[0], "tooltip": "What the control video shows (made by a VDOT/preprocess node "
                                                    "or another annotator)."})

_CONTROL = ("IMAGE", {"tooltip": "Control video (frames as the batch): depth / pose / flow / grey / scribble."})
_SOURCE = ("IMAGE", {"tooltip": "Source video (frames as the batch)."})
_REFS = ("IMAGE", {"tooltip": "Reference image(s), one per batch item: faces, objects, characters. Each is placed "
                              "on a white canvas of the video's size, as VACE was trained."})


def _images(batch) -> list:
    return [img for img in batch]


# The registry's semantic inputs as these nodes' sockets (the others are spelled the same), and how
# to give a missing one.
SOCKETS = {"expand": "top/bottom/left/right", **{f"expand.{side}": side for side in ("top", "bottom", "left", "right")}}
HOW_TO_GIVE = {"mask": "connect a MASK to 'mask'", "box": "type x0,y0,x1,y1 (pixels) in 'box'"}


class _VCUNode:
    CATEGORY = "VDOT/VCU"
    RETURN_TYPES = ("VDOT_VCU",)
    RETURN_NAMES = ("vcu",)
    OUTPUT_TOOLTIPS = ("Video condition unit for VDOT Sampler.",)
    FUNCTION = "build"

    @classmethod
    def task(cls, kind: str | None = None) -> str:
        """The registry task this node builds (for ``kind``, on the nodes with a kind combo)."""
        for spec in tasks_of_node(cls.__name__):
            if spec.control_kind == kind:
                return spec.name
        kinds = [spec.control_kind for spec in tasks_of_node(cls.__name__)]
        raise VDOTInputError("kind", f"{kind!r} is not a kind of {cls.__name__}", f"use one of {kinds}")

    @classmethod
    def _build(cls, kind: str | None = None, **inputs):
        with inputs_named(SOCKETS, HOW_TO_GIVE):
            return (build_vcu(cls.task(kind), **inputs),)


class VDOTVCUText2Video(_VCUNode):
    DESCRIPTION = "Text to video: nothing is given but the prompt."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": _W, "height": _H, "num_frames": _FRAMES}}

    def build(self, width, height, num_frames):
        return self._build(num_frames=num_frames, height=height, width=width)


class VDOTVCUReference(_VCUNode):
    DESCRIPTION = "Reference to video (R2V): a video of the subject(s) in the reference image(s)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"references": _REFS, "width": _W, "height": _H, "num_frames": _FRAMES}}

    def build(self, references, width, height, num_frames):
        return self._build(references=_images(references), num_frames=num_frames, height=height, width=width)


class VDOTVCUControl(_VCUNode):
    DESCRIPTION = "Video to video (V2V): follow a depth / pose / flow / grey / scribble control video."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"control": _CONTROL, "kind": _kind(cls.__name__)}}

    def build(self, control, kind):
        return self._build(kind, control=control)


class VDOTVCUOutpaint(_VCUNode):
    DESCRIPTION = "Outpaint: put the source in a larger canvas and generate the new border."

    @classmethod
    def INPUT_TYPES(cls):
        side = {"default": 0, "min": 0, "max": 2048, "step": 16}
        return {"required": {
            "source": _SOURCE,
            "top": ("INT", {**side, "tooltip": "Pixels to add above the source."}),
            "bottom": ("INT", {**side, "tooltip": "Pixels to add below the source."}),
            "left": ("INT", {**side, "default": 64, "tooltip": "Pixels to add left of the source."}),
            "right": ("INT", {**side, "default": 64, "tooltip": "Pixels to add right of the source."}),
            "overlap": ("INT", {"default": 0, "min": 0, "max": 256, "step": 1,
                                "tooltip": "Also regenerate this many source pixels along each expanded edge "
                                           "(hides seams)."}),
        }}

    def build(self, source, top, bottom, left, right, overlap):
        return self._build(source=source, expand=(top, bottom, left, right), overlap=overlap)


class VDOTVCUExtension(_VCUNode):
    DESCRIPTION = "Temporal extension: keep a clip of the source (first, last or random) and generate the rest."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "source": _SOURCE,
            "keep_frames": ("INT", {"default": 17, "min": 1, "max": 1024,
                                    "tooltip": "How many source frames to keep; the others are generated."}),
            "mode": (["first", "last", "random"], {"default": "first",
                                                   "tooltip": "first: continue the video; last: make what leads "
                                                              "up to it; random: a clip in the middle."}),
            # "fixed": the frontend gives every INT named seed a control widget, by default "randomize", which
            # would pick another kept clip on every run.
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": "fixed",
                             "tooltip": "Picks the clip for mode random."}),
        }}

    def build(self, source, keep_frames, mode, seed):
        return self._build(source=source, keep_frames=keep_frames, mode=mode, seed=seed)


def _parse_box(box: str):
    text = (box or "").strip()
    if not text:
        return None
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise VDOTInputError("box", f"{box!r} is not four integers", "write it as x0,y0,x1,y1 in pixels, e.g. 16,16,48,48")
    return values


class VDOTVCUInpaint(_VCUNode):
    DESCRIPTION = "Inpaint: regenerate the masked region (or a box) of the source video; the rest is kept."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source": _SOURCE,
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Mask values above this are regenerated."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "White (1) = regenerate. One mask for all frames or one per frame."}),
                "box": ("STRING", {"default": "", "tooltip": "Instead of a mask: x0,y0,x1,y1 in pixels."}),
            },
        }

    def build(self, source, threshold, mask=None, box=""):
        return self._build(source=source, mask=mask, box=_parse_box(box), threshold=threshold)


class VDOTVCUFirstFrameControl(_VCUNode):
    DESCRIPTION = "First frame + control: start from the given image and follow the control video."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"control": _CONTROL,
                             "first_frame": ("IMAGE", {"tooltip": "The first frame (same aspect ratio as the video)."}),
                             "kind": _kind(cls.__name__)}}

    def build(self, control, first_frame, kind):
        if first_frame.shape[0] != 1:
            raise VDOTInputError("first_frame", f"is a batch of {first_frame.shape[0]} images",
                                 "connect a single image (e.g. an Image From Batch node)")
        return self._build(kind, control=control, first_frame=first_frame[0])


class VDOTVCUReferenceControl(_VCUNode):
    DESCRIPTION = "Reference + control: the reference subject(s), moving as the control video says."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"control": _CONTROL, "references": _REFS, "kind": _kind(cls.__name__)}}

    def build(self, control, references, kind):
        return self._build(kind, control=control, references=_images(references))


class VDOTVCUCustom(_VCUNode):
    DESCRIPTION = "Any VACE task by hand: frames, masks (1 = generate) and optional reference images."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "Conditioning frames (kept where the mask is 0)."}),
                "masks": ("MASK", {"tooltip": "1 = generate, 0 = keep; one mask or one per frame."}),
            },
            "optional": {
                "references": _REFS,
                "task": ("STRING", {"default": "custom",
                                    "tooltip": "A label for this VCU (shown in errors and logs); it does not change "
                                               "what is generated."}),
            },
        }

    def build(self, frames, masks, references=None, task="custom"):
        video = core.as_video(frames, "frames")
        f, h, w = video.shape[:3]
        given = core.as_mask(masks, "masks", f, h, w)
        mask = binarize_mask(given, 0.5, "masks")
        # VACE's 64-channel mask input takes the mask unthresholded (inactive/reactive use mask > 0.5).
        soft = None if ((given == 0) | (given == 1)).all() else given.clamp(0, 1)
        refs = [] if references is None else [core.place_on_white_canvas(r, h, w)
                                              for r in core.as_references(_images(references))]
        return (core.validate_vcu(core.VCU(task.strip() or "custom", video, mask, refs, soft_masks=soft)),)


NODE_CLASS_MAPPINGS = {
    "VDOTVCUText2Video": VDOTVCUText2Video,
    "VDOTVCUReference": VDOTVCUReference,
    "VDOTVCUControl": VDOTVCUControl,
    "VDOTVCUOutpaint": VDOTVCUOutpaint,
    "VDOTVCUExtension": VDOTVCUExtension,
    "VDOTVCUInpaint": VDOTVCUInpaint,
    "VDOTVCUFirstFrameControl": VDOTVCUFirstFrameControl,
    "VDOTVCUReferenceControl": VDOTVCUReferenceControl,
    "VDOTVCUCustom": VDOTVCUCustom,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VDOTVCUText2Video": "VDOT VCU Text to Video",
    "VDOTVCUReference": "VDOT VCU Reference",
    "VDOTVCUControl": "VDOT VCU Control Video",
    "VDOTVCUOutpaint": "VDOT VCU Outpaint",
    "VDOTVCUExtension": "VDOT VCU Extension",
    "VDOTVCUInpaint": "VDOT VCU Inpaint",
    "VDOTVCUFirstFrameControl": "VDOT VCU First Frame + Control",
    "VDOTVCUReferenceControl": "VDOT VCU Reference + Control",
    "VDOTVCUCustom": "VDOT VCU Custom",
}
