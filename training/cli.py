"""``vdot train CONFIG`` and ``torchrun --nproc-per-node N -m training.cli CONFIG``.

One process, or one per GPU under torchrun / ``accelerate launch`` (FSDP2). ``--resume`` continues from
the newest whole checkpoint in ``OUT/checkpoints`` (models, optimisers, EMA, RNG, step, data position);
a folder that already holds a run is refused without ``--resume`` or ``--overwrite`` (``training/run_dir.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from vdot_nodes.core.errors import one_line_parser_class, run_subcommand

__all__ = ["train_main"]


def _parser() -> argparse.ArgumentParser:
    p = one_line_parser_class()(prog="vdot train", description="Distil a 4-step VDOT generator (DMD/OTD + GAN).")
    p.add_argument("config", help="training YAML, e.g. training/configs/toy_stage1.yaml")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest whole checkpoint in OUT/checkpoints (damaged newer ones are skipped, saying so)")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT holds an old run: move its files to OUT.old-<time>/ (nothing is deleted) and start afresh")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many iterations in total (overrides the config)")
    p.add_argument("--out", default=None, help="run folder (overrides the config's out)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the one at set-up: a second
    in-process run (tests, notebooks) must not log into the first run's closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _log_to_stderr() -> None:
    logger = logging.getLogger("training")
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def train_main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, train, return an exit code (0 ok, 2 bad input, 130 interrupted)."""
    return run_subcommand("vdot train", _parser(), argv, _train, "interrupted; resume with --resume",
                          names={"overwrite": "--overwrite"})


def _train(args) -> int:
    _log_to_stderr()
    from .config import load_config
    from .distributed import destroy_distributed, is_main_process

    try:
        overrides = {}
        if args.out is not None:
            overrides["out"] = args.out
        if args.max_steps is not None:
            overrides["max_steps"] = args.max_steps
        cfg = load_config(args.config, overrides)
        from .trainer import Trainer

        trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
        result = trainer.train(progress=not args.no_progress)
        if is_main_process():
            print(f"done: step {trainer.step}, checkpoint {result.get('checkpoint')}, export {result.get('export')}")
        return 0
    finally:
        destroy_distributed()


if __name__ == "__main__":
    raise SystemExit(train_main())
