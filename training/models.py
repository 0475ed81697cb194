"""The networks of a VDOT run: generator, frozen real score (teacher), fake score + discriminator.

Stage 1 distils Wan T2V (``WanTransformer3DModel``); stage 2 the VACE model
(``WanVACETransformer3DModel``), its generator starting from the stage-1 Wan blocks (AccWanInit,
:func:`training.init.init_vace_from_t2v`). Generator and fake score both start as copies of the teacher.
All three run through inference's velocity step (:func:`vdot_nodes.core.velocity.transformer_velocity`:
text + VACE context, for T2V the same call without the context). Data is encoded with inference's text
and VAE steps (:class:`Encoders`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.sampling import VelocityFn
from vdot_nodes.core.text_encoding import PromptEncoder
from vdot_nodes.core.vace_context import EncodedVCU, check_vae_fits_transformer, encode_vcu
from vdot_nodes.core.vae_codec import VAECodec
from vdot_nodes.core.velocity import transformer_velocity

from .config import TrainConfig
from .discriminator import RegisterTokenDiscriminator, VDOTGanHead

__all__ = ["Encoders", "Networks", "build_networks", "is_vace", "velocity_fn", "set_trainable"]

_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def is_vace(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "vace_layers", None) is not None


def velocity_fn(model: nn.Module, text: torch.Tensor, control: torch.Tensor | None, device) -> VelocityFn:
    """``v(x_t, t)`` of ``model`` with fixed text (``[B, L, D]``) and VACE context (``[B, 96, f, h, w]`` or None)."""
    if is_vace(model) and control is None:
        raise VDOTInputError("control", "a VACE model needs the VACE context", "encode the VCU first")
    return transformer_velocity(model, text, control if is_vace(model) else None, device)


def set_trainable(model: nn.Module, which: str) -> list[str]:
    """``all``: every parameter; ``vace``: only the VACE context branch. Returns the trainable names."""
    names = []
    for name, p in model.named_parameters():
        train = which == "all" or name.startswith(("vace_blocks.", "vace_patch_embedding."))
        p.requires_grad_(train)
        if train:
            names.append(name)
    if not names:
        raise VDOTInputError("models.trainable", f"{which!r} selects no parameter of {type(model).__name__}", "use trainable: all")
    return names


@dataclass
class Encoders:
    """What training encodes its data with: inference's text step and VAE step (the VACE context is
    built from the VAE step), so a training sample is conditioned exactly as a generation is."""

    text: PromptEncoder
    codec: VAECodec

    def encode_prompt(self, prompts) -> torch.Tensor:
        return self.text.encode(prompts)

    def encode_vcu(self, vcu) -> EncodedVCU:
        return encode_vcu(self.codec, vcu)

    def encode_latents(self, frames: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(frames)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return self.codec.latent_shape(num_frames, height, width)

    vae = property(lambda self: self.codec.vae)
    text_encoder = property(lambda self: self.text.text_encoder)
    tokenizer = property(lambda self: self.text.tokenizer)


@dataclass
class Networks:
    generator: nn.Module
    teacher: nn.Module
    fake_score: nn.Module
    discriminator: RegisterTokenDiscriminator | VDOTGanHead | None
    encoders: Encoders  # text + VAE steps: encode_prompt / encode_vcu / encode_latents
    init_report: dict | None = None


def _tiny_teacher(cfg: TrainConfig) -> nn.Module:
    from vdot_nodes.core.tiny import TINY_TRANSFORMER_CONFIG, build_tiny_transformer

    overrides = {"num_layers": cfg.models.tiny_layers, **(cfg.models.tiny_overrides or {})}
    if cfg.stage == 2:
        return build_tiny_transformer(seed=cfg.models.tiny_seed, **overrides)
    from diffusers import WanTransformer3DModel

    from .init import t2v_config_from_vace

    from vdot_nodes.core.seeding import seeded

    with seeded(cfg.models.tiny_seed):
        return WanTransformer3DModel(**{**t2v_config_from_vace({**TINY_TRANSFORMER_CONFIG, **overrides})}).eval()


def _load_t2v(path: str, config: str | None) -> nn.Module:
    """A Wan T2V transformer: a diffusers folder, or a single file plus a config (stage 1's teacher)."""
    import os

    from diffusers import WanTransformer3DModel

    from vdot_nodes.core.models import CONFIG_DIR, read_json_file

    from .init import load_t2v_state_dict, t2v_config_from_vace

    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        read_json_file(os.path.join(path, "config.json"), "models.teacher")  # a damaged file: one line, not diffusers' error
        return WanTransformer3DModel.from_pretrained(path, torch_dtype=torch.float32, local_files_only=True)
    if config is None:
        raise VDOTInputError("models.teacher_config", f"{path} is a single file and no config says its size",
                             "set teacher_config: wan2.1_vace_14b_transformer.json (or _1.3b_)")
    cfg_path = config if os.path.isfile(config) else os.path.join(CONFIG_DIR, config)
    if not os.path.isfile(cfg_path):
        raise VDOTInputError("models.teacher_config", f"{config} not found", "use a shipped config name or a config.json path")
    arch = t2v_config_from_vace(read_json_file(cfg_path, "models.teacher_config"))
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(arch)
    model.load_state_dict(load_t2v_state_dict(path, input_name="models.teacher"), strict=True, assign=True)
    return model.float().eval()


def _load_teacher(cfg: TrainConfig) -> nn.Module:
    source = cfg.resolve(cfg.models.teacher)
    if source == "tiny":
        return _tiny_teacher(cfg)
    if cfg.stage == 1:
        return _load_t2v(source, cfg.resolve(cfg.models.teacher_config) if cfg.models.teacher_config else None)
    from vdot_nodes.core.models import load_transformer

    return load_transformer(source, precision="fp32", input_name="models.teacher")


def _load_encoders(cfg: TrainConfig):
    from vdot_nodes.core import models as M
    from vdot_nodes.core.tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_vae

    vae_src, text_src = cfg.resolve(cfg.models.vae), cfg.resolve(cfg.models.text_encoder)
    vae = build_tiny_vae(seed=cfg.models.tiny_seed) if vae_src == "tiny" else M.load_vae(vae_src, input_name="models.vae")
    if text_src == "tiny":
        encoder, tokenizer = build_tiny_text_encoder(seed=cfg.models.tiny_seed), build_tiny_tokenizer()
    else:
        encoder, tokenizer = M.load_text_encoder(text_src, input_name="models.text_encoder")
    for m in (vae, encoder):
        m.requires_grad_(False).eval()
    return vae, encoder, tokenizer


def build_networks(cfg: TrainConfig, device: torch.device) -> Networks:
    """Teacher (frozen, ``teacher_precision``), generator and fake score (trainable copies), discriminator.

    Unsharded, on the CPU; the trainer moves / shards them. Stage 2 with ``generator_init`` runs
    AccWanInit on the generator.
    """
    teacher = _load_teacher(cfg).float()
    if is_vace(teacher) != (cfg.stage == 2):
        raise VDOTInputError("models.teacher", f"stage {cfg.stage} needs a {'VACE' if cfg.stage == 2 else 'Wan T2V'} teacher, "
                             f"got {type(teacher).__name__}", "check stage and models.teacher")
    generator = copy.deepcopy(teacher).train()
    fake_score = copy.deepcopy(teacher).train()
    report = None
    if cfg.models.generator_init:
        if cfg.stage != 2:
            raise VDOTInputError("models.generator_init", "AccWanInit is a stage-2 step", "remove generator_init in stage 1")
        from .init import init_vace_from_t2v

        report = init_vace_from_t2v(generator, cfg.resolve(cfg.models.generator_init), input_name="models.generator_init")
    if cfg.models.generator_init_lora:
        if cfg.stage != 2:
            raise VDOTInputError("models.generator_init_lora", "AccWanInit is a stage-2 step", "remove it in stage 1")
        from .init import init_vace_from_t2v_lora
        from vdot_nodes.core.lora import parse_lora_arg

        path, strength = parse_lora_arg(cfg.models.generator_init_lora, "models.generator_init_lora")
        lora_report = init_vace_from_t2v_lora(generator, cfg.resolve(path), strength, input_name="models.generator_init_lora")
        report = {**(report or {}), "lora": lora_report}
    teacher = teacher.to(_DTYPES[cfg.models.teacher_precision]).requires_grad_(False).eval()
    set_trainable(generator, cfg.models.trainable)
    fake_score.requires_grad_(True)
    discriminator = None
    if cfg.uses_gan:
        if cfg.gan.head == "vdot":
            g = cfg.gan
            discriminator = VDOTGanHead.from_transformer(fake_score, tap_blocks=cfg.loss.disc_taps, small_dim=g.head_dim,
                                                         ffn_dim=g.head_ffn_dim, num_heads=g.head_heads).train()
        else:
            discriminator = RegisterTokenDiscriminator.from_transformer(
                fake_score, tap_blocks=cfg.loss.disc_taps, attn_dim=cfg.loss.disc_attn_dim
            ).train()
    if cfg.optim.state_dtype == "bf16":  # AdamW states follow the parameter dtype (the critic's optimiser
        for net in (generator, fake_score, discriminator):  # also steps the discriminator head)
            if net is not None:
                net.to(torch.bfloat16)
    vae, encoder, tokenizer = _load_encoders(cfg)
    offload = cfg.runtime.offload_encoders and device.type != "cpu"
    codec = VAECodec(vae, device=device, offload=offload)
    check_vae_fits_transformer(teacher.config, codec)
    encoders = Encoders(PromptEncoder(encoder, tokenizer, device=device, offload=offload), codec)
    return Networks(generator, teacher, fake_score, discriminator, encoders, report)
