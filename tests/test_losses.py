"""Tests for training.losses: DMD, OTD / Sinkhorn (POT as oracle), critic and GAN losses."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    approx_r1_penalty,
    critic_denoising_loss,
    dmd_gradient,
    dmd_loss,
    entropic_ot_value,
    flow_matching_noise,
    gan_d_loss,
    gan_g_loss,
    gather_cloud,
    ot_cost_matrix,
    otd_loss,
    otd_targets,
    sinkhorn_log,
    to_point_cloud,
    from_point_cloud,
)

try:  # POT is the oracle of the tests marked needs_pot only; the others test without it
    import ot
except ImportError:
    ot = None
needs_pot = pytest.mark.skipif(ot is None, reason="POT (pip install pot, in the [test] extra) is this test's oracle")

f64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _video(b=3, c=4, f=5, h=3, w=2, seed=0, dtype=f64):
    return torch.randn(b, c, f, h, w, generator=_gen(seed), dtype=dtype)


# --------------------------------------------------------------------------- DMD


def test_dmd_gradient_matches_autograd_exactly():
    x = _video(seed=0).requires_grad_(True)
    fake, real = _video(seed=1), _video(seed=2)
    loss, logs = dmd_loss(x, fake, real)
    loss.backward()
    g = dmd_gradient(x, fake, real)
    assert torch.allclose(x.grad, g / x.numel(), rtol=1e-12, atol=0)
    # the normaliser is per sample: mean |x̂0 − r| over all non-batch dims
    norm = (x.detach() - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    assert torch.allclose(g, (fake - real) / norm, rtol=1e-14)
    assert torch.allclose(logs["dmd_grad_norm"], g.norm())
    # the loss value itself: ½·mean(g²)
    assert torch.allclose(loss, 0.5 * g.square().mean())


def test_dmd_loss_computes_in_high_precision_from_bf16_inputs():
    x = _video(dtype=torch.bfloat16).requires_grad_(True)
    loss, _ = dmd_loss(x, _video(seed=1, dtype=torch.bfloat16), _video(seed=2, dtype=torch.bfloat16))
    assert loss.dtype == f64
    loss.backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()
    with pytest.raises(ValueError):
        dmd_loss(x, x, x, dtype=torch.bfloat16)


def test_dmd_normaliser_is_eps_guarded():
    x = _video().requires_grad_(True)
    loss, _ = dmd_loss(x, x.detach().clone(), x.detach().clone())  # x̂0 == r == f
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------- Sinkhorn vs POT


def _clouds(n, m, d, seed, batch=None):
    g = _gen(seed)
    shape_f = (n, d) if batch is None else (batch, n, d)
    shape_r = (m, d) if batch is None else (batch, m, d)
    return torch.randn(shape_f, generator=g, dtype=f64), torch.randn(shape_r, generator=g, dtype=f64) + 0.5


@needs_pot
@pytest.mark.parametrize("n,m,eps", [(7, 7, 0.1), (6, 9, 0.05), (12, 5, 0.5)])
def test_sinkhorn_matches_pot(n, m, eps):
    x, y = _clouds(n, m, 4, seed=n + m)
    C = ot_cost_matrix(x, y)
    # cost definition: ‖x_i − y_j‖²/(2d)
    assert torch.allclose(C, torch.cdist(x, y).square() / 8, atol=1e-12)
    res = sinkhorn_log(C, eps, n_iters=5000, tol=1e-12)
    assert res.converged and res.plan.dtype == f64
    a, b = torch.full((n,), 1 / n, dtype=f64), torch.full((m,), 1 / m, dtype=f64)
    P_pot = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", numItermax=5000, stopThr=1e-12)
    assert torch.allclose(res.plan, P_pot, atol=1e-6, rtol=0)
    # marginals
    assert torch.allclose(res.plan.sum(1), a, atol=1e-9)
    assert torch.allclose(res.plan.sum(0), b, atol=1e-12)
    # value (POT's ot.solve: ⟨M,P⟩ + reg·KL(P‖abᵀ))
    sol = ot.solve(C, a, b, reg=eps, max_iter=5000, tol=1e-12)
    assert torch.allclose(sol.plan, res.plan, atol=1e-6, rtol=0)
    assert abs(float(entropic_ot_value(C, res.plan, eps)) - float(sol.value)) < 1e-6
    # the plan's dual potentials reproduce it
    P_dual = torch.exp((res.f[:, None] + res.g[None, :] - C) / eps)
    assert torch.allclose(P_dual, res.plan, atol=1e-14)


@needs_pot
def test_sinkhorn_batched_matches_pot_per_problem_and_custom_marginals():
    x, y = _clouds(6, 8, 3, seed=3, batch=4)
    C = ot_cost_matrix(x, y)
    assert C.shape == (4, 6, 8)
    res = sinkhorn_log(C, 0.1, n_iters=5000, tol=1e-12)
    vals = entropic_ot_value(C, res.plan, 0.1)
    assert vals.shape == (4,)
    for k in range(4):
        sol = ot.solve(C[k], reg=0.1, max_iter=5000, tol=1e-12)
        assert torch.allclose(res.plan[k], sol.plan, atol=1e-6, rtol=0)
        assert abs(float(vals[k]) - float(sol.value)) < 1e-6
    # non-uniform marginals
    a = torch.rand(6, generator=_gen(1), dtype=f64) + 0.1
    b = torch.rand(8, generator=_gen(2), dtype=f64) + 0.1
    a, b = a / a.sum(), b / b.sum()
    r = sinkhorn_log(C[0], 0.2, a, b, n_iters=5000, tol=1e-12)
    P = ot.sinkhorn(a, b, C[0], 0.2, method="sinkhorn_log", numItermax=5000, stopThr=1e-12)
    assert torch.allclose(r.plan, P, atol=1e-6, rtol=0)
    assert torch.allclose(r.plan.sum(1), a, atol=1e-9)


def test_sinkhorn_small_eps_is_stable_and_refuses_half_precision():
    x, y = _clouds(16, 16, 8, seed=5)
    C = ot_cost_matrix(3 * x, 3 * y)
    eps = 0.01  # the kernel exp(−C/ε) underflows to 0 in fp64 for many entries: log domain copes
    assert (torch.exp(-C / eps) == 0).float().mean() > 0.2
    res = sinkhorn_log(C, eps, n_iters=2000, tol=1e-3)
    assert torch.isfinite(res.plan).all() and res.converged and res.marginal_error < 1e-3
    assert torch.allclose(res.plan.sum(0), torch.full((16,), 1 / 16, dtype=f64), atol=1e-12)
    # near-exact OT between generic clouds: the plan approaches a permutation
    assert (res.plan.max(1).values * 16).min() > 0.99
    with pytest.raises(ValueError):
        sinkhorn_log(C.bfloat16(), 0.1)
    not_conv = sinkhorn_log(C, eps, n_iters=3, tol=1e-12)
    assert not not_conv.converged and not_conv.n_iters == 3


def test_single_point_plan_is_exactly_one():
    C = torch.tensor([[0.37]], dtype=f64)
    assert sinkhorn_log(C, 0.01).plan.item() == 1.0


# --------------------------------------------------------------------------- envelope gradient


def _envelope_gradient(n=8, d=5, eps=0.1):
    """(points, targets, plan, gradient): the envelope gradient, the plan held fixed at the optimum."""
    x, y = _clouds(n, n, d, seed=11)
    fpts = x.clone().requires_grad_(True)
    with torch.no_grad():
        P = sinkhorn_log(ot_cost_matrix(x, y), eps, n_iters=5000, tol=1e-13).plan
    entropic_ot_value(ot_cost_matrix(fpts, y), P, eps).backward()
    return fpts, y, P, fpts.grad.clone()


def test_envelope_gradient_matches_unrolled_sinkhorn_and_closed_form():
    n, d, eps = 8, 5, 0.1
    # (1) envelope: plan held fixed at the optimum
    fpts, y, P, g_env = _envelope_gradient(n, d, eps)
    x = fpts.detach()

    # (2) closed form Σ_j P_ij (f_i − r_j)/d  ==  (f_i − r̄_i)/(N d),  r̄ = N P r
    closed = (P.sum(1, keepdim=True) * x - P @ y) / d
    assert torch.allclose(g_env, closed, atol=1e-12)
    r_bar = n * P @ y
    assert torch.allclose(g_env, (x - r_bar) / (n * d), atol=1e-12)

    # (3) autograd through an unrolled differentiable Sinkhorn run to convergence
    fpts.grad = None
    C = ot_cost_matrix(fpts, y)
    res = sinkhorn_log(C, eps, n_iters=3000, tol=0)
    entropic_ot_value(C, res.plan, eps).backward()
    assert torch.allclose(fpts.grad, g_env, atol=1e-6, rtol=0)


@needs_pot
def test_envelope_gradient_matches_pot():
    eps = 0.1
    fpts, y, _, g_env = _envelope_gradient(eps=eps)
    # POT's envelope gradient through its own solver
    fpts.grad = None
    sol = ot.solve(ot_cost_matrix(fpts, y), reg=eps, grad="envelope", max_iter=5000, tol=1e-13)
    sol.value.backward()
    assert torch.allclose(fpts.grad, g_env, atol=1e-6, rtol=0)


def test_otd_target_direction_is_the_envelope_gradient():
    """otd_targets('paper') direction f − r̄ ∝ ∂W/∂f, also through the video reshaping."""
    fake, real = _video(b=5, seed=3), _video(b=5, seed=4)
    eps = 0.2
    tg = otd_targets(fake, real, eps, tol=1e-13, n_iters=5000)
    fp = to_point_cloud(fake, "samples").clone().requires_grad_(True)
    rp = to_point_cloud(real, "samples")
    W = entropic_ot_value(ot_cost_matrix(fp, rp), tg.plan, eps)
    W.backward()
    n, d = fp.shape
    expected = from_point_cloud(fp.grad * n * d, "samples", fake.shape)
    assert torch.allclose(tg.direction, expected, atol=1e-10)


# --------------------------------------------------------------------------- OTD loss


@pytest.mark.parametrize("variant", ["paper", "debiased"])
@pytest.mark.parametrize("cloud", ["samples", "frame_tokens"])
def test_single_point_cloud_otd_equals_dmd_exactly(variant, cloud):
    f = 1 if cloud == "frame_tokens" else 4
    b = 3 if cloud == "frame_tokens" else 1
    x = _video(b=b, f=f, seed=0).requires_grad_(True)
    fake, real = _video(b=b, f=f, seed=1), _video(b=b, f=f, seed=2)
    l_otd, logs = otd_loss(x, fake, real, 0.05, variant=variant, cloud=cloud)
    l_dmd, _ = dmd_loss(x, fake, real)
    assert torch.equal(l_otd, l_dmd)
    (g_otd,) = torch.autograd.grad(l_otd, x)
    (g_dmd,) = torch.autograd.grad(l_dmd, x)
    assert torch.equal(g_otd, g_dmd)
    assert logs["otd_rel_diff_dmd"].item() == 0.0
    assert logs["otd_plan_diag_mass"].item() == 1.0


@pytest.mark.parametrize("cloud", ["samples", "frame_tokens"])
def test_debiased_direction_vanishes_when_clouds_coincide(cloud):
    fake = _video(b=4, seed=5)
    # identical clouds, and the same cloud permuted (samples / frames shuffled)
    perm_dim = 0 if cloud == "samples" else 2
    perm = torch.tensor([2, 0, 3, 1]) if cloud == "samples" else torch.tensor([4, 2, 0, 1, 3])
    for real in (fake.clone(), fake.index_select(perm_dim, perm)):
        tg = otd_targets(fake, real, 0.1, cloud=cloud, variant="debiased", tol=1e-12, n_iters=5000)
        assert tg.direction.abs().max() < 1e-8
        # the paper variant keeps the entropic blur bias f − f̄ ≠ 0 there
        tp = otd_targets(fake, real, 0.1, cloud=cloud, variant="paper", tol=1e-12, n_iters=5000)
        assert tp.direction.abs().max() > 1e-3
        assert torch.allclose(tp.real_bar, tg.fake_bar, atol=1e-8)
    tg = otd_targets(fake, fake, 0.1, cloud=cloud, variant="debiased")
    assert torch.equal(tg.direction, torch.zeros_like(tg.direction))  # bit-exact when identical


def test_plain_and_debiased_differ_and_limits():
    x = _video(b=6, seed=0).requires_grad_(True)
    fake, real = _video(b=6, seed=1), _video(b=6, seed=2) + 0.3
    lp, logp = otd_loss(x, fake, real, 0.5, variant="paper")
    ld, logd = otd_loss(x, fake, real, 0.5, variant="debiased")
    assert not torch.allclose(lp, ld)
    assert logp["otd_rel_diff_dmd"] > 1e-3 and logd["otd_rel_diff_dmd"] > 1e-3
    assert 0 < logp["otd_plan_diag_mass"] < 1
    # ε → ∞: the plan becomes the independent coupling (diag mass 1/N) and r̄ = mean(r)
    tg = otd_targets(fake, real, 1e6)
    assert abs(tg.logs["otd_plan_diag_mass"].item() - 1 / 6) < 1e-5
    assert torch.allclose(tg.real_bar, real.mean(0, keepdim=True).expand_as(real), atol=1e-5)
    # small ε with real = fake + tiny shift: near-identity pairing, paper OTD ≈ DMD
    real2 = fake + 1e-3 * _video(b=6, seed=9)
    _, logs2 = otd_loss(x, fake, real2, 1e-3, variant="paper")
    assert logs2["otd_plan_diag_mass"] > 0.999 and logs2["otd_rel_diff_dmd"] < 1e-3
    # loss gradient is g_OT/numel with g_OT = (f − r̄)/mean|x̂0 − r|
    (grad,) = torch.autograd.grad(lp, x)
    tgp = otd_targets(fake, real, 0.5)
    norm = (x.detach() - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    assert torch.allclose(grad * x.numel(), (fake - tgp.real_bar) / norm, rtol=1e-12)


def test_frame_tokens_cloud_is_per_sample():
    fake, real = _video(b=2, f=5, seed=1), _video(b=2, f=5, seed=2)
    tg = otd_targets(fake, real, 0.1, cloud="frame_tokens")
    assert tg.plan.shape == (2, 5, 5)
    # sample 0's targets depend only on sample 0's frames
    real_mod = real.clone()
    real_mod[1] += 5.0
    tg2 = otd_targets(fake, real_mod, 0.1, cloud="frame_tokens")
    assert torch.allclose(tg.real_bar[0], tg2.real_bar[0])
    assert not torch.allclose(tg.real_bar[1], tg2.real_bar[1])
    # r̄ per frame is N·Σ_j P_ij r_j over that sample's frames
    rp = to_point_cloud(real, "frame_tokens")
    manual = 5 * tg.plan @ rp
    assert torch.allclose(to_point_cloud(tg.real_bar, "frame_tokens"), manual, atol=1e-12)


def test_explicit_clouds_and_local_slice():
    """Gathered clouds: the local rows' targets use the plan of the whole cloud."""
    full_fake, full_real = _video(b=6, seed=1), _video(b=6, seed=2)
    tg_full = otd_targets(full_fake, full_real, 0.1)
    rows = slice(2, 4)
    tg_loc = otd_targets(full_fake[rows], full_real[rows], 0.1, fake_cloud=full_fake,
                         real_cloud=full_real, local_slice=rows)
    assert torch.allclose(tg_loc.real_bar, tg_full.real_bar[rows], atol=1e-12)
    tg_loc_d = otd_targets(full_fake[rows], full_real[rows], 0.1, variant="debiased",
                           fake_cloud=full_fake, real_cloud=full_real, local_slice=rows)
    tg_full_d = otd_targets(full_fake, full_real, 0.1, variant="debiased")
    assert torch.allclose(tg_loc_d.direction, tg_full_d.direction[rows], atol=1e-12)
    # without torch.distributed gather_cloud is the identity (same tensor, grad path kept)
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_cloud(x) is x
    # gather=True on one process == local batch
    xg = _video(b=3).requires_grad_(True)
    l1, _ = otd_loss(xg, full_fake[:3], full_real[:3], 0.1, gather=True)
    l2, _ = otd_loss(xg, full_fake[:3], full_real[:3], 0.1)
    assert torch.equal(l1, l2)


def test_cost_matrix_chunking_and_precision():
    x = torch.randn(5, 1000, generator=_gen(0)).to(torch.bfloat16)
    y = torch.randn(4, 1000, generator=_gen(1)).to(torch.bfloat16)
    C1 = ot_cost_matrix(x, y)
    C2 = ot_cost_matrix(x, y, chunk=77)
    assert C1.dtype == f64 and torch.allclose(C1, C2, atol=1e-12)
    ref = torch.cdist(x.double(), y.double()).square() / 2000
    assert torch.allclose(C1, ref, atol=1e-12)


# --------------------------------------------------------------------------- critic


def test_critic_denoising_loss_flow_matching_target():
    x0, eps = _video(seed=0, dtype=torch.float32), _video(seed=1, dtype=torch.float32)
    sigma = torch.tensor([0.2, 0.5, 0.9])
    v_true = eps - x0
    assert critic_denoising_loss(v_true, x0, eps, sigma).item() < 1e-12
    assert critic_denoising_loss(v_true + 0.5, x0, eps, sigma).item() == pytest.approx(0.25, rel=1e-6)
    # an x0-prediction is converted through x_t: the exact x0 gives zero loss
    assert critic_denoising_loss(x0, x0, eps, sigma, pred_type="x0").item() < 1e-10
    # "x0" weighting == x0-space MSE
    x_t = flow_matching_noise(x0, eps, sigma)
    v_pred = v_true + 0.1 * _video(seed=2, dtype=torch.float32)
    x0_pred = x_t - sigma.view(-1, 1, 1, 1, 1) * v_pred
    assert critic_denoising_loss(v_pred, x0, eps, sigma, weighting="x0").item() == pytest.approx(
        (x0_pred - x0).square().mean().item(), rel=1e-5)
    # trains the critic only: no gradient to the generator sample
    xg = x0.clone().requires_grad_(True)
    vp = v_pred.clone().requires_grad_(True)
    critic_denoising_loss(vp, xg, eps, sigma).backward()
    assert xg.grad is None and vp.grad is not None


# --------------------------------------------------------------------------- GAN


def _toy_d(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))


def test_gan_d_step_raises_real_minus_fake():
    D = _toy_d()
    real, fake = torch.randn(16, 4, generator=_gen(1)) + 1, torch.randn(16, 4, generator=_gen(2))
    gap = lambda: (D(real) - D(fake)).mean().item()  # noqa: E731
    before = gap()
    opt = torch.optim.SGD(D.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        gan_d_loss(D(real).squeeze(-1), D(fake).squeeze(-1)).backward()
        opt.step()
    assert gap() > before + 1e-3


def test_gan_g_step_raises_fake_minus_real():
    D = _toy_d()
    for p in D.parameters():
        p.requires_grad_(False)
    real = torch.randn(16, 4, generator=_gen(1)) + 1
    fake = torch.randn(16, 4, generator=_gen(2)).requires_grad_(True)  # "generator output"
    gap = lambda: (D(fake) - D(real)).mean().item()  # noqa: E731
    before = gap()
    opt = torch.optim.SGD([fake], lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        gan_g_loss(D(fake).squeeze(-1), D(real).squeeze(-1)).backward()
        opt.step()
    assert gap() > before + 1e-3
    # values: softplus(−Δ)
    dr, df = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.0])
    assert gan_d_loss(dr, df).item() == pytest.approx(
        sum(math.log1p(math.exp(-(a - b))) for a, b in [(1.0, 0.5), (-2.0, 0.0)]) / 2, rel=1e-6)
    assert gan_g_loss(df, dr).item() == pytest.approx(
        sum(math.log1p(math.exp(-(b - a))) for a, b in [(1.0, 0.5), (-2.0, 0.0)]) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        gan_d_loss(dr, df[:1])


def test_approx_r1_penalty():
    lin = torch.nn.Linear(4, 1, bias=False)
    x = torch.randn(4096, 4, generator=_gen(3))
    d_fn = lambda z: lin(z).squeeze(-1)  # noqa: E731
    pen = approx_r1_penalty(d_fn, x, sigma_noise=0.01, generator=_gen(4))
    # for a linear D: E (w·σε)² = σ²‖w‖²  (≈ σ² · exact R1)
    expected = 1e-4 * lin.weight.square().sum().item()
    assert pen.item() == pytest.approx(expected, rel=0.1)
    pen.backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    const = approx_r1_penalty(lambda z: torch.zeros(z.shape[0]) + 3.0, x)
    assert const.item() == 0.0


_DIST_SCRIPT = r'''
import os, sys, torch, torch.distributed as dist, torch.multiprocessing as mp
sys.path.insert(0, sys.argv[1])
from training.losses import gather_cloud, local_rows, otd_loss, otd_targets

def run(rank, world, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    full_fake = torch.randn(4, 2, 3, 2, 2, generator=g, dtype=torch.float64)
    full_real = torch.randn(4, 2, 3, 2, 2, generator=g, dtype=torch.float64) + 0.2
    rows = slice(2 * rank, 2 * rank + 2)
    x = torch.randn(2, 2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    cloud = gather_cloud(x)
    assert cloud.shape[0] == 4 and local_rows(2) == rows
    cloud.sum().backward()                      # only the local rows carry the gradient path
    assert torch.equal(x.grad, torch.ones_like(x))
    for variant in ("paper", "debiased"):
        loss, _ = otd_loss(x, full_fake[rows], full_real[rows], 0.1, variant=variant, gather=True)
        tg = otd_targets(full_fake, full_real, 0.1, variant=variant)
        (gr,) = torch.autograd.grad(loss, x)
        norm = (x.detach() - full_real[rows]).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
        assert torch.allclose(gr * x.numel(), tg.direction[rows] / norm, atol=1e-12), variant
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(run, args=(2, int(sys.argv[2])), nprocs=2)
    print("DIST-OK")
'''


def test_gather_cloud_two_ranks_gloo(tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "dist_otd.py"
    script.write_text(_DIST_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, str(script), root, str(port)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "DIST-OK" in proc.stdout, proc.stderr[-3000:]
