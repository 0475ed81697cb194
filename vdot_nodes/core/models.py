"""Load and save the three Wan2.1-VACE components offline, from the files users actually have.

Formats read (safetensors only; pickles are refused, never opened):

* **Transformer** (``load_transformer`` -> diffusers ``WanVACETransformer3DModel``)
    - a diffusers model folder (``config.json`` + ``diffusion_pytorch_model*.safetensors``, sharded
      with an ``.index.json`` or not), or a pipeline root that contains ``transformer/``;
    - one file in the original Wan/VACE layout (``blocks.0.self_attn.q.weight``,
      ``vace_blocks.0.before_proj.weight``, ``head.head.weight`` ...), with or without ComfyUI's
      ``model.diffusion_model.`` prefix (``wan2.1_vace_14B_fp16.safetensors``). Keys are renamed by
      diffusers' own ``convert_wan_transformer_to_diffusers``; the architecture comes from shipped
      configs (``configs/wan2.1_vace_{1.3b,14b}_transformer.json``) picked by tensor shapes, never
      from the hub;
    - one file with diffusers key names (a bare ``diffusion_pytorch_model.safetensors``);
    - our own format, written by ``save_transformer``: diffusers key names, metadata
      ``vdot_format = "diffusers-wan-vace"`` and ``vdot_config`` = the model config as JSON.
* **VAE** (``load_vae`` -> ``AutoencoderKLWan``): diffusers folder / pipeline root with ``vae/``,
  ``wan_2.1_vae.safetensors`` (original layout, renamed by ``convert_wan_vae_to_diffusers``; base
  width and latent channels are read from shapes, the rest from ``configs/wan2.1_vae.json``), or
  ``save_vae``'s format (``vdot_format = "diffusers-wan-vae"``).
* **Text encoder** (``load_text_encoder`` -> ``(UMT5EncoderModel, tokenizer)``): pipeline root
  (``text_encoder/`` + ``tokenizer/``), an HF folder, or one file with HF key names plus a
  ``spiece_model`` uint8 tensor holding the SentencePiece model (ComfyUI's
  ``umt5_xxl_fp16.safetensors``); the tokenizer is rebuilt offline from those bytes. Sizes other
  than UMT5-XXL (``configs/umt5_xxl_encoder.json``) are read from shapes, except
  ``relative_attention_max_distance`` which no tensor records (128, as UMT5). ``save_text_encoder``
  writes ``vdot_format = "hf-umt5-encoder"``.

Every load checks the key set and every shape against the model before reading a tensor, and
fails with a :class:`VDOTInputError` naming the file and the first mismatch. ``precision`` is one
of ``fp32 | bf16 | fp16 | fp8_e4m3fn | fp8_e5m2``; fp8 stores Linear/Conv weights in fp8 and
computes in bf16 (diffusers layerwise casting, which skips embeddings and norms; in UMT5 also the
feed-forward output projection, which T5 code feeds in its weight's dtype).
``describe_checkpoint`` tells what a file is from its header alone.

Memory: headers are read with plain file reads (8 bytes + JSON), never by mapping the file, and
tensors one at a time by positioned reads straight into their final dtype (:func:`read_tensor`), so
a load holds the model in its final precision plus a 64 MB staging buffer, and a file larger than
RAM loads. ``empty_model`` builds the same model on the meta device for memory planning.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from .errors import VDOTInputError

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TRANSFORMER_CONFIGS = {"1.3B": "wan2.1_vace_1.3b_transformer.json", "14B": "wan2.1_vace_14b_transformer.json"}
VAE_CONFIG = "wan2.1_vae.json"
TEXT_ENCODER_CONFIG = "umt5_xxl_encoder.json"

FORMAT_TRANSFORMER = "diffusers-wan-vace"
FORMAT_VAE = "diffusers-wan-vae"
FORMAT_TEXT_ENCODER = "hf-umt5-encoder"

PRECISIONS = {
    "fp32": (torch.float32, None),
    "bf16": (torch.bfloat16, None),
    "fp16": (torch.float16, None),
    "fp8_e4m3fn": (torch.bfloat16, torch.float8_e4m3fn),
    "fp8_e5m2": (torch.bfloat16, torch.float8_e5m2),
}

COMFY_PREFIX = "model.diffusion_model."
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
COMFY_DIRS = {"transformer": "models/diffusion_models", "vae": "models/vae", "text_encoder": "models/text_encoders"}
KIND_WORDS = {"transformer": "diffusion transformer", "vae": "VAE", "text_encoder": "text encoder"}
EXAMPLE_FILES = {
    "transformer": "wan2.1_vace_14B_fp16.safetensors (or a Wan2.1-VACE-*-diffusers folder)",
    "vae": "wan_2.1_vae.safetensors",
    "text_encoder": "umt5_xxl_fp16.safetensors",
}
# Which original-layout keys identify what a file is.
_WAN_ORIGINAL = "blocks.0.self_attn.q.weight"
_WAN_DIFFUSERS = "blocks.0.attn1.to_q.weight"


def load_config(name: str) -> dict:
    """One of the shipped JSON configs in ``configs/``."""
    return json.loads((CONFIG_DIR / name).read_text())


# --------------------------------------------------------------------------------------------
# Public API: transformer
# --------------------------------------------------------------------------------------------


def load_transformer(path, precision: str = "bf16", device="cpu", *, config=None, input_name: str = "model", _meta: bool = False):
    """Load a ``WanVACETransformer3DModel`` from any format in the module docstring.

    ``config`` (dict or path to a config.json) overrides the architecture read from the file: needed
    only for single files of a size that is not 1.3B / 14B and whose head count cannot be read from
    shapes. Returns the model in eval mode on ``device``.
    """
    from diffusers import WanVACETransformer3DModel

    dtype, storage = _parse_precision(precision, "precision")
    src = _Source.open(path, "transformer", input_name)
    info, key_map = src.analyse()
    _require_kind(info, src, "transformer", input_name)
    if info["variant"] != "vace":
        what = {"t2v": "a plain Wan text-to-video", "i2v": "a Wan image-to-video"}.get(info["variant"], "a")
        raise VDOTInputError(
            input_name,
            f"{src.name} is {what} transformer ({info['description']}) without VACE blocks; VDOT needs a VACE checkpoint",
            f"use a Wan2.1-VACE transformer: {EXAMPLE_FILES['transformer']}, or a VDOT checkpoint",
        )
    cfg = _config_arg(config, input_name) or info["config"]
    if cfg is None:
        raise VDOTInputError(
            input_name, f"{src.name}: {info['problem']}",
            "use a 1.3B/14B Wan2.1-VACE file or a diffusers folder (it has config.json), or pass config=<config.json>",
        )
    if (config is None and info["size"] == "custom" and src.folder_config is None and info["layout"] != "vdot"
            and "vdot_transformer_config" not in src.metadata):
        logger.warning("%s: custom-size Wan-VACE, assuming 128-wide heads and VACE blocks at layers %s", src.name, cfg["vace_layers"])
    model = _materialise(
        lambda: WanVACETransformer3DModel.from_config(cfg), src, key_map, dtype,
        keep_fp32=WanVACETransformer3DModel._keep_in_fp32_modules or [], input_name=input_name,
        storage=storage, casting=_diffusers_casting(storage, dtype), meta_only=_meta,
    )
    return model if _meta else model.to(device).eval()


def save_transformer(model, path) -> Path:
    """Write ``model`` as ONE safetensors file with diffusers key names and its config in metadata.

    Written to a temporary file next to ``path`` and moved into place with ``os.replace``, so a
    crash never leaves a half-written checkpoint. Overwrites ``path``.
    """
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    from diffusers import WanVACETransformer3DModel

    if not isinstance(model, WanVACETransformer3DModel):
        raise TypeError(f"save_transformer expects a WanVACETransformer3DModel, got {type(model).__name__}")
    return _atomic_save(model.state_dict(), path, FORMAT_TRANSFORMER, _public_config(model.config))


# --------------------------------------------------------------------------------------------
# Public API: VAE
# --------------------------------------------------------------------------------------------


def load_vae(path, precision: str = "fp32", device="cpu", *, config=None, input_name: str = "vae", _meta: bool = False):
    """Load an ``AutoencoderKLWan`` (Wan2.1 VAE) from a folder, the original single file or our format."""
    from diffusers import AutoencoderKLWan

    dtype, storage = _parse_precision(precision, "precision")
    src = _Source.open(path, "vae", input_name)
    info, key_map = src.analyse()
    _require_kind(info, src, "vae", input_name)
    if info["variant"] != "wan2.1":
        raise VDOTInputError(
            input_name, f"{src.name} is {info['description']}; VDOT uses the Wan2.1 VAE (16 latent channels)",
            f"use {EXAMPLE_FILES['vae']}",
        )
    cfg = _config_arg(config, input_name) or info["config"]
    model = _materialise(
        lambda: AutoencoderKLWan.from_config(cfg), src, key_map, dtype,
        keep_fp32=AutoencoderKLWan._keep_in_fp32_modules or [], input_name=input_name,
        storage=storage, casting=_diffusers_casting(storage, dtype), meta_only=_meta,
    )
    return model if _meta else model.to(device).eval()


def save_vae(model, path) -> Path:
    """Like :func:`save_transformer`, for ``AutoencoderKLWan`` (``vdot_format = "diffusers-wan-vae"``)."""
    from diffusers import AutoencoderKLWan

    model = getattr(model, "_orig_mod", model)
    if not isinstance(model, AutoencoderKLWan):
        raise TypeError(f"save_vae expects an AutoencoderKLWan, got {type(model).__name__}")
    return _atomic_save(model.state_dict(), path, FORMAT_VAE, _public_config(model.config))


# --------------------------------------------------------------------------------------------
# Public API: text encoder
# --------------------------------------------------------------------------------------------


def load_text_encoder(path, precision: str = "bf16", device="cpu", *, config=None, input_name: str = "text_encoder",
                      stream: bool = False, _meta: bool = False):
    """Load ``(UMT5EncoderModel, tokenizer)`` from a pipeline root, an HF folder or one file.

    A single file must carry its tokenizer: a ``spiece_model`` tensor (ComfyUI) or, in files
    written by :func:`save_text_encoder` from a tokenizer that has no SentencePiece model, the
    ``vdot_tokenizer_vocab`` metadata entry.

    ``stream=True`` keeps only the embedding, final norm and tokenizer in memory and reads each
    encoder block from the file when it runs (same tensors, same result; host memory is the
    embedding plus one block instead of the whole 11 GB — for encoding a prompt once per run).
    """
    from transformers import UMT5Config, UMT5EncoderModel

    dtype, storage = _parse_precision(precision, "precision")
    src = _Source.open(path, "text_encoder", input_name)
    info, key_map = src.analyse()
    _require_kind(info, src, "text_encoder", input_name)
    if info["variant"] != "umt5":
        raise VDOTInputError(
            input_name, f"{src.name} is {info['description']}; Wan uses UMT5 (relative attention in every layer)",
            f"use {EXAMPLE_FILES['text_encoder']}",
        )
    tokenizer = None if _meta else src.tokenizer(input_name)
    cfg = UMT5Config.from_dict(_config_arg(config, input_name) or info["config"])
    # transformers keeps the T5 feed-forward output projection in fp32 when loading in fp16 (overflow).
    keep = ["wo"] if dtype == torch.float16 else []
    casting = None
    if storage is not None:
        from diffusers.hooks import apply_layerwise_casting

        # Embeddings and norms stay in bf16 (as diffusers skips them); so does the FFN output
        # projection ``wo``: T5 casts its input to ``wo.weight.dtype``, which must not be fp8.
        def casting(m):
            apply_layerwise_casting(
                m, storage, dtype,
                skip_modules_pattern=("norm", "shared", "embed_tokens", "relative_attention_bias", r"\.wo$"),
            )
    def block_of(name):
        parts = name.split(".")
        return ".".join(parts[:3]) if stream and parts[:2] == ["encoder", "block"] else None

    model = _materialise(lambda: UMT5EncoderModel(cfg), src, key_map, dtype, keep_fp32=keep, input_name=input_name,
                         storage=storage, casting=casting, meta_only=_meta, stream=block_of)
    if _meta:
        return model, None
    if len(tokenizer) > cfg.vocab_size:
        raise VDOTInputError(
            input_name, f"{src.name}: the tokenizer has {len(tokenizer)} tokens but the embedding only {cfg.vocab_size} rows",
            "use the tokenizer that belongs to this text encoder",
        )
    return model.to(device).eval(), tokenizer


def save_text_encoder(model, tokenizer, path) -> Path:
    """Write a ``UMT5EncoderModel`` + tokenizer as ONE safetensors file (HF key names).

    The tokenizer is stored as a ``spiece_model`` uint8 tensor when it was built from a
    SentencePiece model (this keeps the file loadable by ComfyUI's text-encoder loader, same as
    ``umt5_xxl_fp16.safetensors``); a tokenizer built from a vocabulary list (the tiny one) has no
    such model, so its ``[(piece, score), ...]`` list goes into the ``vdot_tokenizer_vocab``
    metadata entry instead. Both rebuild the tokenizer the same way on load.
    """
    model = getattr(model, "_orig_mod", model)
    state = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}  # tied to shared
    extra = {}
    spiece = getattr(tokenizer, "vdot_spiece_model", None)
    if spiece is not None:
        state["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    else:
        extra["vdot_tokenizer_vocab"] = json.dumps(_tokenizer_vocab(tokenizer))
    cfg = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k not in ("transformers_version", "torch_dtype", "dtype")}
    return _atomic_save(state, path, FORMAT_TEXT_ENCODER, cfg, extra)


def tokenizer_from_spiece(model_bytes: bytes):
    """A transformers ``T5Tokenizer`` built offline from SentencePiece model bytes, same ids as sentencepiece.

    Pieces and scores come from ``sentencepiece``; the normaliser (precompiled NFKC map) and the
    byte-fallback flag are read from the model proto so that, e.g., full-width text maps the same.
    """
    import sentencepiece
    from tokenizers.models import Unigram
    from transformers import T5Tokenizer

    sp = sentencepiece.SentencePieceProcessor(model_proto=bytes(model_bytes))
    pieces = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    charsmap, byte_fallback = _spiece_normaliser(bytes(model_bytes))
    if min(sp.pad_id(), sp.eos_id(), sp.unk_id()) < 0:
        raise ValueError("the SentencePiece model defines no <pad>/</s>/<unk> piece; it is not a T5 tokenizer")
    tok = T5Tokenizer(
        vocab=pieces, extra_ids=0, _spm_precompiled_charsmap=charsmap,
        pad_token=sp.id_to_piece(sp.pad_id()), eos_token=sp.id_to_piece(sp.eos_id()), unk_token=sp.id_to_piece(sp.unk_id()),
    )
    if byte_fallback or sp.unk_id() != 2:  # T5Tokenizer assumes unk id 2 and no byte fallback
        tok.backend_tokenizer.model = Unigram(pieces, unk_id=sp.unk_id(), byte_fallback=byte_fallback)
    vocab = tok.get_vocab()
    wrong = [(p, i, vocab.get(p)) for i, (p, _) in enumerate(pieces) if vocab.get(p) != i]
    if wrong:
        raise ValueError(f"tokenizer ids differ from SentencePiece ids, e.g. (piece, sp id, tokenizer id) {wrong[:3]}")
    tok.vdot_spiece_model = bytes(model_bytes)
    return tok


# --------------------------------------------------------------------------------------------
# Public API: what a load will cost
# --------------------------------------------------------------------------------------------


def empty_model(path, kind: str, precision: str, *, input_name: str | None = None):
    """The model a load would build, on the meta device with every tensor in its final dtype.

    Reads headers only: checks the file as a load would (same errors) and lets a memory plan count
    the bytes each parameter will take, per block, before anything is loaded.
    """
    loaders = {"transformer": load_transformer, "vae": load_vae, "text_encoder": load_text_encoder}
    model = loaders[kind](path, precision, input_name=input_name or kind, _meta=True)
    return model[0] if kind == "text_encoder" else model


def module_bytes(module) -> int:
    """Bytes of a module's parameters and buffers (tied tensors once), meta or real."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------------------------
# Public API: describe
# --------------------------------------------------------------------------------------------


def describe_checkpoint(path) -> dict:
    """What a file or folder holds, from safetensors headers only (no tensor is read).

    Returns ``kind`` (transformer | vae | text_encoder | pipeline | unknown), ``layout`` (vdot |
    diffusers | original | hf | pickle | gguf | unknown), ``variant`` (transformer: vace | t2v | i2v
    | other; vae: wan2.1 | wan2.2; text encoder: umt5 | t5), ``size`` (transformer: 1.3B | 14B |
    custom; text encoder: xxl | custom; vae: wan2.1 | custom), ``dtype``, ``num_tensors``,
    ``prefix``, ``config`` (the architecture a loader would build, or None with ``problem`` saying
    why) and a one-line ``description``. Pipeline roots get ``components`` instead. A missing path
    raises :class:`VDOTInputError`; an unreadable or pickle file is reported as ``unknown``.
    """
    path = Path(path)
    if path.is_dir() and not (path / "config.json").is_file():
        parts = {sub: describe_checkpoint(path / sub) for sub in ("transformer", "vae", "text_encoder") if (path / sub).is_dir()}
        if parts:
            desc = ", ".join(f"{k}: {v['description']}" for k, v in parts.items())
            return {"path": str(path), "kind": "pipeline", "layout": "diffusers", "components": parts, "description": desc}
    try:
        src = _Source.open(path, None, "checkpoint")
    except VDOTInputError as e:
        if not path.exists():
            raise
        layout = "pickle" if path.suffix.lower() in PICKLE_SUFFIXES else ("gguf" if path.suffix.lower() == ".gguf" else "unknown")
        return {"path": str(path), "kind": "unknown", "layout": layout, "problem": e.problem, "description": e.problem}
    info, _ = src.analyse()
    return {"path": str(path), **info}


# --------------------------------------------------------------------------------------------
# Reading headers and deciding what a checkpoint is
# --------------------------------------------------------------------------------------------


class _Source:
    """A checkpoint on disk: its safetensors files, header (key -> shape, dtype) and metadata."""

    def __init__(self, path: Path, files: list[Path], folder_config: dict | None, input_name: str):
        self.path, self.files, self.folder_config, self.input_name = path, files, folder_config, input_name
        self.name = path.name
        self.header: dict[str, tuple[tuple[int, ...], str]] = {}
        self.file_of: dict[str, Path] = {}
        self.metadata: dict[str, str] = {}
        self.location: dict[str, tuple[Path, int, int]] = {}  # key -> (file, first byte, end byte)
        for f in files:
            try:
                entries, metadata = read_safetensors_header(f)
            except CheckpointFileError as e:
                if e.truncated:
                    raise VDOTInputError(input_name, f"{f} is truncated: {e}", "download it again (the copy is incomplete)") from None
                raise VDOTInputError(
                    input_name, f"{f} is not a readable safetensors file ({_pickle_hint(f) or e})",
                    "convert it to .safetensors (or download the .safetensors release of this model)",
                ) from None
            except OSError as e:
                raise VDOTInputError(input_name, f"{f} cannot be read ({e})", "check the file's permissions and disk") from None
            self.metadata.update(metadata)
            for k, (dtype, shape, start, end) in entries.items():
                self.header[k] = (shape, dtype)
                self.file_of[k] = f
                self.location[k] = (f, start, end)

    @classmethod
    def from_header(cls, header: dict, metadata: dict | None = None, name: str = "<header>") -> "_Source":
        """A source known only by ``{key: (shape, dtype)}``: lets tests analyse 14B layouts without 28 GB."""
        self = cls.__new__(cls)
        self.path, self.files, self.folder_config, self.input_name, self.name = Path(name), [], None, "checkpoint", name
        self.header, self.file_of, self.metadata = {k: (tuple(s), d) for k, (s, d) in header.items()}, {}, dict(metadata or {})
        self.location = {}
        return self

    @classmethod
    def open(cls, path, kind: str | None, input_name: str) -> "_Source":
        path = Path(os.path.expanduser(str(path)))
        if not path.exists():
            where = f"ComfyUI users put {KIND_WORDS[kind]} files in ComfyUI/{COMFY_DIRS[kind]}" if kind else (
                "ComfyUI keeps them in models/diffusion_models, models/vae and models/text_encoders")
            raise VDOTInputError(input_name, f"{path} does not exist", f"check the path; {where}")
        if path.is_file():
            _refuse_non_safetensors(path, input_name)
            return cls(path, [path], None, input_name)
        # A folder: a pipeline root holding <sub>/, or a model folder.
        sub = {"transformer": "transformer", "vae": "vae", "text_encoder": "text_encoder"}.get(kind)
        if sub and (path / sub / "config.json").is_file():
            path = path / sub
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise VDOTInputError(
                input_name, f"{path} is a folder without config.json" + (f" or {sub}/" if sub else ""),
                "give a diffusers model folder, a pipeline root or a single .safetensors file",
            )
        return cls(path, _folder_weight_files(path, input_name), read_json_file(cfg_file, input_name), input_name)

    # ---- what is it? ----
    def analyse(self) -> tuple[dict, dict[str, str]]:
        """``(info, key_map)``; key_map maps target (diffusers / HF) names to stored names."""
        info = {
            "kind": "unknown", "layout": "unknown", "variant": None, "size": None, "prefix": "",
            "dtype": _main_dtype(self.header), "num_tensors": len(self.header), "config": None, "problem": None,
        }
        fmt = self.metadata.get("vdot_format")
        keys = set(self.header)
        if fmt:
            info["layout"] = "vdot"
            cfg = json.loads(self.metadata.get("vdot_config", "{}"))
            kind = {FORMAT_TRANSFORMER: "transformer", FORMAT_VAE: "vae", FORMAT_TEXT_ENCODER: "text_encoder"}.get(fmt)
            if kind is None:
                info["problem"] = f"unknown vdot_format {fmt!r} (written by a newer VDOT?)"
            key_map = {k: k for k in keys if k != "spiece_model"}
            info.update(kind=kind or "unknown", config=cfg)
            if kind == "transformer":
                info.update(variant="vace", size=_transformer_size(cfg))
            elif kind == "vae":
                info.update(variant="wan2.1" if cfg.get("z_dim", 16) == 16 else "wan2.2", size="wan2.1" if cfg.get("base_dim") == 96 else "custom")
            elif kind == "text_encoder":
                info.update(variant="umt5", size="xxl" if _same_t5(cfg, load_config(TEXT_ENCODER_CONFIG)) else "custom",
                            has_tokenizer="spiece_model" in keys or "vdot_tokenizer_vocab" in self.metadata)
        elif self.folder_config is not None:
            key_map = self._analyse_folder(info)
        else:
            key_map = self._analyse_keys(info)
        info["description"] = _describe_line(info, self.name)
        return info, key_map

    def _analyse_folder(self, info: dict) -> dict[str, str]:
        cfg = self.folder_config
        cls = cfg.get("_class_name", "")
        info.update(layout="diffusers", config=cfg)
        keys = {k: k for k in self.header}
        if cls in ("WanVACETransformer3DModel", "WanTransformer3DModel"):
            variant = "vace" if cls == "WanVACETransformer3DModel" else ("i2v" if cfg.get("image_dim") else "t2v")
            info.update(kind="transformer", variant=variant, size=_transformer_size(cfg))
        elif cls == "AutoencoderKLWan":
            info.update(kind="vae", variant="wan2.1" if cfg.get("z_dim", 16) == 16 else "wan2.2",
                        size="wan2.1" if cfg.get("base_dim", 96) == 96 else "custom")
        elif cfg.get("model_type") in ("umt5", "t5") or any("T5" in a for a in cfg.get("architectures") or []):
            info.update(kind="text_encoder", layout="hf", variant="umt5" if cfg.get("model_type") == "umt5" else "t5",
                        size="xxl" if _same_t5(cfg, load_config(TEXT_ENCODER_CONFIG)) else "custom")
            keys = _t5_key_map(self.header, info)
        else:
            info["problem"] = f"config.json describes {cls or cfg.get('architectures') or 'an unknown model'}"
        return keys

    def _analyse_keys(self, info: dict) -> dict[str, str]:
        header = self.header
        keys = set(header)
        if any(k.startswith(COMFY_PREFIX) for k in keys):
            info["prefix"] = COMFY_PREFIX
            header = {k[len(COMFY_PREFIX):] if k.startswith(COMFY_PREFIX) else k: v for k, v in header.items()}
        stored = {k: (info["prefix"] + k if info["prefix"] + k in self.header else k) for k in header}
        keys = set(header)
        if "scaled_fp8" in keys or any(k.endswith(".scale_weight") for k in keys):
            info["problem"] = "it is a ComfyUI 'fp8_scaled' file (weights with per-tensor scale_weight), which VDOT does not read"
        if _WAN_ORIGINAL in keys or _WAN_DIFFUSERS in keys:
            info["kind"] = "transformer"
            if any(k.startswith("vace_blocks.") for k in keys):
                info["variant"] = "vace"
            elif any(k.startswith(("img_emb.", "condition_embedder.image_embedder.")) for k in keys):
                info["variant"] = "i2v"
            elif any(k.startswith(("motion_encoder", "face_adapter", "pose_patch_embedding")) for k in keys):
                info["variant"] = "other"  # Wan-Animate and friends: not renamed here
            else:
                info["variant"] = "t2v"
            if _WAN_ORIGINAL in keys and info["variant"] != "other":
                info["layout"] = "original"
                renamed = _convert_names(keys, "transformer")  # diffusers name -> original name
                key_map = {new: stored[old] for new, old in renamed.items()}
                header = {new: header[old] for new, old in renamed.items()}
            else:
                info["layout"] = "diffusers" if _WAN_DIFFUSERS in keys else "original"
                key_map = {k: stored[k] for k in keys}
            facts = _transformer_facts(header)
            info["size"] = {(1536, 30): "1.3B", (5120, 40): "14B"}.get((facts["dim"], facts["num_layers"]), "custom")
            meta_config = self.metadata.get("vdot_transformer_config")
            if info["variant"] == "vace" and info["problem"] is None and meta_config:
                # A VDOT export names its architecture; shapes alone can't tell custom sizes apart
                # (e.g. head count). A wrong config still fails the shape check when loading.
                info["config"] = _public_config(json.loads(meta_config))
                info["size"] = _transformer_size(info["config"])
            elif info["variant"] == "vace" and info["problem"] is None:
                info["config"], info["problem"] = _transformer_config_from_facts(facts)
                if info["config"] is not None and info["size"] != "custom" and _transformer_size(info["config"]) == "custom":
                    info["size"] = "custom"
            return key_map
        vae_conv = header.get("encoder.conv1.weight") or header.get("encoder.conv_in.weight")
        if vae_conv is not None and ("decoder.head.2.weight" in keys or "decoder.conv_out.weight" in keys):
            if len(vae_conv[0]) != 5:
                info.update(kind="vae", variant="image", layout="unknown")
                info["problem"] = "it is an image VAE (2-D convolutions), not the Wan video VAE"
                return {k: stored[k] for k in keys}
            info["kind"] = "vae"
            if "encoder.conv1.weight" in keys:
                info["layout"] = "original"
                renamed = _convert_names(keys, "vae")
                key_map = {new: stored[old] for new, old in renamed.items()}
                header = {new: header[old] for new, old in renamed.items()}
            else:
                info["layout"] = "diffusers"
                key_map = {k: stored[k] for k in keys}
            z = header["post_quant_conv.weight"][0][0] if "post_quant_conv.weight" in header else None
            base = header["encoder.conv_in.weight"][0][0] if "encoder.conv_in.weight" in header else None
            info["variant"] = "wan2.1" if z == 16 else "wan2.2"
            if z == 16:
                cfg = load_config(VAE_CONFIG)
                cfg["base_dim"] = base
                info.update(config=cfg, size="wan2.1" if base == 96 else "custom")
            return key_map
        if "encoder.block.0.layer.0.SelfAttention.q.weight" in keys:
            info.update(kind="text_encoder", layout="hf")
            per_layer_bias = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in keys
            n_blocks = len({k.split(".")[2] for k in keys if k.startswith("encoder.block.")})
            info["variant"] = "umt5" if per_layer_bias or n_blocks == 1 else "t5"
            info["has_tokenizer"] = "spiece_model" in keys or "vdot_tokenizer_vocab" in self.metadata
            key_map = _t5_key_map(header, info)
            key_map = {k: stored[v] for k, v in key_map.items()}
            if info["variant"] == "umt5":
                info["config"] = _t5_config_from_shapes({k: header[v] for k, v in _t5_key_map(header, {}).items()})
                if info["config"] is None:
                    info["problem"] = "its architecture cannot be read from shapes (shared.weight or relative_attention_bias missing)"
                else:
                    info["size"] = "xxl" if _same_t5(info["config"], load_config(TEXT_ENCODER_CONFIG)) else "custom"
            return key_map
        if any("lora_" in k or k.endswith(".alpha") for k in keys):
            info["problem"] = "it looks like a LoRA, not a full model"
        elif any(k.startswith(("visual.", "vision_model.", "text_model.", "log_scale")) for k in keys):
            info["problem"] = "it looks like a CLIP model"
        else:
            info["problem"] = "its tensor names match no Wan transformer, Wan VAE or UMT5 text encoder (first: " + ", ".join(sorted(keys)[:3]) + ")"
        return {k: stored[k] for k in keys}

    # ---- tokenizer of a text-encoder source ----
    def tokenizer(self, input_name: str):
        if self.folder_config is None:  # single file
            if "spiece_model" in self.header:
                with TensorReader() as reader:
                    data = reader.read(*self.location["spiece_model"]).numpy().tobytes()
                return _guard(lambda: tokenizer_from_spiece(data), input_name, f"{self.name}: spiece_model")
            if "vdot_tokenizer_vocab" in self.metadata:
                from transformers import T5Tokenizer

                vocab = [tuple(p) for p in json.loads(self.metadata["vdot_tokenizer_vocab"])]
                return T5Tokenizer(vocab=vocab, extra_ids=0)
            raise VDOTInputError(
                input_name, f"{self.name} holds no tokenizer (no spiece_model tensor)",
                f"use a file that includes it such as {EXAMPLE_FILES['text_encoder']}, or a diffusers folder with tokenizer/",
            )
        for folder in (self.path.parent / "tokenizer", self.path):
            if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
                from transformers import AutoTokenizer

                return AutoTokenizer.from_pretrained(folder, local_files_only=True)
            if (folder / "spiece.model").is_file():
                return tokenizer_from_spiece((folder / "spiece.model").read_bytes())
        raise VDOTInputError(
            input_name, f"no tokenizer next to {self.path} (looked in ../tokenizer and the folder itself)",
            "give the diffusers pipeline root, which has tokenizer/",
        )


def _refuse_non_safetensors(path: Path, input_name: str) -> None:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise VDOTInputError(
            input_name, f"{path.name} is a PyTorch pickle ({suffix}); VDOT loads only .safetensors (a pickle can run code)",
            f"convert it: vdot convert {path} <folder> (reads it with torch's weights-only unpickler)",
        )
    if suffix == ".gguf":
        raise VDOTInputError(input_name, f"{path.name} is a GGUF file; VDOT reads safetensors", "use the .safetensors release")


def _pickle_hint(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return f"it is a PyTorch pickle with a .safetensors name; convert it: vdot convert {path} <folder>"
    return None


def _folder_weight_files(folder: Path, input_name: str) -> list[Path]:
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


def _main_dtype(header) -> str | None:
    counts: dict[str, int] = {}
    for shape, dt in header.values():
        n = 1
        for s in shape:
            n *= s
        counts[dt] = counts.get(dt, 0) + n
    return max(counts, key=counts.get) if counts else None


def _convert_names(keys, kind: str) -> dict[str, str]:
    """diffusers' converter run on names only: ``{diffusers name: original name}``.

    The Wan transformer (VACE) and VAE converters only rename keys, so passing each name as its own
    value gives the mapping without touching a tensor (and works for 14B on any machine).
    """
    from diffusers.loaders import single_file_utils as sfu

    convert = sfu.convert_wan_transformer_to_diffusers if kind == "transformer" else sfu.convert_wan_vae_to_diffusers
    out = convert({k: k for k in keys})
    if len(out) != len(keys) or not all(isinstance(v, str) for v in out.values()):
        raise RuntimeError(f"diffusers' {convert.__name__} did not rename keys one-to-one; this diffusers version is not supported")
    return out


def _transformer_facts(h: dict) -> dict:
    """Architecture facts readable from diffusers-named shapes."""
    def shape(k):
        return h[k][0] if k in h else None

    pe = shape("patch_embedding.weight") or (0, 0, 1, 1, 1)
    patch = list(pe[2:])
    p = 1
    for s in patch:
        p *= s
    blocks = {int(k.split(".")[1]) for k in h if k.startswith("blocks.")}
    vace = {int(k.split(".")[1]) for k in h if k.startswith("vace_blocks.")}
    return dict(
        dim=pe[0], in_channels=pe[1], patch_size=patch,
        num_layers=max(blocks) + 1 if blocks else 0, num_vace=max(vace) + 1 if vace else 0,
        ffn_dim=(shape("blocks.0.ffn.net.0.proj.weight") or (None,))[0],
        text_dim=(shape("condition_embedder.text_embedder.linear_1.weight") or (None, None))[1],
        freq_dim=(shape("condition_embedder.time_embedder.linear_1.weight") or (None, None))[1],
        out_channels=(shape("proj_out.weight") or (0,))[0] // p,
        vace_in_channels=(shape("vace_patch_embedding.weight") or (None, None))[1],
        qk_norm="blocks.0.attn1.norm_q.weight" in h, cross_attn_norm="blocks.0.norm2.weight" in h,
    )


def _facts_of_config(c: dict) -> dict:
    c = {**load_config(TRANSFORMER_CONFIGS["14B"]), **c}  # diffusers' defaults are the 14B values
    return dict(
        dim=c["num_attention_heads"] * c["attention_head_dim"], in_channels=c["in_channels"], patch_size=list(c["patch_size"]),
        num_layers=c["num_layers"], num_vace=len(c["vace_layers"]), ffn_dim=c["ffn_dim"], text_dim=c["text_dim"],
        freq_dim=c["freq_dim"], out_channels=c["out_channels"], vace_in_channels=c["vace_in_channels"],
        qk_norm=bool(c["qk_norm"]), cross_attn_norm=bool(c["cross_attn_norm"]),
    )


def _transformer_size(cfg: dict) -> str:
    for size, name in TRANSFORMER_CONFIGS.items():
        ref = load_config(name)
        if _facts_of_config(cfg) == _facts_of_config(ref) and list(cfg.get("vace_layers", [])) == ref["vace_layers"]:
            return size
    return "custom"


def _transformer_config_from_facts(facts: dict) -> tuple[dict | None, str | None]:
    for name in TRANSFORMER_CONFIGS.values():
        ref = load_config(name)
        if facts == _facts_of_config(ref):
            return ref, None
    # Another size: the head count and where the VACE blocks sit are not in any tensor shape. Wan
    # uses 128-wide heads and evenly spaced VACE layers; assume those only when they fit exactly.
    if facts["dim"] % 128 or not facts["num_vace"] or facts["num_layers"] % facts["num_vace"]:
        return None, (
            f"a custom-size VACE transformer (width {facts['dim']}, {facts['num_layers']} blocks, {facts['num_vace']} VACE blocks) "
            "whose attention head count and VACE layer placement cannot be read from tensor shapes"
        )
    step = facts["num_layers"] // facts["num_vace"]
    cfg = load_config(TRANSFORMER_CONFIGS["14B"])
    cfg.update(
        num_attention_heads=facts["dim"] // 128, attention_head_dim=128, in_channels=facts["in_channels"],
        out_channels=facts["out_channels"], patch_size=facts["patch_size"], num_layers=facts["num_layers"],
        ffn_dim=facts["ffn_dim"], text_dim=facts["text_dim"], freq_dim=facts["freq_dim"],
        vace_in_channels=facts["vace_in_channels"], vace_layers=list(range(0, facts["num_layers"], step)),
        qk_norm="rms_norm_across_heads" if facts["qk_norm"] else None, cross_attn_norm=facts["cross_attn_norm"],
    )
    return cfg, None


def _t5_key_map(header: dict, info: dict) -> dict[str, str]:
    """HF UMT5EncoderModel names -> stored names; the decoder / LM head of a full T5 is dropped."""
    out = {}
    dropped = []
    for k in header:
        if k == "spiece_model":
            continue
        if k.startswith(("decoder.", "lm_head.")):
            dropped.append(k)
            continue
        out[k] = k
    if "shared.weight" not in out and "encoder.embed_tokens.weight" in out:
        out["shared.weight"] = out.pop("encoder.embed_tokens.weight")
    out.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight
    if dropped and info is not None:
        info["ignored"] = f"{len(dropped)} decoder / lm_head tensors (only the encoder is used)"
    return out


def _t5_config_from_shapes(h: dict) -> dict | None:
    try:
        vocab, d_model = h["shared.weight"][0]
        buckets, heads = h["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][0]
        inner = h["encoder.block.0.layer.0.SelfAttention.q.weight"][0][0]
        gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in h
        d_ff = h["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"][0][0]
    except KeyError:
        return None
    cfg = load_config(TEXT_ENCODER_CONFIG)
    cfg.update(
        vocab_size=vocab, d_model=d_model, num_heads=heads, d_kv=inner // heads, d_ff=d_ff,
        relative_attention_num_buckets=buckets, num_layers=len({k.split(".")[2] for k in h if k.startswith("encoder.block.")}),
        feed_forward_proj="gated-gelu" if gated else "relu", is_gated_act=gated,
    )
    return cfg


def _same_t5(a: dict, b: dict) -> bool:
    fields = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets")
    return all(a.get(f) == b.get(f) for f in fields)


def _describe_line(info: dict, name: str) -> str:
    kind, variant, size = info["kind"], info["variant"], info["size"]
    layout = {"vdot": "VDOT format", "diffusers": "diffusers names", "original": "original Wan/ComfyUI layout", "hf": "HF names"}.get(info["layout"], info["layout"])
    if kind == "transformer":
        what = {"vace": "Wan2.1-VACE", "t2v": "Wan2.1 T2V", "i2v": "Wan2.1 I2V"}.get(variant, "Wan-family") + f" {size} transformer"
    elif kind == "vae":
        what = {"wan2.1": "Wan2.1 VAE", "wan2.2": "Wan2.2 VAE (48 latent channels)", "image": "image VAE"}.get(variant, "VAE")
    elif kind == "text_encoder":
        what = ("UMT5" if variant == "umt5" else "T5 (not UMT5)") + (f"-{size.upper()}" if size == "xxl" else f" ({size})" if size else "") + " text encoder"
    else:
        return f"{name}: unknown ({info['problem']})"
    extras = [layout, info["dtype"]] + ([f"prefix {info['prefix']}"] if info["prefix"] else [])
    return f"{what} ({', '.join(x for x in extras if x)})"


def _require_kind(info: dict, src: _Source, kind: str, input_name: str) -> None:
    if info["kind"] == kind:
        if info["problem"] and "fp8_scaled" in info["problem"]:
            raise VDOTInputError(input_name, f"{src.name}: {info['problem']}", "use the fp16/bf16 file and precision fp8_e4m3fn")
        if info["problem"] and info["config"] is None and kind != "transformer":
            raise VDOTInputError(input_name, f"{src.name}: {info['problem']}", f"use {EXAMPLE_FILES[kind]}")
        return
    if info["kind"] in KIND_WORDS:
        found = info["description"]
        raise VDOTInputError(
            input_name,
            f"{src.name} looks like a {KIND_WORDS[info['kind']]} ({found}), not a {KIND_WORDS[kind]}",
            f"pass it as the {KIND_WORDS[info['kind']]}; the {KIND_WORDS[kind]} is e.g. {EXAMPLE_FILES[kind]} in ComfyUI/{COMFY_DIRS[kind]}",
        )
    raise VDOTInputError(
        input_name, f"{src.name} is not a {KIND_WORDS[kind]}: {info['problem']}", f"use e.g. {EXAMPLE_FILES[kind]}"
    )


# --------------------------------------------------------------------------------------------
# Building a model from a checked header
# --------------------------------------------------------------------------------------------


def _materialise(build, src: _Source, key_map: dict[str, str], dtype, keep_fp32, input_name: str, storage=None, casting=None,
                 meta_only: bool = False, stream=None):
    """Build on the meta device, check every key and shape, then read each tensor once into place.

    Tensors are read one at a time (:class:`TensorReader`) and cast to their final dtype before the
    next is read, so host memory never holds more than the final model plus one tensor in its stored
    dtype. With fp8 ``storage``, ``casting(model)`` installs layerwise casting on the empty model
    first; the parameters it turns to fp8 are cast to fp8 as they are read (through the compute
    dtype, exactly as casting a loaded bf16 model would). ``stream(name)`` returning a module prefix
    leaves that tensor on disk: the module reads it each time it runs (:class:`block_swap.StreamFromFile`).
    """
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on meta, buffers (rope tables) real
        model = build()
    if casting is not None:
        casting(model)
    target_dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied_alias = "encoder.embed_tokens.weight" if "shared.weight" in expected and "encoder.embed_tokens.weight" in expected else None
    if tied_alias:
        expected.pop(tied_alias)
    missing = sorted(set(expected) - set(key_map))
    unexpected = sorted(key_map[k] for k in set(key_map) - set(expected))
    arch = type(model).__name__
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:4])})")
        raise VDOTInputError(
            input_name, f"{src.name} does not match the {arch} it describes: " + "; ".join(parts),
            "use a complete checkpoint of this architecture (a truncated or different model?)",
        )
    for name, shape in expected.items():
        found = src.header[key_map[name]][0]
        if tuple(found) != shape:
            raise VDOTInputError(
                input_name, f"{src.name}: tensor {key_map[name]} has shape {list(found)}, {arch} expects {list(shape)}",
                "the file is a different model size or architecture than its config; pass the matching file or config",
            )
    if meta_only:  # for planning: the checked, empty model with every parameter in its final dtype
        for name, p in model.named_parameters():
            keep = any(m in name.split(".") for m in keep_fp32)
            if p.is_floating_point() and p.dtype != storage:
                p.data = p.data.to(torch.float32 if keep else dtype)
        if tied_alias:  # one tensor, as after a real load
            model.encoder.embed_tokens.weight = model.shared.weight
        return model
    def final_dtype(name, t_dtype):
        if not t_dtype.is_floating_point:
            return t_dtype, None
        keep = any(m in name.split(".") for m in keep_fp32)
        first = torch.float32 if keep else dtype
        return first, (storage if storage is not None and target_dtypes[name] == storage else None)

    state = {}
    streamed: dict[str, dict[str, tuple]] = {}  # module prefix -> {param name: how to read it}
    loaded = 0
    # File order: sequential reads are what disks (and the page cache's read-ahead) do fastest.
    order = sorted(key_map, key=lambda n: (str(src.location[key_map[n]][0]), src.location[key_map[n]][1]))
    with TensorReader() as reader:
        for name in order:
            stored = key_map[name]
            shape, st_dtype = src.header[stored]
            first, then = final_dtype(name, SAFETENSORS_DTYPES[st_dtype])
            prefix = stream(name) if stream is not None else None
            if prefix is not None:  # left on disk: read by StreamFromFile when its block runs
                streamed.setdefault(prefix, {})[name[len(prefix) + 1:]] = (*src.location[stored], shape, st_dtype, first, then)
                state[name] = torch.empty(shape, dtype=then or first, device="meta")
                continue
            try:
                t = read_tensor(reader, *src.location[stored], shape, st_dtype, first, then)
            except CheckpointFileError as e:
                raise VDOTInputError(input_name, f"{src.name} is truncated: {e}", "download it again (the copy is incomplete)") from None
            except (MemoryError, RuntimeError) as e:
                if "memory" not in str(e).lower() and not isinstance(e, MemoryError):
                    raise
                file, begin, end = src.location[stored]
                raise VDOTInputError(
                    input_name, f"out of host memory reading {src.name} (tensor {stored}, {(end - begin) / 2**20:.0f} MiB, "
                    f"after {loaded / 2**30:.1f} GiB loaded)",
                    "close other programs, or load with precision fp8_e4m3fn (half the memory of bf16)",
                ) from None
            loaded += t.numel() * t.element_size()
            state[name] = t
    if tied_alias:
        state[tied_alias] = state["shared.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if tied_alias:
        model.encoder.embed_tokens.weight = model.shared.weight
    if streamed:
        from .block_swap import StreamFromFile

        model.vdot_stream = StreamFromFile(model, streamed)
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise RuntimeError(f"parameters left uninitialised after loading {src.name}: {still_meta[:4]}")
    return model


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


# --------------------------------------------------------------------------------------------
# Reading safetensors without mapping the whole file
# --------------------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
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


def _diffusers_casting(storage, compute):
    """Layerwise casting installed on the empty model, so fp8 weights are cast as they are read."""
    if storage is None:
        return None
    return lambda model: model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)


def _parse_precision(precision: str, input_name: str):
    if precision not in PRECISIONS:
        raise VDOTInputError(input_name, f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


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


def _config_arg(config, input_name: str) -> dict | None:
    if config is None or isinstance(config, dict):
        return dict(config) if config else None
    p = Path(config)
    if not p.is_file():
        raise VDOTInputError(input_name, f"config file {p} does not exist", "pass a config.json path or a dict")
    return read_json_file(p, input_name)


def _guard(fn, input_name: str, what: str):
    try:
        return fn()
    except (ValueError, RuntimeError, OSError) as e:
        raise VDOTInputError(input_name, f"{what} is not a usable SentencePiece model ({e})", "use the original file") from None


def _spiece_normaliser(proto: bytes) -> tuple[bytes | None, bool]:
    """``(precompiled_charsmap, byte_fallback)`` from a SentencePiece ModelProto, read off the wire format.

    ModelProto: trainer_spec = field 2 (byte_fallback = field 35), normalizer_spec = field 3
    (precompiled_charsmap = field 2). Reading two fields does not need protobuf installed.
    """
    charsmap, byte_fallback = None, False
    for num, wire, val in _proto_fields(proto):
        if num == 3 and wire == 2:
            for n2, w2, v2 in _proto_fields(val):
                if n2 == 2 and w2 == 2:
                    charsmap = bytes(v2) or None
        elif num == 2 and wire == 2:
            for n2, w2, v2 in _proto_fields(val):
                if n2 == 35 and w2 == 0:
                    byte_fallback = bool(v2)
    return charsmap, byte_fallback


def _proto_fields(buf: bytes):
    def varint(i):
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result, i
            shift += 7

    i = 0
    while i < len(buf):
        tag, i = varint(i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            val, i = varint(i)
        elif wire == 1:
            val, i = buf[i : i + 8], i + 8
        elif wire == 5:
            val, i = buf[i : i + 4], i + 4
        elif wire == 2:
            n, i = varint(i)
            val, i = buf[i : i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield num, wire, val


def _tokenizer_vocab(tokenizer) -> list[list]:
    """``[[piece, score], ...]`` of a Unigram (T5) tokenizer, in id order."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "Unigram":
        raise TypeError(f"save_text_encoder needs a Unigram (T5/UMT5) tokenizer, got {model.get('type')}")
    return [[p, float(s)] for p, s in model["vocab"]]


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def _public_config(config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}


def _atomic_save(state: dict, path, fmt: str, config: dict, extra_metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    metadata = {"vdot_format": fmt, "vdot_config": json.dumps(config), **(extra_metadata or {})}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


__all__ = [
    "PRECISIONS", "CheckpointFileError", "TensorReader", "describe_checkpoint", "empty_model", "module_bytes",
    "read_safetensors_header", "load_config", "load_text_encoder", "load_transformer", "load_vae",
    "save_text_encoder", "save_transformer", "save_vae", "tokenizer_from_spiece",
]
