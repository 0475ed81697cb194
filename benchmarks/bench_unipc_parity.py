"""Our FlowUniPC (preset ``vdot`` and overrides) against Wan2.1's own scheduler, run from a Wan2.1 checkout.

Wan's ``wan/utils/fm_solvers_unipc.py`` (the file the official VDOT inference imports) is loaded from the
checkout given with ``--wan`` (never copied here; it needs only diffusers). For each (steps, shift) it checks
that the timesteps and float32 σ are identical and prints the max |difference| of the final latents on a
nonlinear velocity field v = 0.5·x + t/1000 + 0.1·sin(3x), both fed the same noise and the same int64 t.

    python benchmarks/bench_unipc_parity.py --wan /path/to/Wan2.1
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vdot_nodes.core.sampling import SeededNoise, get_preset, preset_schedule, sample  # noqa: E402

CASES = ((4, 16.0), (4, 8.0), (4, 5.0), (2, 16.0), (1, 16.0), (7, 3.0), (50, 16.0))
SHAPE = (16, 3, 8, 8)


def load_wan_scheduler(wan_dir: Path):
    path = wan_dir / "wan" / "utils" / "fm_solvers_unipc.py"
    if not path.is_file():
        raise SystemExit(f"--wan {wan_dir}: no wan/utils/fm_solvers_unipc.py there (give a Wan2.1 checkout)")
    spec = importlib.util.spec_from_file_location("wan_fm_solvers_unipc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FlowUniPCMultistepScheduler


def velocity(x, t):
    return 0.5 * x + (t / 1000).view(-1, *[1] * (x.ndim - 1)) + 0.1 * torch.sin(3 * x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wan", required=True, type=Path, help="a Wan2.1 checkout (github.com/Wan-Video/Wan2.1)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    scheduler_cls = load_wan_scheduler(args.wan)
    print("| steps | shift | timesteps identical | σ identical | max abs diff of the output | output max abs |")
    print("|---:|---:|---|---|---:|---:|")
    for steps, shift in CASES:
        scheduler = scheduler_cls(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
        scheduler.set_timesteps(steps, shift=shift)
        x = SeededNoise([args.seed]).draw(SHAPE)
        for t in scheduler.timesteps:
            x = scheduler.step(velocity(x, torch.full((1,), float(t))), t, x, return_dict=False)[0]
        preset = get_preset("vdot", steps=steps, shift=shift)
        sched = preset_schedule(preset)
        same_t = list(sched.timesteps) == [float(t) for t in scheduler.timesteps]
        same_sigma = np.array_equal(np.array(sched.sigmas, np.float32), scheduler.sigmas.numpy())
        ours = sample(velocity, SeededNoise([args.seed]), SHAPE, preset)
        print(f"| {steps} | {shift:g} | {same_t} | {same_sigma} | {float((ours - x).abs().max()):.1e} "
              f"| {float(x.abs().max()):.2f} |")


if __name__ == "__main__":
    main()
