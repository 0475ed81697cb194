"""Greyscale control video: OpenCV's RGB→grey conversion replicated to 3 channels.

``cv2.cvtColor(frame, COLOR_RGB2GRAY)`` on uint8 frames: ``Y = 0.299 R + 0.587 G + 0.114 B`` in
OpenCV's fixed-point arithmetic (rounded), so the result is bit-exact with OpenCV.

``weights="vace"`` reproduces VACE's own ``GrayAnnotator`` instead: it applies ``COLOR_BGR2GRAY``
to the RGB frames it reads, i.e. ``0.114 R + 0.587 G + 0.299 B`` (red and blue weights swapped).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import VDOTInputError
from .video_ops import DEFAULT_BATCH_SIZE, CancelFn, ProgressFn, cv2, map_frames

GREY_WEIGHTS = ("rgb", "vace")


def grey(video: torch.Tensor, *, weights: str = "rgb", batch_size: int = DEFAULT_BATCH_SIZE,
         progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> torch.Tensor:
    """``[F, H, W, 3]`` 0..1 → the same shape, each frame OpenCV greyscale on all three channels."""
    if weights not in GREY_WEIGHTS:
        raise VDOTInputError("weights", f"unknown value {weights!r}", f"use one of {', '.join(GREY_WEIGHTS)}")
    cv = cv2()
    code = cv.COLOR_RGB2GRAY if weights == "rgb" else cv.COLOR_BGR2GRAY

    def one(frame: np.ndarray) -> np.ndarray:
        return cv.cvtColor(frame, code)

    return map_frames(video, one, batch_size=batch_size, progress=progress, cancel=cancel)
