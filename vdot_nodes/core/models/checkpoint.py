"""What a checkpoint is, from its headers alone: :func:`identify` returns a typed :class:`CheckpointInfo`.

:class:`Checkpoint` is the file (or diffusers folder) on disk: its safetensors headers, where each
tensor's bytes are, its metadata and a folder's ``config.json``. :func:`identify` is pure — key names,
shapes, dtypes and metadata in, a description out (component, layout, variant, size, the config a
loader would build and the key map onto that model) — so a 14B layout is identified from a header
dict in a test, and the release converter identifies its pickles the same way the loaders do.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import VDOTInputError
from . import configs
from .convert import to_model_names, umt5, wan_transformer, wan_vae
from .files import (PICKLE_SUFFIXES, CheckpointFileError, folder_weight_files, pickle_hint, read_json_file,
                    read_safetensors_header, refuse_non_safetensors)

FORMAT_TRANSFORMER = "diffusers-wan-vace"
FORMAT_VAE = "diffusers-wan-vae"
FORMAT_TEXT_ENCODER = "hf-umt5-encoder"
FORMATS = {FORMAT_TRANSFORMER: "transformer", FORMAT_VAE: "vae", FORMAT_TEXT_ENCODER: "text_encoder"}

COMPONENTS = ("transformer", "vae", "text_encoder")
COMFY_DIRS = {"transformer": "models/diffusion_models", "vae": "models/vae", "text_encoder": "models/text_encoders"}
KIND_WORDS = {"transformer": "diffusion transformer", "vae": "VAE", "text_encoder": "text encoder"}
EXAMPLE_FILES = {
    "transformer": "wan2.1_vace_14B_fp16.safetensors (or a Wan2.1-VACE-*-diffusers folder)",
    "vae": "wan_2.1_vae.safetensors",
    "text_encoder": "umt5_xxl_fp16.safetensors",
}
LAYOUT_WORDS = {"vdot": "VDOT format", "diffusers": "diffusers names", "original": "original Wan/ComfyUI layout",
                "hf": "HF names", "wan_t5": "Wan T5 names"}
Header = dict[str, tuple[tuple[int, ...], str]]  # stored name -> (shape, safetensors dtype)


@dataclass
class CheckpointInfo:
    """What a checkpoint holds. ``key_map`` maps the model's (diffusers / HF) names to stored names.

    ``kind``: transformer | vae | text_encoder | unknown. ``layout``: vdot | diffusers | original | hf |
    wan_t5 | unknown. ``variant``: transformer vace | t2v | i2v | other; vae wan2.1 | wan2.2 | image;
    text encoder umt5 | t5. ``size``: transformer 1.3B | 14B | custom; vae wan2.1 | custom; text
    encoder xxl | custom. ``config``: the architecture a loader would build, or None with ``problem``
    saying why.
    """

    kind: str = "unknown"
    layout: str = "unknown"
    variant: str | None = None
    size: str | None = None
    prefix: str = ""
    dtype: str | None = None
    num_tensors: int = 0
    config: dict | None = None
    problem: str | None = None
    description: str = ""
    key_map: dict[str, str] = field(default_factory=dict, repr=False)
    has_tokenizer: bool | None = None  # text encoders: a tokenizer travels with the weights
    ignored: str | None = None  # tensors present but not used (a full T5's decoder)

    def as_dict(self) -> dict:
        """The plain dict :func:`describe_checkpoint` returns (no key map; optional fields only when set)."""
        out = {k: v for k, v in asdict(self).items() if k != "key_map"}
        for optional in ("has_tokenizer", "ignored"):
            if out[optional] is None:
                del out[optional]
        return out


class Checkpoint:
    """A checkpoint on disk: its safetensors files, header (key -> shape, dtype), tensor locations and metadata."""

    def __init__(self, path: Path, files: list[Path], folder_config: dict | None, input_name: str):
        self.path, self.files, self.folder_config, self.input_name = path, files, folder_config, input_name
        self.name = path.name
        self.header: Header = {}
        self.metadata: dict[str, str] = {}
        self.location: dict[str, tuple[Path, int, int]] = {}  # key -> (file, first byte, end byte)
        for f in files:
            try:
                entries, metadata = read_safetensors_header(f)
            except CheckpointFileError as e:
                if e.truncated:
                    raise VDOTInputError(input_name, f"{f} is truncated: {e}", "download it again (the copy is incomplete)") from None
                raise VDOTInputError(
                    input_name, f"{f} is not a readable safetensors file ({pickle_hint(f) or e})",
                    "convert it to .safetensors (or download the .safetensors release of this model)",
                ) from None
            except OSError as e:
                raise VDOTInputError(input_name, f"{f} cannot be read ({e})", "check the file's permissions and disk") from None
            self.metadata.update(metadata)
            for k, (dtype, shape, start, end) in entries.items():
                self.header[k] = (shape, dtype)
                self.location[k] = (f, start, end)

    @classmethod
    def from_header(cls, header: dict, metadata: dict | None = None, name: str = "<header>") -> "Checkpoint":
        """A checkpoint known only by ``{key: (shape, dtype)}``: tests identify 14B layouts without 28 GB,
        the release converter identifies a pickle's tensors."""
        self = cls.__new__(cls)
        self.path, self.files, self.folder_config, self.input_name, self.name = Path(name), [], None, "checkpoint", name
        self.header = {k: (tuple(s), d) for k, (s, d) in header.items()}
        self.metadata, self.location = dict(metadata or {}), {}
        return self

    @classmethod
    def open(cls, path, kind: str | None, input_name: str) -> "Checkpoint":
        """A single safetensors file, a diffusers model folder, or the ``kind`` sub-folder of a pipeline root."""
        path = Path(os.path.expanduser(str(path)))
        if not path.exists():
            where = f"ComfyUI users put {KIND_WORDS[kind]} files in ComfyUI/{COMFY_DIRS[kind]}" if kind else (
                "ComfyUI keeps them in models/diffusion_models, models/vae and models/text_encoders")
            raise VDOTInputError(input_name, f"{path} does not exist", f"check the path; {where}")
        if path.is_file():
            refuse_non_safetensors(path, input_name)
            return cls(path, [path], None, input_name)
        # A folder: a pipeline root holding <kind>/, or a model folder.
        sub = kind if kind in COMPONENTS else None
        if sub and (path / sub / "config.json").is_file():
            path = path / sub
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise VDOTInputError(
                input_name, f"{path} is a folder without config.json" + (f" or {sub}/" if sub else ""),
                "give a diffusers model folder, a pipeline root or a single .safetensors file",
            )
        return cls(path, folder_weight_files(path, input_name), read_json_file(cfg_file, input_name), input_name)

    def identify(self) -> CheckpointInfo:
        return identify(self.header, self.metadata, self.folder_config, self.name)


# --------------------------------------------------------------------------------------------
# identify: header -> CheckpointInfo
# --------------------------------------------------------------------------------------------


def identify(header: Header, metadata: dict | None = None, folder_config: dict | None = None,
             name: str = "<header>") -> CheckpointInfo:
    """What ``header`` (``{stored name: (shape, dtype)}``) describes; pure, reads no file.

    ``metadata`` is the safetensors metadata (``vdot_format`` marks our own files), ``folder_config``
    a diffusers / HF folder's ``config.json``.
    """
    metadata = metadata or {}
    info = CheckpointInfo(dtype=_main_dtype(header), num_tensors=len(header))
    if metadata.get("vdot_format"):
        _identify_vdot(info, header, metadata)
    elif folder_config is not None:
        _identify_folder(info, header, folder_config)
    else:
        _identify_keys(info, header, metadata)
    info.description = describe_line(info, name)
    return info


def _vae_variant(cfg: dict) -> str:
    """``wan2.2`` for Wan2.2's 48-channel VAE (another latent space than VDOT's); any other
    ``AutoencoderKLWan`` config is read as the Wan2.1 family: the pipeline checks that its latent width fits
    the transformer (``check_vae_fits_transformer``), so the toy model's 4-channel VAE loads too."""
    return "wan2.2" if cfg.get("z_dim", 16) == 48 else "wan2.1"


def _identify_vdot(info: CheckpointInfo, header: Header, metadata: dict) -> None:
    fmt = metadata["vdot_format"]
    cfg = json.loads(metadata.get("vdot_config", "{}"))
    kind = FORMATS.get(fmt)
    if kind is None:
        info.problem = f"unknown vdot_format {fmt!r} (written by a newer VDOT?)"
    info.layout, info.kind, info.config = "vdot", kind or "unknown", cfg
    info.key_map = {k: k for k in header if k != umt5.TOKENIZER_TENSOR}
    if kind == "transformer":
        info.variant, info.size = "vace", configs.transformer_size(cfg)
    elif kind == "vae":
        info.variant = _vae_variant(cfg)
        info.size = "wan2.1" if cfg.get("base_dim") == 96 else "custom"
    elif kind == "text_encoder":
        info.variant = "umt5"
        info.size = "xxl" if configs.same_t5(cfg, configs.load_config(configs.TEXT_ENCODER_CONFIG)) else "custom"
        info.has_tokenizer = umt5.TOKENIZER_TENSOR in header or "vdot_tokenizer_vocab" in metadata


def _identify_folder(info: CheckpointInfo, header: Header, cfg: dict) -> None:
    cls = cfg.get("_class_name", "")
    info.layout, info.config = "diffusers", cfg
    info.key_map = {k: k for k in header}
    if cls in ("WanVACETransformer3DModel", "WanTransformer3DModel"):
        info.kind = "transformer"
        info.variant = "vace" if cls == "WanVACETransformer3DModel" else ("i2v" if cfg.get("image_dim") else "t2v")
        info.size = configs.transformer_size(cfg)
    elif cls == "AutoencoderKLWan":
        info.kind, info.variant = "vae", _vae_variant(cfg)
        info.size = "wan2.1" if cfg.get("base_dim", 96) == 96 else "custom"
    elif cfg.get("model_type") in ("umt5", "t5") or any("T5" in a for a in cfg.get("architectures") or []):
        info.kind, info.layout = "text_encoder", "hf"
        info.variant = "umt5" if cfg.get("model_type") == "umt5" else "t5"
        info.size = "xxl" if configs.same_t5(cfg, configs.load_config(configs.TEXT_ENCODER_CONFIG)) else "custom"
        info.key_map, dropped = umt5.hf_encoder_names(header)
        if dropped:
            info.ignored = f"{len(dropped)} decoder / lm_head tensors (only the encoder is used)"
    else:
        info.problem = f"config.json describes {cls or cfg.get('architectures') or 'an unknown model'}"


def _identify_keys(info: CheckpointInfo, stored_header: Header, metadata: dict) -> None:
    header = stored_header
    if any(k.startswith(wan_transformer.COMFY_PREFIX) for k in header):
        info.prefix = wan_transformer.COMFY_PREFIX
        header = {k.removeprefix(info.prefix): v for k, v in header.items()}
    stored = {k: (info.prefix + k if info.prefix + k in stored_header else k) for k in header}
    keys = set(header)
    if "scaled_fp8" in keys or any(k.endswith(".scale_weight") for k in keys):
        info.problem = "it is a ComfyUI 'fp8_scaled' file (weights with per-tensor scale_weight), which VDOT does not read"

    def convert(component: str, layout: str) -> Header:
        """Set the layout and key map; the header in the model's names."""
        info.layout = layout
        names = to_model_names(component, layout, keys)
        info.key_map = {new: stored[old] for new, old in names.items()}
        return {new: header[old] for new, old in names.items()}

    if wan_transformer.ORIGINAL_MARKER in keys or wan_transformer.DIFFUSERS_MARKER in keys:
        info.kind = "transformer"
        if any(k.startswith("vace_blocks.") for k in keys):
            info.variant = "vace"
        elif any(k.startswith(("img_emb.", "condition_embedder.image_embedder.")) for k in keys):
            info.variant = "i2v"
        elif any(k.startswith(("motion_encoder", "face_adapter", "pose_patch_embedding")) for k in keys):
            info.variant = "other"  # Wan-Animate and friends: not renamed here
        else:
            info.variant = "t2v"
        if wan_transformer.ORIGINAL_MARKER in keys and info.variant != "other":
            model_header = convert("transformer", "original")
        else:  # diffusers names, or a Wan-Animate-like original file (not renamed: reported as it is)
            info.layout = "diffusers" if wan_transformer.DIFFUSERS_MARKER in keys else "original"
            info.key_map, model_header = {k: stored[k] for k in keys}, header
        _transformer_config(info, model_header, metadata)
        return
    vae_conv = header.get("encoder.conv1.weight") or header.get("encoder.conv_in.weight")
    if vae_conv is not None and ("decoder.head.2.weight" in keys or "decoder.conv_out.weight" in keys):
        if len(vae_conv[0]) != 5:
            info.kind, info.variant = "vae", "image"
            info.problem = "it is an image VAE (2-D convolutions), not the Wan video VAE"
            info.key_map = {k: stored[k] for k in keys}
            return
        info.kind = "vae"
        model_header = convert("vae", "original" if wan_vae.ORIGINAL_MARKERS[0] in keys else "diffusers")
        info.config = configs.vae_config_from_shapes(model_header)
        info.variant = "wan2.1" if info.config is not None else "wan2.2"
        if info.config is not None:
            info.size = "wan2.1" if info.config["base_dim"] == 96 else "custom"
        return
    if umt5.HF_MARKER in keys or umt5.is_wan_t5(keys):
        info.kind = "text_encoder"
        model_header = convert("text_encoder", "hf" if umt5.HF_MARKER in keys else "wan_t5")
        dropped = [k for k in keys if k.startswith(("decoder.", "lm_head."))] if info.layout == "hf" else []
        if dropped:
            info.ignored = f"{len(dropped)} decoder / lm_head tensors (only the encoder is used)"
        per_layer_bias = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in model_header
        n_blocks = len({k.split(".")[2] for k in model_header if k.startswith("encoder.block.")})
        info.variant = "umt5" if per_layer_bias or n_blocks == 1 else "t5"
        info.has_tokenizer = umt5.TOKENIZER_TENSOR in keys or "vdot_tokenizer_vocab" in metadata
        if info.variant == "umt5":
            info.config = configs.t5_config_from_shapes(model_header)
            if info.config is None:
                info.problem = "its architecture cannot be read from shapes (shared.weight or relative_attention_bias missing)"
            else:
                info.size = "xxl" if configs.same_t5(info.config, configs.load_config(configs.TEXT_ENCODER_CONFIG)) else "custom"
        return
    if any("lora_" in k or k.endswith(".alpha") for k in keys):
        info.problem = "it looks like a LoRA, not a full model"
    elif any(k.startswith(("visual.", "vision_model.", "text_model.", "log_scale")) for k in keys):
        info.problem = "it looks like a CLIP model"
    else:
        info.problem = ("its tensor names match no Wan transformer, Wan VAE or UMT5 text encoder (first: "
                        + ", ".join(sorted(keys)[:3]) + ")")
    info.key_map = {k: stored[k] for k in keys}


def _transformer_config(info: CheckpointInfo, model_header: Header, metadata: dict) -> None:
    facts = configs.transformer_facts(model_header)
    info.size = {(1536, 30): "1.3B", (5120, 40): "14B"}.get((facts["dim"], facts["num_layers"]), "custom")
    if info.variant != "vace" or info.problem is not None:
        return
    meta_config = metadata.get("vdot_transformer_config")
    if meta_config:
        # A VDOT export names its architecture; shapes alone can't tell custom sizes apart
        # (e.g. head count). A wrong config still fails the shape check when loading.
        info.config = configs.public_config(json.loads(meta_config))
        info.size = configs.transformer_size(info.config)
    else:
        info.config, info.problem = configs.transformer_config_from_facts(facts)
        if info.config is not None and info.size != "custom" and configs.transformer_size(info.config) == "custom":
            info.size = "custom"


def _main_dtype(header: Header) -> str | None:
    counts: dict[str, int] = {}
    for shape, dt in header.values():
        n = 1
        for s in shape:
            n *= s
        counts[dt] = counts.get(dt, 0) + n
    return max(counts, key=counts.get) if counts else None


def describe_line(info: CheckpointInfo, name: str) -> str:
    kind, variant, size = info.kind, info.variant, info.size
    layout = LAYOUT_WORDS.get(info.layout, info.layout)
    if kind == "transformer":
        what = {"vace": "Wan2.1-VACE", "t2v": "Wan2.1 T2V", "i2v": "Wan2.1 I2V"}.get(variant, "Wan-family") + f" {size} transformer"
    elif kind == "vae":
        what = {"wan2.1": "Wan2.1 VAE", "wan2.2": "Wan2.2 VAE (48 latent channels)", "image": "image VAE"}.get(variant, "VAE")
    elif kind == "text_encoder":
        what = (("UMT5" if variant == "umt5" else "T5 (not UMT5)")
                + (f"-{size.upper()}" if size == "xxl" else f" ({size})" if size else "") + " text encoder")
    else:
        return f"{name}: unknown ({info.problem})"
    extras = [layout, info.dtype] + ([f"prefix {info.prefix}"] if info.prefix else [])
    return f"{what} ({', '.join(x for x in extras if x)})"


def require_kind(info: CheckpointInfo, name: str, kind: str, input_name: str) -> None:
    """Refuse a checkpoint of another component (or none), naming what it is and where the right one lives."""
    if info.kind == kind:
        if info.problem and "fp8_scaled" in info.problem:
            raise VDOTInputError(input_name, f"{name}: {info.problem}", "use the fp16/bf16 file and precision fp8_e4m3fn")
        if info.problem and info.config is None and kind != "transformer":
            raise VDOTInputError(input_name, f"{name}: {info.problem}", f"use {EXAMPLE_FILES[kind]}")
        return
    if info.kind in KIND_WORDS:
        raise VDOTInputError(
            input_name,
            f"{name} looks like a {KIND_WORDS[info.kind]} ({info.description}), not a {KIND_WORDS[kind]}",
            f"pass it as the {KIND_WORDS[info.kind]}; the {KIND_WORDS[kind]} is e.g. {EXAMPLE_FILES[kind]} in ComfyUI/{COMFY_DIRS[kind]}",
        )
    raise VDOTInputError(input_name, f"{name} is not a {KIND_WORDS[kind]}: {info.problem}", f"use e.g. {EXAMPLE_FILES[kind]}")


def describe_checkpoint(path) -> dict:
    """What a file or folder holds, from safetensors headers only (no tensor is read).

    Returns :meth:`CheckpointInfo.as_dict` plus ``path``: ``kind`` (transformer | vae | text_encoder |
    pipeline | unknown), ``layout`` (vdot | diffusers | original | hf | wan_t5 | pickle | gguf |
    unknown), ``variant``, ``size``, ``dtype``, ``num_tensors``, ``prefix``, ``config`` (or None with
    ``problem`` saying why) and a one-line ``description``. Pipeline roots get ``components`` instead.
    A missing path raises :class:`VDOTInputError`; an unreadable or pickle file is reported as ``unknown``.
    """
    path = Path(path)
    if path.is_dir() and not (path / "config.json").is_file():
        parts = {sub: describe_checkpoint(path / sub) for sub in COMPONENTS if (path / sub).is_dir()}
        if parts:
            desc = ", ".join(f"{k}: {v['description']}" for k, v in parts.items())
            return {"path": str(path), "kind": "pipeline", "layout": "diffusers", "components": parts, "description": desc}
    try:
        ckpt = Checkpoint.open(path, None, "checkpoint")
    except VDOTInputError as e:
        if not path.exists():
            raise
        layout = "pickle" if path.suffix.lower() in PICKLE_SUFFIXES else ("gguf" if path.suffix.lower() == ".gguf" else "unknown")
        return {"path": str(path), "kind": "unknown", "layout": layout, "problem": e.problem, "description": e.problem}
    return {"path": str(path), **ckpt.identify().as_dict()}


__all__ = ["COMPONENTS", "Checkpoint", "CheckpointInfo", "EXAMPLE_FILES", "FORMAT_TEXT_ENCODER", "FORMAT_TRANSFORMER",
           "FORMAT_VAE", "KIND_WORDS", "describe_checkpoint", "describe_line", "identify", "require_kind"]
