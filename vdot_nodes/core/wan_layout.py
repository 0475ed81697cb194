"""Moved to :mod:`vdot_nodes.core.models.convert.wan_transformer` (the conversion registry); kept so
``from vdot_nodes.core.wan_layout import comfy_key_names`` still works."""

from .models.convert.wan_transformer import comfy_key_names, original_name

__all__ = ["comfy_key_names", "original_name"]
