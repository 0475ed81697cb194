"""ComfyUI-VDOT: ComfyUI loads this package from custom_nodes/ and reads these two mappings."""

from .vdot_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
