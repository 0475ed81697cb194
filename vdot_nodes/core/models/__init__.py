"""Load and save the three Wan2.1-VACE components offline, from the files users actually have.

The package, one job per module:

* ``files``      — reading: safetensors headers and tensors by plain positioned reads (no mapping, a
  file larger than RAM loads), pickles only through torch's weights-only unpickler;
* ``checkpoint`` — :func:`identify`: header in, typed :class:`CheckpointInfo` out (component, layout,
  variant, size, config, key map), pure; :class:`Checkpoint` is the file or folder on disk;
* ``convert``    — key names, one module per component and stored layout, in one table
  (``convert.CONVERSIONS``): Wan original / ComfyUI, diffusers, HF UMT5, Wan T5 (the release);
* ``configs``    — the shipped configs and the architecture inferred from shapes;
* ``tokenizer``  — the UMT5 tokenizer rebuilt offline from the bytes that travel with the weights;
* ``load`` / ``save`` — the loaders (checked meta build, then tensor by tensor, with progress and cancel)
  and VDOT's own single-file format.

Formats read (safetensors only; pickles are refused, never opened — ``vdot convert`` turns the
official release's pickles into safetensors):

* **Transformer** (``load_transformer`` -> diffusers ``WanVACETransformer3DModel``): a diffusers model
  folder (sharded or not) or a pipeline root with ``transformer/``; one file in the original Wan/VACE
  layout, with or without ComfyUI's ``model.diffusion_model.`` prefix (``wan2.1_vace_14B_fp16.safetensors``),
  renamed by diffusers' own ``convert_wan_transformer_to_diffusers``, its architecture from the shipped
  configs (``configs/wan2.1_vace_{1.3b,14b}_transformer.json``) picked by tensor shapes, never from the
  hub; one file with diffusers names; our own format (``vdot_format = "diffusers-wan-vace"``).
* **VAE** (``load_vae`` -> ``AutoencoderKLWan``): diffusers folder / pipeline root with ``vae/``,
  ``wan_2.1_vae.safetensors`` (original layout; base width and latent channels from shapes, the rest
  from ``configs/wan2.1_vae.json``), or ``save_vae``'s format (``vdot_format = "diffusers-wan-vae"``).
* **Text encoder** (``load_text_encoder`` -> ``(UMT5EncoderModel, tokenizer)``): pipeline root
  (``text_encoder/`` + ``tokenizer/``), an HF folder, or one file with HF (or Wan T5) key names plus a
  ``spiece_model`` uint8 tensor holding the SentencePiece model (ComfyUI's ``umt5_xxl_fp16.safetensors``).
  Sizes other than UMT5-XXL (``configs/umt5_xxl_encoder.json``) are read from shapes, except
  ``relative_attention_max_distance`` which no tensor records (128, as UMT5). ``save_text_encoder``
  writes ``vdot_format = "hf-umt5-encoder"``.

``describe_checkpoint`` tells what a file is from its header alone; ``empty_model`` builds the model
a load would build on the meta device, for memory planning.
"""

from .checkpoint import (COMFY_DIRS, EXAMPLE_FILES, FORMAT_TEXT_ENCODER, FORMAT_TRANSFORMER, FORMAT_VAE, KIND_WORDS,
                         Checkpoint, CheckpointInfo, describe_checkpoint, identify, require_kind)
from .configs import CONFIG_DIR, TEXT_ENCODER_CONFIG, TRANSFORMER_CONFIGS, VAE_CONFIG, load_config
from .convert.wan_transformer import COMFY_PREFIX
from .files import (PICKLE_SUFFIXES, READ_CHUNK, SAFETENSORS_DTYPES, CheckpointFileError, TensorReader,
                    read_json_file, read_pickle_weights, read_safetensors_header, read_tensor)
from .load import (LOAD_BAR_MIN_BYTES, PRECISIONS, empty_model, load_text_encoder, load_transformer, load_vae,
                   meta_shapes, module_bytes, tqdm_load_progress)
from .save import save_text_encoder, save_transformer, save_vae
from .tokenizer import tokenizer_from_spiece

__all__ = [
    "COMFY_DIRS", "COMFY_PREFIX", "CONFIG_DIR", "EXAMPLE_FILES", "FORMAT_TEXT_ENCODER", "FORMAT_TRANSFORMER",
    "FORMAT_VAE", "KIND_WORDS", "LOAD_BAR_MIN_BYTES", "PICKLE_SUFFIXES", "PRECISIONS", "READ_CHUNK",
    "SAFETENSORS_DTYPES", "TEXT_ENCODER_CONFIG", "TRANSFORMER_CONFIGS", "VAE_CONFIG", "Checkpoint", "CheckpointFileError",
    "CheckpointInfo", "TensorReader", "describe_checkpoint", "empty_model", "identify", "load_config",
    "load_text_encoder", "load_transformer", "load_vae", "meta_shapes", "module_bytes", "read_json_file",
    "read_pickle_weights", "read_safetensors_header", "read_tensor", "require_kind", "save_text_encoder",
    "save_transformer", "save_vae", "tokenizer_from_spiece", "tqdm_load_progress",
]
