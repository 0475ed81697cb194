"""Loading the three Wan2.1-VACE components from any layout :func:`identify` recognises.

Every load opens the checkpoint (:class:`Checkpoint`), identifies it, builds the model on the meta
device, checks the key set and every shape against it before reading a tensor (one
:class:`VDOTInputError` naming the file and the first mismatch), then reads each tensor once into place
in its final dtype. ``precision`` is one of ``fp32 | bf16 | fp16 | fp8_e4m3fn | fp8_e5m2``; fp8 stores
Linear/Conv weights in fp8 and computes in bf16 (diffusers layerwise casting, which skips embeddings
and norms; in UMT5 also the feed-forward output projection, which T5 code feeds in its weight's dtype).

``progress(done_bytes, total_bytes)`` is called after each tensor; ``cancel()`` is asked before each
one and a true answer raises :class:`~vdot_nodes.core.errors.VDOTCancelled` (a 14B load is minutes on
a slow disk). :func:`empty_model` builds the same checked model on the meta device for memory planning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import VDOTCancelled, VDOTInputError
from .checkpoint import EXAMPLE_FILES, Checkpoint, require_kind
from .files import SAFETENSORS_DTYPES, CheckpointFileError, TensorReader, read_json_file, read_tensor
from .tokenizer import checkpoint_tokenizer

logger = logging.getLogger(__name__)

PRECISIONS = {
    "fp32": (torch.float32, None),
    "bf16": (torch.bfloat16, None),
    "fp16": (torch.float16, None),
    "fp8_e4m3fn": (torch.bfloat16, torch.float8_e4m3fn),
    "fp8_e5m2": (torch.bfloat16, torch.float8_e5m2),
}

LOAD_BAR_MIN_BYTES = 2**30  # the CLI shows a load bar for checkpoints at least this big
Progress = Callable[[int, int], None]


def load_transformer(path, precision: str = "bf16", device="cpu", *, config=None, input_name: str = "model",
                     progress: Progress | None = None, cancel: Callable[[], bool] | None = None, _meta: bool = False):
    """Load a ``WanVACETransformer3DModel`` from any format in the module docstring.

    ``config`` (dict or path to a config.json) overrides the architecture read from the file: needed
    only for single files of a size that is not 1.3B / 14B and whose head count cannot be read from
    shapes. Returns the model in eval mode on ``device``.
    """
    from diffusers import WanVACETransformer3DModel

    dtype, storage = parse_precision(precision, "precision")
    src = Checkpoint.open(path, "transformer", input_name)
    info = src.identify()
    require_kind(info, src.name, "transformer", input_name)
    if info.variant != "vace":
        what = {"t2v": "a plain Wan text-to-video", "i2v": "a Wan image-to-video"}.get(info.variant, "a")
        raise VDOTInputError(
            input_name,
            f"{src.name} is {what} transformer ({info.description}) without VACE blocks; VDOT needs a VACE checkpoint",
            f"use a Wan2.1-VACE transformer: {EXAMPLE_FILES['transformer']}, or a VDOT checkpoint",
        )
    cfg = config_arg(config, input_name) or info.config
    if cfg is None:
        raise VDOTInputError(
            input_name, f"{src.name}: {info.problem}",
            "use a 1.3B/14B Wan2.1-VACE file or a diffusers folder (it has config.json), or pass config=<config.json>",
        )
    if (config is None and info.size == "custom" and src.folder_config is None and info.layout != "vdot"
            and "vdot_transformer_config" not in src.metadata):
        logger.warning("%s: custom-size Wan-VACE, assuming 128-wide heads and VACE blocks at layers %s", src.name, cfg["vace_layers"])
    model = materialise(
        lambda: WanVACETransformer3DModel.from_config(cfg), src, info.key_map, dtype,
        keep_fp32=WanVACETransformer3DModel._keep_in_fp32_modules or [], input_name=input_name,
        storage=storage, casting=diffusers_casting(storage, dtype), meta_only=_meta, progress=progress, cancel=cancel,
    )
    return model if _meta else model.to(device).eval()



def load_vae(path, precision: str = "fp32", device="cpu", *, config=None, input_name: str = "vae",
             progress: Progress | None = None, cancel: Callable[[], bool] | None = None, _meta: bool = False):
    """Load an ``AutoencoderKLWan`` (Wan2.1 VAE) from a folder, the original single file or our format."""
    from diffusers import AutoencoderKLWan

    dtype, storage = parse_precision(precision, "precision")
    src = Checkpoint.open(path, "vae", input_name)
    info = src.identify()
    require_kind(info, src.name, "vae", input_name)
    if info.variant != "wan2.1":
        raise VDOTInputError(
            input_name, f"{src.name} is {info.description}; VDOT uses the Wan2.1 VAE (16 latent channels)",
            f"use {EXAMPLE_FILES['vae']}",
        )
    cfg = config_arg(config, input_name) or info.config
    model = materialise(
        lambda: AutoencoderKLWan.from_config(cfg), src, info.key_map, dtype,
        keep_fp32=AutoencoderKLWan._keep_in_fp32_modules or [], input_name=input_name,
        storage=storage, casting=diffusers_casting(storage, dtype), meta_only=_meta, progress=progress, cancel=cancel,
    )
    return model if _meta else model.to(device).eval()



def load_text_encoder(path, precision: str = "bf16", device="cpu", *, config=None, input_name: str = "text_encoder",
                      stream: bool = False, progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
                      _meta: bool = False):
    """Load ``(UMT5EncoderModel, tokenizer)`` from a pipeline root, an HF folder or one file.

    A single file must carry its tokenizer: a ``spiece_model`` tensor (ComfyUI) or, in files
    written by :func:`save_text_encoder` from a tokenizer that has no SentencePiece model, the
    ``vdot_tokenizer_vocab`` metadata entry.

    ``stream=True`` keeps only the embedding, final norm and tokenizer in memory and reads each
    encoder block from the file when it runs (same tensors, same result; host memory is the
    embedding plus one block instead of the whole 11 GB — for encoding a prompt once per run).
    """
    from transformers import UMT5Config, UMT5EncoderModel

    dtype, storage = parse_precision(precision, "precision")
    src = Checkpoint.open(path, "text_encoder", input_name)
    info = src.identify()
    require_kind(info, src.name, "text_encoder", input_name)
    if info.variant != "umt5":
        raise VDOTInputError(
            input_name, f"{src.name} is {info.description}; Wan uses UMT5 (relative attention in every layer)",
            f"use {EXAMPLE_FILES['text_encoder']}",
        )
    tokenizer = None if _meta else checkpoint_tokenizer(src, input_name)
    cfg = UMT5Config.from_dict(config_arg(config, input_name) or info.config)
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

    model = materialise(lambda: UMT5EncoderModel(cfg), src, info.key_map, dtype, keep_fp32=keep, input_name=input_name,
                         storage=storage, casting=casting, meta_only=_meta, stream=block_of,
                        progress=progress, cancel=cancel)
    if _meta:
        return model, None
    if len(tokenizer) > cfg.vocab_size:
        raise VDOTInputError(
            input_name, f"{src.name}: the tokenizer has {len(tokenizer)} tokens but the embedding only {cfg.vocab_size} rows",
            "use the tokenizer that belongs to this text encoder",
        )
    return model.to(device).eval(), tokenizer



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



def materialise(build, src: Checkpoint, key_map: dict[str, str], dtype, keep_fp32, input_name: str, storage=None, casting=None,
                meta_only: bool = False, stream=None, progress: Progress | None = None,
                cancel: Callable[[], bool] | None = None):
    """Build on the meta device, check every key and shape, then read each tensor once into place.

    Tensors are read one at a time (:class:`TensorReader`) and cast to their final dtype before the
    next is read, so host memory never holds more than the final model plus one tensor in its stored
    dtype. With fp8 ``storage``, ``casting(model)`` installs layerwise casting on the empty model
    first; the parameters it turns to fp8 are cast to fp8 as they are read (through the compute
    dtype, exactly as casting a loaded bf16 model would). ``stream(name)`` returning a module prefix
    leaves that tensor on disk: the module reads it each time it runs (:class:`block_swap.StreamFromFile`).
    ``progress(done_bytes, total_bytes)`` (stored bytes read) follows each tensor; ``cancel()`` is asked
    before each one, and a true answer raises :class:`VDOTCancelled` (nothing is kept).
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
    to_read = [n for n in key_map if stream is None or stream(n) is None]
    total_bytes, done_bytes = sum(src.location[key_map[n]][2] - src.location[key_map[n]][1] for n in to_read), 0
    if progress is not None:
        progress(0, total_bytes)
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
            if cancel is not None and cancel():
                raise VDOTCancelled(f"loading {src.name} interrupted by the user")
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
            if progress is not None:
                file, begin, end = src.location[stored]
                done_bytes += end - begin
                progress(done_bytes, total_bytes)
    if tied_alias:
        state[tied_alias] = state["shared.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if tied_alias:
        model.encoder.embed_tokens.weight = model.shared.weight
    if streamed:
        from ..block_swap import StreamFromFile

        model.vdot_stream = StreamFromFile(model, streamed)
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise RuntimeError(f"parameters left uninitialised after loading {src.name}: {still_meta[:4]}")
    return model


def tqdm_load_progress(desc: str, min_bytes: int = LOAD_BAR_MIN_BYTES) -> Progress:
    """A ``progress(done, total)`` showing a tqdm bar (in bytes) for loads of at least ``min_bytes``:
    the CLI's bar. Smaller loads (test models, the embedded toy) take well under a second and show none."""
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            if total < min_bytes:
                return
            from tqdm import tqdm

            bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def meta_shapes(kind: str, config: dict) -> dict[str, tuple]:
    """``{name: shape}`` of the model ``config`` builds, on the meta device (no memory); the text
    encoder's ``encoder.embed_tokens.weight`` is left out (tied to ``shared.weight``)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        if kind == "transformer":
            from diffusers import WanVACETransformer3DModel

            model = WanVACETransformer3DModel.from_config(config)
        elif kind == "vae":
            from diffusers import AutoencoderKLWan

            model = AutoencoderKLWan.from_config(config)
        else:
            from transformers import UMT5Config, UMT5EncoderModel

            model = UMT5EncoderModel(UMT5Config.from_dict(config))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if kind == "text_encoder":
        shapes.pop("encoder.embed_tokens.weight", None)
    return shapes


def diffusers_casting(storage, compute):
    """Layerwise casting installed on the empty model, so fp8 weights are cast as they are read."""
    if storage is None:
        return None
    return lambda model: model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)


def parse_precision(precision: str, input_name: str):
    if precision not in PRECISIONS:
        raise VDOTInputError(input_name, f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]



def config_arg(config, input_name: str) -> dict | None:
    if config is None or isinstance(config, dict):
        return dict(config) if config else None
    p = Path(config)
    if not p.is_file():
        raise VDOTInputError(input_name, f"config file {p} does not exist", "pass a config.json path or a dict")
    return read_json_file(p, input_name)

