"""DOLLAR's optional objectives: consistency distillation and the latent reward model."""

import pytest
import torch

from training.losses import consistency_loss, consistency_target, teacher_ode_step
from training.reward import LatentRewardModel, reward_loss, reward_model_loss, train_reward_model
from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These are hundreds of tiny steps: on a shared 2-core machine intra-op threads only add sync cost.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def first_channel_brightness(latents):
    """The synthetic 'non-differentiable' reward: mean of the latent's first channel, per sample."""
    return latents[:, 0].mean(dim=(1, 2, 3))


# ------------------------------------------------------------------------------------------------
# Consistency distillation
# ------------------------------------------------------------------------------------------------


def test_teacher_step_and_target_are_exact_for_the_true_velocity():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 16, 2, 4, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(3, 16, 2, 4, 4, generator=gen, dtype=torch.float64)
    sigma, sigma_next = torch.tensor([0.9, 0.8, 0.5]), torch.tensor([0.6, 0.0, 0.25])
    s, sn = sigma.view(-1, 1, 1, 1, 1), sigma_next.view(-1, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * eps
    v = eps - x0  # the flow-matching ODE with its true velocity is a straight line
    x_next = teacher_ode_step(x_t, v, sigma, sigma_next)
    torch.testing.assert_close(x_next, (1 - sn) * x0 + sn * eps)
    target = consistency_target(x_next, sigma_next, v)
    torch.testing.assert_close(target, x0)
    # A student that already maps x_t to that x0 has zero CD loss (both distances), up to fp64 rounding.
    assert consistency_loss(target, target).item() == 0.0
    assert consistency_loss(x0, target).item() < 1e-28
    assert consistency_loss(x0, target, huber_c=0.03).item() < 1e-14
    assert consistency_loss(x0 + 0.1, target).item() == pytest.approx(0.01)
    # sigma_next = 0: the boundary condition, the target is the teacher's ODE end point itself.
    torch.testing.assert_close(consistency_target(x_next[1:2], 0.0), x0[1:2])
    with pytest.raises(ValueError, match="target_velocity"):
        consistency_target(x_next, sigma_next)


@pytest.mark.parametrize("huber_c", [None, 0.05])
def test_consistency_gradient_matches_finite_differences(huber_c):
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(2, 3, 2, 2, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.randn(2, 3, 2, 2, 2, dtype=torch.float64, generator=gen)
    weight = torch.tensor([0.5, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: consistency_loss(s, target, huber_c=huber_c, weight=weight), (student,))
    # Analytic gradient of the squared form: 2·w·(s - t)/numel; the target gets none (stop-grad).
    target.requires_grad_(True)
    consistency_loss(student, target, weight=weight).backward()
    expected = 2 * weight.view(-1, 1, 1, 1, 1) * (student - target).detach() / student.numel()
    torch.testing.assert_close(student.grad, expected)
    assert target.grad is None


# ------------------------------------------------------------------------------------------------
# Latent reward model
# ------------------------------------------------------------------------------------------------


def random_latents(batch, gen):
    """Latents with a per-sample offset on every channel, so rewards span a range."""
    z = torch.randn(batch, 16, 2, 4, 4, generator=gen)
    return z + 1.5 * (2 * torch.rand(batch, 16, 1, 1, 1, generator=gen) - 1)


@pytest.fixture(scope="module")
def trained_reward_model():
    torch.manual_seed(0)
    model = LatentRewardModel(in_channels=16, hidden=16, mlp_hidden=32)
    gen = torch.Generator().manual_seed(0)
    losses = train_reward_model(model, lambda step: random_latents(32, gen), first_channel_brightness,
                                steps=300, lr=3e-3, progress=False)
    return model, losses


def test_reward_model_learns_a_known_reward(trained_reward_model):
    model, losses = trained_reward_model
    held_out = random_latents(256, torch.Generator().manual_seed(99))
    truth = first_channel_brightness(held_out)
    with torch.no_grad():
        mse = reward_model_loss(model, held_out, truth).item()
    assert mse < 0.02 * truth.var().item(), (mse, truth.var().item())
    assert sum(losses[-20:]) / 20 < 0.05 * sum(losses[:20]) / 20


def test_train_reward_model_decodes_reports_progress_and_cancels():
    model = LatentRewardModel(in_channels=16, hidden=8, mlp_hidden=8)
    seen, calls = [], []

    def decode(z):  # stands in for the VAE decoder: the reward is computed on what it returns
        seen.append(z.shape)
        return z[:, :1] * 2.0

    gen = torch.Generator().manual_seed(0)
    train_reward_model(model, lambda step: random_latents(4, gen), lambda frames: frames.mean(dim=(1, 2, 3, 4)),
                       steps=3, decode=decode, progress=lambda done, total: calls.append((done, total)))
    assert seen == [torch.Size([4, 16, 2, 4, 4])] * 3 and calls == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(VDOTCancelled):
        train_reward_model(model, lambda step: random_latents(4, gen), first_channel_brightness, steps=5,
                           progress=False, cancel=lambda: True)
    with pytest.raises(VDOTInputError, match="latents"):
        model(torch.zeros(1, 4, 2, 4, 4))


def test_reward_gradient_fine_tuning_raises_the_reward_of_a_tiny_generator(trained_reward_model):
    from vdot_nodes.core.pipeline import VDOTPipeline
    from vdot_nodes.core.tiny import TINY_TRANSFORMER_CONFIG, build_tiny_transformer

    reward_model, _ = trained_reward_model
    reward_model.requires_grad_(False)
    transformer = build_tiny_transformer(seed=3).train()
    pipe = VDOTPipeline(transformer, vae=None, device="cpu", offload="none")
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(1, 8, TINY_TRANSFORMER_CONFIG["text_dim"], generator=gen)
    control = torch.zeros(1, 96, 2, 4, 4)
    velocity = pipe.velocity_fn(text, control)
    t = torch.full((4,), 1000.0)

    def generate(seed):  # one step of the few-step generator from pure noise: x0 = x_1 - 1·v(x_1, 1000)
        noise = torch.randn(4, 16, 2, 4, 4, generator=torch.Generator().manual_seed(seed))
        return noise - velocity(noise, t)

    with torch.no_grad():
        before = first_channel_brightness(generate(1234)).mean().item()
    optimizer = torch.optim.Adam(transformer.parameters(), lr=1e-3)
    for step in range(25):
        loss = reward_loss(reward_model, generate(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in reward_model.parameters())  # the reward model stays frozen
    with torch.no_grad():
        after = first_channel_brightness(generate(1234)).mean().item()
    print(f"first-channel reward of fresh samples: {before:.3f} -> {after:.3f}")
    assert after > before + 0.5, (before, after)
