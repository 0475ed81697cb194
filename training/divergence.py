"""Divergence: a non-finite loss or gradient norm stops the run with one line naming the step and the term.

Checked after every iteration, before anything is saved, so no checkpoint or export of the diverged weights
is written and the last checkpoint (from before) is what ``--resume`` continues from. Under torchrun every
rank learns that some rank diverged (one tiny all-reduce), so no rank is left waiting in a collective.
"""

from __future__ import annotations

import math

import torch

from vdot_nodes.core.errors import VDOTInputError

from . import distributed as D

__all__ = ["TrainingDiverged", "check_finite_metrics"]

_TOTALS = ("loss_generator", "loss_critic", "grad_norm_generator", "grad_norm_critic")


class TrainingDiverged(VDOTInputError):
    """A loss term or gradient norm became NaN / inf."""


def _first_non_finite(metrics: dict) -> tuple[str, float] | None:
    # Components before totals: the first term that went bad is the one worth naming.
    parts = [k for k in metrics if (k.startswith("loss_") or k == "reward") and k not in _TOTALS]
    for key in parts + [k for k in _TOTALS if k in metrics]:
        value = metrics[key]
        if isinstance(value, float) and not math.isfinite(value):
            return key, value
    return None


def check_finite_metrics(metrics: dict, step: int, optim, mixed_precision: str) -> None:
    """Raise :class:`TrainingDiverged` when ``metrics`` (floats of iteration ``step``) hold NaN / inf on any rank.

    ``optim``: the config's optimiser section (its learning rates go into the fix).
    """
    bad = _first_non_finite(metrics)
    anywhere = bad is not None
    if D.is_distributed():
        flag = torch.tensor([1.0 if anywhere else 0.0], device=D.comm_device())
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        anywhere = bool(flag.item())
    if not anywhere:
        return
    what = f"{bad[0]} is {bad[1]}" if bad else "another rank's loss is not finite"
    fp32 = " or use runtime.mixed_precision: fp32" if mixed_precision != "fp32" else ""
    raise TrainingDiverged(
        "training", f"diverged at step {step}: {what}",
        f"lower optim.lr / optim.critic_lr (now {optim.lr:g} / {optim.critic_lr:g}){fp32}, and check the data rows of "
        "this step; nothing from this step was saved, so --resume continues from the last checkpoint before it")
