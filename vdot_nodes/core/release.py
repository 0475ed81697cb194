"""Read the official VDOT release safely and write it as the safetensors files ComfyUI users have.

The release (Hugging Face ``yutongwang1012/VDOT``) ships PyTorch pickles:

* ``vdot-weights/vdot_14b.pt``: ``{'generator': {'model.<original Wan/VACE key>': tensor}}`` (1331
  tensors for 14B). The official loader strips ``model.`` and then ``_fsdp_wrapped_module.``
  (``inference/models/wan/wan_vace.py:44-52``); so do we, as a prefix.
* ``models_t5_umt5-xxl-enc-bf16.pth``: the UMT5-XXL encoder under Wan's own module names
  (``wan/modules/t5.py``: ``token_embedding``, ``blocks.N.{norm1,attn,norm2,ffn,pos_embedding}``,
  ``norm``), renamed here to the HF ``UMT5EncoderModel`` names ComfyUI's ``umt5_xxl_*`` files use.
* ``Wan2.1_VAE.pth``: the original Wan VAE state dict, the layout of ``wan_2.1_vae.safetensors``.
* ``google/umt5-xxl/``: the tokenizer; its ``spiece.model`` becomes the text encoder file's
  ``spiece_model`` tensor, as in ComfyUI's files.

Pickles are read only with ``torch.load(weights_only=True, mmap=True)``: torch's restricted
unpickler, which builds nothing but tensors and plain containers and refuses any other object
before it is created, so no code in the file runs. Tensors stay memory-mapped; :func:`write_streaming`
writes the safetensors file tensor by tensor in bounded chunks, so resident memory stays near one
chunk, not the model. What a file holds is decided by the same header analysis the loaders use
(:func:`vdot_nodes.core.models.identify`), and every key and shape is checked against the model the shipped config
builds — a missing or unexpected tensor is an error naming it (the official loader would leave a
missing one randomly initialised).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import VDOTInputError, input_ref
from .models.checkpoint import CheckpointInfo, identify
from .models.configs import TRANSFORMER_CONFIGS, load_config, transformer_facts
from .models.convert import to_model_names, umt5
from .models.convert.umt5 import wan_t5_to_hf  # noqa: F401  (public here since the converter was written)
from .models.convert.wan_transformer import comfy_key_names
from .models.files import SAFETENSORS_NAMES, first_line, read_pickle_weights
from .models.load import meta_shapes
from .models.tokenizer import tokenizer_from_spiece

HF_REPO = "yutongwang1012/VDOT"
RELEASE_FILES = {
    "transformer": "vdot-weights/vdot_14b.pt",
    "text_encoder": "models_t5_umt5-xxl-enc-bf16.pth",
    "vae": "Wan2.1_VAE.pth",
}
RELEASE_TOKENIZER = "google/umt5-xxl"
CONVERT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8_e4m3fn": torch.float8_e4m3fn}
FP8_E4M3_MAX = 448.0  # largest finite float8_e4m3fn; larger magnitudes are clamped to it
# Chunk of one tensor converted and written at a time (elements): 64 MB of bf16.
CHUNK_ELEMENTS = 32 * 1024 * 1024
STRIP_PREFIXES = ("model.", "_fsdp_wrapped_module.")

_WORDS = {"transformer": "VDOT transformer", "text_encoder": "UMT5 text encoder", "vae": "Wan2.1 VAE"}


@dataclass
class ReleaseComponent:
    """One release file, identified and checked; ``tensors`` are memory-mapped, in output names."""

    kind: str  # transformer | text_encoder | vae
    path: Path
    tensors: dict[str, torch.Tensor]
    description: str
    size: str
    config: dict
    spiece: bytes | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Reading a pickle: tensors and plain containers only
# --------------------------------------------------------------------------------------------


def load_weights_only(path, input_name: str = "source") -> tuple[dict[str, torch.Tensor], list[str]]:
    """``({name: tensor}, notes)`` of a release pickle, memory-mapped, through the weights-only unpickler.

    ``{'generator': {...}}`` (the VDOT checkpoint) is unwrapped; the ``model.`` /
    ``_fsdp_wrapped_module.`` prefixes are stripped as the official loader does. ``notes`` says what
    was ignored.
    """
    path = Path(path)
    obj = read_pickle_weights(path, input_name, f"huggingface.co/{HF_REPO}")
    notes = []
    if isinstance(obj, dict) and "generator" in obj:
        others = sorted(str(k) for k in obj if k != "generator")
        if others:
            notes.append(f"ignored entries beside 'generator': {', '.join(others)} (the official loader reads only 'generator')")
        obj = obj["generator"]
    if not isinstance(obj, dict) or not obj:
        raise VDOTInputError(input_name, f"{path.name} holds {type(obj).__name__}, not a state dict of tensors",
                             f"use the release file from huggingface.co/{HF_REPO}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise VDOTInputError(input_name, f"{path.name}: {len(bad)} entries are not tensors (e.g. {', '.join(bad[:3])})",
                             f"use the release file from huggingface.co/{HF_REPO}")
    state = {}
    for k, v in obj.items():
        for prefix in STRIP_PREFIXES:
            k = k[len(prefix):] if k.startswith(prefix) else k
        if k in state:
            raise VDOTInputError(input_name, f"{path.name}: two tensors are named {k} once prefixes are removed",
                                 "use the release file unmodified")
        state[k] = v
    return state, notes


# --------------------------------------------------------------------------------------------
# Identify and check one release file
# --------------------------------------------------------------------------------------------


def open_release_file(path, expect: str | None = None, tokenizer=None, input_name: str = "source") -> ReleaseComponent:
    """Read, identify and check one release file (nothing is written).

    ``expect`` (transformer | text_encoder | vae) is what the file should be (from its release
    name); ``tokenizer`` is the ``google/umt5-xxl`` folder, needed for the text encoder.
    """
    path = Path(path)
    state, notes = load_weights_only(path, input_name)
    is_wan_t5 = umt5.is_wan_t5(state)
    # Output names: the Wan T5 encoder is written with the HF names ComfyUI's umt5_xxl files use.
    names = ({stored: hf for hf, stored in to_model_names("text_encoder", "wan_t5", state).items()} if is_wan_t5
             else {k: k for k in state})
    header = {names[k]: (tuple(v.shape), SAFETENSORS_NAMES.get(v.dtype, str(v.dtype))) for k, v in state.items()}
    info = identify(header, name=path.name)
    key_map = info.key_map
    kind = info.kind
    if expect and kind != expect:
        found = info.description if kind in _WORDS else f"no model VDOT knows ({info.problem})"
        raise VDOTInputError(
            input_name, f"{path.name} should be the {_WORDS[expect]} but holds {found}",
            f"put the right file there: {RELEASE_FILES[expect]} from huggingface.co/{HF_REPO}",
        )
    if kind not in _WORDS:
        raise VDOTInputError(input_name, f"{path.name} holds no VDOT release component: {info.problem}",
                             f"convert {', '.join(RELEASE_FILES.values())} from huggingface.co/{HF_REPO}")
    by_name = {names[k]: v for k, v in state.items()}
    if kind == "transformer":
        config = _check_transformer(path, info, key_map, header, input_name)
    elif kind == "vae":
        config = _check_vae(path, info, key_map, header, input_name)
    else:
        config = _check_text_encoder(path, info, key_map, header, is_wan_t5, input_name)
    spiece = _read_spiece(tokenizer, path, config, input_name) if kind == "text_encoder" else None
    size = str(info.size or "custom")
    return ReleaseComponent(kind, path, by_name, info.description, size, config, spiece, notes)


def _check_transformer(path: Path, info: CheckpointInfo, key_map: dict, header: dict, input_name: str) -> dict:
    if info.variant != "vace":
        what = {"t2v": "a plain Wan2.1 text-to-video", "i2v": "a Wan2.1 image-to-video"}.get(info.variant, "a Wan-family")
        raise VDOTInputError(
            input_name, f"{path.name} is {what} transformer without VACE blocks ({info.description}); VDOT is a VACE model",
            f"use {RELEASE_FILES['transformer']} from huggingface.co/{HF_REPO}",
        )
    if info.layout != "original":
        raise VDOTInputError(input_name, f"{path.name} is not in the original Wan layout ({info.description})",
                             f"use {RELEASE_FILES['transformer']} from huggingface.co/{HF_REPO}")
    facts = transformer_facts({d: header[s] for d, s in key_map.items()})
    # A release-size width picks the shipped config, so a file missing whole blocks is reported key by
    # key instead of being taken for a smaller custom model.
    shipped = [load_config(n) for n in TRANSFORMER_CONFIGS.values()]
    config = next((c for c in shipped if c["num_attention_heads"] * c["attention_head_dim"] == facts["dim"]), info.config)
    if config is None:
        raise VDOTInputError(input_name, f"{path.name}: {info.problem}", f"use {RELEASE_FILES['transformer']} from huggingface.co/{HF_REPO}")
    expected_d = meta_shapes("transformer", config)
    expected = {orig: expected_d[d] for d, orig in comfy_key_names(expected_d).items()}
    _compare(path, {k: v[0] for k, v in header.items()}, expected, input_name, "transformer")
    return config


def _check_vae(path: Path, info: CheckpointInfo, key_map: dict, header: dict, input_name: str) -> dict:
    if info.variant != "wan2.1" or info.layout != "original" or info.config is None:
        raise VDOTInputError(input_name, f"{path.name} is {info.description}, not the original Wan2.1 VAE",
                             f"use {RELEASE_FILES['vae']} from huggingface.co/{HF_REPO}")
    expected_d = meta_shapes("vae", info.config)
    # Keys the converter leaves unrenamed are unknown to the VAE; missing ones can only be named in
    # diffusers' terms (no converter goes back).
    found = {d: header[s][0] for d, s in key_map.items()}
    unexpected = {key_map[d] for d in found if d not in expected_d}
    _compare(path, {d: s for d, s in found.items() if d in expected_d}, expected_d, input_name, "vae",
             unexpected=unexpected, missing_note=" (diffusers names)")
    return info.config


def _check_text_encoder(path: Path, info: CheckpointInfo, key_map: dict, header: dict, is_wan_t5: bool, input_name: str) -> dict:
    if info.variant != "umt5" or info.config is None:
        raise VDOTInputError(input_name, f"{path.name} is {info.description}: {info.problem or 'not UMT5'}",
                             f"use {RELEASE_FILES['text_encoder']} from huggingface.co/{HF_REPO}")
    expected = meta_shapes("text_encoder", info.config)
    back = umt5.hf_to_wan_t5 if is_wan_t5 else (lambda n: n)
    _compare(path, {back(k): v[0] for k, v in header.items() if k != "spiece_model"},
             {back(k): v for k, v in expected.items()}, input_name, "text_encoder")
    return info.config


def _compare(path: Path, found: dict, expected: dict, input_name: str, kind: str, unexpected=None, missing_note="") -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(unexpected if unexpected is not None else set(found) - set(expected)))
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing{missing_note} (e.g. {', '.join(missing[:4])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:4])})")
    if parts:
        raise VDOTInputError(
            input_name, f"{path.name} does not match the {_WORDS[kind]} ({len(expected)} tensors): " + "; ".join(parts),
            f"download {path.name} again from huggingface.co/{HF_REPO} (incomplete or a different model)",
        )
    for k, shape in expected.items():
        if tuple(found[k]) != tuple(shape):
            raise VDOTInputError(input_name, f"{path.name}: tensor {k} has shape {list(found[k])}, the {_WORDS[kind]} needs {list(shape)}",
                                 f"download {path.name} again from huggingface.co/{HF_REPO} (a different model size)")


def _read_spiece(tokenizer, t5_path: Path, config: dict, input_name: str) -> bytes:
    folder = Path(tokenizer) if tokenizer else t5_path.parent / RELEASE_TOKENIZER
    name = "tokenizer" if tokenizer else input_name
    spiece = folder / "spiece.model"
    if not spiece.is_file():
        where = f"{folder} has no spiece.model" if folder.is_dir() else f"{folder} does not exist"
        raise VDOTInputError(name, f"the text encoder needs its tokenizer: {where}",
                             f"download {RELEASE_TOKENIZER}/ from huggingface.co/{HF_REPO} and pass {input_ref('tokenizer')} <folder>")
    data = spiece.read_bytes()
    try:
        tok = tokenizer_from_spiece(data)
    except (ValueError, RuntimeError, OSError) as e:
        raise VDOTInputError(name, f"{spiece} is not a usable SentencePiece model ({first_line(str(e))})",
                             f"download {RELEASE_TOKENIZER}/ again from huggingface.co/{HF_REPO}") from None
    if len(tok) > config["vocab_size"]:
        raise VDOTInputError(name, f"{spiece} has {len(tok)} tokens but the text encoder only {config['vocab_size']}",
                             f"use the {RELEASE_TOKENIZER} tokenizer of the release")
    return data


# --------------------------------------------------------------------------------------------
# Output layout
# --------------------------------------------------------------------------------------------


def find_release_files(folder) -> dict[str, Path]:
    """``{kind: path}`` of the release files present in a downloaded release folder."""
    folder = Path(folder)
    found = {}
    for kind, rel in RELEASE_FILES.items():
        for cand in (folder / rel, folder / Path(rel).name):
            if cand.is_file():
                found[kind] = cand
                break
    return found


def expected_kind(path) -> str | None:
    """The component a file is by its release name (None: not a release name, identify by keys)."""
    name = Path(path).name
    return next((kind for kind, rel in RELEASE_FILES.items() if Path(rel).name == name), None)


def output_name(component: ReleaseComponent, dtype: str) -> str:
    """``vdot_14b_bf16.safetensors``, ``umt5_xxl_bf16.safetensors``, ``wan_2.1_vae.safetensors``."""
    if component.kind == "transformer":
        return f"vdot_{component.size.lower()}_{dtype}.safetensors"
    if component.kind == "text_encoder":
        return f"umt5_{component.size.lower()}_{dtype}.safetensors"
    return "wan_2.1_vae.safetensors"


def output_dtypes(component: ReleaseComponent, dtype: str) -> dict[str, torch.dtype]:
    """The stored dtype of every output tensor.

    The VAE keeps its source dtype (ComfyUI and the loaders compute it in fp32 anyway). With
    fp8_e4m3fn only 2-D weight matrices become fp8 — biases, norms, modulation vectors, the patch
    convolutions, T5's embeddings and its ``wo`` (T5 feeds it its own dtype) stay bf16, as the
    loaders' fp8 mode also keeps them.
    """
    target = CONVERT_DTYPES[dtype]
    out = {}
    for name, t in component.tensors.items():
        if component.kind == "vae" or not t.is_floating_point():
            out[name] = t.dtype
        elif target == torch.float8_e4m3fn:
            fp8 = t.dim() == 2 and name.endswith(".weight") and not (
                component.kind == "text_encoder" and (name == "shared.weight" or "relative_attention_bias" in name or ".wo." in name))
            out[name] = target if fp8 else torch.bfloat16
        else:
            out[name] = target
    return out


def output_metadata(component: ReleaseComponent, dtype: str) -> dict[str, str]:
    """Metadata of a converted file. Never ``vdot_format``: these files are in the original / HF layout."""
    meta = {"vdot_converted_from": f"{component.path.name} (huggingface.co/{HF_REPO})", "vdot_convert_dtype": dtype}
    if component.kind == "transformer":
        meta["vdot_transformer_config"] = json.dumps({k: v for k, v in component.config.items() if not k.startswith("_")})
    return meta


def output_tensors(component: ReleaseComponent) -> dict[str, torch.Tensor]:
    tensors = dict(component.tensors)
    if component.spiece is not None:
        tensors["spiece_model"] = torch.frombuffer(bytearray(component.spiece), dtype=torch.uint8)
    return tensors


# --------------------------------------------------------------------------------------------
# Streaming safetensors writer
# --------------------------------------------------------------------------------------------


@dataclass
class WriteReport:
    path: Path
    num_tensors: int
    nbytes: int
    clamped: int  # values clamped to ±448 for fp8


def output_nbytes(tensors: dict, dtypes: dict) -> int:
    return sum(t.numel() * torch.empty((), dtype=dtypes.get(k, t.dtype)).element_size() for k, t in tensors.items())


def write_streaming(tensors: dict[str, torch.Tensor], dtypes: dict[str, torch.dtype], path, metadata: dict[str, str],
                    *, overwrite: bool = False, progress=None, input_name: str = "output", source_name: str = "") -> WriteReport:
    """Write ``tensors`` cast to ``dtypes`` as one safetensors file, one bounded chunk at a time.

    The header (names, dtypes, shapes, offsets) is computed first from shapes alone; then each
    tensor is read from its (memory-mapped) source in chunks of ``CHUNK_ELEMENTS``, cast, checked
    finite, written and dropped. Through :func:`atomic_path`: an interrupted write leaves no file.
    ``progress(nbytes)`` is called after each chunk.
    """
    names = sorted(tensors)
    entries, offset = {}, 0
    for name in names:
        t, dt = tensors[name], dtypes.get(name, tensors[name].dtype)
        n = t.numel() * torch.empty((), dtype=dt).element_size()
        entries[name] = {"dtype": SAFETENSORS_NAMES[dt], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps({"__metadata__": dict(metadata), **entries}, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    clamped = 0
    with atomic_path(path, overwrite, input_name) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for name in names:
                clamped += _write_tensor(f, name, tensors[name], dtypes.get(name, tensors[name].dtype), progress, source_name)
    return WriteReport(Path(path), len(names), offset, clamped)


def _write_tensor(f, name: str, t: torch.Tensor, dt: torch.dtype, progress, source_name: str) -> int:
    flat = t.reshape(-1)  # a view for the contiguous tensors torch.save writes; one copy otherwise
    clamped = 0
    for start in range(0, flat.numel(), CHUNK_ELEMENTS):
        src = flat[start:start + CHUNK_ELEMENTS]
        # aminmax propagates NaN and shows inf, at a tenth of isfinite's cost on bf16.
        lo, hi = torch.aminmax(src) if src.is_floating_point() else (None, None)
        if lo is not None and not (torch.isfinite(lo) and torch.isfinite(hi)):
            raise VDOTInputError(source_name or "source", f"tensor {name} holds NaN or infinite values",
                                 f"download the file again from huggingface.co/{HF_REPO}; VDOT does not convert broken weights")
        if dt == torch.float8_e4m3fn:
            if lo < -FP8_E4M3_MAX or hi > FP8_E4M3_MAX:
                clamped += int((src.abs() > FP8_E4M3_MAX).sum())
            out = src.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(dt)
        else:
            out = src.to(dt)
            if lo is not None and out.dtype != src.dtype and not all(bool(torch.isfinite(v)) for v in torch.aminmax(out)):
                raise VDOTInputError("dtype", f"tensor {name} has values beyond the range of {str(dt).replace('torch.', '')}",
                                     f"convert with {input_ref('dtype')} bf16")
        f.write(out.contiguous().view(torch.uint8).numpy().data)
        if progress is not None:
            progress(out.numel() * out.element_size())
        del src, out
    return clamped


__all__ = [
    "CONVERT_DTYPES", "FP8_E4M3_MAX", "HF_REPO", "RELEASE_FILES", "RELEASE_TOKENIZER", "ReleaseComponent", "WriteReport",
    "expected_kind", "find_release_files", "load_weights_only", "open_release_file", "output_dtypes", "output_metadata",
    "output_name", "output_nbytes", "output_tensors", "wan_t5_to_hf", "write_streaming",
]
