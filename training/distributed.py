"""Distributed plumbing for VDOT training: process group, FSDP2 sharding, rank-safe helpers.

One code path for every launch:

- ``torchrun --nproc_per_node N -m training.train ...`` or ``accelerate launch ...`` (both set
  ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR``): :func:`init_distributed` joins the
  process group (NCCL on CUDA, gloo on CPU) and pins the local GPU;
- plain ``python ...``: nothing is initialised, and every helper here degrades to its
  single-process meaning (``shard_model`` returns the model untouched, ``barrier`` does nothing,
  ``all_gather_with_grad`` is the identity, the full-state-dict helpers return ordinary state dicts).

Sharding is torch FSDP2 (:func:`torch.distributed.fsdp.fully_shard`), applied to every transformer
block and then to the root, so one block's full weights exist at a time. Parameters become
``DTensor`` s sharded on dim 0; their fully qualified names do not change, so state dicts from a
sharded and an unsharded model use the same keys. To move whole weights in or out of a sharded model
(checkpoints, export, EMA initialisation) use :func:`full_model_state_dict` /
:func:`load_full_model_state_dict` and the optimizer equivalents, which wrap
``torch.distributed.checkpoint.state_dict`` with ``full_state_dict=True``: they are collectives —
every rank must call them, in the same order.

FSDP2 runs on CPU with gloo (bf16 mixed precision included), so the sharded path is tested in CI with
two CPU processes (``tests/test_distributed.py``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "init_distributed",
    "destroy_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "comm_device",
    "shard_model",
    "enable_gradient_checkpointing",
    "shared_random_int",
    "broadcast_object",
    "all_gather_with_grad",
    "full_model_state_dict",
    "load_full_model_state_dict",
    "full_optimizer_state_dict",
    "load_full_optimizer_state_dict",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_distributed(backend: str | None = None, timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group if launched by torchrun / ``accelerate launch``; otherwise a no-op.

    ``backend`` defaults to ``nccl`` when CUDA is available, else ``gloo``. On CUDA the process is
    pinned to ``cuda:LOCAL_RANK``. Safe to call twice (the second call only reports). Returns a
    :class:`DistInfo`; without a launcher it is rank 0 of 1 on ``cuda:0`` or ``cpu``.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if is_distributed():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)
    if not _launched_by_torchrun():
        return DistInfo(0, 1, 0, device)
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    kwargs = {}
    if backend == "nccl":
        kwargs["device_id"] = device  # binds the communicator eagerly, avoids a barrier-time guess
    dist.init_process_group(
        backend=backend,
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=datetime.timedelta(minutes=timeout_minutes),
        **kwargs,
    )
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def destroy_distributed() -> None:
    """Leave the process group (end of training / test); no-op when not initialised."""
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the rank that logs, saves and exports."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def comm_device() -> torch.device:
    """The device collectives' tensors must live on: the current GPU for NCCL, else CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# FSDP2


_MIXED_PRECISION = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": None,
}


def shard_model(
    model: nn.Module,
    *,
    mixed_precision: str = "bf16",
    reshard_after_forward: bool = True,
    cpu_offload: bool = False,
    block_attrs: Iterable[str] = ("blocks", "vace_blocks"),
    mesh=None,
) -> nn.Module:
    """Shard a diffusers Wan / WanVACE transformer (or any model with block lists) with FSDP2.

    ``fully_shard`` is applied to every module in ``model.<attr>`` for each attr in ``block_attrs``
    that exists (``blocks`` and ``vace_blocks`` for ``WanVACETransformer3DModel``, ``blocks`` for
    ``WanTransformer3DModel``), then to the root, which takes the remaining parameters (patch
    embedding, condition embedder, head). The model is modified in place and returned.

    - ``mixed_precision``: ``"bf16"`` computes with bf16 parameters and reduces gradients in fp32
      (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``); the sharded master weights and
      the optimizer state stay in the parameters' own dtype (keep them fp32). ``"fp32"`` does no
      casting.
    - ``reshard_after_forward``: free gathered block weights after forward (less memory, one more
      all-gather in backward). Set False for models only run forward (a frozen teacher).
    - ``cpu_offload``: keep sharded parameters, gradients and optimizer state on the CPU
      (``CPUOffloadPolicy``); the optimizer step then runs on the CPU.

    Not distributed (plain ``python``): returns ``model`` unchanged, so single-process runs and
    tests go through the same trainer code.

    FSDP2 warns that Wan blocks "returned a view tensor": harmless here (diffusers never modifies a
    block's output in place), but do not modify the model's output in place either.
    """
    if not is_distributed():
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if mixed_precision not in _MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {sorted(_MIXED_PRECISION)}, got {mixed_precision!r}")
    param_dtype = _MIXED_PRECISION[mixed_precision]
    mp_policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    offload_policy = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if cpu_offload else OffloadPolicy()
    if mesh is None:
        device_type = "cuda" if dist.get_backend() == "nccl" else "cpu"
        mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    kwargs = dict(mesh=mesh, mp_policy=mp_policy, offload_policy=offload_policy)

    found = 0
    for attr in block_attrs:
        blocks = getattr(model, attr, None)
        if blocks is None:
            continue
        for block in blocks:
            fully_shard(block, reshard_after_forward=reshard_after_forward, **kwargs)
            found += 1
    if found == 0:
        raise ValueError(
            f"{type(model).__name__} has no blocks under {tuple(block_attrs)}; pass block_attrs= naming its "
            "block lists (sharding only the root would gather the whole model at once)"
        )
    # The root's own parameters (embeddings, head) are needed right at the start of backward:
    # keeping them gathered after forward saves one all-gather and costs little memory.
    fully_shard(model, reshard_after_forward=False, **kwargs)
    return model


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute each transformer block in backward instead of storing its activations.

    diffusers models gate checkpointing on ``torch.is_grad_enabled()`` (not on ``model.training``),
    using non-reentrant ``torch.utils.checkpoint``, which composes with FSDP2. Works in both train
    and eval mode; returns the model.
    """
    enable = getattr(model, "enable_gradient_checkpointing", None)
    if enable is None:
        raise TypeError(
            f"{type(model).__name__} has no enable_gradient_checkpointing(); wrap its blocks with "
            "torch.utils.checkpoint yourself"
        )
    if getattr(model, "_supports_gradient_checkpointing", True) is False:
        raise TypeError(f"{type(model).__name__} does not support gradient checkpointing")
    enable()
    return model


# ----------------------------------------------------------------------------------------------
# Small collectives


def shared_random_int(low: int, high: int, generator: torch.Generator | None = None) -> int:
    """A random integer in ``[low, high)`` that is the same on every rank (rank 0's draw).

    Every rank draws from its own ``generator`` (so identically seeded generators stay in lockstep),
    then rank 0's value is broadcast — equal even if the generators have drifted. Used for the
    rollout's random exit step, which must agree across ranks or FSDP's collectives deadlock.
    """
    if high <= low:
        raise ValueError(f"empty range [{low}, {high})")
    value = torch.randint(low, high, (1,), generator=generator, dtype=torch.int64)
    if is_distributed():
        value = value.to(comm_device())
        dist.broadcast(value, src=0)
    return int(value.item())


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable Python object on every rank (identity when not distributed).

    Pickle only travels between our own processes here; nothing is read from disk.
    """
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=comm_device())
    return box[0]


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], rank: int):
        ctx.sizes, ctx.rank = sizes, rank
        biggest = max(sizes)
        padded = x
        if x.shape[0] < biggest:
            padded = torch.cat([x, x.new_zeros((biggest - x.shape[0], *x.shape[1:]))])
        buffers = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(buffers, padded.contiguous())
        return torch.cat([b[:n] for b, n in zip(buffers, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every rank's loss may depend on our rows: sum their gradients, keep our slice.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 (rank order), differentiable w.r.t. the local rows.

    For the OT point cloud: each rank holds a few samples, the plan is computed on all of them.
    Ranks may hold different row counts; trailing dims and dtype must match. Backward sums the
    gradient every rank's loss puts on our rows (an all-reduce), so with FSDP's gradient averaging
    the parameters get the gradient of the mean of the ranks' losses — the same as one process
    computing the mean loss over the whole gathered batch. Other ranks' rows are constants here.
    Identity when not distributed. Collective: all ranks must call it (and run backward through it).
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    return _AllGatherWithGrad.apply(x, [int(s.item()) for s in sizes], dist.get_rank())


# ----------------------------------------------------------------------------------------------
# Full state dicts of (possibly) sharded models


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU tensors of ``model``'s state dict, on rank 0; ``{}`` on other ranks.

    Collective when the model is sharded. In a single process: the model's state dict, detached and
    on the CPU (no copy for CPU tensors).
    """
    if not is_distributed():
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options(cpu_offload=True))


def load_full_model_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True, broadcast_from_rank0: bool = False
) -> None:
    """Load full tensors into ``model``, sharding them if it is sharded.

    Every rank passes the full dict, or — ``broadcast_from_rank0=True`` — only rank 0 does (the others
    pass ``{}``) and tensors are broadcast one at a time: one copy of the weights in host memory
    instead of one per rank.
    """
    if not is_distributed():
        model.load_state_dict(state_dict, strict=strict)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state_dict, options=_full_options(strict=strict, broadcast_from_rank0=broadcast_from_rank0))


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict keyed by parameter names (not ids), full CPU tensors, rank 0 only.

    Layout: ``{"state": {param_fqn: {"exp_avg": T, ...}}, "param_groups": [{..., "params": [fqn, ...]}]}``.
    Names make it independent of sharding and of parameter order. Collective when sharded; other
    ranks get ``{}``.
    """
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))


def load_full_optimizer_state_dict(
    model: nn.Module, optimizer: torch.optim.Optimizer, state_dict: dict, broadcast_from_rank0: bool = False
) -> None:
    """Inverse of :func:`full_optimizer_state_dict`; every rank passes the full dict, or only rank 0
    with ``broadcast_from_rank0=True`` (see :func:`load_full_model_state_dict`)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    broadcast = broadcast_from_rank0 and is_distributed()
    # A parameter that never received a gradient before the save (e.g. the discriminator head after only
    # denoising critic steps) has no AdamW state: load leniently (strict=False), then drop the placeholder state
    # torch creates for it (a zero-lr step, step count 1), so it starts fresh on resume as it would have.
    saved = set((state_dict or {}).get("state", {}))
    if broadcast:
        saved = broadcast_object(saved)
    set_optimizer_state_dict(model, optimizer, state_dict,
                             options=_full_options(broadcast_from_rank0=broadcast, strict=False))
    for name, param in model.named_parameters():
        state = optimizer.state.get(param)
        placeholder = state and not any(bool(torch.as_tensor(v).any()) for k, v in state.items()
                                        if k != "step" and torch.is_tensor(v))
        if name not in saved and placeholder:  # only torch's all-zero placeholder, never a loaded state
            optimizer.state.pop(param, None)
