"""ComfyUI-VDOT: the VDOT 4-step unified video creator as a library, CLI and ComfyUI node pack.

``vdot_nodes.core`` is pure torch + diffusers and never imports ComfyUI;
``vdot_nodes.nodes`` holds the thin ComfyUI node classes.
"""

__version__ = "0.1.0"
