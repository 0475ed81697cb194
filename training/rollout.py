"""Generator rollout for training: the inference sampler, stopped at a random exit step.

Self-Forcing's "backward simulation": the generator is trained on the inputs it will really see at
inference, i.e. the x_t its own earlier steps produce. The 4-step sampler
(:func:`vdot_nodes.core.sampling.sample`, the very code the nodes run) runs without grad up to
an exit step k drawn uniformly from ``0..steps-1`` — the same k on every rank, or FSDP's collectives
would pair different forwards — and with grad at step k; its x0-prediction is the generator sample x̂0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vdot_nodes.core.sampling import SamplerPreset, SeededNoise, VelocityFn, get_preset, sample

from .distributed import shared_random_int

__all__ = ["draw_exit_step", "rollout"]


def draw_exit_step(num_steps: int, generator: torch.Generator, last_step_only: bool = False) -> int:
    """The exit step: uniform in ``[0, num_steps)``, rank 0's draw broadcast (or always the last step)."""
    if last_step_only:
        return num_steps - 1
    return shared_random_int(0, num_steps, generator)


def rollout(velocity: VelocityFn, sample_shape: Sequence[int], seeds: Sequence[int], *,
            timesteps: Sequence[int] | None = None, shift: float | None = None,
            preset: SamplerPreset | str | None = None,
            exit_step: int, device, grad: bool, return_input: bool = False):
    """x̂0 ``[len(seeds), *sample_shape]`` from the few-step sampler stopped at ``exit_step``.

    The sampler is ``preset`` (a row of ``SAMPLER_PRESETS``, e.g. ``rollout`` or ``rollout_official``), or
    else the ``renoise`` preset placed at the unshifted ``timesteps`` with ``shift``.

    ``grad=True``: the graph holds the exit step's model call only (the generator update);
    ``grad=False``: no graph at all (the critic update's samples). ``return_input=True`` returns
    ``(x̂0, x_k)`` with ``x_k`` the (detached) noisy latent the exit step's model call read — what
    consistency distillation needs; the sampler itself is unchanged.
    """
    seen: dict[str, torch.Tensor] = {}

    def recording(x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        seen["x_t"] = x_t.detach()  # the last call is the exit step's
        return velocity(x_t, timestep)

    with torch.set_grad_enabled(grad):
        if preset is None:
            preset = get_preset("renoise", shift=shift, unshifted_timesteps=timesteps)
        x0 = sample(recording if return_input else velocity, SeededNoise(seeds), sample_shape, preset,
                    device=device, exit_step=exit_step)
    return (x0, seen["x_t"]) if return_input else x0
