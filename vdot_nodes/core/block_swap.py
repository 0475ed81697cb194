"""Block swap: keep N transformer blocks on the device, stream the others from host memory per forward.

Wan-VACE runs its VACE blocks, then its main blocks, each once per forward; a block's weights are
needed only while it runs. :class:`BlockSwap` keeps the first ``resident`` blocks (in that execution
order) on the device and, for every other block, holds its weights in host memory (pinned on CUDA)
and copies them in just before the block runs, prefetching the next streamed block on a side CUDA
stream while the current one computes. After a streamed block runs its parameters point back at
the host copy, so the device copy is freed; nothing is copied back (inference never writes weights).
The arithmetic is untouched: outputs are bitwise equal to running without swap.

On a CPU "device" the same path runs with plain copies (tests use it to check the bookkeeping and
the bitwise equality); ``storage_device`` lets a test keep the host copies separate.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def swappable_blocks(transformer) -> list[torch.nn.Module]:
    """The transformer's repeated blocks in the order a forward runs them (VACE blocks first)."""
    return list(getattr(transformer, "vace_blocks", [])) + list(transformer.blocks)


def block_bytes(block: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(block.parameters()) + list(block.buffers()))


def blocks_that_fit(transformer, free_bytes: int) -> int:
    """How many blocks (in execution order) fit in ``free_bytes`` next to two streamed ones in flight."""
    sizes = [block_bytes(b) for b in swappable_blocks(transformer)]
    if sum(sizes) <= free_bytes:
        return len(sizes)
    budget = free_bytes - 2 * max(sizes)  # the block running + the one being prefetched
    n = 0
    for s in sizes:
        if budget < s:
            break
        budget -= s
        n += 1
    return n


class BlockSwap:
    """Install block swap on a Wan-VACE transformer; ``remove()`` (or the context manager) undoes it.

    ``resident``: blocks kept on ``device`` for good. The rest of the model (embeddings, head) is
    moved to ``device`` too. ``stats`` counts copies in (``swapped_in``) and releases
    (``swapped_out``) so callers and tests can see the path really ran.
    """

    def __init__(self, transformer, device, resident: int, *, storage_device="cpu", pin_memory: bool | None = None):
        self.device = torch.device(device)
        self.blocks = swappable_blocks(transformer)
        self.resident = max(0, min(int(resident), len(self.blocks)))
        self.stats = {"swapped_in": 0, "swapped_out": 0}
        cuda = self.device.type == "cuda"
        pin = cuda if pin_memory is None else pin_memory
        self._stream = torch.cuda.Stream(self.device) if cuda else None
        self._handles = []
        self._host: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = []  # per block: (tensor slot, host copy)
        self._ready: dict[int, torch.cuda.Event | None] = {}
        streamed = set(range(self.resident, len(self.blocks)))
        # Everything but the streamed blocks goes to the device once (never the whole model: it may not fit).
        in_blocks = {id(m) for b in self.blocks for m in b.modules()}
        for module in transformer.modules():
            if id(module) in in_blocks:
                continue
            for tensors in (module._parameters, module._buffers):
                for name, t in tensors.items():
                    if t is not None:
                        t.data = t.data.to(self.device)
        for i, block in enumerate(self.blocks):
            block.to(self.device if i not in streamed else storage_device)
        for i, block in enumerate(self.blocks):
            if i not in streamed:
                self._host.append(None)
                continue
            slots = []
            for t in list(block.parameters()) + list(block.buffers()):
                host = t.data.pin_memory() if pin and t.data.device.type == "cpu" else t.data
                t.data = host
                slots.append((t, host))
            self._host.append(slots)
            self._handles.append(block.register_forward_pre_hook(self._make_pre(i)))
            self._handles.append(block.register_forward_hook(self._make_post(i)))
        if streamed:
            logger.info("block swap: %d of %d blocks resident on %s, %d streamed", self.resident, len(self.blocks),
                        self.device, len(streamed))

    # ---- copies
    def _copy_in(self, i: int) -> None:
        if i in self._ready or self._host[i] is None:
            return
        if self._stream is not None:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._stream):
                for t, host in self._host[i]:
                    t.data = host.to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self._stream)
            self._ready[i] = event
        else:
            for t, host in self._host[i]:
                t.data = host.to(self.device, copy=True)
            self._ready[i] = None
        self.stats["swapped_in"] += 1

    def _make_pre(self, i: int):
        def pre(module, args):
            self._copy_in(i)
            event = self._ready[i]
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
                for t, _ in self._host[i]:  # the copies were made on the side stream
                    t.data.record_stream(torch.cuda.current_stream(self.device))
            nxt = next((j for j in range(i + 1, len(self.blocks)) if self._host[j] is not None), None)
            if nxt is not None:
                self._copy_in(nxt)  # prefetch while block i computes
        return pre

    def _make_post(self, i: int):
        def post(module, args, output):
            for t, host in self._host[i]:
                t.data = host
            self._ready.pop(i, None)
            self.stats["swapped_out"] += 1
        return post

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class StreamFromFile:
    """Blocks whose weights stay on disk: each is read (cast per tensor, as a load would) just before
    it runs and dropped after, so host memory holds one block. Installed by ``models.load.materialise``
    for ``load_text_encoder(stream=True)``; ``stats["read_bytes"]`` counts what was read.

    Between runs a streamed parameter is an empty placeholder (moving the model between devices
    stays valid); the block is read onto the device of its first input.
    """

    def __init__(self, model, streamed: dict[str, dict[str, tuple]]):
        self.stats = {"reads": 0, "read_bytes": 0}
        self._handles = []
        modules = dict(model.named_modules())
        for prefix, tensors in streamed.items():
            block = modules[prefix]
            slots = {}
            for name, how in tensors.items():
                owner, _, leaf = name.rpartition(".")
                holder = modules[f"{prefix}.{owner}"] if owner else block
                meta = getattr(holder, leaf)  # a meta tensor cannot take real data: a new placeholder
                param = torch.nn.Parameter(torch.empty(0, dtype=meta.dtype), requires_grad=False)
                setattr(holder, leaf, param)
                slots[name] = (param, how)
            self._handles.append(block.register_forward_pre_hook(self._pre(slots)))
            self._handles.append(block.register_forward_hook(self._post(slots)))

    def _pre(self, slots):
        def pre(module, args):
            from .models import TensorReader, read_tensor

            device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
            with TensorReader() as reader:
                for param, (file, start, end, shape, st_dtype, first, then) in slots.values():
                    param.data = read_tensor(reader, file, start, end, shape, st_dtype, first, then).to(device)
                    self.stats["read_bytes"] += end - start
            self.stats["reads"] += 1
        return pre

    @staticmethod
    def _post(slots):
        def post(module, args, output):
            for param, _ in slots.values():
                param.data = torch.empty(0, dtype=param.dtype, device=param.device)
        return post


__all__ = ["BlockSwap", "StreamFromFile", "block_bytes", "blocks_that_fit", "swappable_blocks"]
