"""Plain helpers shared by test modules (fixtures live in ``conftest.py``); import as ``tests.helpers``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

#: The clip shape of :func:`write_train_manifest`'s default clips, as the training ``data`` keys spell it.
TRAIN_SHAPE = {"num_frames": 5, "height": 16, "width": 16}


def write_train_manifest(folder: Path, n: int = 2, size: int = 16) -> Path:
    """``folder/train.jsonl`` over ``n`` inpaint rows, each a random 5-frame ``size``×``size`` clip
    ``clip{i}.mp4`` (seed ``i``) captioned ``a red ball {i}``."""
    from vdot_nodes.core.video_io import write_video

    lines = []
    for i in range(n):
        frames = torch.rand(5, size, size, 3, generator=torch.Generator().manual_seed(i))
        write_video(frames, folder / f"clip{i}.mp4", fps=8)
        lines.append(json.dumps({"video": f"clip{i}.mp4", "caption": f"a red ball {i}", "task": "inpaint"}))
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
