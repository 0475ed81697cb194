"""Fixtures shared by the test modules: the tiny pipeline, a temporary ComfyUI folder tree, one
intra-op thread, and a two-rank torchrun launcher (plain helpers: ``tests/helpers.py``).

Heavy imports stay inside the fixtures, so a module that uses none of them does not pay for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

#: The model folders a temporary ComfyUI root has (ComfyUI's own names, plus the annotators').
COMFY_MODEL_FOLDERS = ("diffusion_models", "vae", "text_encoders", "loras", "vdot_annotators")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the module: its tiny models gain nothing from threads, which on a
    shared CPU only contend. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def comfy_root(tmp_path):
    """A ComfyUI folder tree in ``tmp_path`` (``input``, ``output``, ``models/<kind>``) that the node
    adapter uses while ComfyUI is not importable; reset after the test."""
    from vdot_nodes.nodes import comfy

    for sub in ("input", "output", *(f"models/{kind}" for kind in COMFY_MODEL_FOLDERS)):
        (tmp_path / sub).mkdir(parents=True)
    comfy.set_fallback_root(tmp_path)
    yield tmp_path
    comfy.set_fallback_root(None)


@pytest.fixture(scope="module")
def tiny_pipeline():
    """The tiny Wan-VACE pipeline on the CPU (transformer seed 1, VAE seed 2, UMT5 seed 3), one per module."""
    from vdot_nodes.core.pipeline import VDOTPipeline
    from vdot_nodes.core.tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_transformer, build_tiny_vae

    return VDOTPipeline(build_tiny_transformer(seed=1), build_tiny_vae(seed=2), build_tiny_text_encoder(seed=3),
                        build_tiny_tokenizer(), device="cpu", offload="none")


@pytest.fixture(scope="session")
def torchrun():
    """``torchrun(args, timeout)``: run ``python -m torch.distributed.run`` with 2 CPU ranks, one thread
    each, from the repository root; fails the test with the output's tail unless it exits 0."""
    def run(args, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *(str(a) for a in args)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        return proc

    return run
