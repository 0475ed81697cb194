"""The transformer step: ``v(x_t, t)`` with fixed text and (for VACE models) VACE context — the function
every sampler, rollout and loss calls. Needs only the transformer."""

from __future__ import annotations

import torch

from .sampling import VelocityFn


def transformer_velocity(transformer, prompt_embeds: torch.Tensor, control: torch.Tensor | None,
                         device: torch.device | str, control_scale: float = 1.0) -> VelocityFn:
    """``v(x_t, t)`` for a batch: ``transformer`` with ``prompt_embeds`` ``[1 or B, L, D]`` and, for a
    ``WanVACETransformer3DModel``, the VACE context ``control`` ``[1 or B, C, f, h, w]`` scaled by
    ``control_scale``; ``control=None`` calls a plain Wan transformer (training stage 1). Output float32."""
    device = torch.device(device)
    # The patch embedding is never stored in fp8 (diffusers skips it in layerwise casting), so its
    # dtype is the compute dtype for every precision, fp8 storage included.
    dtype = transformer.patch_embedding.weight.dtype
    num_vace = len(transformer.config.vace_layers) if control is not None else 0

    def velocity(x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        batch = x_t.shape[0]
        text = prompt_embeds.to(device, dtype)
        if text.shape[0] == 1 and batch > 1:
            text = text.expand(batch, -1, -1)
        if control is None:
            return transformer(hidden_states=x_t.to(dtype), timestep=timestep, encoder_hidden_states=text,
                               return_dict=False)[0].float()
        ctx = control.to(device, dtype).expand(batch, -1, -1, -1, -1)
        out = transformer(
            hidden_states=x_t.to(dtype),
            timestep=timestep,
            encoder_hidden_states=text,
            control_hidden_states=ctx,
            control_hidden_states_scale=torch.full((num_vace,), control_scale, device=device, dtype=dtype),
            return_dict=False,
        )[0]
        return out.float()

    return velocity


__all__ = ["transformer_velocity"]
