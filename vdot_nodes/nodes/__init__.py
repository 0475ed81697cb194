"""ComfyUI node classes: thin socket declarations over ``vdot_nodes.core`` calls.

Each module defines ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``; they are merged here.
"""

from __future__ import annotations

from . import io, loaders, long_video, lora, native, preprocess, preview, sampler, text, vcu

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

# The order is the order ComfyUI lists the nodes in.
for _module in (loaders, lora, text, vcu, sampler, native, long_video, io, preprocess, preview):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
