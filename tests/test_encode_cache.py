"""The on-disk VAE encode cache: a hit returns exactly what encoding gives, anything that changes the
encoding changes the entry, and a stage-2 run on a filled cache trains identically without encoding."""

from pathlib import Path

import pytest
import torch

from training.config import config_from_dict
from training.data.manifest import ManifestDataset
from training.encode_cache import EncodeCache, encode_row, row_generator
from training.trainer import Trainer
from vdot_nodes.core.pipeline import VDOTPipeline
from vdot_nodes.core.tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_transformer, build_tiny_vae

from tests.helpers import TRAIN_SHAPE as SHAPE
from tests.helpers import write_train_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


def _pipeline(vae_seed: int = 0) -> VDOTPipeline:
    return VDOTPipeline(build_tiny_transformer(0), build_tiny_vae(vae_seed), build_tiny_text_encoder(0),
                        build_tiny_tokenizer(), device="cpu", offload="none")


def test_hit_equals_encoding_and_keys_follow_what_changes_it(tmp_path):
    data = ManifestDataset(write_train_manifest(tmp_path), **SHAPE)
    pipe = _pipeline()
    cache = EncodeCache(tmp_path / "cache", pipe, seed=7)
    first = cache.get(data[0])
    assert (cache.hits, cache.misses) == (0, 1) and len(list((tmp_path / "cache").glob("row-*.safetensors"))) == 1
    reference = encode_row(pipe, data[0], row_generator(7, data[0]))
    again = EncodeCache(tmp_path / "cache", pipe, seed=7).get(data[0])  # a new run reads the file
    for row in (first, again):
        torch.testing.assert_close(row.vcu.control, reference.vcu.control, rtol=0, atol=0)
        torch.testing.assert_close(row.real, reference.real, rtol=0, atol=0)
        assert tuple(row.vcu.latent_shape) == tuple(reference.vcu.latent_shape)
        assert row.vcu.num_reference_frames == reference.vcu.num_reference_frames

    other_row = dict(data[0], caption="a blue ball")
    assert cache.path(other_row) != cache.path(data[0])
    assert EncodeCache(tmp_path / "cache", pipe, seed=8).path(data[0]) != cache.path(data[0])
    changed = _pipeline()
    with torch.no_grad():
        next(changed.vae.parameters()).add_(1e-3)
    assert EncodeCache(tmp_path / "cache", changed, seed=7).path(data[0]) != cache.path(data[0])

    # A file at the entry's name that this module did not write (no metadata) is encoded anew, not trusted.
    from safetensors.torch import save_file

    path = cache.path(data[1])
    save_file({"control": torch.zeros(1)}, path)
    row = cache.get(data[1])
    assert cache.misses == 2 and row.vcu.control.shape[1] == reference.vcu.control.shape[1]

    # A damaged entry (truncated: a full disk, a partial copy) is encoded again, not a crash.
    entry = cache.path(data[0])
    entry.write_bytes(entry.read_bytes()[:200])
    row = cache.get(data[0])
    assert cache.misses == 3
    torch.testing.assert_close(row.vcu.control, reference.vcu.control, rtol=0, atol=0)
    fresh = EncodeCache(tmp_path / "cache", pipe, seed=7)
    torch.testing.assert_close(fresh.get(data[0]).real, reference.real, rtol=0, atol=0)
    assert fresh.hits == 1  # the entry was rewritten whole


def _config(folder: Path, out: str) -> dict:
    return {
        "stage": 2, "seed": 3, "out": out, "max_steps": 3,
        "guidance": {"cfg_scale": 2.0},
        "loss": {"dm": "dmd", "gan_weight": 0.5, "gan_d_weight": 0.5},
        "schedule": {"ttur": 2, "generator_objectives": ["dm", "adv"]},
        "optim": {"lr": 1e-3, "critic_lr": 1e-3},
        "runtime": {"device": "cpu", "mixed_precision": "fp32", "gradient_checkpointing": False},
        "models": {"teacher_precision": "fp32"},
        "data": {"manifest": str(folder / "train.jsonl"), "batch_size": 1, "encode_cache": str(folder / "cache"), **SHAPE},
        "logging": {"checkpoint_every": 100, "export_precision": "fp32"},
    }


def test_stage2_run_on_a_filled_cache_trains_identically_without_encoding(tmp_path):
    write_train_manifest(tmp_path)
    runs = []
    for name in ("a", "b"):
        trainer = Trainer(config_from_dict(_config(tmp_path, str(tmp_path / name))))
        for _ in range(3):
            trainer.train_step()
        runs.append(trainer)
    a, b = runs
    assert a.encode_cache.misses == 2 and b.encode_cache.misses == 0 and b.encode_cache.hits == 3
    for name, ref in a.generator.named_parameters():
        torch.testing.assert_close(dict(b.generator.named_parameters())[name], ref, rtol=0, atol=0)
    for name, ref in a.critic.named_parameters():
        torch.testing.assert_close(dict(b.critic.named_parameters())[name], ref, rtol=0, atol=0)


def test_toy_teacher_rows_read_the_same_encodings_from_disk(tmp_path):
    from training.toy.components import build_toy_text_encoder, build_toy_tokenizer, build_toy_vae
    from training.toy.dataset import write_toy_dataset
    from training.toy.teacher import EncodedManifest, build_toy_teacher
    from training.toy.world import WorldConfig

    small = WorldConfig(height=32, width=32, num_frames=5, max_objects=1)
    manifest = write_toy_dataset(tmp_path / "world", 1, seed=5, config=small)
    pipe = VDOTPipeline(build_toy_teacher(num_layers=2, vace_layers=[0], ffn_dim=64), build_toy_vae(0),
                        build_toy_text_encoder(0), build_toy_tokenizer(), device="cpu", offload="none")
    args = (pipe, manifest, small.num_frames, small.height, small.width)
    memory = EncodedManifest(*args, tasks=["r2v", "outpaint"])
    disk = EncodedManifest(*args, tasks=["r2v", "outpaint"], encode_cache=tmp_path / "cache")
    for i in range(len(memory)):
        a, b = memory[i], disk[i]
        torch.testing.assert_close(a.x0, b.x0, rtol=0, atol=0)
        torch.testing.assert_close(a.control, b.control, rtol=0, atol=0)
    assert disk.disk.misses == len(memory) and len(list((tmp_path / "cache").iterdir())) == len(memory)


def test_rows_of_one_clip_share_vae_passes_and_encode_exactly_as_alone(tmp_path):
    from training.toy.components import build_toy_text_encoder, build_toy_tokenizer, build_toy_vae
    from training.toy.dataset import write_toy_dataset
    from training.toy.teacher import EncodedManifest, build_toy_teacher
    from training.toy.world import WorldConfig

    small = WorldConfig(height=32, width=32, num_frames=5, max_objects=1)
    manifest = write_toy_dataset(tmp_path / "world", 1, seed=5, config=small)
    pipe = VDOTPipeline(build_toy_teacher(num_layers=2, vace_layers=[0], ffn_dim=64), build_toy_vae(0),
                        build_toy_text_encoder(0), build_toy_tokenizer(), device="cpu", offload="none")
    tasks = ["t2v", "depth", "scribble", "inpaint"]
    data = EncodedManifest(pipe, manifest, small.num_frames, small.height, small.width, tasks=tasks,
                           encode_cache=tmp_path / "cache")
    seen = []
    data.encode_all(progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (len(data), len(data)) == (4, 4)
    codec = data.disk.codec
    # Alone, each row takes 3 passes (inactive, reactive, real video). Shared here: the clip's real video
    # (one pass for all 4 rows) and the all-zero (grey) video: t2v's both halves, the controls' inactive
    # halves, inpaint's reactive half (its hole is filled with grey). Left: depth, scribble, inpaint's rest.
    assert codec.passes + codec.reuses == 12 and codec.passes == 5
    for i in range(len(data)):
        sample = data.dataset[i]
        alone = encode_row(pipe, sample, row_generator(0, sample))
        torch.testing.assert_close(data[i].control, alone.vcu.control, rtol=0, atol=0)
        torch.testing.assert_close(data[i].x0, alone.real, rtol=0, atol=0)
