"""Atomic, pickle-free training checkpoints (models, optimizers, EMAs, RNG, data position).

Layout of one checkpoint (``dir/step_000123/``)::

    meta.json                    format/version, step, world size, names, EMA decay/counters,
                                 data_state and extra (both JSON), written last
    model_<name>.safetensors     full model weights (what the loaders / export read)
    ema_<name>.safetensors       full float32 EMA shadows
    optim_<name>.safetensors     optimizer tensors, flattened: "state/<param name>/<key>" (+ tensor
                                 hyper-parameters "param_groups/<i>/<key>")
    optim_<name>.json            the rest of the optimizer state dict (param groups, non-tensor values)
    rng_rank<r>.safetensors      this rank's torch CPU / CUDA / numpy / generator states
    rng_rank<r>.json             this rank's python ``random`` state and numpy scalars
    dir/latest                   one line: the name of the newest complete checkpoint

Safety: everything is written into ``step_000123.tmp/`` and only a complete folder is renamed to
``step_000123/`` (:func:`vdot_nodes.core.atomic.commit_folder`), after which ``latest`` is rewritten atomically (tmp file +
``os.replace``). A process killed at any point leaves the previous checkpoint and ``latest`` intact;
left-over ``*.tmp`` folders are removed by the next save. Nothing is pickled: tensors go to
safetensors, everything else to JSON ("never unpickle" is a project rule).

Distributed (FSDP2): model / optimizer / EMA tensors are gathered to full tensors on rank 0 (the
``full_*_state_dict`` helpers in :mod:`training.distributed` — collectives, so every rank calls
:func:`save_checkpoint`), rank 0 writes the shared files, every rank writes its own RNG file. The
folder must be on a file system all ranks see. Loading: rank 0 reads the full tensors and
broadcasts them (or every rank reads them), each rank keeps its shard, so a checkpoint loads into any world size (RNG files of ranks that did not exist are
skipped with a warning). Gathering full state on rank 0 needs CPU memory for a model's weights plus
its optimizer state, one model at a time.

Optimizers are matched to models by name: ``optimizers["generator"]`` must optimise (only)
``models["generator"]`` — wrap several modules trained by one optimizer in an ``nn.ModuleDict``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from vdot_nodes.core.atomic import atomic_save_safetensors, atomic_write_text, commit_folder

from . import distributed as D
from .ema import EMA

__all__ = ["save_checkpoint", "load_checkpoint", "read_data_state", "find_latest_checkpoint", "find_resumable_checkpoint", "list_checkpoints",
           "checkpoint_problem", "step_dir_name"]

FORMAT = "vdot-training-checkpoint"
VERSION = 1
LATEST = "latest"
_STEP_RE = re.compile(r"^step_(\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def step_dir_name(step: int) -> str:
    return f"step_{int(step):06d}"


# ----------------------------------------------------------------------------------------------
# Small file helpers


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=True))


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    atomic_save_safetensors(tensors, path, metadata)  # copies tied / view tensors, which safetensors refuses


def _check_names(kind: str, names) -> None:
    for name in names:
        if not _NAME_RE.match(name):
            raise ValueError(f"{kind} name {name!r}: use letters, digits, '_', '-', '.' only (it becomes a file name)")


# ----------------------------------------------------------------------------------------------
# JSON encoding of non-tensor values (tuples survive the round trip; tensors are refused here)


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return {"__intdict__": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
        return {k: _to_json(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON (use tensors or plain values)")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        if set(value) == {"__intdict__"}:
            return {_from_json(k): _from_json(v) for k, v in value["__intdict__"]}
        return {k: _from_json(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------------------------
# Optimizer state <-> (tensors, JSON)


def _flatten_optimizer_state(osd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split a (name-keyed) optimizer state dict into named tensors and a JSON-able skeleton."""
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict] = {}
    for param, entries in osd.get("state", {}).items():
        param = str(param)
        state_json[param] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{param}/{key}"] = value
                state_json[param][key] = {"__tensor__": f"state/{param}/{key}"}
            else:
                state_json[param][key] = _to_json(value)
    groups_json = []
    for i, group in enumerate(osd.get("param_groups", [])):
        g = {}
        for key, value in group.items():
            if isinstance(value, torch.Tensor):
                tensors[f"param_groups/{i}/{key}"] = value
                g[key] = {"__tensor__": f"param_groups/{i}/{key}"}
            else:
                g[key] = _to_json(value)
        groups_json.append(g)
    return tensors, {"state": state_json, "param_groups": groups_json}


def _unflatten_optimizer_state(tensors: dict[str, torch.Tensor], skeleton: dict) -> dict:
    def restore(v):
        if isinstance(v, dict) and set(v) == {"__tensor__"}:
            return tensors[v["__tensor__"]]
        return _from_json(v)

    state = {param: {k: restore(v) for k, v in entries.items()} for param, entries in skeleton["state"].items()}
    groups = [{k: restore(v) for k, v in g.items()} for g in skeleton["param_groups"]]
    return {"state": state, "param_groups": groups}


# ----------------------------------------------------------------------------------------------
# RNG


def _capture_rng(generators: dict[str, torch.Generator] | None) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    for name, gen in (generators or {}).items():
        tensors[f"generator/{name}"] = gen.get_state()
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "generators": sorted(generators or {}),
    }
    return tensors, meta


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict, generators: dict[str, torch.Generator] | None) -> None:
    py = meta["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npm = meta["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((npm["kind"], keys, npm["pos"], npm["has_gauss"], npm["cached_gaussian"]))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    for name, gen in (generators or {}).items():
        key = f"generator/{name}"
        if key not in tensors:
            raise KeyError(f"checkpoint has no state for generator {name!r} (saved: {meta.get('generators')})")
        gen.set_state(tensors[key])


# ----------------------------------------------------------------------------------------------
# Discovery


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, path)``, oldest first (``*.tmp`` ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_RE.match(child.name)
        if m and child.is_dir() and (child / "meta.json").is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def find_latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The checkpoint ``root/latest`` names; if that is missing or broken, the highest complete step; else None."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        candidate = root / name
        if _STEP_RE.match(name) and (candidate / "meta.json").is_file():
            return candidate
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def _safetensors_problem(file: Path) -> str | None:
    """Why ``file`` is not a whole safetensors file (missing, torn header, size ≠ what the header describes), or None.

    Reads only the header: a truncated copy (full disk, interrupted transfer) is caught without loading tensors.
    """
    if not file.is_file():
        return f"{file.name} is missing"
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{file.name} is truncated ({size} bytes)"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"{file.name} is truncated inside its header ({size} bytes)"
            header = json.loads(f.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return f"{file.name} has an unreadable header ({type(exc).__name__})"
    if 8 + n + end != size:
        return f"{file.name} is {size} bytes, its header describes {8 + n + end} (truncated or damaged)"
    return None


def _json_problem(file: Path, keys: tuple[str, ...] = ()) -> str | None:
    if not file.is_file():
        return f"{file.name} is missing"
    try:
        obj = _read_json(file)
    except (OSError, ValueError) as exc:
        return f"{file.name} does not parse ({type(exc).__name__}: truncated or damaged)"
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    return f"{file.name} lacks {', '.join(missing)}" if missing else None


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from, or None when every file it needs is whole.

    Checks what :func:`load_checkpoint` will read, without loading tensors: ``meta.json`` parses and names
    this format; each model / EMA / optimizer file its meta lists is a complete safetensors file (header and
    length agree) and each optimizer skeleton parses; every saved rank's RNG state is complete. The same on
    every rank (it reads shared files only), so all ranks choose the same checkpoint.
    """
    path = Path(path)
    if not path.is_dir():
        return f"{path.name} is missing"
    problem = _json_problem(path / "meta.json", ("format", "step"))
    if problem:
        return problem
    meta = _read_json(path / "meta.json")
    if meta.get("format") != FORMAT:
        return f"meta.json is not a VDOT training checkpoint's (format {meta.get('format')!r})"
    try:
        emas = sorted(meta.get("emas") or {})
        files = [f"model_{n}.safetensors" for n in meta.get("models") or []] + [f"ema_{n}.safetensors" for n in emas]
        files += [f"optim_{n}.safetensors" for n in meta.get("optimizers") or []]
        skeletons = [f"optim_{n}.json" for n in meta.get("optimizers") or []]
        ranks = range(int(meta.get("world_size", 1))) if meta.get("rng") else range(0)
    except (TypeError, ValueError):
        return "meta.json lists its files in an unexpected form (damaged)"
    for name in files:
        problem = _safetensors_problem(path / name)
        if problem:
            return problem
    for name in skeletons:
        problem = _json_problem(path / name, ("state", "param_groups"))
        if problem:
            return problem
    for rank in ranks:
        problem = _safetensors_problem(path / f"rng_rank{rank}.safetensors") or _json_problem(
            path / f"rng_rank{rank}.json", ("python", "numpy", "generators"))
        if problem:
            return f"RNG state of rank {rank}: {problem}"
        with safe_open(str(path / f"rng_rank{rank}.safetensors"), framework="pt") as f:
            have = set(f.keys())
        need = {"torch_cpu", "numpy_keys"} | {f"generator/{g}" for g in _read_json(path / f"rng_rank{rank}.json")["generators"]}
        if need - have:
            return f"RNG state of rank {rank} lacks {', '.join(sorted(need - have))}"
    return None


def find_resumable_checkpoint(root: str | os.PathLike) -> tuple[Path | None, list[tuple[str, str]]]:
    """The newest checkpoint under ``root`` that :func:`checkpoint_problem` passes, and what was passed over.

    Returns ``(path or None, [(name, reason), ...])``: newer ``step_*`` folders that are damaged, and a
    ``latest`` that names a missing folder, each with why. ``(None, [])`` when ``root`` holds no checkpoint.
    """
    root = Path(root)
    skipped: list[tuple[str, str]] = []
    if not root.is_dir():
        return None, skipped
    pointer = root / LATEST
    if pointer.is_file():
        named = pointer.read_text(encoding="utf-8", errors="replace").strip()
        if not (root / named).is_dir():
            skipped.append((LATEST, f"it names {named or 'nothing'}, which is missing"))
    steps = sorted(((int(m.group(1)), child) for child in root.iterdir()
                    if (m := _STEP_RE.match(child.name)) and child.is_dir()), reverse=True)
    for _, path in steps:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path.name, problem))
    return None, skipped


def _resolve(path: str | os.PathLike) -> Path:
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    latest, skipped = find_resumable_checkpoint(path)  # the newest whole one, as the trainer's resume takes
    if skipped:
        warnings.warn(f"skipped {'; '.join(f'{n} ({why})' for n, why in skipped)}"
                      + (f"; loading {latest.name}" if latest is not None else ""), stacklevel=3)
    if latest is None:
        raise FileNotFoundError(f"no whole checkpoint in {path} (expected step_NNNNNN/ folders with meta.json, or one of them)")
    return latest


# ----------------------------------------------------------------------------------------------
# Save


def save_checkpoint(
    dir: str | os.PathLike,
    step: int,
    *,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    emas: dict[str, EMA] | None = None,
    rng: bool = True,
    generators: dict[str, torch.Generator] | None = None,
    data_state: dict | None = None,
    extra: dict | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write checkpoint ``dir/step_<step>/`` atomically and point ``dir/latest`` at it.

    Call on every rank (gathering sharded state is collective). ``data_state`` and ``extra`` must be
    JSON-serialisable and are taken from rank 0 (e.g. :meth:`ResumableSampler.state_dict`, which is
    the same on all ranks). ``generators``: extra ``torch.Generator`` s whose states are saved per rank
    with the global RNGs (when ``rng``). ``keep_last``: afterwards delete all but the newest K
    checkpoints (never the one ``latest`` names). Re-saving an existing step replaces it.
    Returns the final folder.
    """
    optimizers, emas = optimizers or {}, emas or {}
    _check_names("model", models)
    _check_names("optimizer", optimizers)
    _check_names("ema", emas)
    for name in optimizers:
        if name not in models:
            raise KeyError(f"optimizer {name!r} has no model of the same name (models: {sorted(models)})")
    if keep_last is not None and keep_last < 1:
        raise ValueError("keep_last must be >= 1 (or None to keep everything)")
    root = Path(dir)
    name = step_dir_name(step)
    final, tmp = root / name, root / f"{name}.tmp"
    rank, world, main = D.get_rank(), D.get_world_size(), D.is_main_process()
    extra_json, data_json = _to_json(extra or {}), _to_json(data_state or {})  # fail early, on every rank

    if main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("step_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    D.barrier()

    # Shared state: gathered on every rank (collectives), written by rank 0, one object at a time.
    for mname, model in models.items():
        sd = D.full_model_state_dict(model)
        if main:
            _save_tensors(sd, tmp / f"model_{mname}.safetensors", metadata={"format": FORMAT, "step": str(step)})
        del sd
    for oname, opt in optimizers.items():
        osd = D.full_optimizer_state_dict(models[oname], opt)
        if main:
            tensors, skeleton = _flatten_optimizer_state(osd)
            _save_tensors(tensors, tmp / f"optim_{oname}.safetensors")
            _write_json(tmp / f"optim_{oname}.json", skeleton)
        del osd
    ema_meta = {}
    for ename, ema in emas.items():
        sd = ema.state_dict(rank0_only=True)  # only the writing rank keeps the gathered tensors
        if main:
            _save_tensors(sd, tmp / f"ema_{ename}.safetensors")
        ema_meta[ename] = {"decay": ema.decay, "num_updates": ema.num_updates}
        del sd

    if rng:
        tensors, meta = _capture_rng(generators)
        _save_tensors(tensors, tmp / f"rng_rank{rank}.safetensors")
        _write_json(tmp / f"rng_rank{rank}.json", meta)
    D.barrier()

    if main:
        _write_json(
            tmp / "meta.json",
            {
                "format": FORMAT,
                "version": VERSION,
                "step": int(step),
                "world_size": world,
                "models": sorted(models),
                "optimizers": sorted(optimizers),
                "emas": ema_meta,
                "rng": bool(rng),
                "data_state": data_json,
                "extra": extra_json,
            },
        )
        commit_folder(tmp, final)  # an existing step (re-saved after resuming from it) is replaced whole
        atomic_write_text(root / LATEST, name + "\n", overwrite=True)
        if keep_last is not None:
            _prune(root, keep_last)
    D.barrier()
    return final


def _prune(root: Path, keep_last: int) -> None:
    protected = find_latest_checkpoint(root)
    found = list_checkpoints(root)
    for _, path in found[: max(0, len(found) - keep_last)]:
        if protected is not None and path.resolve() == protected.resolve():
            continue
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Load


def read_data_state(dir_or_step_dir: str | os.PathLike) -> dict:
    """The data loader state a checkpoint saved (its ``meta.json`` only: a resume checks its data first)."""
    return _from_json(_read_json(_resolve(dir_or_step_dir) / "meta.json").get("data_state", {}))


def load_checkpoint(
    dir_or_step_dir: str | os.PathLike,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    emas: dict[str, EMA] | None = None,
    *,
    rng: bool = True,
    generators: dict[str, torch.Generator] | None = None,
    strict: bool = True,
    broadcast_from_rank0: bool | None = None,
) -> tuple[int, dict, dict]:
    """Restore a checkpoint into ``models`` / ``optimizers`` / ``emas`` (+ RNG); returns ``(step, data_state, extra)``.

    ``dir_or_step_dir``: a ``step_NNNNNN`` folder, or the run folder (its ``latest`` is used). Call on
    every rank (sharded loading is collective); models must already be sharded the way they will be
    trained, and optimizers built over their parameters. Only the names passed are loaded (a
    checkpoint may hold more); ``strict`` applies to the keys inside each model / EMA, and a name
    asked for but absent always raises. RNG is restored last, so the run continues bit-exactly.
    ``broadcast_from_rank0`` (default: when distributed): only rank 0 reads the tensor files and
    sends each tensor to the others — one copy in host memory per node instead of one per rank.
    """
    optimizers, emas = optimizers or {}, emas or {}
    path = _resolve(dir_or_step_dir)
    meta = _read_json(path / "meta.json")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a VDOT training checkpoint (format {meta.get('format')!r})")
    if meta.get("version", 0) > VERSION:
        raise ValueError(f"{path} was written by a newer version ({meta['version']} > {VERSION}); update the code")

    def need(kind: str, name: str, file: Path) -> Path:
        if not file.is_file():
            raise KeyError(f"checkpoint {path} has no {kind} {name!r}")
        return file

    # Rank 0 reads the tensor files and broadcasts (one copy in host memory), or every rank reads.
    if broadcast_from_rank0 is None:
        broadcast_from_rank0 = D.get_world_size() > 1
    reads = D.is_main_process() or not broadcast_from_rank0

    def tensors_of(kind: str, name: str, file: Path) -> dict[str, torch.Tensor]:
        need(kind, name, file)
        return load_file(str(file)) if reads else {}

    for mname, model in models.items():
        sd = tensors_of("model", mname, path / f"model_{mname}.safetensors")
        D.load_full_model_state_dict(model, sd, strict=strict, broadcast_from_rank0=broadcast_from_rank0)
        del sd
    for oname, opt in optimizers.items():
        if oname not in models:
            raise KeyError(f"optimizer {oname!r} needs the model of the same name passed in models=")
        tensors = tensors_of("optimizer", oname, path / f"optim_{oname}.safetensors")
        skeleton = _read_json(path / f"optim_{oname}.json")
        osd = _unflatten_optimizer_state(tensors, skeleton) if reads else {}
        D.load_full_optimizer_state_dict(models[oname], opt, osd, broadcast_from_rank0=broadcast_from_rank0)
        del tensors, osd
        # torch.distributed.checkpoint turns tuples (AdamW betas) into lists; give them back their type.
        for group, saved in zip(opt.param_groups, skeleton["param_groups"]):
            for key, value in saved.items():
                value = _from_json(value)
                if isinstance(value, tuple) and isinstance(group.get(key), list):
                    group[key] = value
    for ename, ema in emas.items():
        sd = tensors_of("EMA", ename, path / f"ema_{ename}.safetensors")
        ema.load_state_dict(sd, strict=strict, broadcast_from_rank0=broadcast_from_rank0)
        del sd
        info = meta.get("emas", {}).get(ename, {})
        ema.num_updates = int(info.get("num_updates", 0))
        ema.decay = float(info.get("decay", ema.decay))

    if rng and meta.get("rng"):
        rank = D.get_rank()
        file = path / f"rng_rank{rank}.safetensors"
        if file.is_file():
            _restore_rng(load_file(str(file)), _read_json(path / f"rng_rank{rank}.json"), generators)
        else:
            warnings.warn(
                f"{path} has no RNG state for rank {rank} (saved with world size {meta.get('world_size')}); "
                "this rank keeps its current RNG, so the run is not bit-exact from here",
                stacklevel=2,
            )
    D.barrier()
    return int(meta["step"]), _from_json(meta.get("data_state", {})), _from_json(meta.get("extra", {}))


def is_safetensors_file(path: str | os.PathLike) -> bool:
    """True if ``path`` opens as safetensors (used by tests to assert nothing is pickled)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            list(f.keys())
        return True
    except Exception:
        return False
