"""ComfyUI node classes: thin socket declarations over ``vdot_nodes.core`` calls.

Each module defines ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``; they are merged here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

_MODULES = ("loaders", "lora", "text", "vcu", "sampler", "long_video", "io", "preprocess", "preview")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

for _name in _MODULES:
    if not (Path(__file__).parent / f"{_name}.py").exists():
        continue  # a module still being written; an import error in an existing one must raise
    _module = importlib.import_module(f"{__name__}.{_name}")
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
