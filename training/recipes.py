"""Named training recipes: sets of config values a YAML selects with ``recipe: <name>``, under its own keys.

``vdot`` is the recipe of the released VDOT code (hhhh1138/VDOT, ``configs/self_forcing_bi_gan.yaml`` and the
code it runs; facts with ``path:line`` in the project's VDOT reference sheet §3-§5). Each entry is also an
ordinary config key, so a term can be switched on alone without the recipe. Where the released code is
inconsistent the recipe takes the consistent choice and the released behaviour stays a flag
(training/README.md, "Consistency flags"): ``rollout.preset: rollout`` (not ``rollout_official``),
``runtime.timestep_bf16_quantize: false``, ``data.reference_context: noise_frames`` (not ``truncate``).
"""

from __future__ import annotations

import copy

from vdot_nodes.core.errors import VDOTInputError

__all__ = ["RECIPES", "apply_recipe"]

RECIPES: dict[str, dict] = {
    "vdot": {
        "guidance": {"cfg_scale": 3.0},  # real score CFG in velocity space (yaml guidance_scale 3.0)
        "loss": {
            # generator DM loss = 0.2·L_DMD + 0.8·L_OT, each with its own timestep, noise and score forwards
            "dm": "dmd+otd", "dm_mix": [0.2, 0.8], "dm_weight": 1.0,
            "dmd_normalizer": "sigma",  # g = (f − r)·t/1000
            "otd_cloud": "pooled_positions", "otd_eps": 0.1, "otd_iters": 60, "otd_pool": 2,
            "otd_gradient": "autograd", "otd_step": 0.1,
            # DMD / OT / critic-denoising t: randint[20, 980), shift 5, clamped to [20, 980]
            "min_t": 0.02, "max_t": 0.98, "timestep_shift": 5.0, "timestep_draw": "integer", "timestep_clamp": True,
            "gan_weight": 0.1, "gan_d_weight": 0.1, "r1_weight": 0.0, "r2_weight": 0.0, "critic_weighting": "none",
        },
        # GAN t: randint[0, 1000), shift 12, clamped to [20, 980]; the released head
        "gan": {"head": "vdot", "head_dim": 512, "head_ffn_dim": 13824, "head_heads": 8,
                "min_t": 0.0, "max_t": 1.0, "timestep_shift": 12.0, "generator_real_noise": "independent"},
        # generator every 5th iteration, DM / ADV alternating (steps 0, 10, ... DM; 5, 15, ... ADV);
        # critic every iteration, denoising on even and discriminator on odd iterations
        "schedule": {"ttur": 5, "generator_objectives": ["dm", "adv"], "critic_objectives": ["denoise", "disc"],
                     "shared_exit_step": True},
        "optim": {"lr": 2.0e-6, "critic_lr": 4.0e-7, "betas": [0.0, 0.999], "weight_decay": 0.01, "grad_clip": 5.0,
                  "ema_decay": 0.0, "grad_accumulation": 3, "state_dtype": "bf16"},
        # consistent defaults where the released code disagrees with itself
        "rollout": {"preset": "rollout", "inference_preset": "vdot"},
        "runtime": {"timestep_bf16_quantize": False},
        "data": {"reference_context": "noise_frames"},
    },
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_recipe(data: dict) -> dict:
    """``data`` with its ``recipe``'s values filled in under the keys it sets itself (nested, key by key)."""
    name = data.get("recipe")
    if name is None:
        return data
    if name not in RECIPES:
        raise VDOTInputError("recipe", f"unknown recipe {name!r}", f"use one of {', '.join(RECIPES)} or remove the key")
    return _merge(RECIPES[name], data)
