"""Exponential moving average of a model's parameters (the generator's EMA is what VDOT exports).

``shadow ← decay·shadow + (1 − decay)·param`` after each optimizer step, kept in float32 whatever
the parameters' dtype. With an FSDP2-sharded model the parameters are ``DTensor`` s: the shadows are
DTensors with the same sharding and the update runs on the local shards only (no communication).
:meth:`EMA.state_dict` returns full tensors (gathering shards — a collective), and
:meth:`EMA.load_state_dict` takes full tensors and keeps this rank's shard, so checkpoints hold the
same full-tensor format whether or not the run was sharded.
"""

from __future__ import annotations

import torch
from torch import nn

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - torch without distributed
    DTensor = None  # type: ignore[assignment,misc]

__all__ = ["EMA"]


def _is_dtensor(t) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (a view sharing storage), or the tensor itself."""
    return t.to_local() if _is_dtensor(t) else t


class EMA:
    """EMA of ``model``'s parameters (all of them, frozen ones included, keyed by parameter name).

    Build it after the model is sharded (the shadows take the parameters' sharding) and after its
    initial weights are loaded; call :meth:`update` after every generator optimizer step.
    """

    def __init__(self, model: nn.Module, decay: float = 0.99):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        with torch.no_grad():
            self.shadow: dict[str, torch.Tensor] = {
                name: p.detach().to(torch.float32, copy=True) for name, p in model.named_parameters()
            }

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """``shadow ← d·shadow + (1 − d)·param`` with ``d = decay`` (default: ``self.decay``)."""
        d = self.decay if decay is None else float(decay)
        shadows, params = [], []
        for name, p in model.named_parameters():
            if name not in self.shadow:
                raise KeyError(f"parameter {name!r} is not tracked by this EMA (was it built from another model?)")
            shadows.append(_local(self.shadow[name]))
            params.append(_local(p.detach()).to(torch.float32))
        if len(shadows) != len(self.shadow):
            raise KeyError("the model has fewer parameters than this EMA tracks")
        if shadows:
            torch._foreach_lerp_(shadows, params, 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (cast to each parameter's dtype), e.g. for export or eval."""
        for name, p in model.named_parameters():
            _local(p).copy_(_local(self.shadow[name]))

    def state_dict(self, rank0_only: bool = False) -> dict[str, torch.Tensor]:
        """Full float32 CPU tensors ``{param_name: shadow}``. Collective when sharded: call on every rank.

        ``rank0_only``: other ranks take part in each gather but keep nothing (``{}``), so at 14B only
        the writing rank holds the full EMA, one gathered tensor at a time elsewhere.
        """
        import torch.distributed as dist

        keep = not rank0_only or not dist.is_initialized() or dist.get_rank() == 0
        out = {}
        for name, s in self.shadow.items():
            full = s.full_tensor() if _is_dtensor(s) else s
            if keep:
                out[name] = full.detach().cpu().clone()
        return out

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True,
                        broadcast_from_rank0: bool = False) -> None:
        """Load full tensors; each rank keeps its own shard.

        Every rank passes the full dict, or — ``broadcast_from_rank0=True`` with a sharded EMA — rank 0
        passes it and the other ranks pass ``{}``: each tensor is then scattered from rank 0, so only
        one full copy is ever read into host memory.
        """
        import torch.distributed as dist

        scatter = broadcast_from_rank0 and any(_is_dtensor(s) for s in self.shadow.values())
        receiver = scatter and dist.get_rank() != 0
        names = set(state_dict)
        if scatter:  # every rank must join every scatter, in the same order: agree on the names first
            box = [sorted(names)]
            dist.broadcast_object_list(box, src=0)
            names = set(box[0])
        missing, unexpected = sorted(set(self.shadow) - names), sorted(names - set(self.shadow))
        if strict and (missing or unexpected):
            raise KeyError(f"EMA state mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, s in self.shadow.items():
            if name not in names:
                continue
            if receiver:
                full = torch.empty(s.shape, dtype=torch.float32, device=s.device)
            else:
                full = state_dict[name].to(s.device, torch.float32)
            if tuple(full.shape) != tuple(s.shape):
                raise ValueError(f"EMA tensor {name!r}: shape {tuple(full.shape)} does not fit {tuple(s.shape)}")
            if _is_dtensor(s):
                from torch.distributed.tensor import distribute_tensor

                # src_data_rank=None: every rank holds the data and just slices its shard.
                full = distribute_tensor(full, s.device_mesh, s.placements, src_data_rank=0 if scatter else None)
            _local(s).copy_(_local(full))
