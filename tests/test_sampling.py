"""Sampler presets and the one entry point, against pinned official numbers and hand-computed references.

Official numbers (VDOT_REFERENCE.md §2.2-2.3, §3; re-derived by running Wan2.1's
``wan/utils/fm_solvers_unipc.py`` and hhhh1138/VDOT's training rollout) are pinned here as data.
"""

import math

import numpy as np
import pytest
import torch

from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError
from vdot_nodes.core.sampling import (
    DEFAULT_PRESET,
    MAX_STEPS,
    SAMPLER_PRESETS,
    SamplerPreset,
    SeededNoise,
    cfg_timestep_range,
    cfg_velocity,
    check_cfg_interval,
    few_step_sigmas,
    guided_steps,
    get_preset,
    preset_schedule,
    preset_sigmas,
    sample,
    shift_sigma,
    unipc_order,
)

SHAPE = (16, 2, 4, 4)

# §2.2: FlowUniPC set_timesteps(4, shift=s): int64 timesteps and float32 σ (final 0 appended).
OFFICIAL_SCHEDULES = {
    16: ([999, 979, 941, 841], [0.99993742, 0.97951180, 0.94106567, 0.84192783, 0]),
    8: ([999, 959, 888, 727], [0.99987489, 0.95984626, 0.88869119, 0.72700810, 0]),
    5: ([999, 937, 833, 624], [0.99979985, 0.93726546, 0.83305538, 0.62468737, 0]),
}
# §2.3: the 4-step output as a linear form: rows x1, x2, x3, output; coefficients on v0..v3 (x_T's is 1).
OFFICIAL_LINEAR_FORM = {
    16: [[-0.020426, 0, 0, 0], [-0.007187, -0.051685, 0, 0], [-0.009303, 0.018687, -0.167394, 0],
         [-0.009303, 0.018687, -0.167394, -0.841928]],
    8: [[-0.040029, 0, 0, 0], [-0.015527, -0.095657, 0, 0], [-0.017665, 0.017799, -0.273001, 0],
        [-0.017665, 0.017799, -0.273001, -0.727008]],
    5: [[-0.062534, 0, 0, 0], [-0.026651, -0.140094, 0, 0], [-0.027461, 0.004177, -0.351828, 0],
        [-0.027461, 0.004177, -0.351828, -0.624687]],
}


def linear_velocity(x_t, timestep):
    """A velocity field with a known form: v = 0.5·x_t + t/1000 (elementwise)."""
    return 0.5 * x_t + (timestep / 1000).view(-1, 1, 1, 1, 1)


class Recorder:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, x_t, timestep):
        self.calls.append((x_t.clone(), timestep.clone()))
        return self.fn(x_t, timestep)


class CountingNoise(SeededNoise):
    def __init__(self, seeds):
        super().__init__(seeds)
        self.draws = 0

    def draw(self, sample_shape, device="cpu"):
        self.draws += 1
        return super().draw(sample_shape, device)


def start_noise(seed, shape=SHAPE):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).unsqueeze(0)


# ------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("shift", [16, 8, 5])
def test_unipc_timesteps_and_sigmas_match_the_official_scheduler(shift):
    timesteps, sigmas = OFFICIAL_SCHEDULES[shift]
    sched = preset_schedule(get_preset("vdot", shift=shift))
    assert sched.timesteps == tuple(float(t) for t in timesteps)
    assert sched.sigmas == pytest.approx(sigmas, abs=1e-6)
    assert sched.x0_sigmas == sched.sigmas[:-1]
    assert preset_sigmas(get_preset("vdot", shift=shift)).tolist() == pytest.approx(sigmas, abs=1e-6)


def test_default_preset_is_the_official_four_step_sampler():
    assert DEFAULT_PRESET == "vdot"
    vdot = SAMPLER_PRESETS["vdot"]
    assert (vdot.solver, vdot.steps, vdot.shift) == ("unipc", 4, 16.0)
    assert preset_sigmas("vdot").dtype == torch.float32 and preset_sigmas("vdot")[-1] == 0
    for preset in SAMPLER_PRESETS.values():  # every row says which checkpoint it suits
        assert preset.description and preset.solver in ("unipc", "renoise", "euler")
        assert preset_schedule(preset).steps == preset.steps


def test_renoise_preset_keeps_the_earlier_default_schedule():
    sched = preset_schedule(get_preset("renoise"))
    assert sched.sigmas == pytest.approx([1.0, 0.9375, 0.8333333, 0.625, 0.0], abs=1e-6)
    assert sched.timesteps == pytest.approx([1000.0, 937.5, 833.33333, 625.0], abs=1e-3)
    assert few_step_sigmas([1000, 750, 500, 250], 5.0) == pytest.approx([1.0, 0.9375, 0.8333333, 0.625], abs=1e-6)
    assert shift_sigma(0.5, 1.0) == 0.5
    explicit = preset_schedule(get_preset("renoise", shift=1.0, unshifted_timesteps=[1000, 500]))
    assert explicit.timesteps == (1000.0, 500.0) and explicit.sigmas == (1.0, 0.5, 0.0)


def test_official_rollout_preset_reproduces_the_training_schedule():
    """§3: t fed = [1000, 960, 888.8889, 727.2728], x0 with σ = t/1000, re-noise σ from the shift-16
    1000-step table at the warped steps 979/941/841 (second match) = .97983074/.94172704/.84121603."""
    preset = SAMPLER_PRESETS["rollout_official"]
    sched = preset_schedule(preset)
    assert sched.timesteps == pytest.approx([1000.0, 960.0, 888.8889, 727.2728], abs=1e-4)
    assert sched.x0_sigmas == pytest.approx([1.0, 0.96, 0.8888889, 0.7272728], abs=1e-7)
    assert sched.sigmas == pytest.approx([1.0, 0.97983074, 0.94172704, 0.84121603, 0.0], abs=1e-7)
    # The hard-coded t are Self-Forcing's FlowMatch warp of [1000, 750, 500, 250] at shift 8.
    assert sched.timesteps == pytest.approx([1000 * shift_sigma(u, 8.0) for u in (1, .75, .5, .25)], abs=1e-4)
    consistent = preset_schedule(SAMPLER_PRESETS["rollout"])
    vdot = preset_schedule(SAMPLER_PRESETS["vdot"])
    assert consistent == vdot  # the consistent rollout sees exactly what inference sees


def test_unipc_orders_are_1_2_2_1():
    assert [unipc_order(k, 4) for k in range(4)] == [1, 2, 2, 1]
    assert [unipc_order(k, 1) for k in range(1)] == [1]
    assert [unipc_order(k, 6) for k in range(6)] == [1, 2, 2, 2, 2, 1]


# ------------------------------------------------------------------------------------------- the official sampler
@pytest.mark.parametrize("shift", [16, 8, 5])
def test_unipc_output_matches_the_official_linear_form(shift):
    """v_k = one-hot at element k (independent of x): then x_k = x_T + Σ_j c_kj·v_j, so element j of every
    model input and of the output reads coefficient c_kj directly; element 4 is never touched (x_T's is 1)."""
    shape = (5,)

    def one_hot_velocity(x_t, timestep):
        v = torch.zeros_like(x_t)
        v[:, len(calls)] = 1.0
        calls.append(x_t.clone())
        return v

    calls: list[torch.Tensor] = []
    noise = CountingNoise([11])
    out = sample(one_hot_velocity, noise, shape, get_preset("vdot", shift=shift))
    x_T = start_noise(11, shape)
    assert noise.draws == 1 and len(calls) == 4  # deterministic: no noise after the first; 4 NFE
    rows = [(x - x_T)[0, :4].tolist() for x in calls[1:]] + [(out - x_T)[0, :4].tolist()]
    assert np.allclose(rows, OFFICIAL_LINEAR_FORM[shift], atol=1e-6, rtol=0), rows
    assert torch.allclose(calls[0], x_T) and abs(float(out[0, 4] - x_T[0, 4])) < 1e-6


def test_unipc_timesteps_seen_by_the_model_and_final_x0():
    recorder = Recorder(linear_velocity)
    out = sample(recorder, SeededNoise([7]), SHAPE, "vdot")
    assert [c[1].tolist() for c in recorder.calls] == [[999.0], [979.0], [941.0], [841.0]]
    # the output is the last step's x0 = x_3 − σ_3·v_3
    x3, t3 = recorder.calls[-1]
    assert torch.allclose(out, x3 - 0.84192783 * linear_velocity(x3, t3), atol=1e-6)


def test_unipc_recovers_the_data_point_of_a_delta_distribution():
    m = 0.3

    def exact_velocity(x, t):  # all data at x0 = m: v = (x − m)/σ, with the model's σ = t/1000
        return (x - m) / (t / 1000).view(-1, 1, 1, 1, 1)

    for preset in ("vdot", "teacher_unipc", "teacher_euler", "renoise"):
        out = sample(exact_velocity, SeededNoise([2]), SHAPE, get_preset(preset, steps=12))
        # vdot feeds truncated t (999 for σ .99994), so σ seen by the model is off by < 1e-3
        assert torch.allclose(out, torch.full_like(out, m), atol=2e-3), preset


def test_unipc_matches_diffusers_unipc_on_wans_grid():
    """An independent implementation: diffusers' UniPCMultistepScheduler (flow prediction) given Wan's
    unshifted grid explicitly (§2.4: that restores equality with Wan's scheduler)."""
    from diffusers import UniPCMultistepScheduler

    for steps, shift in ((4, 16.0), (4, 5.0), (20, 8.0)):
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
        scheduler.set_timesteps(sigmas=np.linspace(0.999, 0, steps + 1)[:-1])
        x = start_noise(3)

        def velocity(x_t, t):
            return 0.5 * x_t + (t / 1000).view(-1, 1, 1, 1, 1) + 0.1 * torch.sin(3 * x_t)

        for t in scheduler.timesteps:
            x = scheduler.step(velocity(x, torch.full((1,), float(t))), t, x, return_dict=False)[0]
        ours = sample(velocity, SeededNoise([3]), SHAPE, get_preset("vdot", steps=steps, shift=shift))
        assert torch.allclose(ours, x, atol=5e-6), (steps, shift, float((ours - x).abs().max()))


# ------------------------------------------------------------------------------------------- re-noising presets
def test_renoise_makes_four_calls_and_matches_hand_computation():
    recorder = Recorder(linear_velocity)
    out = sample(recorder, SeededNoise([7]), SHAPE, "renoise")
    assert len(recorder.calls) == 4
    sigmas = [1.0, 0.9375, 5 / 6, 0.625]
    assert [c[1].tolist() for c in recorder.calls] == [[pytest.approx(s * 1000)] for s in sigmas]
    gen = torch.Generator("cpu").manual_seed(7)
    x = torch.randn(SHAPE, generator=gen).unsqueeze(0)
    assert torch.equal(recorder.calls[0][0], x)
    for k, s in enumerate(sigmas):
        x0 = x - s * (0.5 * x + s)
        if k < 3:
            x = (1 - sigmas[k + 1]) * x0 + sigmas[k + 1] * torch.randn(SHAPE, generator=gen).unsqueeze(0)
            assert torch.allclose(recorder.calls[k + 1][0], x, atol=1e-6)
    assert torch.allclose(out, x0, atol=1e-6)


def test_official_rollout_forms_x0_with_t_over_1000_and_renoises_to_the_table_sigma():
    recorder = Recorder(linear_velocity)
    sample(recorder, SeededNoise([5]), SHAPE, "rollout_official", exit_step=2)
    gen = torch.Generator("cpu").manual_seed(5)
    x = torch.randn(SHAPE, generator=gen).unsqueeze(0)
    for k, (t, renoise) in enumerate(((1000.0, 0.97983074), (960.0, 0.94172704))):
        assert recorder.calls[k][1].item() == pytest.approx(t)
        x0 = x - (t / 1000) * (0.5 * x + t / 1000)
        x = (1 - renoise) * x0 + renoise * torch.randn(SHAPE, generator=gen).unsqueeze(0)
        assert torch.allclose(recorder.calls[k + 1][0], x, atol=1e-6)
    assert recorder.calls[2][1].item() == pytest.approx(888.8889, abs=1e-4)


@pytest.mark.parametrize("preset", ["rollout", "rollout_official", "renoise", "vdot"])
def test_exit_step_returns_that_steps_x0_with_grad_through_one_call(preset):
    w = torch.tensor(0.5, requires_grad=True)
    grad_modes, inputs = [], []

    def velocity(x_t, t):
        grad_modes.append(torch.is_grad_enabled())
        inputs.append((x_t.detach(), t))
        return w * x_t + (t / 1000).view(-1, 1, 1, 1, 1)

    out = sample(velocity, SeededNoise([4]), (16, 2, 2, 2), preset, exit_step=2)
    assert grad_modes == [False, False, True]
    sched = preset_schedule(get_preset(preset))
    x2, t2 = inputs[2]
    torch.testing.assert_close(out.detach(), x2 - sched.x0_sigmas[2] * (0.5 * x2 + t2 / 1000), rtol=0, atol=1e-6)
    out.sum().backward()  # x0 = x_t − σ·(w·x_t + t): only the exit step's call depends on w
    torch.testing.assert_close(w.grad, -sched.x0_sigmas[2] * x2.sum(), rtol=1e-5, atol=1e-5)
    with pytest.raises(VDOTInputError, match="exit_step"):
        sample(velocity, SeededNoise([4]), (16, 2, 2, 2), preset, exit_step=4)


def test_exit_at_the_last_step_is_the_full_unipc_output():
    full = sample(linear_velocity, SeededNoise([9]), SHAPE, "vdot")
    assert torch.equal(sample(linear_velocity, SeededNoise([9]), SHAPE, "vdot", exit_step=3), full)


# ------------------------------------------------------------------------------------------- denoise, seeds, cfg
@pytest.mark.parametrize("preset", ["vdot", "renoise"])
def test_denoise_starts_from_noised_input_latents(preset):
    init = torch.randn(1, *SHAPE)
    recorder = Recorder(linear_velocity)
    sample(recorder, SeededNoise([1]), SHAPE, get_preset(preset, shift=1.0), init_latents=init, denoise=0.5)
    sched = preset_schedule(get_preset(preset, shift=1.0), denoise=0.5)
    expected_start = 0.4995 if preset == "vdot" else 0.5  # the unshifted grid scaled: 0.999·0.5 or 1·0.5
    assert sched.sigmas[0] == pytest.approx(expected_start, abs=1e-6) and len(recorder.calls) == 4
    first_x, first_t = recorder.calls[0]
    assert torch.allclose(first_x, (1 - sched.sigmas[0]) * init + sched.sigmas[0] * start_noise(1), atol=1e-6)
    assert first_t.item() == pytest.approx(sched.timesteps[0])
    with pytest.raises(VDOTInputError, match="denoise"):
        sample(linear_velocity, SeededNoise([1]), SHAPE, preset, denoise=0.5)
    with pytest.raises(VDOTInputError, match="fixed schedule"):
        sample(linear_velocity, SeededNoise([1]), SHAPE, "rollout_official", init_latents=init, denoise=0.5)


def test_same_seed_same_result_and_batch_independence():
    for preset in ("vdot", "renoise"):
        a = sample(linear_velocity, SeededNoise([3, 4]), SHAPE, preset)
        b = sample(linear_velocity, SeededNoise([3, 4]), SHAPE, preset)
        c = sample(linear_velocity, SeededNoise([4]), SHAPE, preset)
        assert torch.equal(a, b)
        assert torch.allclose(a[1:], c, atol=1e-6)  # sample 2 of a batch equals the same seed alone
        assert not torch.allclose(a[0], a[1])


def test_cfg_off_by_default_costs_one_call_per_step_and_on_costs_two():
    cond, uncond = Recorder(linear_velocity), Recorder(lambda x, t: torch.zeros_like(x))
    sample(cfg_velocity(cond, uncond, 1.0), SeededNoise([0]), SHAPE)
    assert (len(cond.calls), len(uncond.calls)) == (4, 0)
    cond.calls.clear()
    guided = cfg_velocity(cond, uncond, 3.0)
    x, t = torch.randn(1, *SHAPE), torch.tensor([500.0])
    assert torch.allclose(guided(x, t), 3.0 * linear_velocity(x, t))
    sample(guided, SeededNoise([0]), SHAPE, "teacher_unipc")
    assert (len(cond.calls), len(uncond.calls)) == (51, 51)  # 1 direct call + 50 steps each


def test_guidance_interval_maps_comfyui_percents_through_the_shift():
    """cfg_start/cfg_end are ComfyUI's start/end percent: σ(p) = shift(1 − p), compared with the timestep."""
    assert cfg_timestep_range(0.0, 1.0, 16.0) is None  # every step: plain CFG, nothing to compare
    lo, hi = cfg_timestep_range(0.0, 0.8, 5.0)
    assert hi == 1000.0 and lo == pytest.approx(1000 * 5 * 0.2 / (1 + 4 * 0.2))  # 555.56
    lo, hi = cfg_timestep_range(0.25, 1.0, 16.0)
    assert lo == 0.0 and hi == pytest.approx(1000 * 16 * 0.75 / (1 + 15 * 0.75))
    # vdot (t 999/979/941/841 at percents ≈ 0, .25, .5, .75): the first half guides the first two steps
    # (941 is truncated from σ 0.94107, below shift(0.5) = 0.94118: percent 0.5005 is past 0.5).
    vdot = SAMPLER_PRESETS["vdot"]
    assert [guided_steps(vdot, 0.0, end) for end in (1.0, 0.75, 0.5, 0.26, 0.25, 0.01)] == [4, 3, 2, 2, 1, 1]
    assert guided_steps(vdot, 0.5, 1.0) == 2
    # Steps are placed by σ, not by the truncated timestep: t 999 (σ 0.99994, percent 0.001) is inside
    # cfg_end 0.01 although 999 < 1000·σ(0.01) = 999.4; the range given to the sampler is its own t.
    assert cfg_timestep_range(0.0, 0.01, 16.0, preset_schedule(vdot)) == (999.0, 999.0)
    assert cfg_timestep_range(0.3, 0.4, 16.0, preset_schedule(vdot)) == (math.inf, -math.inf)  # no step
    # the Euler teacher (50 uniform steps, shift 5): cfg_end 5/6 stops at σ 0.5, the t ≥ 500 interval
    # measured on the toy teacher (42 of 50 steps guided, 92 model calls).
    euler = SAMPLER_PRESETS["teacher_euler"]
    assert guided_steps(euler, 0.0, 5 / 6) == 42 and guided_steps(euler, 0.0, 0.8) == 41
    assert guided_steps(euler) == 50


def test_guidance_interval_runs_the_unconditional_model_only_inside_it():
    cond, uncond = Recorder(linear_velocity), Recorder(lambda x, t: torch.zeros_like(x))
    euler = get_preset("teacher_euler", steps=10)
    timestep_range = cfg_timestep_range(0.0, 0.55, euler.shift, preset_schedule(euler))
    out = sample(cfg_velocity(cond, uncond, 3.0, timestep_range), SeededNoise([0]), SHAPE, euler)
    assert (len(cond.calls), len(uncond.calls)) == (10, guided_steps(euler, 0.0, 0.55)) == (10, 6)
    assert all(float(t[0]) >= timestep_range[0] for _, t in uncond.calls)
    # the same walk by hand: guided velocity (3·v with a zero unconditional) on the first six steps only
    sched = preset_schedule(euler)
    x = start_noise(0)
    for k, t in enumerate(sched.timesteps):
        v = linear_velocity(x, torch.tensor([t], dtype=torch.float32))
        x = x + (sched.sigmas[k + 1] - sched.sigmas[k]) * (3.0 * v if k < 6 else v)
    assert torch.allclose(out, x, atol=1e-5)
    full = sample(cfg_velocity(Recorder(linear_velocity), uncond, 3.0), SeededNoise([0]), SHAPE, euler)
    assert not torch.allclose(out, full, atol=1e-3)


def test_guidance_interval_guides_each_sample_of_a_batch_by_its_own_timestep():
    """Training evaluates a batch at different timesteps: only the samples inside are guided."""
    uncond = lambda x, t: torch.zeros_like(x)  # noqa: E731
    guided = cfg_velocity(linear_velocity, uncond, 2.0, (500.0, 1000.0))
    x, t = torch.randn(3, *SHAPE), torch.tensor([900.0, 200.0, 500.0])
    expected = linear_velocity(x, t) * torch.tensor([2.0, 1.0, 2.0]).view(-1, 1, 1, 1, 1)
    assert torch.allclose(guided(x, t), expected)


def test_guidance_interval_errors_are_clear():
    vdot = SAMPLER_PRESETS["vdot"]
    with pytest.raises(VDOTInputError, match=r"cfg_end: 0.3 is not after cfg_start 0.5"):
        check_cfg_interval(vdot, 3.0, 0.5, 0.3)
    for bad in (math.nan, -0.1, 1.5, "0.5", True):
        with pytest.raises(VDOTInputError, match=r"cfg_start: .* is not a number in \[0, 1\]"):
            check_cfg_interval(vdot, 3.0, bad, 1.0)
    # guidance asked for but on no step: refused, naming where the steps are
    with pytest.raises(VDOTInputError, match=r"cfg_start: the guidance interval 0.3..0.4 holds none of the 4 steps "
                                             r"\(they sit at 0.00, 0.25, 0.50, 0.75\)"):
        check_cfg_interval(vdot, 3.0, 0.3, 0.4)
    assert check_cfg_interval(vdot, 1.0, 0.3, 0.4) == 0  # cfg 1 guides nothing anyway
    assert check_cfg_interval(vdot, 3.0, 0.0, 0.3) == 2


def test_euler_teacher_matches_closed_form_on_a_linear_ode():
    c = 0.25  # v = c integrates exactly: x(0) = x(1) − c, whatever the schedule
    out = sample(lambda x, t: torch.full_like(x, c), SeededNoise([5]), SHAPE, "teacher_euler")
    assert torch.allclose(out, start_noise(5) - c, atol=1e-5)
    sig = preset_schedule(SAMPLER_PRESETS["teacher_euler"]).sigmas
    assert sig[0] == 1.0 and sig[-1] == 0.0 and len(sig) == 51


# ------------------------------------------------------------------------------------------- validation
def test_overrides_are_validated_with_clear_errors():
    assert get_preset("vdot", steps=8, shift=8.0).steps == 8
    assert get_preset("vdot").steps == 4 and SAMPLER_PRESETS["vdot"].steps == 4  # the table is not mutated
    for kwargs, match in (({"steps": 0}, "steps"), ({"steps": MAX_STEPS + 1}, "steps"), ({"steps": 2.5}, "steps"), ({"steps": math.nan}, "steps"), ({"steps": "4"}, "steps"),
                          ({"shift": 0.0}, "shift"), ({"shift": math.inf}, "shift"), ({"shift": math.nan}, "shift"), ({"shift": "5"}, "shift")):
        with pytest.raises(VDOTInputError, match=match) as err:
            get_preset("vdot", **kwargs)
        assert "'vdot'" in str(err.value)
    with pytest.raises(VDOTInputError, match="unknown sampler preset 'fast'"):
        get_preset("fast")
    with pytest.raises(VDOTInputError, match="fixed schedule"):
        get_preset("rollout_official", steps=3)
    assert get_preset("rollout_official", steps=4, shift=16.0) == SAMPLER_PRESETS["rollout_official"]
    with pytest.raises(VDOTInputError, match="timesteps"):
        get_preset("vdot", unshifted_timesteps=[1000, 500])
    with pytest.raises(VDOTInputError, match="strictly decreasing"):
        few_step_sigmas([500, 750], 5.0)
    with pytest.raises(VDOTInputError, match="outside"):
        few_step_sigmas([1500], 5.0)
    with pytest.raises(VDOTInputError, match="solver"):
        preset_schedule(SamplerPreset("x", "heun", 4, 5.0))


def test_cancel_between_steps_and_progress_reports_each_step():
    seen = []
    with pytest.raises(VDOTCancelled):
        sample(linear_velocity, SeededNoise([0]), SHAPE, progress=lambda i, n: seen.append((i, n)),
               cancel=lambda: len(seen) >= 2)
    assert seen == [(1, 4), (2, 4)]


def test_noise_is_device_independent_float32():
    noise = SeededNoise([11]).draw((3, 3))
    assert noise.dtype == torch.float32 and noise.shape == (1, 3, 3)
    assert math.isclose(float(noise.sum()), float(torch.randn(3, 3, generator=torch.Generator().manual_seed(11)).sum()))
