"""The run folder's rules, checked before any model loads: nothing a run made is lost or mixed with another run.

* A new run never starts over an old one: a folder holding checkpoints, exports or metrics is refused
  unless ``--resume`` (continue it) or ``--overwrite`` (move the old run's files to a sibling
  ``<out>.old-<time>/`` folder — moved, never deleted — and start afresh).
* ``--resume`` picks the newest *whole* checkpoint (:func:`training.checkpoint.find_resumable_checkpoint`),
  saying in one line which newer ones it passed over and why; none whole is one clear error. Metrics lines
  written after that checkpoint (the interrupted part, which is about to be redone) are moved to a side
  file, so ``metrics.jsonl`` holds each step once.
* Every run has an id (kept in its checkpoints and written into its exports); an export name that already
  holds another run's file gets the id appended instead of being reported as this run's result.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path

from vdot_nodes.core.atomic import atomic_write_text
from vdot_nodes.core.errors import VDOTInputError

from . import distributed as D
from .checkpoint import _STEP_RE, find_resumable_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["RUN_ENTRIES", "export_target", "new_run_id", "prepare_run_folder", "run_contents"]

RUN_ENTRIES = ("checkpoints", "exports", "metrics.jsonl", "config.yaml")
"""What a run writes into its folder (and what ``--overwrite`` moves aside)."""


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def run_contents(out: Path) -> list[str]:
    """What of a previous run ``out`` holds, in words (empty: nothing a new run could lose)."""
    found = []
    ckpts = out / "checkpoints"
    steps = sorted(p.name for p in ckpts.iterdir() if _STEP_RE.match(p.name) and p.is_dir()) if ckpts.is_dir() else []
    if steps:
        found.append(f"checkpoints up to {steps[-1]}")
    exports = sorted(p.name for p in (out / "exports").iterdir() if not p.name.startswith(".")) \
        if (out / "exports").is_dir() else []  # a dot-name is a writer's left-over temporary file
    if exports:
        found.append(f"{len(exports)} export(s)")
    metrics = out / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size:
        found.append("metrics.jsonl")
    return found


def _aside_name(out: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out.resolve()
    target = base.with_name(f"{base.name}.old-{stamp}")
    n = 2
    while target.exists():
        target = base.with_name(f"{base.name}.old-{stamp}-{n}")
        n += 1
    return target


def _move_aside(out: Path) -> Path:
    """Move the run's own entries (and metrics side files) into a sibling ``<out>.old-<time>/``; return it."""
    target = _aside_name(out)
    target.mkdir()
    names = [n for n in RUN_ENTRIES if (out / n).exists()] + [p.name for p in out.glob("metrics.after-step*.jsonl")]
    for name in names:
        os.replace(out / name, target / name)
    return target


def _rewind_metrics(out: Path, step: int) -> str | None:
    """Move ``metrics.jsonl`` lines of steps ≥ ``step`` (and torn lines) to a side file; a line saying so, or None."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return None
    keep, drop = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            row_step = None
        (keep if isinstance(row_step, int) and row_step < step else drop).append(line)
    if not drop:
        return None
    side = out / f"metrics.after-step{step:06d}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    atomic_write_text(side, "\n".join(drop) + "\n")
    atomic_write_text(path, "".join(line + "\n" for line in keep), overwrite=True)
    return f"metrics.jsonl: {len(drop)} line(s) from after step {step} (the interrupted part, redone now) moved to {side.name}"


def prepare_run_folder(out: str | os.PathLike, *, resume: bool, overwrite: bool) -> Path | None:
    """Apply the run-folder rules (module docstring) to ``out``; returns the checkpoint to resume from, or None.

    Call on every rank before any model loads; rank 0 moves files, the others wait.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VDOTInputError("out", f"{out} is a file, not a run folder", "give a folder path (it is created)")
    if resume and overwrite:
        raise VDOTInputError("--overwrite", "cannot be combined with --resume",
                             "use --resume to continue the run, or --overwrite to start over")
    main = D.is_main_process()
    if not resume:
        contents = run_contents(out) if out.is_dir() else []
        if contents and not overwrite:
            raise VDOTInputError("out", f"{out} already holds a run ({', '.join(contents)})",
                                 f"use --resume to continue it, --overwrite to move it to {out.name}.old-<time>/ and "
                                 "start afresh, or choose another --out")
        if contents and main:
            try:
                logger.info(f"--overwrite: moved the previous run in {out} to {_move_aside(out)}")
            except OSError as exc:
                raise VDOTInputError("--overwrite", f"cannot move the previous run in {out} aside ({exc})",
                                     "make its parent folder writable, or choose another --out") from None
        D.barrier()
        return None
    checkpoint, skipped = find_resumable_checkpoint(out / "checkpoints")
    passed = "; ".join(f"{name} ({why})" for name, why in skipped)
    if checkpoint is None and skipped:
        raise VDOTInputError("--resume", f"no whole checkpoint in {out / 'checkpoints'}: {passed}",
                             "restore a checkpoint from a copy, or start over with --overwrite (the old run is moved aside)")
    step = 0
    if checkpoint is not None:
        step = int(json.loads((checkpoint / "meta.json").read_text(encoding="utf-8"))["step"])
    if main:
        if skipped:
            logger.warning(f"resume: skipped {passed}; resuming from {checkpoint.name}")
        elif checkpoint is None:
            logger.info(f"resume: no checkpoint in {out / 'checkpoints'}; starting at step 0")
        note = _rewind_metrics(out, step)
        if note:
            logger.info(note)
    D.barrier()
    return checkpoint


def _export_run_id(path: Path) -> str | None:
    from safetensors import safe_open

    file = path / "diffusion_pytorch_model.safetensors" if path.is_dir() else path
    try:
        with safe_open(str(file), framework="pt") as f:
            return (f.metadata() or {}).get("vdot_run_id")
    except Exception:  # unreadable / not safetensors: certainly not this run's export
        return None


def export_target(path: Path, run_id: str) -> tuple[Path, bool]:
    """Where this run's export named ``path`` goes: ``(path, True)`` when this run already wrote it (kept as
    it is: same run and step, same weights), ``(path, False)`` when free, else the name with the run id
    appended (another run's file is never reported as this run's, nor replaced)."""
    for candidate in (path, path.with_name(f"{path.stem}-{run_id}{path.suffix}")):
        if not candidate.exists():
            return candidate, False
        if _export_run_id(candidate) == run_id:
            return candidate, True
    raise VDOTInputError("exports", f"{path} and its run-id variant both hold other runs' exports",
                         "move them out of the exports folder")
