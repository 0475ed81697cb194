"""The VDOT 4-step sampler and the teacher samplers, against hand-computed references."""

import math

import pytest
import torch

from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError
from vdot_nodes.core.sampling import (
    SeededNoise,
    cfg_velocity,
    few_step_sigmas,
    sample_teacher,
    sample_vdot,
    shift_sigma,
    teacher_sigmas,
    vdot_timesteps_for,
)

SHAPE = (16, 2, 4, 4)


def linear_velocity(x_t, timestep):
    """A velocity field with a known form: v = 0.5·x_t + t/1000 (elementwise)."""
    return 0.5 * x_t + (timestep / 1000).view(-1, 1, 1, 1, 1)


class Recorder:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, x_t, timestep):
        self.calls.append((x_t.clone(), timestep.clone()))
        return self.fn(x_t, timestep)


def test_shifted_sigmas_match_design_values():
    assert few_step_sigmas() == pytest.approx([1.0, 0.9375, 0.8333333, 0.625], abs=1e-6)
    assert shift_sigma(0.5, 1.0) == 0.5
    assert vdot_timesteps_for(4) == (1000, 750, 500, 250)
    assert vdot_timesteps_for(2) == (1000, 500)


def test_four_step_sampler_makes_exactly_four_calls_and_matches_hand_computation():
    recorder = Recorder(linear_velocity)
    out = sample_vdot(recorder, SeededNoise([7]), SHAPE)
    assert len(recorder.calls) == 4
    sigmas = [1.0, 0.9375, 5 / 6, 0.625]
    # The model sees the warped timestep σ_k·1000, one per sample.
    assert [c[1].tolist() for c in recorder.calls] == [[pytest.approx(s * 1000)] for s in sigmas]

    # Hand-computed reference: replay the same noise stream.
    gen = torch.Generator("cpu").manual_seed(7)
    x = torch.randn(SHAPE, generator=gen).unsqueeze(0)
    assert torch.equal(recorder.calls[0][0], x)
    for k, s in enumerate(sigmas):
        v = 0.5 * x + s
        x0 = x - s * v
        if k < 3:
            x = (1 - sigmas[k + 1]) * x0 + sigmas[k + 1] * torch.randn(SHAPE, generator=gen).unsqueeze(0)
            assert torch.allclose(recorder.calls[k + 1][0], x, atol=1e-6)
    assert torch.allclose(out, x0, atol=1e-6)


def test_same_seed_same_result_and_batch_independence():
    a = sample_vdot(linear_velocity, SeededNoise([3, 4]), SHAPE)
    b = sample_vdot(linear_velocity, SeededNoise([3, 4]), SHAPE)
    c = sample_vdot(linear_velocity, SeededNoise([4]), SHAPE)
    assert torch.equal(a, b)
    assert torch.equal(a[1:], c)  # sample 2 of a batch equals the same seed alone
    assert not torch.allclose(a[0], a[1])


def test_cfg_off_by_default_costs_one_call_per_step_and_on_costs_two():
    cond, uncond = Recorder(linear_velocity), Recorder(lambda x, t: torch.zeros_like(x))
    sample_vdot(cfg_velocity(cond, uncond, 1.0), SeededNoise([0]), SHAPE)
    assert (len(cond.calls), len(uncond.calls)) == (4, 0)
    cond.calls.clear()
    guided = cfg_velocity(cond, uncond, 3.0)
    x, t = torch.randn(1, *SHAPE), torch.tensor([500.0])
    assert torch.allclose(guided(x, t), 3.0 * linear_velocity(x, t))
    sample_vdot(guided, SeededNoise([0]), SHAPE)
    assert (len(cond.calls), len(uncond.calls)) == (5, 5)  # 1 direct call + 4 steps each


def test_step_list_and_shift_are_configurable():
    recorder = Recorder(linear_velocity)
    sample_vdot(recorder, SeededNoise([0]), SHAPE, timesteps=(1000, 500), shift=1.0)
    assert [c[1].item() for c in recorder.calls] == [1000.0, 500.0]


def test_denoise_starts_from_noised_input_latents():
    init = torch.randn(1, *SHAPE)
    recorder = Recorder(linear_velocity)
    sample_vdot(recorder, SeededNoise([1]), SHAPE, init_latents=init, denoise=0.5, shift=1.0)
    first_x, first_t = recorder.calls[0]
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)).unsqueeze(0)
    assert first_t.item() == pytest.approx(500.0)
    assert torch.allclose(first_x, 0.5 * init + 0.5 * noise, atol=1e-6)
    with pytest.raises(VDOTInputError, match="denoise"):
        sample_vdot(linear_velocity, SeededNoise([1]), SHAPE, denoise=0.5)


def test_bad_step_lists_are_rejected_clearly():
    with pytest.raises(VDOTInputError, match="strictly decreasing"):
        few_step_sigmas([500, 750])
    with pytest.raises(VDOTInputError, match="outside"):
        few_step_sigmas([1500])
    with pytest.raises(VDOTInputError, match="shift"):
        few_step_sigmas([1000], shift=0)


def test_cancel_between_steps_and_progress_reports_each_step():
    seen = []

    def cancel():
        return len(seen) >= 2

    with pytest.raises(VDOTCancelled):
        sample_vdot(linear_velocity, SeededNoise([0]), SHAPE, progress=lambda i, n: seen.append((i, n)), cancel=cancel)
    assert seen == [(1, 4), (2, 4)]


def test_euler_teacher_matches_closed_form_on_a_linear_ode():
    # v = c (constant) integrates exactly: x(0) = x(1) − c, whatever the schedule.
    c = 0.25
    out = sample_teacher(lambda x, t: torch.full_like(x, c), SeededNoise([5]), SHAPE, num_steps=50, shift=5.0)
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5)).unsqueeze(0)
    assert torch.allclose(out, start - c, atol=1e-5)
    sig = teacher_sigmas(50, 5.0)
    assert sig[0] == 1.0 and sig[-1] == 0.0 and len(sig) == 51


def test_teachers_recover_the_data_point_of_a_delta_distribution():
    # If all data sits at x0 = m, the exact velocity is v = (x_t − m)/σ; every sampler must land on m.
    m = 0.3

    def exact_velocity(x, t):
        sigma = (t / 1000).clamp_min(1e-4).view(-1, 1, 1, 1, 1)
        return (x - m) / sigma

    for solver in ("euler", "unipc"):
        recorder = Recorder(exact_velocity)
        out = sample_teacher(recorder, SeededNoise([2]), SHAPE, num_steps=20, solver=solver)
        assert len(recorder.calls) == 20
        # UniPC hands the model diffusers' rounded timesteps, so σ seen by the model is off by < 1e-3.
        assert torch.allclose(out, torch.full_like(out, m), atol=5e-3 if solver == "unipc" else 1e-5), solver
    out = sample_vdot(exact_velocity, SeededNoise([2]), SHAPE)
    assert torch.allclose(out, torch.full_like(out, m), atol=1e-5)
    with pytest.raises(VDOTInputError, match="solver"):
        sample_teacher(exact_velocity, SeededNoise([2]), SHAPE, solver="heun")


def test_noise_is_device_independent_float32():
    noise = SeededNoise([11]).draw((3, 3))
    assert noise.dtype == torch.float32 and noise.shape == (1, 3, 3)
    assert math.isclose(float(noise.sum()), float(torch.randn(3, 3, generator=torch.Generator().manual_seed(11)).sum()))
