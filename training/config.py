"""The training configuration: one dataclass per section, every key documented, loaded from YAML.

A config file mirrors :class:`TrainConfig` section by section (see ``training/configs/*.yaml``). Unknown
keys are an error naming the key and its section (a typo must never be silently ignored); missing keys
take the defaults below, which are VDOT / Self-Forcing's values for the real runs.

CFG convention (``guidance``): Wan's, ``v = v_neg + w·(v_pos − v_neg)`` — the same as
:func:`vdot_nodes.core.sampling.cfg_velocity`; ``w = 1`` means no guidance (one model call).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vdot_nodes.core.errors import VDOTInputError

__all__ = ["TrainConfig", "load_config", "config_from_dict", "config_to_dict"]


@dataclass
class ModelsConfig:
    """Where the networks come from. A path, or ``"tiny"`` (random tiny Wan from ``vdot_nodes.core.tiny``, tests only)."""

    teacher: str = "tiny"
    """Real score and the initial weights of generator and fake score. Stage 1: a Wan2.1 T2V transformer
    (diffusers folder or single file); stage 2: a Wan2.1-VACE transformer (anything ``load_transformer`` reads)."""
    teacher_config: str | None = None
    """Stage 1 single files only: the Wan-VACE config whose Wan part describes the T2V teacher
    (a shipped name such as ``wan2.1_vace_14b_transformer.json`` or a path)."""
    generator_init: str | None = None
    """Stage 2: the stage-1 generator export; its Wan blocks replace the teacher's in the generator (AccWanInit)."""
    generator_init_lora: str | None = None
    """Stage 2: AccWanInit from a step-distilled Wan2.1 T2V LoRA instead of (or after) ``generator_init``:
    ``FILE`` or ``FILE:STRENGTH`` (default 1), any format ``vdot_nodes.core.lora`` reads (ComfyUI/Kijai
    ``lora_down``/``lora_up``/``alpha``/``diff``/``diff_b``, musubi/kohya, diffusers). Merged into the generator's
    Wan part only; the VACE blocks keep the teacher's weights."""
    vae: str = "tiny"
    """Wan2.1 VAE (encodes VCU conditions and the GAN's real videos)."""
    text_encoder: str = "tiny"
    """UMT5 encoder file/folder carrying its tokenizer."""
    teacher_precision: str = "bf16"
    """Storage dtype of the frozen real score: bf16 | fp32 (trainable models always keep fp32 masters unless
    ``optim.state_dtype`` is bf16)."""
    trainable: str = "all"
    """Generator parameters trained: ``all`` or ``vace`` (stage 2: only ``vace_blocks`` / ``vace_patch_embedding``)."""
    tiny_seed: int = 0
    """Seed of the random ``tiny`` models."""
    tiny_layers: int = 2
    """Blocks of the ``tiny`` transformer."""
    tiny_overrides: dict | None = None
    """Other ``TINY_TRANSFORMER_CONFIG`` entries of the ``tiny`` transformer (benchmarks: e.g. a wider model)."""
    reward_model: str | None = None
    """DOLLAR latent reward model: a ``.safetensors`` file written by ``vdot train-reward`` (or
    ``training.reward.save_reward_model``), frozen during training. With ``loss.reward_weight`` > 0 the generator's
    DM updates maximise its reward of x̂0; with weight 0 the reward is only logged (``reward`` in metrics.jsonl)."""


@dataclass
class GuidanceConfig:
    """The real score's classifier-free guidance (Wan convention, see module docstring)."""

    cfg_scale: float = 5.0
    """w in ``v = v_neg + w·(v_pos − v_neg)``; 1 = off. Wan2.1 T2V samples with 5."""
    negative_prompt: str = ""
    """Negative prompt of the real score (Wan's default Chinese negative prompt is a good choice)."""
    min_t: float = 0.0
    """Guide the real score only where the sample's noise level σ = t/1000 is at least this (a guidance interval:
    below it the real score is the conditional teacher alone, one call); 0 = at every noise level. The samplers'
    ``cfg_end`` names the same bound as a percent p of the denoising, σ = shift(1 − p)."""
    max_t: float = 1.0
    """... and at most this (1 = up to pure noise; the samplers' ``cfg_start``)."""


@dataclass
class SamplerConfig:
    """The generator's few-step sampler (the ``renoise`` preset of ``vdot_nodes.core.sampling`` at these timesteps)."""

    timesteps: list[int] = field(default_factory=lambda: [1000, 750, 500, 250])
    """Few-step timesteps (before the shift)."""
    shift: float = 5.0
    """Timestep shift of the sampler."""
    last_step_only: bool = False
    """Always exit (take the gradient) at the last step instead of a random step shared by all ranks."""


@dataclass
class LossConfig:
    """Objectives. DM = DMD or OTD (``training.losses``); ADV = relativistic GAN on fake-score features."""

    dm: str = "otd"
    """Distribution-matching objective: ``dmd``, ``otd`` or ``dmd+otd`` (both, each with its own σ, noise and score
    forwards, weighted by ``dm_mix``; the released VDOT recipe)."""
    dm_mix: list[float] = field(default_factory=lambda: [0.2, 0.8])
    """``dm: dmd+otd`` only: weights of L_DMD and L_OT (VDOT: 0.2·L_DMD + 0.8·L_OT)."""
    dmd_normalizer: str = "meanabs"
    """DMD gradient: ``meanabs`` — (f − r)/mean|x̂0 − r| per sample (DMD paper, Self-Forcing); ``sigma`` — (f − r)·σ,
    no mean-abs term (the released VDOT code)."""
    otd_variant: str = "paper"
    """``paper`` (direction f − r̄, eqs. 7-8) or ``debiased`` (f̄ − r̄)."""
    otd_cloud: str = "samples"
    """``samples`` (batch rows gathered across ranks), ``frame_tokens`` (latent frames of each sample) or
    ``pooled_positions`` (the released VDOT OT, ``training.losses.otd_pooled``: per latent frame, the ``otd_pool``×
    ``otd_pool`` average-pooled positions are points of dimension C; squared-Euclidean cost, uniform marginals,
    ``otd_iters`` log-domain sweeps, gradient per ``otd_gradient``, per-frame unit norm, loss
    ½·Σ(x̂0 − sg(x̂0 − ``otd_step``·ĝ))²; ``otd_variant`` does not apply)."""
    otd_iters: int = 60
    """``pooled_positions``: Sinkhorn sweeps (VDOT: 60)."""
    otd_pool: int = 2
    """``pooled_positions``: average-pooling kernel and stride over latent positions (VDOT: 2)."""
    otd_gradient: str = "autograd"
    """``pooled_positions``: ``autograd`` (through the unrolled sweeps, as released) or ``envelope`` (the plan as a
    constant: Σ_j P_ij·2(x_i − y_j))."""
    otd_step: float = 0.1
    """``pooled_positions``: step along the unit-norm per-frame OT gradient (the loss's gradient on x̂0)."""
    otd_frame_chunk: int = 0
    """``pooled_positions``: frames solved at once (bounds memory: ~15 N×M fp32 matrices per frame with autograd);
    0 = automatic (chunks of ≤ 2^23 plan entries: 3 frames at 480p, all frames of small latents)."""
    otd_eps: float = 0.1
    """Entropic regularisation ε, in cost units ‖f − r‖²/(2d)."""
    dm_weight: float = 1.0
    """Weight of the DM loss in the generator's DM updates."""
    gan_weight: float = 0.01
    """Weight of the generator's GAN loss in ADV updates (0 disables the GAN and the discriminator)."""
    gan_d_weight: float = 0.01
    """Weight of the discriminator loss added to the fake score's denoising loss."""
    r1_weight: float = 0.0
    """Weight of the approximate R1 penalty mean((D(x_real) − D(x_real + r1_sigma·ε))²) added to the critic loss
    (a finite difference instead of a double backward through the fake score); 0 = off. Self-Forcing-Plus /
    Seaweed-APT2 use weights of order 100-1000 with r1_sigma 0.01."""
    r2_weight: float = 0.0
    """The same penalty at generated inputs (approximate R2); 0 = off."""
    r1_sigma: float = 0.01
    """Perturbation scale of the approximate R1 / R2 penalties."""
    min_t: float = 0.02
    """Lowest timestep fraction drawn for the score evaluations."""
    max_t: float = 0.98
    """Highest timestep fraction drawn for the score evaluations."""
    timestep_shift: float = 5.0
    """Shift applied to the drawn timestep (σ = s·u / (1 + (s−1)·u))."""
    timestep_draw: str = "continuous"
    """``continuous`` — u ~ U[min_t, max_t); ``integer`` — t ~ randint[int(1000·min_t), int(1000·max_t)), u = t/1000
    (the released code)."""
    timestep_clamp: bool = False
    """Clamp the shifted σ to [min_t, max_t] (the released code clamps DMD, OT, critic and GAN timesteps)."""
    critic_weighting: str = "none"
    """Fake-score denoising loss weighting: ``none`` (v-space MSE) or ``x0``."""
    disc_attn_dim: int | None = None
    """Width of the discriminator's register tokens (None = the transformer width)."""
    disc_taps: list[int] | None = None
    """Fake-score blocks the discriminator reads (None = last block and every 8th before it)."""
    consistency_weight: float = 0.0
    """DOLLAR consistency distillation, added to the generator's DM updates; 0 = off. The student's x̂0 at its exit
    step k is pulled towards sg(x̂_{k+1} − σ_{k+1}·v_student(x̂_{k+1})), x̂_{k+1} = one Euler step of the CFG teacher
    (``guidance``) from σ_k to the next student σ (0 after the last step: the teacher's x0 itself)."""
    consistency_huber_c: float | None = None
    """Distance of the consistency loss: None = squared error, c > 0 = pseudo-Huber √((a − b)² + c²) − c."""
    reward_weight: float = 0.0
    """Weight of the reward term −mean(R(x̂0)) in the generator's DM updates (R = ``models.reward_model``, frozen);
    0 = off."""


@dataclass
class GanConfig:
    """The discriminator head and the GAN's timesteps (its weights are ``loss.gan_weight`` / ``loss.gan_d_weight``)."""

    head: str = "register"
    """``register`` — :class:`~training.discriminator.RegisterTokenDiscriminator` (attention width
    ``loss.disc_attn_dim``, linear classifier); ``vdot`` — :class:`~training.discriminator.VDOTGanHead`, the released
    head (RMS-normed register tokens of width ``head_dim``, per tap a cross-attention block with MLP projections and
    an FFN of ``head_ffn_dim``, the tapped outputs concatenated with 10× the time embedding, LN → Linear → SiLU →
    Linear)."""
    head_dim: int = 512
    """``vdot`` head: width of the register tokens (VDOT: 512)."""
    head_ffn_dim: int = 13824
    """``vdot`` head: FFN width of each attention block (VDOT: 13824)."""
    head_heads: int = 8
    """``vdot`` head: attention heads (VDOT: 8)."""
    min_t: float | None = None
    """Lowest timestep fraction of the GAN draws (generator and discriminator); None = ``loss.min_t``."""
    max_t: float | None = None
    """Highest timestep fraction of the GAN draws; None = ``loss.max_t``."""
    timestep_shift: float | None = None
    """Shift of the GAN draws; None = ``loss.timestep_shift`` (VDOT: 12, with min_t 0, max_t 1 and the clamp of
    ``loss.timestep_clamp`` to loss.min_t/max_t)."""
    generator_real_noise: str = "shared"
    """Generator GAN step: the real clip is noised with the ``shared`` ε of the fake one, or an ``independent`` ε (as
    released; the discriminator step always shares ε)."""


@dataclass
class ScheduleConfig:
    """Which network is updated when."""

    ttur: int = 5
    """Two-time-scale update rule: the critic every iteration, the generator every ``ttur``-th (step % ttur == 0)."""
    generator_objectives: list[str] = field(default_factory=lambda: ["dm", "adv"])
    """Cycled over generator updates: ``dm``, ``adv`` or ``dm+adv``. [dm, adv] alternates them."""
    critic_objectives: list[str] = field(default_factory=lambda: ["denoise+disc"])
    """Cycled over iterations (``step % len``): ``denoise+disc`` (one forward, both losses), ``denoise`` or ``disc``.
    The released code: [denoise, disc] — denoising on even, discriminator on odd iterations."""
    shared_exit_step: bool = False
    """One rollout exit step per iteration, shared by the generator and critic passes and all accumulation
    micro-batches (the released code); False = a fresh draw per rollout."""


@dataclass
class OptimConfig:
    """AdamW for both the generator and the critic (fake score + discriminator)."""

    lr: float = 2e-6
    """Generator learning rate."""
    critic_lr: float = 4e-7
    """Fake score + discriminator learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    """AdamW betas (β1 = 0 as in DMD2 / Self-Forcing)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_accumulation: int = 1
    """Micro-batches per update (each a new data batch, loss / n); the critic reuses the generator's micro-batches."""
    grad_clip: float = 10.0
    """Max global grad norm (0 = no clipping)."""
    ema_decay: float = 0.99
    """Generator EMA decay (the EMA is what is exported)."""
    state_dtype: str = "fp32"
    """fp32 | bf16. AdamW keeps its moments in the parameters' dtype, so bf16 stores the trainable master
    weights and both moments in bf16 (halves optimiser memory, coarser updates)."""


@dataclass
class RolloutConfig:
    """Which few-step schedule the generator is trained on, and which the checkpoint will be sampled with."""

    preset: str | None = None
    """A row of ``vdot_nodes.core.sampling.SAMPLER_PRESETS``. None — the ``renoise`` preset at ``sampler.timesteps`` /
    ``sampler.shift``; ``rollout`` — a consistent re-noising rollout at the t and σ of the ``vdot`` inference preset
    (UniPC shift 16: t 999/979/941/841, σ .99994/.97951/.94107/.84193);
    ``rollout_official`` — the released training rollout: told t = 1000/960/888.9/727.3, x0 formed with σ = t/1000,
    re-noised to σ .97983/.94173/.84122 (timestep and input noise level disagree at steps 1-3)."""
    inference_preset: str | None = None
    """The sampler preset the checkpoint is meant for (``vdot``: Wan's UniPC, shift 16); stored in the export's
    metadata as ``vdot_inference_preset``."""


@dataclass
class RuntimeConfig:
    """Devices, precision, sharding."""

    device: str = "auto"
    """auto (cuda if available) | cpu | cuda."""
    mixed_precision: str = "bf16"
    """Compute dtype: bf16 (FSDP2 MixedPrecisionPolicy, or autocast in one process) | fp32."""
    gradient_checkpointing: bool = True
    """Recompute each block in backward (generator and fake score)."""
    cpu_offload: bool = False
    """FSDP2 CPUOffloadPolicy: sharded parameters, gradients and optimiser states live on the CPU."""
    offload_encoders: bool = True
    """Keep the VAE / text encoder on the CPU except while they run."""
    timestep_bf16_quantize: bool = False
    """Round every timestep given to a network to bf16 (the released training code embeds t through a bf16 cast:
    888.9 → 888, 727.3 → 728, multiples of 4 above 512); inference uses float64, so off by default."""


@dataclass
class DataConfig:
    """Training data: a caption list (stage 1) or a manifest JSONL (stage 1 captions + videos, stage 2 VCUs)."""

    captions: str | None = None
    """Text file, one caption per line (stage 1 only; no real videos, so ADV is unavailable)."""
    manifest: str | None = None
    """JSONL manifest (``training/data/manifest.py``)."""
    tasks: list[str] | None = None
    """Stage 2: keep only these tasks (None = all)."""
    task_weights: dict[str, float] | None = None
    """Stage 2: how often each task's rows are drawn, relative to a task not named (weight 1): ``{t2v: 4}`` draws
    each t2v row 4× as often as any other row. An epoch then draws as many rows as the data has, with
    replacement, in these proportions (seeded and resumable like the shuffle). None = each row once per epoch."""
    num_frames: int = 81
    """Frames per clip (4k+1)."""
    height: int = 480
    """Clip height (multiple of 16)."""
    width: int = 832
    """Clip width (multiple of 16)."""
    batch_size: int = 1
    """Samples per rank per iteration (samples of one batch must have the same latent shape)."""
    num_workers: int = 0
    """DataLoader workers."""
    shuffle: bool = True
    """Shuffle each epoch (seeded, resumable)."""
    reference_context: str = "noise_frames"
    """Reference-image tasks: ``noise_frames`` — one noise frame per reference, stripped after sampling (inference);
    ``truncate`` — as the released training: no extra noise frames, the VACE context cut to the video's frame count
    (references then align with the first output frames, the last control frames are dropped)."""
    gt_dir: str | None = None
    """CSV manifests (the released format): folder of the ground-truth clips, found by the source video's file name
    (``reference`` rows: the first reference image's name up to its first ``_`` or ``.``, plus ``.mp4``)."""
    encode_cache: str | None = None
    """Stage 2: folder keeping each row's VAE encodings (VACE context, real latents) on disk, so every row is
    encoded once across visits and runs. A cached row's open VCU choices are drawn once (seed + line) instead
    of on every visit. None = encode every visit."""
    max_skipped_rows: int = 10
    """Manifest rows whose files cannot be read (a corrupt or truncated video, a short clip) are skipped and
    logged, in the same place on every resume; the run stops with an error naming the rows once more than this
    many were skipped. 0 = stop at the first."""


@dataclass
class LoggingConfig:
    """Metrics, checkpoints, exports."""

    log_every: int = 1
    """Write a metrics line every N iterations."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every N iterations (and at the end)."""
    keep_last: int = 3
    """Checkpoints kept."""
    export_every: int = 0
    """Also export the EMA generator every N iterations (0 = only at the end)."""
    export_precision: str = "bf16"
    """Precision of exported generators: fp32 | bf16 | fp16."""
    export_layout: str = "comfy"
    """Stage-2 export: ``comfy`` (one .safetensors, original Wan key names and the architecture in its
    metadata — what ComfyUI's loaders read) or ``diffusers`` (a folder with config.json)."""


@dataclass
class TrainConfig:
    """A VDOT distillation run."""

    stage: int = 1
    """1 = distil Wan T2V from captions; 2 = VACE multi-task (generator from stage 1 via AccWanInit)."""
    seed: int = 0
    """Seed of every random draw (noise, timesteps, exit steps, data order)."""
    out: str = "runs/vdot"
    """Run folder: checkpoints/, exports/, metrics.jsonl, config.yaml."""
    max_steps: int = 1000
    """Iterations (one critic update each)."""
    models: ModelsConfig = field(default_factory=ModelsConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    recipe: str | None = None
    """A named set of defaults (``training.recipes``) under this file's own keys: ``vdot`` = the released recipe."""
    config_dir: str = ""
    """Folder of the YAML file (set by :func:`load_config`; relative paths start there)."""

    def resolve(self, path: str | None) -> str | None:
        """A path from the config, relative to the config file's folder; ``tiny`` and None pass through."""
        if path is None or path == "tiny" or os.path.isabs(os.path.expanduser(path)):
            return None if path is None else os.path.expanduser(path)
        return str(Path(self.config_dir or ".") / path)

    def validate(self) -> "TrainConfig":
        def bad(key: str, problem: str, fix: str):
            raise VDOTInputError(key, problem, fix)

        if self.stage not in (1, 2):
            bad("stage", f"must be 1 or 2, got {self.stage}", "stage: 1 (T2V) or stage: 2 (VACE)")
        choices = {
            "loss.dm": (self.loss.dm, ("dmd", "otd", "dmd+otd")),
            "loss.dmd_normalizer": (self.loss.dmd_normalizer, ("meanabs", "sigma")),
            "loss.otd_gradient": (self.loss.otd_gradient, ("autograd", "envelope")),
            "loss.timestep_draw": (self.loss.timestep_draw, ("continuous", "integer")),
            "gan.head": (self.gan.head, ("register", "vdot")),
            "gan.generator_real_noise": (self.gan.generator_real_noise, ("shared", "independent")),
            "rollout.preset": (self.rollout.preset, (None, "rollout", "rollout_official")),
            "data.reference_context": (self.data.reference_context, ("noise_frames", "truncate")),
            "loss.otd_variant": (self.loss.otd_variant, ("paper", "debiased")),
            "loss.otd_cloud": (self.loss.otd_cloud, ("samples", "frame_tokens", "pooled_positions")),
            "loss.critic_weighting": (self.loss.critic_weighting, ("none", "x0")),
            "models.trainable": (self.models.trainable, ("all", "vace")),
            "models.teacher_precision": (self.models.teacher_precision, ("bf16", "fp32")),
            "optim.state_dtype": (self.optim.state_dtype, ("fp32", "bf16")),
            "runtime.mixed_precision": (self.runtime.mixed_precision, ("bf16", "fp32")),
            "runtime.device": (self.runtime.device, ("auto", "cpu", "cuda")),
            "logging.export_precision": (self.logging.export_precision, ("fp32", "bf16", "fp16")),
            "logging.export_layout": (self.logging.export_layout, ("comfy", "diffusers")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                bad(key, f"{value!r} is not one of {allowed}", f"set {key} to one of {', '.join(allowed)}")
        if len(self.loss.dm_mix) != 2 or any(w < 0 for w in self.loss.dm_mix):
            bad("loss.dm_mix", f"{self.loss.dm_mix} must be two weights >= 0 (DMD, OTD)", "use [0.2, 0.8]")
        for key, low in (("otd_iters", 1), ("otd_pool", 1), ("otd_frame_chunk", 0)):
            if getattr(self.loss, key) < low:
                bad(f"loss.{key}", f"must be >= {low}, got {getattr(self.loss, key)}", "use the VDOT value (60, 2, 4)")
        if self.optim.grad_accumulation < 1:
            bad("optim.grad_accumulation", f"must be >= 1, got {self.optim.grad_accumulation}", "use 1 (off) or 3 (VDOT)")
        crit = self.schedule.critic_objectives
        if not crit or any(o not in ("denoise", "disc", "denoise+disc") for o in crit):
            bad("schedule.critic_objectives", f"{crit} must be a non-empty list of denoise, disc, denoise+disc",
                "e.g. [denoise+disc], or [denoise, disc] (VDOT)")
        if any("disc" in o for o in crit) and not self.uses_gan and crit != ["denoise+disc"]:
            bad("schedule.critic_objectives", "disc iterations need the GAN, and no generator objective uses adv",
                "use [denoise+disc] or add adv to schedule.generator_objectives")
        if self.uses_gan and not any("disc" in o for o in crit):
            bad("schedule.critic_objectives", "the generator has ADV updates but the discriminator is never trained",
                "include disc or denoise+disc")
        for key in ("min_t", "max_t"):
            v = getattr(self.gan, key)
            if v is not None and not 0 <= v <= 1:
                bad(f"gan.{key}", f"must be in [0, 1], got {v}", "use 0 and 1 (VDOT) or null")
        for key in ("ttur",):
            if getattr(self.schedule, key) < 1:
                bad(f"schedule.{key}", "must be >= 1", "use 5 (VDOT) or 1 (update the generator every step)")
        objs = self.schedule.generator_objectives
        if not objs or any(o not in ("dm", "adv", "dm+adv") for o in objs):
            bad("schedule.generator_objectives", f"{objs} must be a non-empty list of dm, adv, dm+adv", "e.g. [dm, adv]")
        if self.uses_gan and self.loss.gan_weight <= 0:
            bad("loss.gan_weight", "ADV generator updates are scheduled but gan_weight is 0",
                "set gan_weight > 0, or use generator_objectives: [dm]")
        if self.models.trainable == "vace" and self.stage != 2:
            bad("models.trainable", "'vace' needs the VACE model of stage 2", "use trainable: all in stage 1")
        if (self.data.captions is None) == (self.data.manifest is None):
            bad("data", "give exactly one of data.captions and data.manifest", "set data.manifest: train.jsonl (or captions: captions.txt)")
        if self.stage == 2 and self.data.manifest is None:
            bad("data.manifest", "stage 2 needs a manifest of VCU samples", "set data.manifest")
        self._check_task_weights(bad)
        if self.uses_gan and self.data.captions is not None:
            bad("schedule.generator_objectives", "ADV needs real videos, and a caption list has none",
                "use a manifest with videos, or generator_objectives: [dm]")
        if not 0 <= self.loss.min_t < self.loss.max_t <= 1:
            bad("loss.min_t/max_t", f"need 0 <= min_t < max_t <= 1, got {self.loss.min_t}, {self.loss.max_t}", "use 0.02 and 0.98")
        for key in ("consistency_weight", "reward_weight"):
            weight = getattr(self.loss, key)
            if weight < 0:
                bad(f"loss.{key}", f"must be >= 0, got {weight}", "use 0 (off) or a positive weight")
            if weight > 0 and not any("dm" in o.split("+") for o in objs):
                bad(f"loss.{key}", "the term is added to DM generator updates, but schedule.generator_objectives has none",
                    "add dm to schedule.generator_objectives, or set the weight to 0")
        c = self.loss.consistency_huber_c
        if c is not None and not c > 0:
            bad("loss.consistency_huber_c", f"must be > 0 or null, got {c}", "use null (squared error) or e.g. 0.03")
        if self.loss.reward_weight > 0 and not self.models.reward_model:
            bad("loss.reward_weight", "a reward weight needs a reward model, and models.reward_model is not set",
                "set models.reward_model to a file from `vdot train-reward`, or reward_weight: 0")
        if self.guidance.cfg_scale < 1:
            bad("guidance.cfg_scale", f"{self.guidance.cfg_scale} < 1", "use 1 (off) or more (Wan: 5)")
        if not 0 <= self.guidance.min_t < self.guidance.max_t <= 1:
            bad("guidance.min_t", f"{self.guidance.min_t} .. guidance.max_t {self.guidance.max_t} is not an interval "
                "within [0, 1]", "use 0 ≤ min_t < max_t ≤ 1 (0 and 1: guide at every noise level)")
        if self.max_steps < 0:
            bad("max_steps", "must be >= 0", "give the number of iterations")
        self._check_ranges(bad)
        return self

    def _check_task_weights(self, bad) -> None:
        from vdot_nodes.core.tasks import TASKS

        weights = self.data.task_weights
        if weights is None:
            return
        if self.stage != 2:
            bad("data.task_weights", "weights the tasks of stage 2's manifest; stage 1 has one task", "remove it")
        unknown = sorted(set(weights) - set(TASKS))
        if unknown:
            bad("data.task_weights", f"unknown task(s) {unknown}", f"use task names such as {', '.join(list(TASKS)[:4])}")
        negative = {k: w for k, w in weights.items() if w < 0}
        if negative:
            bad("data.task_weights", f"weights must be >= 0, got {negative}", "use 0 (never drawn), 1 (as unnamed tasks) or more")
        if not self.data.shuffle:
            bad("data.task_weights", "draws rows at random, and data.shuffle is false", "set data.shuffle: true, or remove task_weights")

    def _check_ranges(self, bad) -> None:
        """Ranges of single values (types are checked while building): each bound with the fix."""
        d, o, lg = self.data, self.optim, self.logging
        at_least = {
            "data.batch_size": (d.batch_size, 1, "use 1 or more samples per rank"),
            "data.num_workers": (d.num_workers, 0, "use 0 (load in the training process) or more"),
            "data.max_skipped_rows": (d.max_skipped_rows, 0, "use 0 (stop at the first unreadable row) or more"),
            "logging.keep_last": (lg.keep_last, 1, "keep at least 1 checkpoint (3 is the default)"),
            "logging.log_every": (lg.log_every, 1, "use 1 (every iteration) or more"),
            "logging.checkpoint_every": (lg.checkpoint_every, 0, "use 0 (only at the end) or a positive interval"),
            "logging.export_every": (lg.export_every, 0, "use 0 (only at the end) or a positive interval"),
            "models.tiny_layers": (self.models.tiny_layers, 1, "use 1 or more blocks"),
            "seed": (self.seed, 0, "use a non-negative seed"),
        }
        for key, (value, low, fix) in at_least.items():
            if value < low:
                bad(key, f"must be >= {low}, got {value}", fix)
        positive = {"optim.lr": o.lr, "optim.critic_lr": o.critic_lr, "sampler.shift": self.sampler.shift,
                    "loss.otd_eps": self.loss.otd_eps, "loss.timestep_shift": self.loss.timestep_shift}
        for key, value in positive.items():
            if not value > 0:
                bad(key, f"must be > 0, got {value}", "use a positive value (see training/configs/ for the defaults)")
        for key, value in {"optim.weight_decay": o.weight_decay, "optim.grad_clip": o.grad_clip}.items():
            if value < 0:
                bad(key, f"must be >= 0, got {value}", "use 0 (off) or a positive value")
        if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
            bad("optim.betas", f"must be a pair [beta1, beta2], each in [0, 1), got {o.betas}", "e.g. betas: [0.0, 0.999]")
        if not 0 <= o.ema_decay <= 1:
            bad("optim.ema_decay", f"must be in [0, 1], got {o.ema_decay}", "e.g. ema_decay: 0.99")
        if d.num_frames < 1 or (d.num_frames - 1) % 4:
            bad("data.num_frames", f"{d.num_frames} is not 4k+1", "use 5, 17, 33, 49, 81 ...")
        for key in ("height", "width"):
            value = getattr(d, key)
            if value <= 0 or value % 16:
                bad(f"data.{key}", f"{value} is not a positive multiple of 16", "e.g. height: 480, width: 832")
        if not self.sampler.timesteps or any(not 0 < t <= 1000 for t in self.sampler.timesteps):
            bad("sampler.timesteps", f"{self.sampler.timesteps} must be a non-empty list in (0, 1000]", "e.g. [1000, 750, 500, 250]")

    @property
    def uses_gan(self) -> bool:
        return any("adv" in o for o in self.schedule.generator_objectives)


_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", list: "a list",
               dict: "a mapping"}


def _typed(value: Any, hint: Any, name: str, default: Any) -> Any:
    """``value`` checked against the field's annotation ``hint`` (numbers finite; a YAML-1.1 string such as
    ``1e-3`` read as a number); a wrong type raises naming the key, what came, what is wanted and an example.
    Annotations this does not know pass unchecked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            return value
        hint, origin, args = inner[0], typing.get_origin(inner[0]), typing.get_args(inner[0])
    kind = origin or hint
    example = "" if default is None or dataclasses.is_dataclass(default) else f", e.g. {name.rsplit('.', 1)[-1]}: {json.dumps(default)}"

    def wrong(problem: str | None = None):
        got = f"{value!r} ({type(value).__name__})" if not isinstance(value, (dict, list)) else f"a {type(value).__name__}"
        raise VDOTInputError(name, problem or f"expected {_KIND_WORDS.get(kind, getattr(kind, '__name__', kind))}, got {got}",
                             f"write {_KIND_WORDS.get(kind, 'a value of that type')}{example}")

    if kind is bool:
        if not isinstance(value, bool):
            wrong()
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            wrong()
    elif kind is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                wrong()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            wrong()
        value = float(value)
        if not math.isfinite(value):
            wrong(f"{value} is not a finite number")
    elif kind is str:
        if not isinstance(value, str):
            wrong()
    elif kind is list:
        if not isinstance(value, list):
            wrong()
        if args:
            return [_typed(v, args[0], f"{name}[{i}]", None) for i, v in enumerate(value)]
    elif kind is dict:
        if not isinstance(value, dict):
            wrong()
        if len(args) == 2:
            return {k: _typed(v, args[1], f"{name}.{k}", None) for k, v in value.items()}
    return value


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise VDOTInputError(where or "config", f"expected a mapping of keys to values, got {type(data).__name__}",
                             "write key: value pairs (see training/configs/toy_stage1.yaml)")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise VDOTInputError(name, "unknown config key", f"remove it or use one of {', '.join(sorted(fields))}")
        f = fields[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, name)
        else:
            kwargs[key] = _typed(value, hints[key], name, None if default is dataclasses.MISSING else default)
    return cls(**kwargs)


def config_from_dict(data: dict, config_dir: str = "") -> TrainConfig:
    """Build and validate a :class:`TrainConfig`; unknown keys raise ``VDOTInputError`` naming them."""
    from .recipes import apply_recipe

    cfg = _build(TrainConfig, apply_recipe(data or {}), "")
    if config_dir:
        cfg.config_dir = config_dir
    return cfg.validate()


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML config (``overrides`` — e.g. from the CLI — are merged in on top, top-level keys only)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise VDOTInputError("config", f"{path} not found", "give the path of a training YAML, e.g. training/configs/toy_stage1.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise VDOTInputError("config", f"{path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r})",
                             "save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        raise VDOTInputError("config", f"{path} is not valid YAML: {exc}", "fix the YAML syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise VDOTInputError("config", f"{path} holds a YAML {type(data).__name__}, not a mapping of keys to values",
                             "write key: value pairs at the top level (see training/configs/toy_stage1.yaml)")
    data.update(overrides or {})
    return config_from_dict(data, config_dir=str(path.resolve().parent))


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
