"""How close ComfyUI's own samplers get to the official VDOT trajectory, with our ``VDOT Sigmas``.

Runs ComfyUI's deterministic k-diffusion samplers (and its UniPC) on a known velocity function with a
preset's σ (default ``vdot``: 0.99994, 0.97951, 0.94107, 0.84193, 0) the way ``SamplerCustomAdvanced``
does for a Wan (flow, CONST) model at cfg 1, and prints per sampler:

- NFE: model calls;
- vs official: max |difference| to our FlowUniPC output (the official sampler) on two velocity functions:
  the exact velocity of Gaussian data (x0 ~ N(μ, 0.5²) per element, a real probability-flow ODE) and a
  nonlinear toy field v = 0.5·x + t/1000 + 0.1·sin(3x). Latents are O(1).
- solver only: the same, against FlowUniPC fed t = σ·1000 as ComfyUI feeds it (the official sampler
  feeds the truncated int64 t, 999/979/941/841): what is left is the solver's own difference;
- linear form: with v_k = a one-hot vector per model call, the output is c_x·x_T + Σ c_k·v_k; the
  column is max |c − c_official| over those coefficients (official §2.3: x_T 1, v0..v3 at shift 16
  −0.009303, 0.018687, −0.167394, −0.841928). Only defined when NFE = steps.

ComfyUI is not a dependency: point ``--comfy`` at a ComfyUI checkout (never committed here). Only
``comfy.k_diffusion.sampling``, ``comfy.extra_samplers.uni_pc`` and ``comfy.model_sampling`` are
imported (plus ``comfy.model_management`` for the interrupt check of our own SAMPLER, with ``--cpu`` set
when there is no GPU). Two imports are stood in for, because they pull in everything else and the samplers run here
never use them: ``comfy.model_patcher`` (only the ``*_cfg_pp`` samplers' post-CFG hook reads it; that
import loads every model definition and needs torchvision) and, if it is not installed, ``torchsde``
(only the SDE samplers' Brownian tree). What ``SamplerCustomAdvanced`` adds around a sampler function is
reproduced in :func:`comfy_sample` (``comfy/samplers.py`` KSAMPLER.sample, cfg 1 = one model call).

    python benchmarks/bench_comfy_sampler_parity.py --comfy /path/to/ComfyUI
    python benchmarks/bench_comfy_sampler_parity.py --comfy /path/to/ComfyUI --preset renoise
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dataclasses  # noqa: E402

from vdot_nodes.core.sampling import SeededNoise, get_preset, preset_schedule, sample  # noqa: E402
from vdot_nodes.nodes.sampler import flow_unipc_comfy  # noqa: E402

DETERMINISTIC = ("euler", "heun", "dpm_2", "lms", "dpmpp_2m", "ipndm", "ipndm_v", "deis", "res_multistep",
                 "gradient_estimation", "uni_pc", "uni_pc_bh2")
OURS = ("VDOT FlowUniPC (SAMPLER node)", "VDOT FlowUniPC (SAMPLER node; timesteps sigma)")  # our SAMPLER through the same path
SHAPE = (16, 3, 8, 8)
DATA_STD = 0.5


def import_comfy(comfy_dir: Path):
    """ComfyUI's sampler modules from a checkout (see the module docstring for the two stand-ins)."""
    if not (comfy_dir / "comfy" / "k_diffusion" / "sampling.py").is_file():
        raise SystemExit(f"--comfy {comfy_dir}: no comfy/k_diffusion/sampling.py there (give a ComfyUI checkout)")
    sys.path.insert(0, str(comfy_dir))
    stood_in = []
    try:
        importlib.import_module("torchsde")
    except ImportError:
        sys.modules["torchsde"] = types.ModuleType("torchsde")
        stood_in.append("torchsde")
    sys.modules["comfy.model_patcher"] = types.ModuleType("comfy.model_patcher")
    stood_in.append("comfy.model_patcher")
    # Our SAMPLER polls ComfyUI's interrupt (comfy.model_management), which picks a CUDA device unless --cpu.
    importlib.import_module("comfy.cli_args").args.cpu = not torch.cuda.is_available()
    k_sampling = importlib.import_module("comfy.k_diffusion.sampling")
    uni_pc = importlib.import_module("comfy.extra_samplers.uni_pc")
    model_sampling = importlib.import_module("comfy.model_sampling")
    return k_sampling, uni_pc, model_sampling, stood_in


def wan_model_sampling(ms_module):
    """What ComfyUI builds for a Wan model: ModelSamplingDiscreteFlow + CONST (shift 8 is Wan's config)."""

    class WanModelSampling(ms_module.ModelSamplingDiscreteFlow, ms_module.CONST):
        pass

    ms = WanModelSampling()
    ms.set_parameters(shift=8.0, multiplier=1000)
    return ms


class ComfyFlowModel:
    """Stands in for ComfyUI's KSamplerX0Inpaint → CFGGuider (cfg 1) → BaseModel chain: it feeds the
    model t = model_sampling.timestep(σ) = σ·1000 and returns denoised = x − σ·v (CONST)."""

    def __init__(self, velocity, ms):
        self.velocity, self.ms, self.calls = velocity, ms, 0
        base = types.SimpleNamespace(model_sampling=ms)
        patcher = types.SimpleNamespace(get_model_object=lambda name: ms)
        self.inner_model = types.SimpleNamespace(inner_model=base, model_sampling=ms, model_patcher=patcher)

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        v = self.velocity(self.ms.calculate_input(sigma, x), self.ms.timestep(sigma).to(torch.float32))
        return self.ms.calculate_denoised(sigma, v, x)


def comfy_sample(fn, model: ComfyFlowModel, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """KSAMPLER.sample for an empty (zero) latent: noise_scaling, the sampler, inverse_noise_scaling."""
    ms = model.ms
    model.latent_image, model.noise = torch.zeros_like(noise), noise  # as KSAMPLER sets them on KSamplerX0Inpaint
    x = ms.noise_scaling(sigmas[0], noise, model.latent_image)
    out = fn(model, x, sigmas, extra_args={"model_options": {}, "seed": 0}, callback=None, disable=True)
    return ms.inverse_noise_scaling(sigmas[-1], out)


def gaussian_data_velocity(mu: torch.Tensor):
    """Exact flow velocity of data x0 ~ N(μ, s²) (per element), with the σ the model is told (t/1000)."""

    def velocity(x, t):
        sigma = (t / 1000).view(-1, *[1] * (x.ndim - 1)).to(x.dtype)
        gain = (1 - sigma) * DATA_STD**2 / ((1 - sigma) ** 2 * DATA_STD**2 + sigma**2)
        x0 = mu + gain * (x - (1 - sigma) * mu)
        return (x - x0) / sigma

    return velocity


def toy_velocity(x, t):
    return 0.5 * x + (t / 1000).view(-1, *[1] * (x.ndim - 1)) + 0.1 * torch.sin(3 * x)


def one_hot_velocity(counter: dict, n: int):
    def velocity(x, t):
        v = torch.zeros_like(x)
        if counter["k"] < n:
            v.view(x.shape[0], -1)[:, counter["k"]] = 1.0
        counter["k"] += 1
        return v

    return velocity


def linear_form(run, steps: int, x_t: torch.Tensor):
    """(c_x, [c_0 … c_{steps−1}]) of a sampler run on one-hot velocities; element ``steps`` is untouched."""
    out = run(x_t).view(-1)
    flat = x_t.view(-1)
    return float(out[steps] / flat[steps]), [float(out[k] - flat[k] * out[steps] / flat[steps]) for k in range(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfy", required=True, type=Path, help="a ComfyUI checkout (its comfy/ package is imported)")
    parser.add_argument("--preset", default="vdot")
    parser.add_argument("--samplers", default=",".join(DETERMINISTIC + OURS), help="sampler names, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    k_sampling, uni_pc, ms_module, stood_in = import_comfy(args.comfy)
    ms = wan_model_sampling(ms_module)
    preset = get_preset(args.preset)
    sched = preset_schedule(preset)
    sigmas = torch.tensor(sched.sigmas, dtype=torch.float32)  # what VDOT Sigmas outputs
    steps = sched.steps
    torch.set_default_dtype(torch.float32)

    mu = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(1000 + args.seed))
    noise = SeededNoise([args.seed]).draw(SHAPE)  # = ComfyUI RandomNoise(seed) for one video (prepare_noise)
    velocities = {"gaussian": gaussian_data_velocity(mu), "toy": toy_velocity}
    # The official sampler fed t = σ·1000 (untruncated), as ComfyUI feeds it: isolates the solver.
    fed_like_comfy = dataclasses.replace(preset, sigmas=sched.sigmas[:-1], timesteps=tuple(s * 1000 for s in sched.sigmas[:-1]))
    official = {k: sample(v, SeededNoise([args.seed]), SHAPE, preset) for k, v in velocities.items()}
    untruncated = {k: sample(v, SeededNoise([args.seed]), SHAPE, fed_like_comfy) for k, v in velocities.items()}

    counter = {"k": 0}
    probe = torch.randn(1, steps + 1, generator=torch.Generator().manual_seed(7)) + 3.0  # nonzero x_T entries

    class ProbeNoise(SeededNoise):
        def draw(self, sample_shape, device="cpu"):
            return probe.clone()

    counter["k"] = 0
    off_cx, off_c = linear_form(lambda x: sample(one_hot_velocity(counter, steps), ProbeNoise([0]), (steps + 1,),
                                                 preset), steps, probe)

    functions = {"uni_pc": uni_pc.sample_unipc, "uni_pc_bh2": uni_pc.sample_unipc_bh2,
                 "VDOT FlowUniPC (SAMPLER node)": flow_unipc_comfy,
                 "VDOT FlowUniPC (SAMPLER node; timesteps sigma)": functools.partial(flow_unipc_comfy, truncate_timesteps=False)}
    print(f"\n## ComfyUI samplers with VDOT Sigmas (preset {preset.name}: σ {', '.join(f'{s:.5f}' for s in sched.sigmas)})")
    print(f"ComfyUI at {args.comfy}; stood in for: {', '.join(stood_in)}; data ~ N(μ, {DATA_STD}²), latent {SHAPE}\n")
    print("| sampler | NFE | vs official, gaussian | vs official, toy | solver only, gaussian | solver only, toy "
          "| linear form: max abs coeff diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    gap = {k: float((untruncated[k] - official[k]).abs().max()) for k in velocities}
    print(f"| **official FlowUniPC (VDOT Sampler, preset {preset.name})** | {steps} | 0 | 0 | {gap['gaussian']:.1e} "
          f"(t truncation) | {gap['toy']:.1e} (t truncation) | 0 |")
    for name in [s.strip() for s in args.samplers.split(",") if s.strip()]:
        fn = functions.get(name) or getattr(k_sampling, f"sample_{name}", None)
        if fn is None:
            print(f"| {name} | – | not in this ComfyUI | | | | |")
            continue
        diffs, solver_only = [], []
        for key, velocity in velocities.items():
            model = ComfyFlowModel(velocity, ms)
            out = comfy_sample(fn, model, noise.clone(), sigmas.clone())
            nfe = model.calls
            diffs.append(float((out - official[key]).abs().max()))
            solver_only.append(float((out - untruncated[key]).abs().max()))
        form = "– (NFE ≠ steps)"
        if nfe == steps:
            counter["k"] = 0
            probe_model = ComfyFlowModel(one_hot_velocity(counter, steps), ms)
            cx, c = linear_form(lambda x: comfy_sample(fn, probe_model, x.clone(), sigmas.clone()), steps, probe)
            form = f"{max([abs(cx - off_cx)] + [abs(a - b) for a, b in zip(c, off_c)]):.2e}"
        print(f"| {name} | {nfe} | {diffs[0]:.2e} | {diffs[1]:.2e} | {solver_only[0]:.2e} | {solver_only[1]:.2e} "
              f"| {form} |")
    print(f"\nofficial linear form: x_T {off_cx:.6f}, v {', '.join(f'{c:.6f}' for c in off_c)}")


if __name__ == "__main__":
    main()
