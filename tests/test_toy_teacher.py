"""Toy components and teacher: tokenizer covers the grammar, VAE latent statistics, flow-matching steps
reduce the loss on a fixed batch, checkpoints reload, the T2V twin matches the VACE teacher."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.toy.captions import caption_vocabulary
import numpy as np

from training.toy.components import (_control_sample, build_toy_text_encoder, build_toy_tokenizer, build_toy_vae,
                                   control_reconstruction_psnr, train_vae)
from training.toy.dataset import CONTROL_KINDS, control_video, write_toy_dataset
from training.toy.teacher import (EncodedManifest, TeacherTrainer, build_t2v_teacher, build_toy_teacher,
                                  flow_matching_loss, sample_sigmas, task_row_weights)
from training.toy.world import WorldConfig, make_clip
from vdot_nodes.core.models import load_text_encoder, load_transformer, load_vae, save_text_encoder, save_vae
from vdot_nodes.core.pipeline import VDOTPipeline
from vdot_nodes.core.text_encoding import compact_padded_text, cross_attention_bias

SMALL = WorldConfig(height=32, width=32, num_frames=5, max_objects=2)
TASKS = ["t2v", "r2v", "depth", "reference_pose"]
SMALL_TEACHER = dict(num_layers=2, vace_layers=[0], ffn_dim=64)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    manifest = write_toy_dataset(root / "world", 1, seed=7, config=SMALL)  # a triangle and a stick figure: pose rows too
    pipe = VDOTPipeline(build_toy_teacher(seed=0, **SMALL_TEACHER), build_toy_vae(seed=0), build_toy_text_encoder(seed=0),
                        build_toy_tokenizer(), device="cpu", offload="none")
    data = EncodedManifest(pipe, manifest, SMALL.num_frames, SMALL.height, SMALL.width, tasks=TASKS)
    return root, pipe, data


def test_tokenizer_has_one_token_per_grammar_word():
    tok = build_toy_tokenizer()
    words = caption_vocabulary()
    ids = tok(" ".join(words), add_special_tokens=False).input_ids
    assert len(ids) == len(words) and tok.unk_token_id not in ids
    caption = make_clip(4).caption
    assert tok.unk_token_id not in tok(caption).input_ids


def test_text_encoder_round_trip(tmp_path):
    enc, tok = build_toy_text_encoder(seed=1), build_toy_tokenizer()
    path = save_text_encoder(enc, tok, tmp_path / "te.safetensors")
    enc2, tok2 = load_text_encoder(path, precision="fp32")
    ids = tok("a red circle moves left", return_tensors="pt").input_ids
    assert ids.tolist() == tok2("a red circle moves left", return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        assert torch.allclose(enc(ids).last_hidden_state, enc2(ids).last_hidden_state, atol=1e-6)


def test_text_encoder_tells_the_objects_motion_from_the_cameras():
    # The same direction word in the object's clause and in the camera's must reach the teacher as
    # different keys (cross-attention sees no positions); a random UMT5 gave cosine 0.996 here.
    from vdot_nodes.core.tiny import build_tiny_text_encoder

    from training.toy.components import attend_to_neighbours, toy_vocab

    tok = build_toy_tokenizer()
    a = "a red circle moves left over a grey striped background, the camera pans right"
    b = "a red circle moves right over a grey striped background, the camera pans left"

    def left_outputs(enc):
        out = []
        for caption in (a, b):
            ids = tok(caption, return_tensors="pt").input_ids
            with torch.no_grad():
                hidden = enc(ids).last_hidden_state[0]
            out.append(hidden[tok.convert_ids_to_tokens(ids[0]).index("▁left")])
        return float(torch.nn.functional.cosine_similarity(*out, dim=0))

    random_init = build_tiny_text_encoder(0, vocab_size=len(toy_vocab()))
    assert left_outputs(random_init) > 0.98
    toy = build_toy_text_encoder(seed=0)
    assert left_outputs(toy) < 0.8
    assert left_outputs(attend_to_neighbours(random_init)) == pytest.approx(left_outputs(toy), abs=1e-6)
    # Each head's bias is the largest at its own offset.
    attention = toy.encoder.block[0].layer[0].SelfAttention
    bias = attention.compute_bias(5, 5)[0, :, 2]  # [heads, keys] for the query at position 2
    assert bias.argmax(dim=1).tolist() == [1, 3, 0, 2]


def test_vae_training_runs_and_latents_are_normalised(tmp_path):
    vae = build_toy_vae(seed=0)
    seeds = [11, 12, 13]
    result = train_vae(vae, steps=1, config=SMALL, train_frames=5, eval_seeds=[1], stat_seeds=seeds, lr=1e-3,
                       object_weight=4.0)
    assert set(result) >= {"psnr_before", "psnr_after", "object_psnr_after"} and result["psnr_after"] > 5
    assert result["object_psnr_after"] < result["psnr_after"]  # an untrained VAE misses the saturated objects most
    path = save_vae(vae, tmp_path / "vae.safetensors")
    vae2 = load_vae(path, precision="fp32")
    assert vae2.config.latents_mean == pytest.approx(vae.config.latents_mean)
    pipe = VDOTPipeline(build_toy_teacher(), vae2, device="cpu", offload="none")
    z = torch.cat([pipe.encode_latents(torch.from_numpy(make_clip(s, SMALL).frames)).flatten(2) for s in seeds], 2)
    assert z.mean(dim=2).abs().max() < 1e-3  # per channel, on the clips the statistics came from
    assert torch.allclose(z.std(dim=2), torch.ones(1, vae.config.z_dim), atol=1e-2)


def _past_taps(vae) -> float:
    return sum(float(m.weight[:, :, :-1].abs().sum()) for m in vae.modules()
               if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] > 1)


def test_toy_vae_codes_each_frame_alone_and_single_frame_training_keeps_it_so():
    vae = build_toy_vae(seed=0)
    clip = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def per_frame_gap(v):
        with torch.no_grad():
            z = v.encode(clip).latent_dist.mode()
            alone = torch.cat([v.encode(clip[:, :, i:i + 1]).latent_dist.mode() for i in range(5)], 2)
            decoded = v.decode(z).sample
            decoded_alone = torch.cat([v.decode(z[:, :, i:i + 1]).sample for i in range(5)], 2)
        return max(float((z - alone).abs().max()), float((decoded - decoded_alone).abs().max()))

    assert _past_taps(vae) == 0 and per_frame_gap(vae) < 1e-5
    train_vae(vae, steps=2, config=SMALL, train_frames=1, batch_size=3, crop=16, eval_seeds=[1], stat_seeds=[2],
              lr=1e-2, object_weight=3.0, edge_weight=8.0)
    assert _past_taps(vae) == 0 and per_frame_gap(vae) < 1e-5  # the taps saw only the causal zero padding
    train_vae(vae, steps=1, config=SMALL, train_frames=5, batch_size=1, eval_seeds=[1], stat_seeds=[2], lr=1e-2)
    assert _past_taps(vae) > 0 and per_frame_gap(vae) > 1e-3  # clips do train them


def test_a_control_sample_is_one_frame_of_the_drawn_control_video_with_the_clips_weights():
    seen, rng = set(), np.random.default_rng(0)
    for seed in range(20):
        replay = np.random.default_rng()
        replay.bit_generator.state = rng.bit_generator.state  # the same draws, in the same order: kind, then frame
        x, objects, edges = _control_sample(seed, SMALL, rng)
        kind, t = CONTROL_KINDS[int(replay.integers(len(CONTROL_KINDS)))], int(replay.integers(SMALL.num_frames))
        clip = make_clip(seed, SMALL)
        assert x.shape == (1, 3, 1, 32, 32) and objects.shape == edges.shape == (1, 1, 1, 32, 32)
        assert torch.allclose((x[0, :, 0].permute(1, 2, 0) + 1) / 2, control_video(clip, kind)[t], atol=1e-6)
        assert torch.equal(objects[0, 0, 0].bool(), torch.from_numpy(clip.ids[t] > 0))
        seen.add(kind)
    assert seen == set(CONTROL_KINDS)
    with pytest.raises(ValueError, match="unknown control kind 'normal'"):
        control_video(make_clip(0, SMALL), "normal")


def test_vae_training_on_control_frames_changes_what_it_learns_and_reports_each_control():
    def trained(share):
        vae = build_toy_vae(seed=0)
        result = train_vae(vae, steps=2, config=SMALL, train_frames=1, batch_size=4, crop=16, eval_seeds=[1],
                           stat_seeds=[2], lr=1e-2, control_share=share)
        return vae, result

    plain, plain_result = trained(0.0)
    again, _ = trained(0.0)
    mixed, mixed_result = trained(1.0)
    weights = lambda v: torch.cat([p.detach().flatten() for p in v.parameters()])  # noqa: E731
    assert torch.equal(weights(plain), weights(again))  # deterministic
    assert not torch.equal(weights(plain), weights(mixed))
    assert set(plain_result["control_psnr_after"]) == set(mixed_result["control_psnr_after"]) == set(CONTROL_KINDS)
    assert plain_result["control_psnr_after"] != mixed_result["control_psnr_after"]
    assert mixed_result["control_psnr_after"] == pytest.approx(control_reconstruction_psnr(mixed, [1], SMALL))
    with pytest.raises(ValueError, match="control_share needs train_frames=1"):
        train_vae(build_toy_vae(seed=0), steps=1, config=SMALL, train_frames=5, control_share=0.5)


def test_encoded_rows_follow_the_vace_layout(toy):
    _, pipe, data = toy
    by_task = {data.dataset.samples[i].task: data[i] for i in range(len(data))}
    assert set(by_task) == set(TASKS)
    t2v, r2v = by_task["t2v"], by_task["r2v"]
    # toy VAE: 4 channels, 2× spatial, no temporal compression, so 5×32×32 → 5×16×16 latents; context
    # 4 + 4 + 2×2-unshuffled mask (4) = 12
    assert t2v.x0.shape == (1, 4, 5, 16, 16) and t2v.control.shape == (1, 12, 5, 16, 16)
    refs = r2v.x0.shape[2] - 5
    assert refs >= 1 and r2v.control.shape[2] == r2v.x0.shape[2]
    assert torch.equal(r2v.x0[:, :, :refs], r2v.control[:, :4, :refs])  # references' own latents in front
    assert torch.equal(r2v.control[:, 8:, :refs], torch.zeros_like(r2v.control[:, 8:, :refs]))  # mask 0 = keep
    assert t2v.text.shape == (1, 512, 32)


def test_flow_matching_loss_matches_its_equation():
    model = build_toy_teacher(seed=0, num_layers=1, vace_layers=[0]).eval()
    x0, noise = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 4, 2, 8, 8)
    control, text, sigma = torch.randn(1, 12, 2, 8, 8), torch.randn(1, 8, 32), torch.tensor([0.3])
    with torch.no_grad():
        loss = flow_matching_loss(model, x0, text, sigma, noise, control)
        v = model(hidden_states=0.7 * x0 + 0.3 * noise, timestep=torch.tensor([300.0]), encoder_hidden_states=text,
                  control_hidden_states=control, control_hidden_states_scale=torch.ones(1), return_dict=False)[0]
    assert loss.item() == pytest.approx(((v - (noise - x0)) ** 2).mean().item(), rel=1e-5)
    s = sample_sigmas(10000, 3.0, torch.Generator().manual_seed(0))
    assert 0 < s.min() and s.max() <= 1 and s.median() > 0.6  # shift 3 puts the median at 0.75


def test_compacted_text_gives_the_same_cross_attention_as_wans_512_padded_rows():
    """Prompts of 3 and 7 tokens padded to 512 zero rows (Wan's convention) against the compact form: the
    transformer's output and the teacher loss's gradients agree; the compact text without its bias does not."""
    torch.manual_seed(0)
    model = build_toy_teacher(seed=0, num_layers=2, vace_layers=[0, 1], ffn_dim=64)
    text = torch.zeros(2, 512, 32)
    text[0, :3], text[1, :7] = torch.randn(3, 32), torch.randn(7, 32)
    compact, bias = compact_padded_text(text)
    assert compact.shape == (2, 8, 32)
    assert torch.equal(bias[0, 0, 0, :3], torch.zeros(3)) and torch.equal(bias[1, 0, 0, :7], torch.zeros(7))
    assert bias[0, 0, 0, 3:].tolist() == pytest.approx([math.log(509 / 5)] * 5)
    assert bias[1, 0, 0, 7].item() == pytest.approx(math.log(505))
    x0, noise, control = torch.randn(2, 4, 2, 8, 8), torch.randn(2, 4, 2, 8, 8), torch.randn(2, 12, 2, 8, 8)
    sigma = torch.tensor([0.9, 0.3])

    def velocity(t, b=None):
        with cross_attention_bias(model, b):
            return model(hidden_states=(1 - sigma.view(-1, 1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1, 1) * noise,
                         timestep=sigma * 1000, encoder_hidden_states=t, control_hidden_states=control,
                         control_hidden_states_scale=torch.ones(2), return_dict=False)[0]

    with torch.no_grad():
        full, same, unbiased = velocity(text), velocity(compact, bias), velocity(compact)
    assert (same - full).abs().max() < 1e-5 < (unbiased - full).abs().max()
    assert not any(m._forward_pre_hooks for n, m in model.named_modules() if n.endswith("attn2"))  # hooks removed
    loss = flow_matching_loss(model, x0, text, sigma, noise, control)  # compacts inside
    fast = torch.autograd.grad(loss, list(model.parameters()))
    slow = torch.autograd.grad(F.mse_loss(velocity(text), noise - x0), list(model.parameters()))
    assert max((a - b).abs().max().item() for a, b in zip(fast, slow)) < 1e-5
    assert compact_padded_text(torch.randn(1, 6, 32))[1] is None  # nothing to drop: unchanged


def test_teacher_steps_reduce_loss_and_checkpoint_reloads(toy, tmp_path):
    _, pipe, data = toy
    cfg = {"lr": 3e-3, "batch_size": 2, "text_dropout": 0.0, "ema_decay": 0.9, "warmup": 1, "seed": 0}
    trainer = TeacherTrainer(pipe.transformer, data, tmp_path / "run", cfg)
    batch = [data[i] for i in range(len(data))]

    def eval_loss():
        with torch.no_grad():
            trainer.model.eval()
            return float(trainer.loss_on(batch, torch.Generator().manual_seed(123)))

    before = eval_loss()
    for _ in range(8):
        trainer.train_step(batch)
    after = eval_loss()
    assert after < 0.8 * before, (before, after)
    trainer.save()
    exported = trainer.export(tmp_path / "teacher.safetensors")

    fresh = TeacherTrainer(build_toy_teacher(seed=9, **SMALL_TEACHER), data, tmp_path / "run", cfg)
    assert fresh.resume() and fresh.step == 8
    for (name, p), q in zip(trainer.model.state_dict().items(), fresh.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert all(torch.equal(trainer.ema.shadow[k], fresh.ema.shadow[k]) for k in trainer.ema.shadow)
    loaded = load_transformer(exported, precision="fp32")
    for name, p in loaded.named_parameters():
        assert torch.allclose(p, trainer.ema.shadow[name]), name
    fresh.train(10)  # continues from step 8 and checkpoints at the end
    assert fresh.step == 10 and (tmp_path / "run" / "metrics.jsonl").read_text().count('"teacher"') == 2


def test_task_weights_set_each_tasks_share_of_the_drawn_rows(toy, tmp_path):
    from vdot_nodes.core.errors import VDOTInputError

    _, pipe, data = toy
    tasks = [sample.task for sample in data.dataset.samples]

    def drawn(weights, batches=200):
        trainer = TeacherTrainer(pipe.transformer, data, tmp_path / "run", {"batch_size": 4, "seed": 0, "task_weights": weights})
        return [ex.task for _ in range(batches) for ex in trainer.next_batch()]

    assert set(drawn({"t2v": 0, "r2v": 0, "reference_pose": 0}, 20)) == {"depth"}
    share = drawn({"depth": 5}).count("depth") / 800  # 5 of the 8 weight units when the four tasks have a row each
    assert tasks.count("depth") == 1 and len(tasks) == 4 and abs(share - 5 / 8) < 0.06, share
    uniform = TeacherTrainer(pipe.transformer, data, tmp_path / "run", {"batch_size": 4, "seed": 0})
    expected = torch.randint(0, len(data), (4,), generator=torch.Generator().manual_seed(0)).tolist()
    assert [ex.task for ex in uniform.next_batch()] == [tasks[i] for i in expected]  # unset: the old uniform draw
    with pytest.raises(VDOTInputError, match="teacher.task_weights: unknown task.*'flw'"):
        TeacherTrainer(pipe.transformer, data, tmp_path / "run", {"task_weights": {"flw": 2}})
    # A task the manifest has no rows of (the recipe's weights in a world without it) weighs nothing.
    assert torch.equal(task_row_weights(tasks, {"flow": 2, "depth": 3}), task_row_weights(tasks, {"depth": 3}))
    for bad in ({"depth": -1}, {"t2v": 0, "r2v": 0, "depth": 0, "reference_pose": 0}):
        with pytest.raises(VDOTInputError, match="negative weight or leaves no row"):
            task_row_weights(tasks, bad)


def test_t2v_twin_equals_vace_teacher_without_control():
    vace = build_toy_teacher(seed=2).eval()
    t2v = build_t2v_teacher(vace)
    x, text = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 8, 32)
    with torch.no_grad():
        a = vace(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=text,
                 control_hidden_states=torch.randn(1, 12, 2, 8, 8),
                 control_hidden_states_scale=torch.zeros(len(vace.config.vace_layers)),
                 return_dict=False)[0]
        b = t2v(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False)[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_toy_teacher_cli_trains_on_the_device_given_and_refuses_a_missing_one(tmp_path, capsys):
    """`vdot toy teacher --device`: an absent GPU is refused before anything is written; on the CPU the
    run writes a teacher the loaders read back."""
    from training.toy.cli import TEACHER_VACE, toy_main

    world = write_toy_dataset(tmp_path / "world", 1, seed=7, config=SMALL)
    components = tmp_path / "components"
    components.mkdir()
    save_vae(build_toy_vae(seed=0), components / "vae.safetensors")
    save_text_encoder(build_toy_text_encoder(seed=0), build_toy_tokenizer(), components / "text_encoder.safetensors")
    config = tmp_path / "toy.yaml"
    config.write_text("world: {height: 32, width: 32, num_frames: 5}\nteacher: {batch_size: 2}\n")
    argv = ["--config", str(config), "teacher", "--data", str(world), "--components", str(components),
            "--out", str(tmp_path / "teacher"), "--steps", "2"]
    if not torch.cuda.is_available():
        assert toy_main([*argv, "--device", "cuda"]) == 2
        assert "--device: cuda was asked for but this machine has no CUDA device" in capsys.readouterr().err
        assert not (tmp_path / "teacher").exists()
    assert toy_main([*argv, "--device", "nowhere"]) == 2
    assert "--device: 'nowhere' is not a device name" in capsys.readouterr().err
    assert toy_main([*argv, "--device", "cpu"]) == 0
    teacher = load_transformer(tmp_path / "teacher" / TEACHER_VACE, precision="fp32")
    assert next(teacher.parameters()).device.type == "cpu" and teacher.config.num_layers == 4


def test_vae_learns_on_the_world_of_its_own_cell(tmp_path):
    """``vae.cell`` picks the world the VAE trains and is scored on; the teacher's world (``world.cell``) is
    unaffected. The PSNR the components step records is the one of that world's held-out clips. The
    recipe's VAE codes frames alone through both of its phases."""
    import dataclasses
    import json

    from training.toy.cli import _world_config, load_toy_config, run_components
    from training.toy.components import vae_reconstruction_psnr

    cfg = load_toy_config(None)
    cfg["world"]["cell"] = 2  # toy9's world, with a VAE of every edge
    cfg["vae"].update(cell=1, steps=1, long_steps=1, batch_size=1, long_batch_size=1)
    vae_path, _ = run_components(cfg, tmp_path)
    recorded = json.loads((tmp_path / "vae_result.json").read_text())["psnr_after"]
    vae, world = load_vae(vae_path, precision="fp32"), _world_config(cfg)
    eval_seeds = range(10_000_000, 10_000_004)  # train_vae's held-out clips
    on_pixels = vae_reconstruction_psnr(vae, eval_seeds, dataclasses.replace(world, cell=1))
    on_cells = vae_reconstruction_psnr(vae, eval_seeds, world)
    assert world.cell == 2 and recorded == pytest.approx(on_pixels, abs=1e-4) and abs(on_pixels - on_cells) > 1e-3
    assert cfg["vae"]["train_frames"] == 1 and _past_taps(vae) == 0  # both phases learn on single frames
