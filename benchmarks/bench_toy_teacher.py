"""Toy teacher training step: fp32 against bf16 autocast and ``torch.compile``, the levers on `vdot toy build`'s time.

The teacher is most of a toy build (5400 steps of 8 rows: 43–47 min of a 64-minute build on 2 CPU cores), so
the build's 45-minute target turns on this step. Times the recipe's teacher (``TOY_TEACHER_CONFIG``, random
weights of ``teacher.seed``) through the real ``TeacherTrainer.train_step`` (σ, noise and text-dropout draws,
flow-matching loss, backward, clipping, AdamW with the recipe's hyper-parameters, EMA), on rows of the toy world's shapes (5 latent frames of 32×32, 4 channels; VACE context 12
channels; a 12-token caption). Each mode runs ``--rounds`` times, interleaved with the others, in fresh
processes, because a 2-core machine's speed drifts by 20 % from one minute to the next; the table gives the
fastest and the median round and the 5400-step teacher each would take. Prints a table; asserts nothing.

    python benchmarks/bench_toy_teacher.py                       # fp32, bf16, compile, compile+bf16; 2 rounds
    python benchmarks/bench_toy_teacher.py --modes fp32,compile --rounds 3 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("fp32", "bf16", "compile", "compile+bf16")
TEACHER_STEPS = 5400  # training/configs/toy_teacher.yaml's teacher.steps


def _one_round(mode: str, steps: int, batch: int) -> dict:
    """In this process: ``steps`` timed ``TeacherTrainer.train_step`` calls in ``mode`` after two untimed ones
    (compilation)."""
    import tempfile
    from types import SimpleNamespace

    import torch

    sys.path.insert(0, str(ROOT))
    from training.toy.teacher import TeacherExample, TeacherTrainer, build_toy_teacher

    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 12, 32, generator=g)
    # The trainer's step reads only the rows handed to it; of its data it needs the rows' tasks (task_weights)
    # and the empty prompt (text dropout), here of the caption's shape so a batch stays one forward.
    rows = SimpleNamespace(dataset=SimpleNamespace(samples=[]), text=lambda caption: torch.zeros_like(text))
    examples = [TeacherExample("depth", torch.randn(1, 4, 5, 32, 32, generator=g),
                               torch.randn(1, 12, 5, 32, 32, generator=g), text) for _ in range(batch)]
    model = build_toy_teacher(seed=0)
    with tempfile.TemporaryDirectory() as out:
        trainer = TeacherTrainer(torch.compile(model) if "compile" in mode else model, rows, out,
                                 {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.01, "ema_decay": 0.99})

        def step() -> float:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in mode):
                return trainer.train_step(examples)

        start = time.perf_counter()
        step(), step()
        warm = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
    return {"mode": mode, "warm_s": warm, "step_s": (time.perf_counter() - start) / steps, "loss": loss,
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per mode, interleaved (default 2)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per round (default 12)")
    p.add_argument("--batch", type=int, default=8, help="rows per step (the recipe's teacher.batch_size: 8)")
    p.add_argument("--round", dest="one", default=None, help=argparse.SUPPRESS)  # a child process: one round
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(_one_round(args.one, args.steps, args.batch)))
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"--modes: unknown mode(s) {bad}; use some of {', '.join(MODES)}", file=sys.stderr)
        return 2
    rounds: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, "--round", mode, "--steps", str(args.steps),
                                  "--batch", str(args.batch)], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rounds[mode].append(result)
            print(f"round {r + 1}/{args.rounds} {mode}: {result['step_s']:.3f} s a step "
                  f"(warm-up {result['warm_s']:.1f} s)", file=sys.stderr, flush=True)
    threads = rounds[modes[0]][0]["threads"]
    print(f"\nToy teacher training step, batch {args.batch}, {threads} threads, {args.steps} steps a round, "
          f"{args.rounds} rounds a mode\n")
    print(f"| mode | fastest s/step | median s/step | warm-up s | {TEACHER_STEPS}-step teacher (min, fastest) |")
    print("|---|---:|---:|---:|---:|")
    for mode, results in rounds.items():
        times = [x["step_s"] for x in results]
        warm = max(x["warm_s"] for x in results)
        print(f"| {mode} | {min(times):.3f} | {statistics.median(times):.3f} | {warm:.1f} | "
              f"{(min(times) * TEACHER_STEPS + warm) / 60:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
