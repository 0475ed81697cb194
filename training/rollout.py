"""Generator rollout for training: the inference sampler, stopped at a random exit step.

Self-Forcing's "backward simulation": the generator is trained on the inputs it will really see at
inference, i.e. the x_t its own earlier steps produce. The 4-step sampler
(:func:`vdot_nodes.core.sampling.sample_vdot`, the very code the nodes run) runs without grad up to
an exit step k drawn uniformly from ``0..steps-1`` — the same k on every rank, or FSDP's collectives
would pair different forwards — and with grad at step k; its x0-prediction is the generator sample x̂0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.sampling import SeededNoise, VelocityFn, few_step_sigmas, sample_vdot

from .distributed import shared_random_int

__all__ = ["ROLLOUT_PRESETS", "RolloutSchedule", "draw_exit_step", "rollout", "rollout_schedule"]

# σ of the ``vdot`` inference preset: Wan's FlowUniPC, 4 steps, shift 16 (model t 999/979/941/841).
# TODO(merge with the sampler presets of vdot_nodes.core.sampling): read these from get_preset("vdot").
_VDOT_INFERENCE_SIGMAS = (0.9999374, 0.9795118, 0.9410657, 0.8419278)
# The released training rollout: the t it tells the model, and the σ it re-noises to before steps 1-3.
_OFFICIAL_MODEL_T = (1000.0, 960.0, 888.8889, 727.2728)
_OFFICIAL_RENOISE_SIGMAS = (1.0, 0.97983074, 0.94172704, 0.84121603)


@dataclass(frozen=True)
class RolloutSchedule:
    """A few-step rollout: step k tells the model ``model_t[k]``, forms ``x0 = x − x0_sigma[k]·v`` and, before step
    k (k ≥ 1), re-noises x0 to ``input_sigma[k]`` with fresh noise. Consistent when ``input_sigma == x0_sigma ==
    model_t/1000``."""

    model_t: tuple[float, ...]
    x0_sigma: tuple[float, ...]
    input_sigma: tuple[float, ...]

    @property
    def consistent(self) -> bool:
        return all(abs(a - b) < 1e-6 and abs(a - t / 1000) < 1e-6
                   for a, b, t in zip(self.input_sigma, self.x0_sigma, self.model_t))


ROLLOUT_PRESETS: dict[str, RolloutSchedule] = {
    "rollout": RolloutSchedule(tuple(s * 1000 for s in _VDOT_INFERENCE_SIGMAS), _VDOT_INFERENCE_SIGMAS,
                               _VDOT_INFERENCE_SIGMAS),
    "rollout_official": RolloutSchedule(_OFFICIAL_MODEL_T, tuple(t / 1000 for t in _OFFICIAL_MODEL_T),
                                        _OFFICIAL_RENOISE_SIGMAS),
}


def rollout_schedule(preset: str | None, timesteps: Sequence[float] = (1000, 750, 500, 250), shift: float = 5.0
                     ) -> RolloutSchedule:
    """The schedule of ``rollout.preset`` (None: ``sampler.timesteps`` warped by ``sampler.shift``)."""
    if preset is None:
        sig = tuple(few_step_sigmas(timesteps, shift))
        return RolloutSchedule(tuple(s * 1000 for s in sig), sig, sig)
    if preset not in ROLLOUT_PRESETS:
        raise VDOTInputError("rollout.preset", f"unknown preset {preset!r}", f"use one of {', '.join(ROLLOUT_PRESETS)}")
    return ROLLOUT_PRESETS[preset]


def draw_exit_step(num_steps: int, generator: torch.Generator, last_step_only: bool = False) -> int:
    """The exit step: uniform in ``[0, num_steps)``, rank 0's draw broadcast (or always the last step)."""
    if last_step_only:
        return num_steps - 1
    return shared_random_int(0, num_steps, generator)


def rollout(velocity: VelocityFn, sample_shape: Sequence[int], seeds: Sequence[int], *, timesteps: Sequence[int],
            shift: float, exit_step: int, device, grad: bool, return_input: bool = False,
            schedule: RolloutSchedule | None = None):
    """x̂0 ``[len(seeds), *sample_shape]`` from the few-step sampler stopped at ``exit_step``.

    ``grad=True``: the graph holds the exit step's model call only (the generator update);
    ``grad=False``: no graph at all (the critic update's samples). ``return_input=True`` returns
    ``(x̂0, x_k)`` with ``x_k`` the (detached) noisy latent the exit step's model call read — what
    consistency distillation needs; the sampler itself is unchanged. ``schedule`` (a ``rollout.preset``):
    a consistent one runs :func:`sample_vdot` at its σ; ``rollout_official`` runs the released loop.
    """
    seen: dict[str, torch.Tensor] = {}

    def recording(x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        seen["x_t"] = x_t.detach()  # the last call is the exit step's
        return velocity(x_t, timestep)

    fn = recording if return_input else velocity
    with torch.set_grad_enabled(grad):
        if schedule is None or schedule.consistent:
            if schedule is not None:  # σ exactly: shift 1 over t = σ·1000
                timesteps, shift = schedule.model_t, 1.0
            x0 = sample_vdot(fn, SeededNoise(seeds), sample_shape, timesteps=timesteps, shift=shift, device=device,
                             exit_step=exit_step)
        else:
            x0 = _rollout_split(fn, SeededNoise(seeds), sample_shape, schedule, exit_step, device)
    return (x0, seen["x_t"]) if return_input else x0


def _rollout_split(velocity: VelocityFn, noise: SeededNoise, sample_shape, schedule: RolloutSchedule,
                   exit_step: int, device) -> torch.Tensor:
    """The released rollout: model told ``model_t[k]``, x0 with ``x0_sigma[k]``, re-noised to ``input_sigma[k+1]``."""
    if not 0 <= exit_step < len(schedule.model_t):
        raise VDOTInputError("exit_step", f"{exit_step} is not a step of this {len(schedule.model_t)}-step rollout",
                             f"use 0..{len(schedule.model_t) - 1}")
    grad = torch.is_grad_enabled()
    batch = len(noise.seeds)
    x_t = noise.draw(sample_shape, device)
    x0 = x_t
    for k in range(exit_step + 1):
        with torch.set_grad_enabled(grad and k == exit_step):
            t = torch.full((batch,), schedule.model_t[k], device=device, dtype=torch.float32)
            x0 = x_t - schedule.x0_sigma[k] * velocity(x_t, t).float()
        if k < exit_step:
            s = schedule.input_sigma[k + 1]
            x_t = (1 - s) * x0 + s * noise.draw(sample_shape, device)
    return x0
