"""Samplers for Wan flow-matching models: the presets table and the one sampling entry point.

Conventions (Wan2.1, rectified flow): ``x_t = (1 - σ)·x0 + σ·ε``, the network predicts the velocity
``v = ε - x0``, so ``x0 = x_t - σ·v``. A shift ``s`` warps σ towards the noisy end:
``σ' = s·σ / (1 + (s - 1)·σ)``.

Every way of sampling is a row of :data:`SAMPLER_PRESETS` (a :class:`SamplerPreset`): the CLI, the
nodes, the ``VDOT Sigmas`` node, training's rollout and the benchmarks read that one table, and
:func:`sample` runs any row. Three solvers:

``unipc``    Wan's FlowUniPC multistep (order 2, B(h) = e^h − 1 "bh2", x0-prediction, UniC corrector,
             lower order on the last step, final σ 0) — what the official VDOT release samples with.
             Deterministic: noise is drawn once, at the start.
``renoise``  Self-Forcing style few-step sampler: x0 = x_t − σ·v, then fresh noise up to the next σ.
``euler``    plain Euler on the flow ODE (a multi-step baseline).

Samplers take a *velocity function* ``velocity_fn(x_t, timestep) -> v`` that already carries the
conditioning (text, VACE context); classifier-free guidance is composed with :func:`cfg_velocity` and
is not part of a preset (VDOT's guidance is distilled: cfg 1; Wan's undistilled teacher uses 5).
Noise is drawn on the CPU from one ``torch.Generator`` per sample (:class:`SeededNoise`), so a seed
gives the same video on any device and a sample does not change when the batch around it does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import VDOTInputError, input_ref
from .progress import CancelFn, Progress, ProgressFn, SamplerStep, as_progress, check_cancel  # noqa: F401 (re-exported)

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NUM_TRAIN_TIMESTEPS = 1000
# Wan's FlowUniPC builds its training σ as 1 − linspace(1, 1/1000, 1000) in float32, so the largest is
# float32(0.999) and every inference grid starts there (Wan2.1 wan/utils/fm_solvers_unipc.py, __init__).
WAN_SIGMA_MAX = float(np.float32(0.999))
MAX_STEPS = 100  # Wan's teacher uses 50; the same cap as core.validate's bound on steps
SOLVERS = ("unipc", "renoise", "euler")
GRIDS = ("wan", "uniform")


def shift_sigma(sigma: float | torch.Tensor | np.ndarray, shift: float):
    """Wan's timestep shift: σ' = s·σ / (1 + (s − 1)·σ)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


# --------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class SamplerPreset:
    """One way of sampling: a solver and the schedule it walks.

    ``grid`` says how σ is laid out when not given explicitly: ``"wan"`` is FlowUniPC's grid
    (``linspace(0.999, 0, steps + 1)[:-1]``, shifted; the model is fed ``int64(σ·1000)``, truncated),
    ``"uniform"`` is ``1 − k/steps`` shifted with the model fed ``σ·1000``. ``timesteps`` / ``sigmas``,
    when given, are used as they are: what the model is fed at each step and the noise level of each
    step's input (the final σ 0 is implied). ``x0_from_timestep`` forms x0 with σ = t/1000 instead of
    the input's σ — only the official training rollout does that (VDOT_REFERENCE §3).
    """

    name: str
    solver: str
    steps: int
    shift: float
    grid: str = "wan"
    timesteps: tuple[float, ...] | None = None
    sigmas: tuple[float, ...] | None = None
    x0_from_timestep: bool = False
    description: str = ""

    @property
    def fixed_schedule(self) -> bool:
        return self.sigmas is not None


@dataclass(frozen=True)
class Schedule:
    """What a preset walks: per step the timestep fed to the model and the σ that turns v into x0; and
    ``sigmas``, the noise level of each step's input followed by the final 0 (ComfyUI's ``SIGMAS``)."""

    timesteps: tuple[float, ...]
    sigmas: tuple[float, ...]
    x0_sigmas: tuple[float, ...]

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def wan_grid(steps: int, shift: float, sigma_start: float = WAN_SIGMA_MAX) -> tuple[np.ndarray, np.ndarray]:
    """FlowUniPC's ``set_timesteps``: (int64 timesteps, float32 σ) for ``steps`` steps, without the final 0.

    float64 ``linspace(sigma_start, 0, steps + 1)[:-1]``, shifted, timesteps truncated (not rounded)
    from σ·1000 and σ stored in float32 — the dtypes Wan uses, so shift 16 gives t = 999, 979, 941, 841.
    """
    grid = np.linspace(sigma_start, 0.0, steps + 1)[:-1]
    shifted = shift_sigma(grid, shift)
    return (shifted * NUM_TRAIN_TIMESTEPS).astype(np.int64), shifted.astype(np.float32)


def _official_rollout_sigmas() -> tuple[float, ...]:
    """σ the official training rollout re-noises to (VDOT_REFERENCE §3).

    The generator's scheduler is FlowUniPC ``set_timesteps(1000, shift=16)``; the steps [1000, 750, 500,
    250] are warped through it (index 1000 − t → t = 999, 979, 941, 841) and ``add_noise`` looks the σ of
    a timestep up by exact match, taking the *second* match when it repeats (the 1000 integer timesteps
    hold only 400 distinct values). Step 0 starts from pure noise.
    """
    table_t, table_sigma = wan_grid(NUM_TRAIN_TIMESTEPS, 16.0)
    warped = [int(table_t[NUM_TRAIN_TIMESTEPS - t]) for t in (750, 500, 250)]
    sigmas = [1.0]
    for t in warped:
        matches = np.nonzero(table_t == t)[0]
        sigmas.append(float(table_sigma[matches[1] if len(matches) > 1 else matches[0]]))
    return tuple(sigmas)


# The official rollout feeds these to the model literally (training/pipeline/bi_training_vace.py:56):
# Self-Forcing's FlowMatch warp of [1000, 750, 500, 250] at shift 8, printed to 4 decimals.
OFFICIAL_ROLLOUT_TIMESTEPS = (1000.0, 960.0, 888.8889, 727.2728)

SAMPLER_PRESETS: dict[str, SamplerPreset] = {
    p.name: p
    for p in (
        SamplerPreset(
            "vdot", "unipc", 4, 16.0,
            description="The official VDOT-14B sampler (hhhh1138/VDOT, the published numbers): Wan's FlowUniPC, "
                        "4 steps, shift 16, t 999/979/941/841, deterministic, one model call per step. "
                        "For the released vdot_14b weights and checkpoints distilled like them.",
        ),
        SamplerPreset(
            "renoise", "renoise", 4, 5.0, grid="uniform",
            description="Re-noising few-step sampler (x0, then fresh noise; shift 5, σ 1/.9375/.8333/.625): "
                        "lightx2v / Self-Forcing style distilled LoRAs, this pack's earlier exports and the "
                        "embedded toy model.",
        ),
        SamplerPreset(
            "rollout_official", "renoise", 4, 16.0, timesteps=OFFICIAL_ROLLOUT_TIMESTEPS,
            sigmas=_official_rollout_sigmas(), x0_from_timestep=True,
            description="The official training rollout exactly: feeds t 1000/960/888.9/727.3 (x0 with σ = t/1000) "
                        "but re-noises to σ .97983/.94173/.84122 of the shift-16 schedule. For training and "
                        "analysis; the published numbers use 'vdot'.",
        ),
        SamplerPreset(
            "rollout", "renoise", 4, 16.0,
            description="Training rollout consistent with 'vdot': the same t and σ, x0 then fresh noise, so what "
                        "the generator sees in training is what it sees at inference.",
        ),
        SamplerPreset(
            "teacher_unipc", "unipc", 50, 16.0,
            description="Undistilled Wan2.1-VACE teacher as Wan samples it (FlowUniPC, 50 steps, shift 16, "
                        "Wan's VACE default); use cfg 5 and a negative prompt.",
        ),
        SamplerPreset(
            "teacher_euler", "euler", 50, 5.0, grid="uniform",
            description="Plain Euler ODE baseline for undistilled models (50 steps, shift 5, Wan T2V's "
                        "default shift); use cfg 5 and a negative prompt.",
        ),
    )
}
DEFAULT_PRESET = "vdot"


def get_preset(name: str = DEFAULT_PRESET, *, steps: int | None = None, shift: float | None = None,
               unshifted_timesteps: Sequence[float] | None = None) -> SamplerPreset:
    """The preset ``name`` with optional overrides (``None`` keeps the preset's value).

    ``unshifted_timesteps`` (e.g. 1000, 750, 500, 250) places the steps explicitly; the shift warps them
    and the model is fed σ·1000 (the CLI's ``--timesteps``; renoise and euler presets only).
    Raises :class:`VDOTInputError` naming the preset and the bad value.
    """
    if name not in SAMPLER_PRESETS:
        raise VDOTInputError("preset", f"unknown sampler preset {name!r}", f"use one of {', '.join(SAMPLER_PRESETS)}")
    preset = SAMPLER_PRESETS[name]
    if steps is not None:
        if (isinstance(steps, bool) or not isinstance(steps, (int, float)) or not float(steps).is_integer()
                or not 1 <= steps <= MAX_STEPS):
            raise VDOTInputError("steps", f"{steps} steps for preset {name!r} is not an integer in 1..{MAX_STEPS}",
                                 f"use e.g. {preset.steps} (the preset's own)")
        steps = int(steps)
    if shift is not None and (isinstance(shift, bool) or not isinstance(shift, (int, float))
                              or not (math.isfinite(shift) and shift > 0)):
        raise VDOTInputError("shift", f"shift {shift} for preset {name!r} must be a finite number > 0",
                             f"use e.g. {preset.shift:g} (the preset's own)")
    if preset.fixed_schedule and ((steps is not None and steps != preset.steps)
                                  or (shift is not None and shift != preset.shift)):
        raise VDOTInputError("preset", f"{name!r} has a fixed schedule ({preset.steps} steps, shift {preset.shift:g}); "
                             "steps/shift cannot be changed",
                             "leave steps/shift at their defaults or use preset 'rollout'")
    changes = {k: v for k, v in (("steps", steps), ("shift", shift)) if v is not None}
    preset = dataclasses.replace(preset, **changes)
    if unshifted_timesteps is not None:
        if preset.solver == "unipc" or preset.fixed_schedule:
            raise VDOTInputError("timesteps", f"explicit timesteps do not apply to preset {name!r}",
                                 f"use preset 'renoise' with {input_ref('timesteps')}, or give "
                                 f"{input_ref('steps')}/{input_ref('shift')} instead")
        sigmas = few_step_sigmas(unshifted_timesteps, preset.shift)
        preset = dataclasses.replace(preset, steps=len(sigmas), sigmas=tuple(sigmas),
                                     timesteps=tuple(s * NUM_TRAIN_TIMESTEPS for s in sigmas))
    return preset


def few_step_sigmas(timesteps: Sequence[float], shift: float) -> list[float]:
    """σ of unshifted step positions: [1000, 750, 500, 250] with shift 5 → [1, .9375, .8333, .625]."""
    if len(timesteps) == 0:
        raise VDOTInputError("timesteps", "the step list is empty", "give at least one timestep, e.g. 1000,750,500,250")
    if len(timesteps) > MAX_STEPS:
        raise VDOTInputError("timesteps", f"{len(timesteps)} steps is more than {MAX_STEPS}", "use fewer steps")
    previous = float("inf")
    for t in timesteps:
        if not 0 < t <= NUM_TRAIN_TIMESTEPS:
            raise VDOTInputError("timesteps", f"timestep {t} is outside (0, {NUM_TRAIN_TIMESTEPS}]",
                                 "use timesteps like 1000,750,500,250")
        if t >= previous:
            raise VDOTInputError("timesteps", f"timesteps {list(timesteps)} are not strictly decreasing",
                                 "sort them from 1000 down")
        previous = t
    if not (math.isfinite(shift) and shift > 0):
        raise VDOTInputError("shift", f"shift must be a finite number > 0, got {shift}", "use e.g. 5.0 or 16.0")
    return [float(shift_sigma(t / NUM_TRAIN_TIMESTEPS, shift)) for t in timesteps]


def preset_schedule(preset: SamplerPreset, denoise: float = 1.0) -> Schedule:
    """The schedule a preset walks. ``denoise < 1`` starts lower: the unshifted grid is scaled by it."""
    if not 0 < denoise <= 1:
        raise VDOTInputError("denoise", f"must be in (0, 1], got {denoise}", "use 1.0 to generate from noise")
    if not 1 <= preset.steps <= MAX_STEPS:
        raise VDOTInputError("steps", f"preset {preset.name!r} has {preset.steps} steps", f"use 1..{MAX_STEPS}")
    if preset.solver not in SOLVERS or preset.grid not in GRIDS:
        raise VDOTInputError("preset", f"{preset.name!r} has solver {preset.solver!r} / grid {preset.grid!r}",
                             f"solvers: {', '.join(SOLVERS)}; grids: {', '.join(GRIDS)}")
    if preset.fixed_schedule:
        if denoise < 1 and preset.x0_from_timestep:
            raise VDOTInputError("denoise", f"preset {preset.name!r} has a fixed schedule and cannot start part-way",
                                 "use denoise 1.0, or preset 'vdot' / 'renoise' for video-to-video")
        sigmas = [float(s) for s in preset.sigmas]
        # explicit timesteps reach the model as float32 (the official rollout's torch.ones(...) * t is float32)
        timesteps = ([float(np.float32(t)) for t in preset.timesteps] if preset.timesteps is not None
                     else [s * NUM_TRAIN_TIMESTEPS for s in sigmas])
        if denoise < 1:  # explicit σ from --timesteps: scale the unshifted positions like the uniform grid
            raw = [s / (preset.shift - (preset.shift - 1) * s) for s in sigmas]  # inverse shift
            sigmas = [float(shift_sigma(u * denoise, preset.shift)) for u in raw]
            timesteps = [s * NUM_TRAIN_TIMESTEPS for s in sigmas]
    elif preset.grid == "wan":
        t, s = wan_grid(preset.steps, preset.shift, WAN_SIGMA_MAX * denoise)
        timesteps, sigmas = [float(v) for v in t], [float(v) for v in s]
    else:
        sigmas = [float(shift_sigma((1 - k / preset.steps) * denoise, preset.shift)) for k in range(preset.steps)]
        timesteps = [s * NUM_TRAIN_TIMESTEPS for s in sigmas]
    decreasing = all(b < a for a, b in zip(sigmas, sigmas[1:]))
    if len(sigmas) != len(timesteps) or not decreasing or not 0 < sigmas[-1] <= sigmas[0] <= 1:
        raise VDOTInputError("preset", f"{preset.name!r} gives σ {sigmas} for timesteps {timesteps}",
                             "σ must decrease strictly within (0, 1], one per timestep")
    if preset.solver == "unipc" and sigmas[0] >= 1:
        raise VDOTInputError("preset", f"UniPC needs σ < 1 (log-SNR is finite), got {sigmas[0]}",
                             "use the 'wan' grid, which starts at 0.999")
    x0_sigmas = [t / NUM_TRAIN_TIMESTEPS for t in timesteps] if preset.x0_from_timestep else sigmas
    return Schedule(tuple(timesteps), tuple(sigmas) + (0.0,), tuple(x0_sigmas))


# --------------------------------------------------------------------------------------------- noise, cfg
class SeededNoise:
    """Gaussian noise from one CPU generator per sample: device-independent and batch-independent."""

    def __init__(self, seeds: Sequence[int]):
        if len(seeds) == 0:
            raise VDOTInputError("seed", "no seeds given", "give one seed per video")
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]

    def draw(self, sample_shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """A ``[len(seeds), *sample_shape]`` float32 tensor of fresh N(0, 1) noise."""
        noise = [torch.randn(tuple(sample_shape), generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(noise).to(device)


def _percent_sigmas(cfg_start: float, cfg_end: float, shift: float) -> tuple[float, float]:
    """The noise levels ``(σ(cfg_end), σ(cfg_start))`` of ComfyUI percents: σ(p) = shift(1 − p)."""
    return float(shift_sigma(1.0 - cfg_end, shift)), float(shift_sigma(1.0 - cfg_start, shift))


def _guided(sched: Schedule, cfg_start: float, cfg_end: float, shift: float) -> list[bool]:
    """Per step: does its input noise level lie in the interval (by σ, so truncated timesteps do not move it)."""
    lo, hi = _percent_sigmas(cfg_start, cfg_end, shift)
    return [lo <= sigma <= hi for sigma in sched.sigmas[: sched.steps]]


def cfg_timestep_range(cfg_start: float, cfg_end: float, shift: float,
                       schedule: Schedule | None = None) -> tuple[float, float] | None:
    """The model timesteps ``[lo, hi]`` that classifier-free guidance covers, or None for every step.

    ``cfg_start`` / ``cfg_end`` are ComfyUI's start/end percent of the denoising process (0 = pure noise,
    1 = the clean video), mapped to a noise level through the sampler's shift as ComfyUI maps them for
    flow models: σ(p) = shift(1 − p). On Wan's grids the percent of step k of n is about k/n, so the
    bounds read as fractions of the steps, but they name noise levels and so mean the same for any
    step count. Guidance only where the noise is high (``cfg_end`` < 1) is the "guidance interval" of
    Kynkäänniemi et al. (2024): the late, unguided steps keep what guidance oversaturates.

    With a ``schedule`` each step is placed by its σ and the range is the fed timesteps of the steps
    inside (Wan truncates t = ⌊1000σ⌋, so at shift 16 t 999 stands for every percent below 0.016);
    without one (training's continuous timesteps) the range is ``1000·σ(p)``.
    """
    if cfg_start <= 0.0 and cfg_end >= 1.0:
        return None
    if schedule is None:
        lo, hi = _percent_sigmas(cfg_start, cfg_end, shift)
        return NUM_TRAIN_TIMESTEPS * lo, NUM_TRAIN_TIMESTEPS * hi
    inside = [float(np.float32(t)) for t, g in zip(schedule.timesteps, _guided(schedule, cfg_start, cfg_end, shift)) if g]
    return (min(inside), max(inside)) if inside else (math.inf, -math.inf)  # the steps' contiguous run, or none


def _in_range(timestep: torch.Tensor, timestep_range: tuple[float, float]) -> torch.Tensor:
    lo, hi = timestep_range
    return (timestep >= lo) & (timestep <= hi)


def guided_steps(preset: SamplerPreset, cfg_start: float = 0.0, cfg_end: float = 1.0, denoise: float = 1.0) -> int:
    """How many of the preset's steps classifier-free guidance covers (each costs a second model call)."""
    return sum(_guided(preset_schedule(preset, denoise), cfg_start, cfg_end, preset.shift))


def check_cfg_interval(preset: SamplerPreset, cfg: float, cfg_start: float = 0.0, cfg_end: float = 1.0,
                       denoise: float = 1.0) -> int:
    """Refuse a guidance interval that is not one (``cfg_end`` ≤ ``cfg_start``) or that guides none of the
    preset's steps while cfg ≠ 1 (guidance asked for but never applied); returns the guided steps."""
    for name, value in (("cfg_start", cfg_start), ("cfg_end", cfg_end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise VDOTInputError(name, f"{value!r} is not a number in [0, 1]",
                                 "use 0 (the first, noisiest step) to 1 (the clean end); 0 and 1 guide every step")
    if cfg_end <= cfg_start:
        raise VDOTInputError("cfg_end", f"{cfg_end:g} is not after {input_ref('cfg_start')} {cfg_start:g}",
                             f"make {input_ref('cfg_end')} larger than {input_ref('cfg_start')} (0 and 1 guide every step)")
    guided = guided_steps(preset, cfg_start, cfg_end, denoise)
    if cfg != 1.0 and guided == 0:
        sched = preset_schedule(preset, denoise)
        unshifted = [s / (preset.shift - (preset.shift - 1) * s) for s in sched.sigmas[: sched.steps]]
        where = ", ".join(f"{1 - u:.2f}" for u in unshifted)
        raise VDOTInputError("cfg_start", f"the guidance interval {cfg_start:g}..{cfg_end:g} holds none of the "
                             f"{sched.steps} steps (they sit at {where})",
                             f"widen {input_ref('cfg_start')}..{input_ref('cfg_end')} to hold a step, or set "
                             f"{input_ref('cfg')} to 1")
    return guided


def cfg_velocity(cond_fn: VelocityFn, uncond_fn: VelocityFn | None, guidance_scale: float,
                 timestep_range: tuple[float, float] | None = None) -> VelocityFn:
    """Classifier-free guidance ``v = v_u + w·(v_c − v_u)``; with w = 1 only the conditional model runs.

    ``timestep_range`` (:func:`cfg_timestep_range`): guide only samples whose timestep lies in it; the
    others get the conditional velocity and, when none of a batch is inside, the unconditional model
    does not run."""
    if guidance_scale == 1.0 or uncond_fn is None:
        if guidance_scale != 1.0:
            raise VDOTInputError("cfg", f"cfg {guidance_scale} needs a negative/unconditional prompt", "set cfg to 1")
        return cond_fn

    def guided(x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        inside = None if timestep_range is None else _in_range(timestep, timestep_range)
        v_cond = cond_fn(x_t, timestep)
        if inside is not None and not bool(inside.any()):
            return v_cond
        v_uncond = uncond_fn(x_t, timestep)
        v = v_uncond + guidance_scale * (v_cond - v_uncond)
        if inside is None or bool(inside.all()):
            return v
        return torch.where(inside.reshape(-1, *[1] * (v.ndim - 1)), v, v_cond)

    return guided


# --------------------------------------------------------------------------------------------- solvers
def _log_snr(sigma: float) -> float:
    """λ = log(α/σ) with α = 1 − σ; +inf at σ = 0."""
    return math.inf if sigma == 0 else math.log((1 - sigma) / sigma)


def unipc_order(k: int, steps: int) -> int:
    """Predictor order at step k: 2, but 1 while warming up (k = 0) and on the last step."""
    return min(2, steps - k, k + 1)


def _unipc_update(x_s: torch.Tensor, sigmas: Sequence[float], s: int, x0s: Sequence[torch.Tensor], order: int,
                  x0_new: torch.Tensor | None = None) -> torch.Tensor:
    """One UniPC-bh2 update (x0-prediction) from the sample at σ_s to σ_{s+1}.

    Predictor (``x0_new`` None): ``x0s`` ends with the x0-predictions at s (and s−1 for order 2).
    Corrector (UniC): the same step re-taken with ``x0_new``, the x0-prediction at s+1, as the extra
    point. The first-order part is DPM-Solver++(1): (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·x0_s, with
    h = λ_t − λ_s; B(h) = e^{−h} − 1 ("bh2"). Coefficients in float64 from the float32 σ; the tensor
    arithmetic stays in the sample's dtype (float32), as in Wan's scheduler.
    """
    sigma_s, sigma_t = sigmas[s], sigmas[s + 1]
    m0 = x0s[-1]
    if sigma_t == 0:  # α_t = 1, σ_t/σ_s = 0, e^{−h} − 1 = −1: the (order-1, last) step lands on x0_s
        return m0
    alpha_t = 1 - sigma_t
    h = _log_snr(sigma_t) - _log_snr(sigma_s)
    hphi1 = math.expm1(-h)  # = B(h) for bh2
    x_t = (sigma_t / sigma_s) * x_s - (alpha_t * hphi1) * m0
    if order == 2:
        r = (_log_snr(sigmas[s - 1]) - _log_snr(sigma_s)) / h
        d1 = (x0s[-2] - m0) / r
    if x0_new is None:
        if order == 2:
            x_t = x_t - (alpha_t * hphi1 * 0.5) * d1
        return x_t
    # UniC: ρ solves R·ρ = b with R = [[1, 1], [r, 1]] (order 2) or ρ = 1/2 (order 1);
    # b_i = i!·φ_{i+1}(−h)/B(h), φ from the recurrence φ_{k+1} = φ_k/(−h) − 1/k!.
    if order == 1:
        rho_prev, rho_new = 0.0, 0.5
    else:
        b1 = (hphi1 / -h - 1) / hphi1
        b2 = 2 * ((hphi1 / -h - 1) / -h - 0.5) / hphi1
        rho_prev = (b1 - b2) / (1 - r)
        rho_new = b1 - rho_prev
    correction = rho_new * (x0_new - m0)
    if order == 2:
        correction = correction + rho_prev * d1
    return x_t - (alpha_t * hphi1) * correction


def _timestep_batch(t: float, batch: int, device) -> torch.Tensor:
    return torch.full((batch,), float(t), device=device, dtype=torch.float32)


def sample(
    velocity_fn: VelocityFn,
    noise: SeededNoise,
    sample_shape: Sequence[int],
    preset: SamplerPreset | str = DEFAULT_PRESET,
    *,
    init_latents: torch.Tensor | None = None,
    denoise: float = 1.0,
    device: torch.device | str = "cpu",
    progress: Progress | ProgressFn | None = None,
    cancel: CancelFn | None = None,
    exit_step: int | None = None,
) -> torch.Tensor:
    """Sample ``[len(noise.seeds), *sample_shape]`` latents with a preset (a name or a :class:`SamplerPreset`).

    One model call per step, every step evaluated. ``denoise < 1`` starts from ``init_latents`` noised
    to the first σ of a schedule whose unshifted grid is scaled by ``denoise`` (video-to-video).

    ``exit_step`` (training rollout, Self-Forcing's backward simulation): stop at step ``exit_step`` and
    return its x0-prediction; the steps before it run without grad and only that step keeps the
    caller's grad mode, so backprop goes through exactly one model call. For UniPC the x0 of the last
    step is the sampler's output. Previews: see :func:`run_schedule`.
    """
    if isinstance(preset, str):
        preset = get_preset(preset)
    if denoise < 1 and init_latents is None:
        raise VDOTInputError("denoise", f"denoise {denoise} < 1 needs input latents to start from",
                             "set denoise to 1.0")
    sched = preset_schedule(preset, denoise)
    x = noise.draw(sample_shape, device)
    if denoise < 1:
        x = (1 - sched.sigmas[0]) * init_latents.to(device=device, dtype=torch.float32) + sched.sigmas[0] * x
    return run_schedule(velocity_fn, x, sched, preset.solver, lambda: noise.draw(sample_shape, device),
                        progress=progress, cancel=cancel, exit_step=exit_step)


def run_schedule(velocity_fn: VelocityFn, x: torch.Tensor, sched: Schedule, solver: str,
                 fresh_noise: Callable[[], torch.Tensor] | None = None, *, progress: Progress | ProgressFn | None = None,
                 cancel: CancelFn | None = None, exit_step: int | None = None) -> torch.Tensor:
    """Walk ``sched`` with ``solver`` from the starting sample ``x`` (what :func:`sample` does after drawing
    the noise). ``fresh_noise()`` is needed by the re-noising solver only. ``progress`` counts steps (total:
    the schedule's steps), is asked to cancel before each one and previews every step's input and
    x0-prediction (:class:`~vdot_nodes.core.progress.SamplerStep`, ComfyUI's previews) before counting it;
    ``cancel()`` is the callback form."""
    steps = sched.steps
    last = steps - 1 if exit_step is None else int(exit_step)
    if not 0 <= last < steps:
        raise VDOTInputError("exit_step", f"{exit_step} is not a step of this {steps}-step sampler",
                             f"use 0..{steps - 1}")
    if solver == "renoise" and fresh_noise is None and last > 0:
        raise VDOTInputError("solver", "the re-noising solver needs fresh noise", "use the 'unipc' or 'euler' solver")
    batch, device = x.shape[0], x.device
    grad_enabled = torch.is_grad_enabled()
    sigmas = sched.sigmas
    x0s: list[torch.Tensor] = []  # UniPC's history of x0-predictions (the last two are used)
    x_prev = x  # UniPC: the corrected sample the last predictor started from
    progress = as_progress(progress, cancel)
    progress.set_total(steps)
    for k in range(last + 1):
        progress.check_cancel()
        with torch.set_grad_enabled(grad_enabled and (exit_step is None or k == last)):
            v = velocity_fn(x, _timestep_batch(sched.timesteps[k], batch, device)).float()
            x0 = x - sched.x0_sigmas[k] * v
        progress.preview(SamplerStep(k, x, x0))
        if k == last and (exit_step is not None or solver == "renoise"):
            x = x0
        elif solver == "renoise":
            x = (1 - sigmas[k + 1]) * x0 + sigmas[k + 1] * fresh_noise()
        elif solver == "euler":
            x = x + (sigmas[k + 1] - sigmas[k]) * v
        else:
            # The model has just been evaluated at the predictor's output x; UniC corrects x with the new
            # x0 (order of the previous predictor), and the next predictor starts from the corrected x.
            if k > 0:
                x = _unipc_update(x_prev, sigmas, k - 1, x0s, unipc_order(k - 1, steps), x0_new=x0)
            x0s = [*x0s[-1:], x0]
            x_prev = x
            x = _unipc_update(x, sigmas, k, x0s, unipc_order(k, steps))
        progress.update(1)
    return x


def sigmas_schedule(sigmas: Sequence[float], truncate_timesteps: bool = True) -> Schedule:
    """A schedule from given σ (ComfyUI ``SIGMAS``: decreasing, ending in 0). The model is fed
    ``floor(σ·1000)`` as Wan's FlowUniPC does (``truncate_timesteps``), or σ·1000 as ComfyUI does."""
    sig = [float(s) for s in sigmas]
    if len(sig) < 2 or sig[-1] != 0 or any(b >= a for a, b in zip(sig, sig[1:])) or not sig[0] < 1:
        raise VDOTInputError("sigmas", f"{[round(s, 5) for s in sig]} is not a FlowUniPC schedule",
                             "give decreasing σ below 1 that end in 0 (VDOT Sigmas makes them)")
    steps = sig[:-1]
    timesteps = [float(math.floor(s * NUM_TRAIN_TIMESTEPS)) if truncate_timesteps else s * NUM_TRAIN_TIMESTEPS
                 for s in steps]
    return Schedule(tuple(timesteps), tuple(sig), tuple(steps))


def preset_sigmas(preset: SamplerPreset | str, denoise: float = 1.0) -> torch.Tensor:
    """ComfyUI ``SIGMAS`` for a preset: 1-D float32 σ of each step's input, then the final 0."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    return torch.tensor(preset_schedule(preset, denoise).sigmas, dtype=torch.float32)
