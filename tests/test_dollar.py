"""DOLLAR's optional objectives: consistency distillation and the latent reward model, as library functions and
as terms of the trainer's DM updates (``loss.consistency_weight``, ``models.reward_model`` + ``loss.reward_weight``)."""

import json
import math
import shutil

import pytest
import torch

from training.config import config_from_dict
from training.losses import consistency_distillation_loss, consistency_loss, consistency_target, teacher_ode_step
from training.reward import (
    LatentRewardModel,
    fit_reward_model,
    load_reward_model,
    reward_loss,
    reward_main,
    reward_model_loss,
    save_reward_model,
    train_reward_model,
)
from training.trainer import Trainer
from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError


# Hundreds of tiny steps: on a shared 2-core machine intra-op threads only add sync cost.
pytestmark = pytest.mark.usefixtures("one_thread")


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


# ------------------------------------------------------------------------------------------------
# The whole CD term as the trainer calls it
# ------------------------------------------------------------------------------------------------


def test_consistency_distillation_loss_composes_step_target_and_distance():
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 16, 2, 2, 2, generator=gen)
    eps = torch.randn(2, 16, 2, 2, 2, generator=gen)
    sigma, sigma_next = 0.9375, 0.8333
    x_t = (1 - sigma) * x0 + sigma * eps
    calls = []

    def true_velocity(name):  # the straight-line velocity ε − x0: the ODE step and the target are exact
        def v(x, t):
            calls.append((name, float(t[0])))
            assert t.shape == (2,)
            return eps - x0
        return v

    loss = consistency_distillation_loss(x0, x_t, sigma, sigma_next, true_velocity("teacher"), true_velocity("target"))
    assert loss.item() < 1e-12 and calls == [("teacher", pytest.approx(937.5)), ("target", pytest.approx(833.3))]
    student = (x0 + 0.1).requires_grad_(True)
    loss = consistency_distillation_loss(student, x_t, sigma, sigma_next, true_velocity("teacher"), true_velocity("target"))
    assert loss.item() == pytest.approx(0.01, rel=1e-5)
    loss.backward()  # gradient reaches the student only, pulling it towards the target x0
    torch.testing.assert_close(student.grad, torch.full_like(x0, 2 * 0.1 / x0.numel()), rtol=1e-5, atol=0)
    calls.clear()  # after the last step (σ' = 0) the target is the teacher's x0: the target network is not called
    consistency_distillation_loss(x0, x_t, sigma, 0.0, true_velocity("teacher"), true_velocity("target"))
    assert [c[0] for c in calls] == ["teacher"]
    with pytest.raises(ValueError, match="sigma_next"):
        consistency_distillation_loss(x0, x_t, sigma, sigma, true_velocity("teacher"), true_velocity("target"))


# ------------------------------------------------------------------------------------------------
# Reward-model files
# ------------------------------------------------------------------------------------------------


def brightness_reward_model():
    """A hand-set reward model with a known reward: R(z) = SiLU(mean(z[:, 0]) + 3), increasing in the first
    channel's brightness wherever that mean is > −4.3 (the raw channel means feed the head directly)."""
    model = LatentRewardModel(in_channels=16, hidden=4, mlp_hidden=4)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head[0].weight[0, 4] = 1.0  # head input = [4 pooled conv features | 16 channel means]
        model.head[0].bias[0] = 3.0
        model.head[2].weight[0, 0] = 1.0
    return model.eval()


def test_fit_reward_model_learns_labels_and_reports_a_held_out_baseline():
    gen = torch.Generator().manual_seed(3)
    latents = random_latents(96, gen)
    labels = first_channel_brightness(latents)  # stands in for scores someone gave these latents' videos
    torch.manual_seed(0)
    model = LatentRewardModel(in_channels=16, hidden=8, mlp_hidden=16)
    result = fit_reward_model(model, latents, labels, steps=150, batch_size=16, lr=3e-3, val_fraction=0.25, progress=False)
    assert (result["n_train"], result["n_val"]) == (72, 24) and len(result["train_losses"]) == 150
    assert result["val_mse"] < 0.1 * result["val_baseline_mse"], result
    assert not model.training
    with pytest.raises(VDOTInputError, match="rewards"):
        fit_reward_model(model, latents, labels[:5], steps=1, progress=False)


def test_reward_model_file_round_trip(tmp_path, trained_reward_model):
    model, _ = trained_reward_model
    path = save_reward_model(model, tmp_path / "sub" / "reward.safetensors", metadata={"val_mse": 0.1})
    loaded = load_reward_model(path, input_name="models.reward_model")
    assert loaded.config == model.config == {"in_channels": 16, "hidden": 16, "mlp_hidden": 32}
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    z = random_latents(3, torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), model(z), rtol=0, atol=0)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # weights + JSON metadata only: no pickle anywhere
        assert json.loads(f.metadata()["vdot_reward_info"]) == {"val_mse": 0.1}
    assert not list(tmp_path.glob("sub/.*tmp"))


def test_reward_model_file_errors_name_the_key_and_the_fix(tmp_path):
    from safetensors.torch import save_file

    key = "models.reward_model"
    with pytest.raises(VDOTInputError, match=r"models\.reward_model: .*nope\.safetensors not found.*python -m training\.reward"):
        load_reward_model(tmp_path / "nope.safetensors", input_name=key)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(VDOTInputError, match=r"models\.reward_model: .*not a readable \.safetensors"):
        load_reward_model(tmp_path / "junk.safetensors", input_name=key)
    good = brightness_reward_model()
    save_file({k: v.contiguous() for k, v in good.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(VDOTInputError, match=r"not a VDOT latent reward model.*save_reward_model"):
        load_reward_model(tmp_path / "plain.safetensors", input_name=key)
    path = save_reward_model(good, tmp_path / "r.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    state.pop("head.2.bias")
    state["head.9.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "keys.safetensors"), metadata=meta)
    with pytest.raises(VDOTInputError, match=r"missing keys \['head\.2\.bias'\]; unexpected keys \['head\.9\.weight'\]"):
        load_reward_model(tmp_path / "keys.safetensors", input_name=key)
    state = {k: v for k, v in good.state_dict().items()}
    meta_wide = dict(meta, vdot_reward_model=json.dumps({"format": 1, "config": {"in_channels": 16, "hidden": 8, "mlp_hidden": 4}}))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "shape.safetensors"), metadata=meta_wide)
    with pytest.raises(VDOTInputError, match="wrong shapes"):
        load_reward_model(tmp_path / "shape.safetensors", input_name=key)


# ------------------------------------------------------------------------------------------------
# Through the trainer (tiny stage-1 Wan T2V, captions, DM every step)
# ------------------------------------------------------------------------------------------------

SHAPE = {"num_frames": 5, "height": 16, "width": 16}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dollar_runs")
    (folder / "caps.txt").write_text("a red ball\na blue cat\n")
    save_reward_model(brightness_reward_model(), folder / "brightness.safetensors")
    return folder


def stage1_config(folder, out, models=None, sampler=None, optim=None, **loss):
    """Stage 1, DMD every iteration (ttur 1), CFG teacher (w = 2 with a negative prompt)."""
    return config_from_dict({
        "stage": 1, "seed": 3, "out": str(folder / out), "max_steps": 3,
        "guidance": {"cfg_scale": 2.0, "negative_prompt": "blurry"},
        "loss": {"dm": "dmd", **loss}, "schedule": {"ttur": 1, "generator_objectives": ["dm"]},
        "optim": {"lr": 1e-3, "critic_lr": 1e-3, **(optim or {})}, "sampler": sampler or {},
        "models": {"teacher_precision": "fp32", **(models or {})},
        "runtime": {"device": "cpu", "mixed_precision": "fp32", "gradient_checkpointing": False},
        "data": {"captions": "caps.txt", "batch_size": 2, **SHAPE},
        "logging": {"checkpoint_every": 2, "export_precision": "fp32"},
    }, config_dir=str(folder))


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def sample_reward(trainer, seeds=tuple(range(100, 108))):
    """Frozen reward of full 4-step samples of the trainer's generator (fixed seeds and caption)."""
    from training.models import velocity_fn
    from training.rollout import rollout

    s = trainer.cfg.sampler
    text = trainer.pipeline.encode_prompt(["a red ball"])
    with torch.no_grad():
        x0 = rollout(velocity_fn(trainer.generator, text, None, trainer.device), (16, 2, 2, 2), list(seeds),
                     timesteps=s.timesteps, shift=s.shift, exit_step=len(s.timesteps) - 1, device=trainer.device, grad=False)
        return float(trainer.reward_model(x0).mean()) if trainer.reward_model is not None else None


def test_dollar_config_keys_are_validated(run_dir):
    base = {"data": {"captions": "c.txt"}, "schedule": {"generator_objectives": ["dm"]}}
    cfg = config_from_dict(base)
    assert cfg.loss.consistency_weight == 0 and cfg.loss.reward_weight == 0 and cfg.models.reward_model is None
    for loss, match in (({"reward_weight": 1.0}, r"loss\.reward_weight: .*models\.reward_model is not set"),
                        ({"consistency_weight": -1.0}, r"loss\.consistency_weight: must be >= 0"),
                        ({"consistency_huber_c": 0.0}, r"loss\.consistency_huber_c"),
                        ({"consistency_wieght": 1.0}, r"loss\.consistency_wieght: unknown config key")):
        with pytest.raises(VDOTInputError, match=match):
            config_from_dict({**base, "loss": loss})
    with pytest.raises(VDOTInputError, match=r"loss\.consistency_weight: .*DM generator updates"):
        config_from_dict({"data": {"manifest": "m.jsonl"}, "schedule": {"generator_objectives": ["adv"]},
                          "loss": {"consistency_weight": 1.0}})
    with pytest.raises(VDOTInputError, match=r"models\.reward_model: .*missing\.safetensors not found"):
        Trainer(stage1_config(run_dir, "bad", models={"reward_model": "missing.safetensors"}, reward_weight=1.0))


def test_consistency_and_reward_terms_in_generator_updates(run_dir):
    """CD on: logged, finite, added to the generator loss, changes the update; no extra random draw.
    Reward weight 0 with a reward model: the reward is logged, nothing else changes (bit-identical)."""
    plain = Trainer(stage1_config(run_dir, "plain"))
    watch = Trainer(stage1_config(run_dir, "watch", models={"reward_model": "brightness.safetensors"}))
    cd = Trainer(stage1_config(run_dir, "cd", consistency_weight=50.0, consistency_huber_c=0.001))
    assert plain.reward_model is None and cd.reward_model is None and watch.reward_model is not None
    start = params(plain.generator)
    for name, ref in params(cd.generator).items():
        assert torch.equal(ref, start[name])
    for _ in range(2):
        m_plain, m_watch, m_cd = plain.train_step(), watch.train_step(), cd.train_step()
        assert "loss_consistency" not in m_plain and "reward" not in m_plain and "reward" in m_watch
        assert m_cd["loss_consistency"] > 0 and math.isfinite(m_cd["loss_consistency"])
        expected = m_cd["loss_dm"] + 50.0 * m_cd["loss_consistency"]
        assert m_cd["loss_generator"] == pytest.approx(expected, rel=1e-6)
        assert m_watch["exit_step"] == m_plain["exit_step"] == m_cd["exit_step"]
        # The new terms draw nothing from the trainer's generator: the random stream stays in step.
        assert torch.equal(plain.rng.get_state(), cd.rng.get_state())
        assert torch.equal(plain.rng.get_state(), watch.rng.get_state())
    for model in ("generator", "critic"):
        watched = params(getattr(watch, model))
        for name, ref in params(getattr(plain, model)).items():
            assert torch.equal(watched[name], ref), name
    assert max(float((p - params(plain.generator)[k]).abs().max()) for k, p in params(cd.generator).items()) > 0
    assert all(m_plain[k] == m_watch[k] for k in m_plain if not k.startswith("time_")), (m_plain, m_watch)


def test_consistency_gradient_lowers_the_consistency_loss(run_dir):
    """A CD-only generator update lowers L_CD on the very batch it was computed on (the gradient's sign).

    The last step is forced, where the target is the CFG teacher's x0 and does not move with the student;
    AdamW's first step (β1 = 0) is lr·sign(g) per weight, so a small lr keeps it in the linear regime."""
    from training.models import velocity_fn

    trainer = Trainer(stage1_config(run_dir, "cd_only", sampler={"last_step_only": True}, optim={"lr": 1e-6},
                                    dm_weight=0.0, consistency_weight=1.0))
    seen = {}
    dollar_terms = trainer.objective._dollar_terms

    def measure(enc, x_k):  # L_CD of the current student at the trainer's own exit-step input
        student = velocity_fn(trainer.generator, enc.prompt_embeds, None, trainer.device)
        with torch.no_grad():
            x0 = x_k - 0.625 * student(x_k, torch.full((x_k.shape[0],), 625.0))
            return float(consistency_distillation_loss(x0, x_k, 0.625, 0.0, trainer.objective._real_velocity(enc), student))

    def spy(enc, x0, k, x_k, loss, logs):
        seen.update(enc=enc, x_k=x_k, before=measure(enc, x_k))
        return dollar_terms(enc, x0, k, x_k, loss, logs)

    trainer.objective._dollar_terms = spy
    metrics = trainer.train_step()
    after = measure(seen["enc"], seen["x_k"])
    assert metrics["exit_step"] == 3 and metrics["loss_consistency"] == pytest.approx(seen["before"], rel=1e-6)
    print(f"L_CD on the update's batch: {seen['before']:.4g} -> {after:.4g}")
    assert after < 0.99 * seen["before"], (seen["before"], after)


def test_reward_fine_tuning_through_the_trainer_raises_the_frozen_reward(run_dir):
    models = {"reward_model": "brightness.safetensors"}
    off = Trainer(stage1_config(run_dir, "reward_off", models=models))
    on = Trainer(stage1_config(run_dir, "reward_on", models=models, reward_weight=1.0))
    frozen = {k: v.clone() for k, v in on.reward_model.state_dict().items()}
    initial = sample_reward(on)
    assert initial == sample_reward(off)
    for _ in range(3):
        off.train_step()
        m_on = on.train_step()
        assert m_on["loss_generator"] == pytest.approx(m_on["loss_dm"] - m_on["reward"], rel=1e-6)
    r_off, r_on = sample_reward(off), sample_reward(on)
    print(f"frozen reward of fixed-seed samples: start {initial:.3f}, DMD only {r_off:.3f}, DMD + reward {r_on:.3f}")
    assert r_on > initial + 0.1 and r_on > r_off + 0.1
    assert all(torch.equal(v, on.reward_model.state_dict()[k]) for k, v in frozen.items())
    assert all(p.grad is None and not p.requires_grad for p in on.reward_model.parameters())


def test_resume_is_exact_with_consistency_and_reward_on(run_dir):
    models = {"reward_model": "brightness.safetensors"}
    loss = {"consistency_weight": 10.0, "reward_weight": 0.5}
    full = Trainer(stage1_config(run_dir, "dollar_a", models=models, **loss))
    for _ in range(3):
        last = full.train_step()
        if full.step == 2:
            full.save()
    out_b = run_dir / "dollar_b" / "checkpoints"
    out_b.mkdir(parents=True)
    shutil.copytree(run_dir / "dollar_a" / "checkpoints" / "step_000002", out_b / "step_000002")
    (out_b / "latest").write_text("step_000002\n")
    resumed = Trainer(stage1_config(run_dir, "dollar_b", models=models, **loss), resume=True)
    assert resumed.step == 2
    again = resumed.train_step()
    assert again["loss_consistency"] == last["loss_consistency"] and again["reward"] == last["reward"]
    for name, ref in params(full.generator).items():
        assert torch.equal(dict(resumed.generator.named_parameters())[name].detach(), ref), name
    for name, ref in params(full.critic).items():
        assert torch.equal(dict(resumed.critic.named_parameters())[name].detach(), ref), name
    assert torch.equal(full.rng.get_state(), resumed.rng.get_state())


# ------------------------------------------------------------------------------------------------
# vdot train-reward (= python -m training.reward): fit a reward model to a manifest's labels
# ------------------------------------------------------------------------------------------------


def test_reward_cli_fits_manifest_labels_and_the_trainer_reads_the_file(run_dir, capsys):
    from vdot_nodes.core.video_io import write_video

    folder = run_dir / "labelled"
    folder.mkdir()
    lines = []
    for i in range(4):
        frames = torch.full((5, 16, 16, 3), 0.2 + 0.2 * i)  # brighter clips score higher: a label, not a formula
        write_video(frames, folder / f"clip{i}.mp4", fps=8)
        lines.append({"caption": f"clip {i}", "video": f"clip{i}.mp4", "reward": float(i)})
    manifest = folder / "rated.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = folder / "reward.safetensors"
    args = ["--manifest", str(manifest), "--out", str(out), "--vae", "tiny", "--num-frames", "5", "--height", "16",
            "--width", "16", "--steps", "60", "--batch-size", "3", "--lr", "3e-3", "--hidden", "8", "--mlp-hidden", "16",
            "--val-fraction", "0.25", "--device", "cpu", "--no-progress"]
    from vdot_nodes.cli import main as vdot_main

    assert vdot_main(["train-reward", *args]) == 0  # the CLI alias runs reward_main
    report = capsys.readouterr().out
    assert "3 training / 1 held-out clips" in report and str(out) in report
    model = load_reward_model(out)
    assert model.config == {"in_channels": 16, "hidden": 8, "mlp_hidden": 16}
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        info = json.loads(f.metadata()["vdot_reward_info"])
    assert info["n_train"] == 3 and info["n_val"] == 1 and math.isfinite(info["val_mse"])
    assert info["final_train_mse"] < info["first_train_mse"]  # the regression learned the labels it saw
    trainer = Trainer(stage1_config(run_dir, "cli_reward", models={"reward_model": str(out)}, reward_weight=1.0))
    assert math.isfinite(trainer.train_step()["reward"])
    # Unlabelled lines are named, and nothing is written.
    lines[2].pop("reward")
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert reward_main([*args[:3], str(folder / "other.safetensors"), *args[4:]]) == 2
    err = capsys.readouterr().err
    assert "line(s) [3] have no 'reward'" in err and "Fix:" in err and not (folder / "other.safetensors").exists()
    lines[2]["reward"] = "high"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert reward_main(args) == 2
    assert "field 'reward': must be a finite number" in capsys.readouterr().err
