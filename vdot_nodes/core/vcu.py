"""Video Condition Unit (VCU): the one representation every VDOT task is expressed in.

A VCU is (prompt, frames, masks, references) with VACE semantics:
- ``frames``  ``[F, H, W, 3]`` float32 in 0..1 (ComfyUI IMAGE layout, frames as the batch).
  Pixels to keep hold the source; pixels to generate hold grey 0.5 (= 0 in VACE's [-1, 1] space),
  or the control signal (depth, pose, ...) for V2V tasks.
- ``masks``   ``[F, H, W]`` float32, exactly 0 or 1: 1 = generate, 0 = keep.
- ``references`` list of ``[H, W, 3]`` float32 0..1 images already placed on a white H×W canvas;
  they are VAE-encoded as extra latent frames in front of the video and stripped after sampling.
F must be 4k+1, H and W multiples of 16.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class VCU:
    task: str
    frames: torch.Tensor
    masks: torch.Tensor
    references: list[torch.Tensor] = field(default_factory=list)
    prompt: str = ""
    negative_prompt: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])
