"""The released VDOT recipe (``recipe: vdot``), term by term on small tensors with hand-computed references.

Official numbers from VDOT_REFERENCE.md §3-§5 (each checked against hhhh1138/VDOT): σ-weighted DMD, OT on per-frame
2×2-pooled positions (ε 0.1, 60 unrolled log-domain sweeps, per-frame unit norm, step 0.1, sum), 0.2·DMD + 0.8·OT,
timestep draws (randint, shift 5 / 12, clamp), the GAN head (245.8 M parameters at 14B), the iteration schedule.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from training.config import config_from_dict, load_config
from training.discriminator import VDOTGanHead, default_tap_blocks, vdot_head_parameter_count
from training.losses import (
    dmd_loss,
    envelope_gradient,
    frame_unit_normalize,
    pooled_frame_clouds,
    pooled_ot_gradient,
    pooled_otd_loss,
    sinkhorn_unrolled,
)
from training.objective import critic_objective, draw_sigmas, generator_objective
from training.rollout import rollout
from vdot_nodes.core.sampling import get_preset, preset_schedule
from tests.helpers import write_train_manifest
from vdot_nodes.core.errors import VDOTInputError

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ DMD


def test_dmd_sigma_weighted_gradient_is_f_minus_r_times_sigma_over_numel():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 2, 2, 2, generator=g, dtype=F64).requires_grad_(True)
    f, r = torch.randn(2, 3, 2, 2, 2, generator=g, dtype=F64), torch.randn(2, 3, 2, 2, 2, generator=g, dtype=F64)
    sigma = torch.tensor([0.5, 0.25], dtype=F64)
    loss, logs = dmd_loss(x0, f, r, normalizer="sigma", sigma=sigma)
    loss.backward()
    want = (f - r) * sigma.view(2, 1, 1, 1, 1) / x0.numel()  # ½·mean((x − sg(x − g))²) → g / numel
    torch.testing.assert_close(x0.grad, want, rtol=1e-12, atol=0)
    # loss value: ½·mean(g²)
    torch.testing.assert_close(loss, 0.5 * ((f - r) * sigma.view(2, 1, 1, 1, 1)).square().mean())
    assert float(logs["dmd_normalizer"]) == pytest.approx((2 + 4) / 2)  # 1/σ averaged
    # the paper normaliser is unchanged and is the default
    x1 = x0.detach().clone().requires_grad_(True)
    dmd_loss(x1, f, r)[0].backward()
    norm = (x0.detach() - r).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    torch.testing.assert_close(x1.grad, (f - r) / norm / x0.numel())
    with pytest.raises(ValueError, match="sigma"):
        dmd_loss(x0, f, r, normalizer="sigma")


# ------------------------------------------------------------------------------------------ OT clouds


def test_pooled_frame_clouds_are_per_frame_2x2_means_of_dimension_c():
    x = torch.arange(2 * 2 * 3 * 4 * 6, dtype=F64).reshape(2, 2, 3, 4, 6)  # [B, C, F, H, W]
    clouds = pooled_frame_clouds(x)
    assert clouds.shape == (2 * 3, 2 * 3, 2)  # B·F frames, (4/2)·(6/2) points, C dims
    # sample 1, frame 2, pooled position (row 1, col 2) = point 1·3 + 2 = 5; channel 1
    block = x[1, 1, 2, 2:4, 4:6]
    assert float(clouds[1 * 3 + 2, 5, 1]) == float(block.mean())
    # the 480p shape of the released code: [16, 60, 104] → 1560 points of dimension 16 per frame
    assert pooled_frame_clouds(torch.zeros(1, 16, 21, 60, 104)).shape == (21, 1560, 16)


def test_sinkhorn_60_sweeps_marginals():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(1, 120, 16, generator=g, dtype=F64)
    x = y + 0.5 * torch.randn(1, 120, 16, generator=g, dtype=F64)
    cost = (x[:, :, None] - y[:, None]).square().sum(-1)
    plan = sinkhorn_unrolled(cost, eps=0.1, iters=60)
    # each sweep ends with the g-update: column sums are exactly 1/M
    torch.testing.assert_close(plan.sum(-2), torch.full((1, 120), 1 / 120, dtype=F64), rtol=1e-10, atol=0)
    # rows: close to 1/N after 60 sweeps (the released code stops there; not converged to machine precision)
    row_err = float((plan.sum(-1) - 1 / 120).abs().sum())
    ref = sinkhorn_unrolled(cost, eps=0.1, iters=600)
    ref_err = float((ref.sum(-1) - 1 / 120).abs().sum())
    print(f"row-marginal L1 error after 60 sweeps {row_err:.3g} (x 1/N = {row_err * 120:.3g}); after 600 {ref_err:.3g}")
    assert row_err * 120 < 0.05 and ref_err < row_err / 5  # within 5 % of 1/N, and still converging
    assert float((plan * cost).sum()) == pytest.approx(float((ref * cost).sum()), rel=0.02)
    with pytest.raises(ValueError, match="half"):
        sinkhorn_unrolled(cost.bfloat16(), 0.1, 60)


def _separated_case(pool: int = 1):
    """Far-apart targets y (spacing ≫ √ε) and x_i = y_π(i) + δ_i: the plan is the permutation / N."""
    g = torch.Generator().manual_seed(2)
    b, c, nf, h, w = 1, 3, 2, 2, 3
    n = h * w
    real = torch.zeros(b, c, nf, h, w, dtype=F64)
    fake = torch.zeros_like(real)
    perm = torch.tensor([2, 0, 1, 5, 3, 4])
    for t in range(nf):
        pts = 10 * torch.randn(n, c, generator=g, dtype=F64)  # distances ~ 14, ε = 0.1
        delta = 0.01 * torch.randn(n, c, generator=g, dtype=F64)
        real[0, :, t] = pts.T.reshape(c, h, w)
        fake[0, :, t] = (pts[perm] + delta).T.reshape(c, h, w)
    expected = 2 * (fake - real[:, :, :, :, :].reshape(b, c, nf, n)[..., perm].reshape(b, c, nf, h, w)) / n
    return fake, real, expected


def test_autograd_through_sinkhorn_and_envelope_agree_where_both_are_known():
    fake, real, expected = _separated_case()
    for mode in ("autograd", "envelope"):
        grad, logs = pooled_ot_gradient(fake, real, eps=0.1, iters=60, pool=1, gradient=mode, dtype=F64)
        torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-12, msg=mode)
        assert float(logs["ot_row_marginal_error"]) < 1e-9
    # a generic case (the sheet's toy: fake = real + 0.5·N(0, 1)): the two differ but point the same way
    g = torch.Generator().manual_seed(3)
    real = torch.randn(1, 16, 2, 12, 16, generator=g, dtype=F64)
    fake = real + 0.5 * torch.randn(real.shape, generator=g, dtype=F64)
    a, _ = pooled_ot_gradient(fake, real, gradient="autograd", dtype=F64)
    e, _ = pooled_ot_gradient(fake, real, gradient="envelope", dtype=F64)
    cos = float(torch.nn.functional.cosine_similarity(a.flatten(), e.flatten(), dim=0))
    print(f"cosine(autograd, envelope) = {cos:.5f}")
    assert cos > 0.99
    # the gradient is constant over each 2×2 block: autograd through avg-pool gives ¼ of the pooled gradient
    assert torch.equal(a[..., 0::2, 0::2], a[..., 1::2, 1::2])
    # a bf16 autocast around the trainer's loss does not reach the OT (fp32 cost, same result)
    f32 = pooled_ot_gradient(fake.float(), real.float())[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(pooled_ot_gradient(fake.float(), real.float())[0], f32)


def test_envelope_gradient_formula():
    x = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]], dtype=F64)
    y = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]], dtype=F64)
    plan = torch.tensor([[[0.3, 0.2], [0.1, 0.4]]], dtype=F64)
    want = torch.stack([2 * (0.3 * (x[0, 0] - y[0, 0]) + 0.2 * (x[0, 0] - y[0, 1])),
                        2 * (0.1 * (x[0, 1] - y[0, 0]) + 0.4 * (x[0, 1] - y[0, 1]))])[None]
    torch.testing.assert_close(envelope_gradient(x, y, plan), want)


def test_per_frame_unit_norm():
    g = torch.zeros(1, 2, 3, 1, 2, dtype=F64)  # [B, C, F, H, W]
    g[0, :, 0, 0] = torch.tensor([[3.0, 0.0], [4.0, 0.0]])  # frame 0: norm 5
    g[0, 0, 1, 0, 1] = -2.0  # frame 1: norm 2; frame 2 stays zero
    n = frame_unit_normalize(g)
    torch.testing.assert_close(n[0, :, 0, 0], torch.tensor([[0.6, 0.0], [0.8, 0.0]], dtype=F64) * (5 / (5 + 1e-8)))
    assert float(n[0, 0, 1, 0, 1]) == pytest.approx(-1.0, abs=1e-8)
    assert torch.equal(n[0, :, 2], torch.zeros(2, 1, 2, dtype=F64))  # no NaN for a zero frame


def test_dm_mix_gradient_on_the_generator_output():
    """0.2·L_DMD(σ) + 0.8·L_OT: ∂/∂x̂0 = 0.2·(f − r)·σ/numel + 0.8·0.1·ĝ, ĝ = δ/‖δ‖ per frame in the separated case."""
    fake, real, _ = _separated_case()
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(fake.shape, generator=g, dtype=F64).requires_grad_(True)
    r_dmd = fake + 0.3 * torch.randn(fake.shape, generator=g, dtype=F64)
    sigma = torch.tensor([0.7], dtype=F64)
    l_dmd, _ = dmd_loss(x0, fake, r_dmd, normalizer="sigma", sigma=sigma)
    l_ot, ot_logs = pooled_otd_loss(x0, fake, real, pool=1, gradient="autograd", ot_dtype=F64)
    (0.2 * l_dmd + 0.8 * l_ot).backward()
    n = fake.shape[-1] * fake.shape[-2]
    perm = torch.tensor([2, 0, 1, 5, 3, 4])
    delta = fake - real.reshape(1, 3, 2, n)[..., perm].reshape(fake.shape)
    g_hat = delta / torch.linalg.vector_norm(delta, dim=(1, 3, 4), keepdim=True)
    want = 0.2 * (fake - r_dmd) * 0.7 / x0.numel() + 0.8 * 0.1 * g_hat
    torch.testing.assert_close(x0.grad, want, rtol=1e-5, atol=1e-9)
    # The logged ‖ĝ − ĝ_DMD‖/‖ĝ_DMD‖: the plan pairs each point with a permuted real one, DMD with its own.
    g_dmd = (fake - real) / torch.linalg.vector_norm(fake - real, dim=(1, 3, 4), keepdim=True)
    want_rel = (g_hat - g_dmd).norm() / g_dmd.norm()
    assert float(want_rel) > 0.5 and float(ot_logs["otd_rel_diff_dmd"]) == pytest.approx(float(want_rel), rel=1e-5)
    near = fake + 0.01 * torch.randn(fake.shape, generator=g, dtype=F64)  # identity is the optimal pairing
    _, logs = pooled_otd_loss(x0.detach(), near, fake, pool=1, gradient="autograd", ot_dtype=F64)
    assert float(logs["ot_plan_diag_mass"]) > 0.99 and float(logs["otd_rel_diff_dmd"]) < 0.05


# ------------------------------------------------------------------------------------------ timesteps


def _population(lo: int, hi: int, shift: float) -> torch.Tensor:
    u = torch.arange(lo, hi, dtype=F64) / 1000
    return (1000 * shift * u / (1 + (shift - 1) * u)).clamp(20, 980)


def test_timestep_distributions_match_the_released_quantiles():
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=F64)
    # exact quantiles of the discrete distributions (every randint value equally likely)
    dmd, gan = _population(20, 980, 5.0), _population(0, 1000, 12.0)
    assert torch.quantile(dmd, q).tolist() == pytest.approx([395.9, 637.0, 833.1, 934.1, 974.2], abs=0.06)
    assert torch.quantile(gan, q).tolist() == pytest.approx([571.2, 799.8, 922.9, 972.9, 980.0], abs=0.06)
    assert float((dmd == 980).double().mean()) == pytest.approx(0.075)
    assert float((gan == 980).double().mean()) == pytest.approx(0.196)
    # the trainer's draws (recipe values, fixed seed) come from exactly these distributions
    cfg = load_config(ROOT / "training" / "configs" / "toy_stage2_vdot.yaml")
    lc, gc = cfg.loss, cfg.gan
    gen = torch.Generator().manual_seed(0)
    d = 1000 * draw_sigmas(200_000, gen, min_t=lc.min_t, max_t=lc.max_t, shift=lc.timestep_shift, draw=lc.timestep_draw,
                           clamp=(lc.min_t, lc.max_t))
    a = 1000 * draw_sigmas(200_000, gen, min_t=gc.min_t, max_t=gc.max_t, shift=gc.timestep_shift,
                           draw=lc.timestep_draw, clamp=(lc.min_t, lc.max_t))
    for draws, support in ((d, dmd), (a, gan)):  # on the discrete support
        assert float((draws.unique()[:, None] - support[None]).abs().min(1).values.max()) < 1e-9
    # sampled quantiles of 200k draws: within a few grid steps (the shifted grid is up to ~2.4 apart at 10 %)
    assert torch.quantile(d, q).tolist() == pytest.approx(torch.quantile(dmd, q).tolist(), abs=8.0)
    assert torch.quantile(a, q).tolist() == pytest.approx(torch.quantile(gan, q).tolist(), abs=8.0)
    assert float((d == 980).double().mean()) == pytest.approx(0.075, abs=0.003)
    assert float((a == 980).double().mean()) == pytest.approx(0.196, abs=0.005)
    print("DMD/OT/critic quantiles", [round(v, 1) for v in torch.quantile(d, q).tolist()],
          "GAN", [round(v, 1) for v in torch.quantile(a, q).tolist()])


# ------------------------------------------------------------------------------------------ GAN head


def test_vdot_gan_head_parameter_count_at_14b_and_output_shape():
    d, s, f = 5120, 512, 13824
    # from the spec, written out: registers + RMSNorm; per block proj1 (LN, D→D, D→512, LN), proj2 (LN, 512→512,
    # 512→D, LN), q/k/v/o 512², RMS qk-norms, FFN 512→13824→512 (its pre-LN has no affine); classifier
    registers = 3 * s + s
    proj1 = 2 * d + d * d + d + d * s + s + 2 * s
    proj2 = 2 * s + s * s + s + s * d + d + 2 * d
    attn = 4 * (s * s + s) + 2 * s
    ffn = s * f + f + f * s + s
    classifier = 2 * 4 * d + 4 * d * d + d + d + 1
    spec = registers + 3 * (proj1 + proj2 + attn + ffn) + classifier
    assert spec == 245_835_777 == vdot_head_parameter_count(d)
    with torch.device("meta"):
        head = VDOTGanHead(d, default_tap_blocks(40))
    assert head.tap_blocks == [23, 31, 39] and default_tap_blocks(30) == [13, 21, 29]
    assert sum(p.numel() for p in head.parameters()) == spec
    assert head.classifier[1].in_features == 4 * d  # 3 tapped tokens + the time embedding
    small = VDOTGanHead(24, [0, 1], small_dim=16, ffn_dim=32, num_heads=4)
    feats = {0: torch.randn(3, 10, 24), 1: torch.randn(3, 10, 24)}
    e = torch.randn(3, 24)
    out = small(feats, e)
    assert out.shape == (3,)
    assert not torch.equal(out, small(feats, 2 * e))  # the time embedding reaches the logit


# ------------------------------------------------------------------------------------------ schedule


def test_schedule_table_for_10_iterations():
    cfg = load_config(ROOT / "training" / "configs" / "wan14b_stage2.yaml")
    s = cfg.schedule
    table = [(generator_objective(i, s.ttur, s.generator_objectives), critic_objective(i, s.critic_objectives))
             for i in range(10)]
    assert table == [("dm", "denoise"), (None, "disc"), (None, "denoise"), (None, "disc"), (None, "denoise"),
                     ("adv", "disc"), (None, "denoise"), (None, "disc"), (None, "denoise"), (None, "disc")]
    assert [generator_objective(i, s.ttur, s.generator_objectives) for i in (10, 15, 20)] == ["dm", "adv", "dm"]
    o = cfg.optim
    assert (o.grad_accumulation, o.grad_clip, o.betas, o.weight_decay, o.lr, o.critic_lr, o.ema_decay, o.state_dtype) \
        == (3, 5.0, [0.0, 0.999], 0.01, 2e-6, 4e-7, 0.0, "bf16")
    assert (cfg.loss.gan_weight, cfg.loss.gan_d_weight, cfg.guidance.cfg_scale) == (0.1, 0.1, 3.0)
    assert s.shared_exit_step and cfg.gan.generator_real_noise == "independent"
    assert (cfg.rollout.preset, cfg.rollout.inference_preset) == ("rollout", "vdot")
    with pytest.raises(VDOTInputError, match="recipe"):
        config_from_dict({"recipe": "vdot2", "stage": 2, "data": {"manifest": "m.jsonl"}})


# ------------------------------------------------------------------------------------------ rollout


def test_rollout_presets_feed_the_model_their_timesteps():
    seen = []

    def velocity(x_t, t):
        seen.append((float(t[0]), float(x_t.std())))
        return torch.zeros_like(x_t)

    out = rollout(velocity, (16, 1, 8, 8), [0], preset=get_preset("rollout_official"), exit_step=3, device="cpu",
                  grad=False)
    assert [t for t, _ in seen] == pytest.approx([1000.0, 960.0, 888.8889, 727.2728])
    assert out.shape == (1, 16, 1, 8, 8)
    # bf16 timestep quantisation (runtime.timestep_bf16_quantize) turns them into what the released model embedded
    assert torch.tensor([1000.0, 960.0, 888.8889, 727.2728]).bfloat16().float().tolist() == [1000, 960, 888, 728]
    seen.clear()
    rollout(velocity, (16, 1, 8, 8), [0], preset=get_preset("rollout"), exit_step=3, device="cpu", grad=False)
    assert [t for t, _ in seen] == [999.0, 979.0, 941.0, 841.0]  # the vdot inference preset's t ...
    rollout_sched, vdot_sched = preset_schedule(get_preset("rollout")), preset_schedule(get_preset("vdot"))
    assert rollout_sched.sigmas == vdot_sched.sigmas  # ... and σ: the generator is trained on what it will see
    official = preset_schedule(get_preset("rollout_official"))
    assert official.x0_sigmas[1:] != official.sigmas[1:4]  # the released rollout: told one σ, fed another


# ------------------------------------------------------------------------------------------ trainer


def _vdot_config(folder: Path, out: str) -> dict:
    """The toy recipe config on tiny models, generator every iteration so 2 iterations cover DM and ADV."""
    cfg = yaml.safe_load((ROOT / "training" / "configs" / "toy_stage2_vdot.yaml").read_text())
    cfg.update(out=out, max_steps=2, seed=5)
    cfg["schedule"] = {"ttur": 1}
    cfg["optim"].update(lr=1e-3, critic_lr=1e-3)
    cfg["runtime"].update(device="cpu")
    cfg["models"].update(generator_init=None)
    cfg["gan"].update(head_dim=16, head_ffn_dim=32, head_heads=2)
    cfg["data"] = {"manifest": str(folder / "train.jsonl"), "num_frames": 5, "height": 32, "width": 32, "batch_size": 1}
    cfg["logging"] = {"checkpoint_every": 1, "export_precision": "fp32"}
    return cfg


@pytest.fixture(scope="module")
def vdot_run(tmp_path_factory):
    from training.trainer import Trainer

    folder = tmp_path_factory.mktemp("vdot")
    write_train_manifest(folder, n=3, size=32)
    trainer = Trainer(config_from_dict(_vdot_config(folder, str(folder / "run_a"))))
    metrics, critic = [], [{k: v.detach().clone() for k, v in trainer.critic.named_parameters()}]
    for _ in range(2):
        metrics.append(trainer.train_step())
        critic.append({k: v.detach().clone() for k, v in trainer.critic.named_parameters()})
        if trainer.step == 1:
            trainer.save()
    trainer.critic_history = critic
    return folder, trainer, metrics


def test_official_recipe_trains_every_term(vdot_run):
    _, trainer, (m0, m1) = vdot_run
    assert isinstance(trainer.discriminator, VDOTGanHead)
    assert (m0["objective"], m0["critic_objective"], m1["objective"], m1["critic_objective"]) == \
        ("dm", "denoise", "adv", "disc")
    for key in ("loss_dmd", "loss_otd", "ot_cost", "otd_grad_norm", "loss_critic_denoise"):
        assert key in m0 and m0[key] == m0[key], key
    # ∂L_OT/∂x̂0 = 0.1·ĝ with ‖ĝ‖ = 1 per frame: ‖0.1·ĝ‖ = 0.1·√(frames) (2 latent frames here)
    assert m0["otd_grad_norm"] == pytest.approx(0.1 * 2 ** 0.5, rel=1e-4)  # (the +1e-8 in the norm)
    assert "loss_gan_g" in m1 and "loss_gan_d" in m1 and "loss_critic_denoise" not in m1
    assert "loss_gan_d" not in m0
    c0, c1, c2 = trainer.critic_history

    def moved(a, b, prefix):
        return max(float((a[k] - b[k]).abs().max()) for k in a if k.startswith(prefix))

    # iteration 0 (denoising only): the fake score learns, the head has no gradient and stays put
    assert moved(c0, c1, "fake_score.") > 0 and moved(c0, c1, "discriminator.") == 0
    # iteration 1 (discriminator only): the D loss reaches the head and the fake score's first block
    assert moved(c1, c2, "discriminator.") > 0 and moved(c1, c2, "fake_score.blocks.0.") > 0


def test_official_recipe_resume_is_exact(vdot_run):
    from training.trainer import Trainer

    folder, trainer_a, _ = vdot_run
    out_b = folder / "run_b"
    (out_b / "checkpoints").mkdir(parents=True)
    shutil.copytree(folder / "run_a" / "checkpoints" / "step_000001", out_b / "checkpoints" / "step_000001")
    (out_b / "checkpoints" / "latest").write_text("step_000001\n")
    trainer_b = Trainer(config_from_dict(_vdot_config(folder, str(out_b))), resume=True)
    assert trainer_b.step == 1
    trainer_b.train_step()
    for net in ("generator", "critic"):
        ref = dict(getattr(trainer_a, net).named_parameters())
        for name, p in getattr(trainer_b, net).named_parameters():
            torch.testing.assert_close(p.detach(), ref[name].detach(), rtol=0, atol=1e-6, msg=name)


def test_official_recipe_two_process_fsdp2(tmp_path, torchrun):
    write_train_manifest(tmp_path, n=4, size=32)
    cfg = _vdot_config(tmp_path, str(tmp_path / "run"))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    torchrun(["-m", "training.cli", tmp_path / "cfg.yaml", "--no-progress"])
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["objective"], x["critic_objective"]) for x in lines] == [("dm", "denoise"), ("adv", "disc")]
    assert all(x["loss_critic"] == x["loss_critic"] for x in lines) and "loss_otd" in lines[0]
    from safetensors import safe_open

    path = tmp_path / "run" / "exports" / "generator_vace_step000002.safetensors"
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["vdot_inference_preset"] == "vdot"


# ------------------------------------------------------------------------------------------ data


def test_released_training_csv_reads_like_the_jsonl_manifest(tmp_path):
    from training.data.manifest import ManifestError, read_manifest
    from vdot_nodes.core.video_io import write_image, write_video

    (tmp_path / "gt").mkdir()
    (tmp_path / "src").mkdir()
    clip = torch.rand(5, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    for name in ("gt/c1.mp4", "gt/person.mp4", "src/c1.mp4"):
        write_video(clip, tmp_path / name, fps=8)
    write_image(torch.rand(16, 16, 3), tmp_path / "src" / "person_0.png")
    csv_text = (
        "task_name,src_video_path,mask_video_path,ref_image_path,internvl_short\n"
        "depth,src/c1.mp4,,,a red ball rolls\n"
        "reference,,,src/person_0.png,a person waves\n"
        "grey,src/c1.mp4,,,\"a grey, quoted caption\"\n"
    )
    (tmp_path / "train.csv").write_text(csv_text)
    samples = read_manifest(tmp_path / "train.csv", gt_dir="gt")
    assert [(s.task, s.caption) for s in samples] == [("depth", "a red ball rolls"), ("r2v", "a person waves"),
                                                       ("grey", "a grey, quoted caption")]
    assert samples[0].video == tmp_path / "gt" / "c1.mp4" and samples[0].control == tmp_path / "src" / "c1.mp4"
    assert samples[1].video == tmp_path / "gt" / "person.mp4"  # first reference's name up to '_' + .mp4
    assert samples[1].references == [tmp_path / "src" / "person_0.png"] and samples[1].control is None
    # the same validation and error style as the JSONL manifest: every bad row, with its line
    (tmp_path / "bad.csv").write_text(csv_text + "depth,src/missing.mp4,,,a caption\nkiss,src/c1.mp4,,,x\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path / "bad.csv", gt_dir="gt")
    text = str(info.value)
    assert "line 5, field 'control': file not found" in text and "line 5, field 'video'" in text
    assert "line 6, field 'task': unknown task 'kiss'" in text
    with pytest.raises(VDOTInputError, match="data.gt_dir"):
        read_manifest(tmp_path / "train.csv")
    (tmp_path / "cols.csv").write_text("task_name,src_video_path,caption\ndepth,src/c1.mp4,x\n")
    with pytest.raises(ManifestError, match="lacks column"):
        read_manifest(tmp_path / "cols.csv", gt_dir="gt")


def test_reference_context_truncate_flag():
    from training.batches import EncodedBatch
    from training.objective import VDOTObjective

    enc = EncodedBatch(prompt_embeds=torch.zeros(1, 4, 8), control=torch.arange(7.0).view(1, 1, 7, 1, 1).expand(1, 96, 7, 2, 2),
                       latent_shape=(16, 7, 2, 2), num_reference_frames=2, real_latents=torch.zeros(1, 16, 5, 2, 2))
    cfg = load_config(ROOT / "training" / "configs" / "toy_stage2_vdot.yaml")
    kw = dict(generator=None, teacher=None, fake_score=None, discriminator=None, negative_embeds=None,
              reward_model=None, rng=torch.Generator(), device=torch.device("cpu"))
    assert VDOTObjective(cfg, **kw).prepare(enc) is enc  # default: the inference layout (noise frames for refs)
    cfg.data.reference_context = "truncate"
    out = VDOTObjective(cfg, **kw).prepare(enc)
    assert out.latent_shape == (16, 5, 2, 2) and out.num_reference_frames == 0
    assert out.control[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3, 4]  # refs + the first control frames; last 2 dropped


def test_accwaninit_released_overlay_strips_prefixes_and_checks_a_subset():
    from diffusers import WanTransformer3DModel

    from training.init import init_vace_from_t2v, t2v_config_from_vace
    from vdot_nodes.core.tiny import TINY_TRANSFORMER_CONFIG, build_tiny_transformer

    vace = build_tiny_transformer(seed=0)
    torch.manual_seed(1)
    t2v = WanTransformer3DModel(**t2v_config_from_vace(TINY_TRANSFORMER_CONFIG))
    part = {"model._fsdp_wrapped_module." + k: v for k, v in t2v.state_dict().items() if k.startswith("blocks.0.")}
    before = {k: v.clone() for k, v in vace.state_dict().items()}
    with pytest.raises(VDOTInputError, match="lacks"):  # ours: the whole Wan part by default
        init_vace_from_t2v(vace, dict(part))
    report = init_vace_from_t2v(vace, dict(part), require_complete=False)
    assert report["copied"] and all(k.startswith("blocks.0.") for k in report["copied"])
    after = vace.state_dict()
    for k in after:
        want = t2v.state_dict()[k] if k in report["copied"] else before[k]
        assert torch.equal(after[k], want), k
    with pytest.raises(VDOTInputError, match="no counterpart"):  # still a strict subset check
        init_vace_from_t2v(vace, {**part, "model.extra.weight": torch.zeros(1)}, require_complete=False)


def test_timestep_bf16_quantize_flag_reaches_the_network():
    from training.batches import EncodedBatch
    from training.objective import VDOTObjective
    from vdot_nodes.core.tiny import build_tiny_transformer

    model = build_tiny_transformer(seed=0)
    seen = []
    model.condition_embedder.register_forward_pre_hook(lambda _m, args: seen.append(float(args[0][0])))
    enc = EncodedBatch(prompt_embeds=torch.zeros(1, 4, 32), control=torch.zeros(1, 96, 1, 2, 2),
                       latent_shape=(16, 1, 2, 2), num_reference_frames=0, real_latents=None)
    cfg = load_config(ROOT / "training" / "configs" / "toy_stage2_vdot.yaml")
    kw = dict(generator=model, teacher=model, fake_score=model, discriminator=None, negative_embeds=None,
              reward_model=None, rng=torch.Generator(), device=torch.device("cpu"))
    x, t = torch.zeros(1, 16, 1, 2, 2), torch.tensor([888.8889])
    with torch.no_grad():
        VDOTObjective(cfg, **kw)._velocity(model, enc)(x, t)
        cfg.runtime.timestep_bf16_quantize = True
        VDOTObjective(cfg, **kw)._velocity(model, enc)(x, t)
    assert seen == [pytest.approx(888.8889, abs=1e-4), 888.0]
