"""The VDOT distillation trainer on tiny Wan models: schedule, GAN + OTD paths, exact resume, export, FSDP2.

Sizes are the smallest the real classes take (5 frames of 16×16 → latents [16, 2, 2, 2]), so one
iteration is a few forwards of a 2-block transformer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from training.config import config_from_dict, load_config
from training.trainer import Trainer, generator_objective
from tests.helpers import TRAIN_SHAPE as SHAPE
from tests.helpers import write_train_manifest
from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _stage2_config(folder: Path, out: str, **loss) -> dict:
    return {
        "stage": 2, "seed": 3, "out": out, "max_steps": 4,
        "guidance": {"cfg_scale": 2.0, "negative_prompt": "blurry"},
        "loss": {"dm": "otd", "otd_cloud": "samples", "otd_variant": "paper", "gan_weight": 0.5, "gan_d_weight": 0.5, **loss},
        "schedule": {"ttur": 2, "generator_objectives": ["dm", "adv"]},
        "optim": {"lr": 1e-3, "critic_lr": 1e-3, "ema_decay": 0.5},
        "runtime": {"device": "cpu", "mixed_precision": "fp32", "gradient_checkpointing": True},
        "models": {"teacher_precision": "fp32"},
        "data": {"manifest": str(folder / "train.jsonl"), "batch_size": 2, **SHAPE},
        "logging": {"checkpoint_every": 2, "export_precision": "fp32"},
    }


def _export_config(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["vdot_transformer_config"])


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _generate_t2v(trainer, model) -> torch.Tensor:
    """A T2V video from ``model`` with the trainer's VAE and text encoder (an exported generator in use)."""
    from vdot_nodes.core.pipeline import VDOTPipeline
    from vdot_nodes.core.vcu import build_t2v_vcu

    pipe = trainer.encoders
    return VDOTPipeline(model, pipe.vae, pipe.text_encoder, pipe.tokenizer, device="cpu", offload="none").generate(
        build_t2v_vcu(**SHAPE, prompt="a red ball"), seed=1)


def test_schedule_and_config_errors(tmp_path):
    objs = [generator_objective(s, 5, ["dm", "adv"]) for s in range(16)]
    assert objs == ["dm", None, None, None, None, "adv", None, None, None, None, "dm", None, None, None, None, "adv"]
    assert [generator_objective(s, 1, ["dm", "adv", "dm+adv"]) for s in range(4)] == ["dm", "adv", "dm+adv", "dm"]
    base = {"data": {"captions": "c.txt"}, "schedule": {"generator_objectives": ["dm"]}}
    cfg = config_from_dict(base)
    assert cfg.schedule.ttur == 5 and cfg.optim.betas == [0.0, 0.999] and cfg.guidance.cfg_scale == 5.0
    with pytest.raises(VDOTInputError, match=r"loss\.dmm"):
        config_from_dict({**base, "loss": {"dmm": "otd"}})
    with pytest.raises(VDOTInputError, match="learning_rate"):
        config_from_dict({**base, "learning_rate": 1})
    with pytest.raises(VDOTInputError, match="real videos"):  # ADV with captions only
        config_from_dict({"data": {"captions": "c.txt"}})
    with pytest.raises(VDOTInputError, match="loss.dm"):
        config_from_dict({**base, "loss": {"dm": "kl"}})
    for name in ("toy_stage1", "toy_stage2", "toy_stage2_vdot", "wan1.3b_stage1", "wan1.3b_stage2", "wan14b_stage1", "wan14b_stage2"):
        assert load_config(ROOT / "training" / "configs" / f"{name}.yaml").max_steps > 0


@pytest.fixture(scope="module")
def stage2_run(tmp_path_factory):
    """3 iterations (DM, critic, ADV) with a checkpoint at step 2, weights recorded per step."""
    folder = tmp_path_factory.mktemp("stage2")
    write_train_manifest(folder)
    cfg = config_from_dict(_stage2_config(folder, str(folder / "run_a")))
    trainer = Trainer(cfg)
    history = []
    for _ in range(3):
        gen_before, critic_before = _params(trainer.generator), _params(trainer.critic)
        metrics = trainer.train_step()
        history.append((metrics, gen_before, critic_before, _params(trainer.generator), _params(trainer.critic)))
        if trainer.step == 2:
            trainer.save()
    return folder, cfg, trainer, history


def _moved(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_losses_finite_and_generator_moves_only_on_ttur_steps(stage2_run):
    _, _, _, history = stage2_run
    assert [m["objective"] for m, *_ in history] == ["dm", "critic", "adv"]
    for step, (m, g0, c0, g1, c1) in enumerate(history):
        assert all(v == v and abs(v) != float("inf") for v in m.values() if isinstance(v, float)), m
        assert _moved(c0, c1) > 0  # the critic is updated every iteration
        if step % 2 == 0:
            assert _moved(g0, g1) > 0 and "grad_norm_generator" in m
        else:
            assert _moved(g0, g1) == 0 and "grad_norm_generator" not in m
    dm, adv = history[0][0], history[2][0]
    # OTD path: its diagnostics are logged; one sample per rank-batch of 2 -> a real 2x2 plan.
    assert 0.5 <= dm["otd_plan_diag_mass"] <= 1.0 and dm["otd_rel_diff_dmd"] >= 0 and "loss_dm" in dm
    assert "loss_gan_g" in adv and "loss_dm" not in adv  # GAN path, alternating with DM
    assert all("loss_gan_d" in m for m, *_ in history)  # discriminator trained in every critic update
    assert 0 <= dm["exit_step"] < 4


def test_resume_matches_uninterrupted_run(stage2_run):
    folder, cfg, trainer_a, _ = stage2_run
    out_b = folder / "run_b"
    (out_b / "checkpoints").mkdir(parents=True)
    shutil.copytree(folder / "run_a" / "checkpoints" / "step_000002", out_b / "checkpoints" / "step_000002")
    (out_b / "checkpoints" / "latest").write_text("step_000002\n")
    cfg_b = config_from_dict({**_stage2_config(folder, str(out_b))})
    trainer_b = Trainer(cfg_b, resume=True)
    assert trainer_b.step == 2
    while trainer_b.step < 3:
        trainer_b.train_step()
    for name, ref in _params(trainer_a.generator).items():
        torch.testing.assert_close(dict(trainer_b.generator.named_parameters())[name].detach(), ref, rtol=0, atol=1e-6)
    for name, ref in _params(trainer_a.critic).items():
        torch.testing.assert_close(dict(trainer_b.critic.named_parameters())[name].detach(), ref, rtol=0, atol=1e-6)


def test_export_loads_and_generates(stage2_run):
    from vdot_nodes.core.models import load_transformer

    _, _, trainer, _ = stage2_run
    path = trainer.export()
    assert path.is_file() and path.suffix == ".safetensors"
    model = load_transformer(path, precision="fp32", config=_export_config(path))  # tiny = custom size: config rides along
    shadow = trainer.ema.state_dict()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), shadow[name], rtol=0, atol=0, msg=name)
    assert trainer.export() == path  # same step again: the file is kept, never rewritten
    trainer.cfg.logging.export_layout = "diffusers"  # a folder: custom sizes reload without a config
    folder = trainer.export()
    assert folder.is_dir() and (folder / "config.json").is_file()
    for name, p in load_transformer(folder, precision="fp32").named_parameters():
        torch.testing.assert_close(p.detach(), shadow[name], rtol=0, atol=0, msg=name)
    video = _generate_t2v(trainer, model)
    assert video.shape == (1, 5, 16, 16, 3) and torch.isfinite(video).all()


def test_stage1_captions_dmd_then_accwaninit(tmp_path):
    """Stage 1 (Wan T2V, captions only, DMD) exports a T2V file that stage 2's AccWanInit reads."""
    from training.init import init_vace_from_t2v
    from vdot_nodes.core.tiny import build_tiny_transformer

    (tmp_path / "caps.txt").write_text("a red ball\na blue cat\n")
    cfg = config_from_dict({
        "stage": 1, "out": str(tmp_path / "run"), "max_steps": 2, "guidance": {"cfg_scale": 1.0},
        "loss": {"dm": "dmd"}, "schedule": {"ttur": 1, "generator_objectives": ["dm"]},
        "optim": {"lr": 1e-3, "critic_lr": 1e-3}, "models": {"teacher_precision": "fp32"},
        "runtime": {"device": "cpu", "mixed_precision": "fp32", "gradient_checkpointing": False},
        "data": {"captions": "caps.txt", "batch_size": 1, **SHAPE}, "logging": {"export_precision": "fp32"},
    }, config_dir=str(tmp_path))
    trainer = Trainer(cfg)
    with pytest.raises(VDOTCancelled):  # cancel between iterations: a checkpoint is saved first
        trainer.train(progress=False, cancel=lambda: True)
    assert trainer.step == 1 and (tmp_path / "run" / "checkpoints" / "step_000001" / "meta.json").is_file()
    done = []
    result = Trainer(cfg, resume=True).train(progress=False, progress_fn=lambda d, t: done.append((d, t)))
    assert done == [(2, 2)]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["objective"] for x in lines] == ["dm", "dm"] and all(x["loss_dm"] >= 0 for x in lines)
    vace = build_tiny_transformer(seed=5)
    report = init_vace_from_t2v(vace, result["export"])
    assert report["copied"] and all(k.startswith("vace") for k in report["vace_only"])
    exported = load_file(result["export"])
    torch.testing.assert_close(vace.blocks[0].attn1.to_q.weight, exported["blocks.0.attn1.to_q.weight"], rtol=0, atol=0)


def test_fsdp2_two_process_cli_run(tmp_path, torchrun):
    """torchrun, 2 CPU ranks (gloo), FSDP2-sharded generator / critic / teacher: trains, checkpoints, exports."""
    write_train_manifest(tmp_path, n=4)
    cfg = _stage2_config(tmp_path, str(tmp_path / "run"))
    cfg["data"]["batch_size"] = 1
    cfg["max_steps"] = 3
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    torchrun(["-m", "training.cli", tmp_path / "cfg.yaml", "--no-progress"])
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["objective"] for x in lines] == ["dm", "critic", "adv"]
    assert all(x["loss_critic"] == x["loss_critic"] for x in lines)
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step_000003" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 3
    from vdot_nodes.core.models import load_transformer

    path = tmp_path / "run" / "exports" / "generator_vace_step000003.safetensors"
    model = load_transformer(path, precision="fp32", config=_export_config(path))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_rollout_exit_step_backprops_through_one_call():
    """The trainer's rollout (renoise preset at the config's timesteps) stops at the exit step with grad there only."""
    from training.rollout import rollout
    from vdot_nodes.core.sampling import few_step_sigmas

    w = torch.tensor(0.5, requires_grad=True)
    grad_modes, inputs = [], []

    def velocity(x_t, t):
        grad_modes.append(torch.is_grad_enabled())
        inputs.append(x_t.detach())
        return w * x_t + (t / 1000).view(-1, 1, 1, 1, 1)

    out = rollout(velocity, (16, 2, 2, 2), [4], timesteps=[1000, 750, 500, 250], shift=5.0, exit_step=2,
                  device="cpu", grad=True)
    assert grad_modes == [False, False, True]
    with torch.no_grad():  # stopping at step 2 == the 3-step sampler over the first three timesteps
        ref = rollout(velocity, (16, 2, 2, 2), [4], timesteps=[1000, 750, 500], shift=5.0, exit_step=2,
                      device="cpu", grad=False)
    torch.testing.assert_close(out.detach(), ref, rtol=0, atol=0)
    out.sum().backward()  # x0 = x_t − σ·(w·x_t + t): only the exit step's call depends on w
    sigma = few_step_sigmas([1000, 750, 500, 250], 5.0)[2]
    torch.testing.assert_close(w.grad, -sigma * inputs[2].sum(), rtol=1e-5, atol=1e-5)
    with pytest.raises(VDOTInputError, match="exit_step"):
        rollout(velocity, (16, 2, 2, 2), [4], timesteps=[1000, 750, 500, 250], shift=5.0, exit_step=4,
                device="cpu", grad=False)


def test_real_score_guidance_interval_guides_only_samples_inside_it(tmp_path):
    """``guidance.min_t`` / ``max_t``: the real score of a sample at σ inside [min_t, max_t] is the CFG teacher's,
    outside it the conditional teacher's alone; a bad interval is refused naming the key."""
    from training.batches import encode_batch
    from vdot_nodes.core.sampling import cfg_velocity

    write_train_manifest(tmp_path)
    raw = _stage2_config(tmp_path, str(tmp_path / "run"))
    raw["guidance"].update(min_t=0.5, max_t=0.9)
    trainer = Trainer(config_from_dict(raw))
    obj = trainer.objective
    enc = encode_batch(trainer.cfg, trainer.encoders, next(iter(trainer.loader)), trainer.data_rng, need_real=False)
    x = torch.randn((2, *enc.latent_shape), generator=torch.Generator().manual_seed(0))
    cond = obj._velocity(trainer.teacher, enc)
    neg = obj._velocity(trainer.teacher, enc, obj.negative_embeds.expand(enc.prompt_embeds.shape[0], -1, -1))
    guided_everywhere = cfg_velocity(cond, neg, 2.0)
    real = obj._real_velocity(enc)
    with torch.no_grad():
        for sigmas, inside in (([0.7, 0.3], [True, False]), ([0.95, 0.5], [False, True])):
            t = torch.tensor(sigmas) * 1000
            got, c, g = real(x, t), cond(x, t), guided_everywhere(x, t)
            for i, want in enumerate(inside):
                torch.testing.assert_close(got[i], (g if want else c)[i])
            assert not torch.allclose(c, g)
    raw["guidance"].update(min_t=0.6, max_t=0.6)
    with pytest.raises(VDOTInputError, match="guidance.min_t: 0.6 .. guidance.max_t 0.6 is not an interval"):
        config_from_dict(raw)


def test_approximate_r1_r2_penalties_enter_the_critic_loss(tmp_path):
    """The rarely-run regulariser path: both penalties are computed, logged and added with their weights."""
    write_train_manifest(tmp_path)
    cfg = config_from_dict(_stage2_config(tmp_path, str(tmp_path / "run"), r1_weight=2.0, r2_weight=3.0, r1_sigma=0.05))
    trainer = Trainer(cfg)
    critic_before = _params(trainer.critic)
    trainer.step = 1  # a critic-only iteration
    metrics = trainer.train_step()
    assert metrics["objective"] == "critic"
    r1, r2 = metrics["loss_r1"], metrics["loss_r2"]
    assert 0 < r1 < 1e3 and 0 < r2 < 1e3
    expected = metrics["loss_critic_denoise"] + 0.5 * metrics["loss_gan_d"] + 2.0 * r1 + 3.0 * r2
    assert abs(metrics["loss_critic"] - expected) < 1e-5 * max(1.0, abs(expected))
    assert _moved(critic_before, _params(trainer.critic)) > 0


def test_bf16_autocast_and_bf16_optimizer_state_single_process(tmp_path):
    """The GPU memory knobs on one CPU process: ``runtime.mixed_precision: bf16`` (autocast) and
    ``optim.state_dtype: bf16`` (bf16 weights, so AdamW moments are bf16 too) train DM, critic and ADV
    iterations to finite losses close to the fp32 run's, and export a generator that loads and generates."""
    from vdot_nodes.core.models import load_transformer

    write_train_manifest(tmp_path)
    base = _stage2_config(tmp_path, str(tmp_path / "fp32"))
    base["runtime"]["gradient_checkpointing"] = False
    first_losses = {}
    for name, runtime, optim in (("fp32", {}, {}), ("autocast", {"mixed_precision": "bf16"}, {}),
                                 ("bf16", {"mixed_precision": "bf16"}, {"state_dtype": "bf16"})):
        cfg = config_from_dict({**base, "out": str(tmp_path / name), "runtime": {**base["runtime"], **runtime},
                                "optim": {**base["optim"], **optim}})
        trainer = Trainer(cfg)
        history = [trainer.train_step() for _ in range(3)]
        assert [m["objective"] for m in history] == ["dm", "critic", "adv"]
        assert all(v == v and abs(v) != float("inf") for m in history for v in m.values() if isinstance(v, float)), history
        first_losses[name] = history[0]["loss_critic"]
        want = torch.bfloat16 if name == "bf16" else torch.float32
        assert {p.dtype for p in trainer.generator.parameters()} == {want}
        assert {p.dtype for p in trainer.critic.parameters()} == {want}
        moments = [s["exp_avg"] for s in trainer.gen_opt.state.values()]
        assert moments and {m.dtype for m in moments} == {want}
    # Autocast really computes in bf16 (the loss moves) and stays close to fp32 (it is the same step).
    assert first_losses["autocast"] != first_losses["fp32"]
    assert abs(first_losses["autocast"] - first_losses["fp32"]) <= 0.05 * abs(first_losses["fp32"]) + 1e-3, first_losses
    path = trainer.export()  # export_precision fp32 from bf16 training weights
    model = load_transformer(path, precision="fp32", config=_export_config(path))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    video = _generate_t2v(trainer, model)
    assert video.shape == (1, 5, 16, 16, 3) and torch.isfinite(video).all()
