"""Reading checkpoint files safely: safetensors by plain reads, pickles only through torch's weights-only unpickler.

Headers are read with plain file reads (8 bytes + JSON), never by mapping the file, and tensors one
at a time by positioned reads straight into their final dtype (:func:`read_tensor`), so a load holds
the model in its final precision plus a 64 MB staging buffer, and a file larger than RAM loads.
A pickle (the official release's ``.pt`` / ``.pth``) is opened only by :func:`read_pickle_weights`:
``torch.load(weights_only=True)``, which builds nothing but tensors and plain containers.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import re
from pathlib import Path

import torch

from ..errors import VDOTInputError, input_ref

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
LEGACY_MAX_BYTES = 2 * 1024**3  # an old-format pickle (no mmap) is read whole: allowed up to this size

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
SAFETENSORS_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}  # torch dtype -> header name
_MAX_HEADER = 100 * 2**20  # the safetensors format's own limit


class CheckpointFileError(Exception):
    """A safetensors file that cannot be used; ``truncated`` tells an incomplete copy from a wrong format."""

    def __init__(self, message: str, truncated: bool = False):
        super().__init__(message)
        self.truncated = truncated


def read_safetensors_header(path) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], dict[str, str]]:
    """``({key: (dtype, shape, first byte, end byte)}, metadata)`` of a safetensors file, by plain reads.

    The header is 8 bytes (little-endian length) + JSON; nothing is mapped, so a file larger than RAM
    is described as cheaply as a small one. A header that promises more bytes than the file holds
    raises :class:`CheckpointFileError` with ``truncated=True``.
    """
    import struct

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointFileError(f"{size} bytes, shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER:
            raise CheckpointFileError("its first 8 bytes are not a safetensors header length")
        if 8 + length > size:
            raise CheckpointFileError(f"its header needs {8 + length} bytes but the file has {size}", truncated=True)
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except ValueError:
        raise CheckpointFileError("its header is not JSON") from None
    if not isinstance(header, dict):
        raise CheckpointFileError("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + length
    entries, data_end = {}, 0
    for key, e in header.items():
        try:
            dtype, shape, (begin, end) = e["dtype"], tuple(int(v) for v in e["shape"]), e["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointFileError(f"header entry {key!r} is malformed") from None
        if dtype not in SAFETENSORS_DTYPES:
            raise CheckpointFileError(f"tensor {key!r} has dtype {dtype}, which VDOT does not read")
        n = 1
        for d in shape:
            n *= d
        if end - begin != n * SAFETENSORS_DTYPES[dtype].itemsize or begin < 0:
            raise CheckpointFileError(f"tensor {key!r}: its byte range does not match its shape {list(shape)} and dtype")
        entries[key] = (dtype, shape, base + begin, base + end)
        data_end = max(data_end, end)
    if base + data_end > size:
        raise CheckpointFileError(
            f"its header describes {base + data_end:,} bytes but the file has {size:,} "
            f"({(base + data_end - size) / 2**20:.0f} MiB missing)", truncated=True)
    return entries, {str(k): str(v) for k, v in metadata.items()}


class TensorReader:
    """Reads one tensor's bytes at a time into memory it is given: positioned reads, or a mapping.

    ``mode="read"`` (default) uses ``os.preadv`` straight into the destination: no mapping at all, so
    no address-space or overcommit limit applies and a file larger than RAM loads. ``mode="mmap"``
    maps only the pages of one tensor, copies them out and unmaps; where the OS refuses a mapping it
    falls back to positioned reads. Both give the same bytes.
    """

    def __init__(self, mode: str = "read"):
        if mode not in ("read", "mmap"):
            raise ValueError(f"unknown reader mode {mode!r}")
        self.mode = mode
        self._files: dict[str, int] = {}
        self._staging: torch.Tensor | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def _fd(self, file) -> int:
        key = str(file)
        if key not in self._files:
            self._files[key] = os.open(key, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        return self._files[key]

    def read(self, file, start: int, end: int) -> torch.Tensor:
        """Bytes ``[start, end)`` of ``file`` as a new uint8 tensor."""
        buf = torch.empty(end - start, dtype=torch.uint8)
        self.read_into(file, start, buf)
        return buf

    def staging(self, nbytes: int) -> torch.Tensor:
        """A reusable uint8 buffer of ``nbytes`` (≤ :data:`READ_CHUNK`), so casting reads allocate nothing."""
        if self._staging is None or self._staging.numel() < nbytes:
            self._staging = torch.empty(2**20 if nbytes <= 2**20 else max(nbytes, READ_CHUNK), dtype=torch.uint8)
        return self._staging[:nbytes]

    def read_into(self, file, start: int, dest: torch.Tensor) -> None:
        """Fill the contiguous uint8 tensor ``dest`` with the file's bytes from ``start``."""
        fd = self._fd(file)
        if dest.numel() == 0:
            return
        view = memoryview(dest.numpy())
        if self.mode == "mmap":
            try:
                return self._read_mapped(fd, start, view)
            except (OSError, ValueError):  # ENOMEM / no mapping support: read instead
                pass
        done = 0
        while done < len(view):
            if hasattr(os, "preadv"):
                n = os.preadv(fd, [view[done:]], start + done)
            else:  # Windows: seek + read on the descriptor
                os.lseek(fd, start + done, os.SEEK_SET)
                chunk = os.read(fd, min(len(view) - done, 1 << 30))
                n = len(chunk)
                view[done:done + n] = chunk
            if n == 0:
                raise CheckpointFileError(f"{file} ended at byte {start + done:,}, inside a tensor", truncated=True)
            done += n

    @staticmethod
    def _read_mapped(fd: int, start: int, dest: memoryview) -> None:
        import mmap

        skip = start % mmap.ALLOCATIONGRANULARITY
        mm = mmap.mmap(fd, len(dest) + skip, access=mmap.ACCESS_READ, offset=start - skip)
        try:
            view = memoryview(mm)[skip:]
            try:
                dest[:] = view
            finally:
                view.release()
        finally:
            mm.close()



READ_CHUNK = 64 * 2**20  # a tensor that changes dtype is read through a reusable buffer of this size


def read_tensor(reader, file, start: int, end: int, shape, st_dtype: str, first, then=None) -> torch.Tensor:
    """One stored tensor in its final dtype: cast to ``first`` (compute / fp32-kept dtype), then to
    ``then`` (fp8 storage) when given. The only allocation is the final tensor: bytes already in
    the final dtype are read straight into it; others go through the reader's reusable staging
    buffer in blocks of :data:`READ_CHUNK` and are cast into place. So no stored-dtype copy of a
    tensor ever exists whole (UMT5's 2.1 GB embedding), and no per-tensor temporaries fragment the
    heap."""
    stored = SAFETENSORS_DTYPES[st_dtype]
    final = (then or first) if stored.is_floating_point else stored
    out = torch.empty(tuple(shape), dtype=final)
    flat = out.view(-1)
    if final == stored:
        reader.read_into(file, start, flat.view(torch.uint8))
        return out
    item = stored.itemsize
    step = max(1, READ_CHUNK // item)
    for i in range(0, flat.numel(), step):
        k = min(step, flat.numel() - i)
        part = reader.staging(k * item)
        reader.read_into(file, start + i * item, part)
        part = part.view(stored)
        flat[i:i + k].copy_(part.to(first) if then is not None else part)  # copy_ casts as .to() does
    return out



def read_json_file(path: Path, input_name: str) -> dict:
    """A model folder's JSON file (config.json, a shard index) as a dict; a truncated or damaged file is one
    :class:`VDOTInputError` naming it, not a JSONDecodeError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VDOTInputError(input_name, f"{path} is not valid JSON ({exc.__class__.__name__}: truncated or damaged)",
                             "download or copy that file again") from None
    if not isinstance(data, dict):
        raise VDOTInputError(input_name, f"{path} holds a JSON {type(data).__name__}, not an object",
                             "download or copy that file again")
    return data



def refuse_non_safetensors(path: Path, input_name: str) -> None:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise VDOTInputError(
            input_name, f"{path.name} is a PyTorch pickle ({suffix}); VDOT loads only .safetensors (a pickle can run code)",
            f"convert it: vdot convert {path} <folder> (reads it with torch's weights-only unpickler)",
        )
    if suffix == ".gguf":
        raise VDOTInputError(input_name, f"{path.name} is a GGUF file; VDOT reads safetensors", "use the .safetensors release")


def pickle_hint(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return f"it is a PyTorch pickle with a .safetensors name; convert it: vdot convert {path} <folder>"
    return None


def folder_weight_files(folder: Path, input_name: str) -> list[Path]:
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    indexes = [p for p in indexes if p.name.count(".") == 3] or indexes  # prefer non-variant (no .fp16.)
    if indexes:
        shards = sorted(set(read_json_file(indexes[0], input_name)["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise VDOTInputError(input_name, f"{folder} lacks shards {missing[:3]} listed in {indexes[0].name}", "finish the download")
        return [folder / s for s in shards]
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (folder / name).is_file():
            return [folder / name]
    files = sorted(folder.glob("*.safetensors"))
    if len(files) == 1:
        return files
    if not files:
        pickles = [p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
        problem = f"{folder} has no .safetensors weights" + (f", only pickles ({', '.join(pickles[:3])}) which VDOT never opens" if pickles else "")
        raise VDOTInputError(input_name, problem, "download the safetensors weights of this model")
    raise VDOTInputError(input_name, f"{folder} has several .safetensors files and no index", "keep one weights file per folder")



# --------------------------------------------------------------------------------------------
# Pickles: tensors and plain containers only
# --------------------------------------------------------------------------------------------


def read_pickle_weights(path, input_name: str, origin: str):
    """The object in a ``torch.save`` file, read by the weights-only unpickler (memory-mapped when it is a
    zip archive); ``origin`` (e.g. ``huggingface.co/<repo>``) is where the fixes tell the user to get a
    good copy. Anything but tensors and plain containers is refused before it is created, so no code in
    the file runs; a damaged or unmappable file is one :class:`VDOTInputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise VDOTInputError(input_name, f"{path} does not exist", f"download it from {origin}")
    with open(path, "rb") as f:
        head = f.read(4)
    # The legacy (pre-zip) torch.save format cannot be memory-mapped: read small ones into memory.
    legacy = head[:1] == b"\x80" and path.stat().st_size <= LEGACY_MAX_BYTES
    if head != b"PK\x03\x04" and not legacy:
        what = (f"an old-format torch.save pickle over {LEGACY_MAX_BYTES / 1e9:.0f} GB, which cannot be memory-mapped"
                if head[:1] == b"\x80" else "a safetensors file: it needs no conversion" if path.suffix == ".safetensors"
                else "not a torch.save checkpoint")
        fix = (f"load it directly (as {input_ref('model')}, {input_ref('vae')} or {input_ref('text_encoder')})"
               if path.suffix == ".safetensors" else
               f"use the release file from {origin}, or re-save it with a current torch.save")
        raise VDOTInputError(input_name, f"{path.name} is {what}", fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True) if legacy else _load_mapped(path)
    except pickle.UnpicklingError as e:
        raise VDOTInputError(
            input_name, f"{path.name} is not a plain tensor checkpoint: it contains {_unpickle_culprit(e)}; refusing to unpickle it",
            f"use the original file from {origin} (the release holds only tensors)",
        ) from None
    except RuntimeError as e:
        msg = str(e)
        if "Cannot allocate memory" in msg:
            raise VDOTInputError(
                input_name, f"{path.name} ({path.stat().st_size / 1e9:.1f} GB) cannot be memory-mapped: the file is read-only, "
                "so it needs a private mapping, which this system refuses beyond RAM + swap",
                f"make it writable (chmod u+w {path}; it is never written) or add swap",
            ) from None
        if "central directory" in msg or "zip archive" in msg or "PytorchStreamReader" in msg:
            raise VDOTInputError(input_name, f"{path.name} is truncated or damaged ({first_line(msg)})",
                                 f"download it again from {origin}") from None
        raise VDOTInputError(input_name, f"{path.name} cannot be read ({first_line(msg)})",
                             f"download it again from {origin}") from None


def _load_mapped(path: Path):
    """``torch.load(weights_only=True, mmap=True)``, mapped shared where possible.

    A private mapping (torch's default) is charged against RAM + swap in full, and Linux refuses it
    for a 35 GB file on a 24 GB machine without swap; a shared one is not charged. torch opens a
    shared mapping read-write, so a read-only file falls back to the private mapping. Nothing here
    writes to a mapped tensor (every cast makes a new tensor), so the file is never modified.
    """
    load = lambda: torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # noqa: E731
    if os.name == "nt" or not hasattr(torch.serialization, "set_default_mmap_options"):
        return load()
    try:
        with torch.serialization.set_default_mmap_options(mmap.MAP_SHARED):
            return load()
    except RuntimeError as e:
        if "read-write mode" not in str(e):
            raise
    return load()


def _unpickle_culprit(e: Exception) -> str:
    m = re.search(r"GLOBAL ([\w.]+)", str(e))
    if m:
        return f"a Python object or function ({m.group(1)})"
    return f"something other than tensors ({first_line(str(e))})"


def first_line(msg: str) -> str:
    return next((line.strip() for line in msg.splitlines() if line.strip()), msg)[:200]
