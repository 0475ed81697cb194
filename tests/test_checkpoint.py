"""training.checkpoint + training.ema: exact resume (weights, optimizer, EMA, RNG), atomicity, pruning, no pickle."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import training.checkpoint as ckpt
from training.checkpoint import find_latest_checkpoint, is_safetensors_file, list_checkpoints, load_checkpoint, save_checkpoint
from training.ema import EMA


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 6)
        self.scale = nn.Parameter(torch.ones(6))


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.AdamW(
        [{"params": [model.a.weight, model.a.bias, model.scale], "lr": 1e-2},
         {"params": [model.b.weight, model.b.bias], "lr": 3e-3, "weight_decay": 0.0}],
        betas=(0.0, 0.999),
    )
    return model, opt, EMA(model, decay=0.9)


def train_step(model, opt, ema, gen):
    # Every RNG the checkpoint restores is used: torch global, python, numpy, and an explicit generator.
    x = torch.randn(5, 6)
    noise = torch.randn(5, 6, generator=gen)
    w = 1.0 + 0.1 * random.random() + 0.1 * float(np.random.rand())
    loss = ((model.b(torch.tanh(model.a(x))) * model.scale - (x.flip(-1) + noise)) ** 2).mean() * w
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    ema.update(model)


def snapshot(model, opt, ema):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {k: v.clone() for k, v in ema.state_dict().items()},
        [{k: v.clone() for k, v in s.items()} for s in opt.state_dict()["state"].values()],
    )


def assert_same(a, b):
    for x, y in zip(a[:2], b[:2]):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k
    assert len(a[2]) == len(b[2])
    for sa, sb in zip(a[2], b[2]):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def seed_all(seed):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def test_round_trip_is_bit_exact(tmp_path):
    seed_all(1)
    gen = torch.Generator().manual_seed(5)
    model, opt, ema = make()
    for _ in range(3):
        train_step(model, opt, ema, gen)
    path = save_checkpoint(tmp_path, 3, models={"net": model}, optimizers={"net": opt}, emas={"net": ema},
                           generators={"noise": gen}, data_state={"epoch": 1, "position": 6},
                           extra={"losses": [0.5, 0.25], "shape": (2, 3)})
    assert path == tmp_path / "step_000003"
    for _ in range(2):
        train_step(model, opt, ema, gen)
    expected = snapshot(model, opt, ema)

    seed_all(999)  # scramble every RNG: the checkpoint must restore them
    gen2 = torch.Generator().manual_seed(123)
    model2, opt2, ema2 = make(seed=42)
    step, data_state, extra = load_checkpoint(tmp_path, {"net": model2}, {"net": opt2}, {"net": ema2},
                                              generators={"noise": gen2})
    assert (step, data_state, extra) == (3, {"epoch": 1, "position": 6}, {"losses": [0.5, 0.25], "shape": (2, 3)})
    assert ema2.num_updates == 3 and ema2.decay == 0.9
    assert opt2.param_groups[1]["lr"] == 3e-3 and opt2.param_groups[0]["betas"] == (0.0, 0.999)
    for _ in range(2):
        train_step(model2, opt2, ema2, gen2)
    assert_same(snapshot(model2, opt2, ema2), expected)


def test_rng_matters_and_loading_without_rng(tmp_path):
    seed_all(1)
    gen = torch.Generator().manual_seed(5)
    model, opt, ema = make()
    train_step(model, opt, ema, gen)
    save_checkpoint(tmp_path, 1, models={"net": model}, optimizers={"net": opt}, emas={"net": ema}, generators={"noise": gen})
    train_step(model, opt, ema, gen)
    expected = snapshot(model, opt, ema)
    seed_all(7)
    model2, opt2, ema2 = make()
    load_checkpoint(tmp_path, {"net": model2}, {"net": opt2}, {"net": ema2}, rng=False)
    train_step(model2, opt2, ema2, torch.Generator().manual_seed(5))
    assert not torch.equal(snapshot(model2, opt2, ema2)[0]["a.weight"], expected[0]["a.weight"])


def test_no_pickle_anywhere(tmp_path):
    model, opt, ema = make()
    train_step(model, opt, ema, torch.Generator().manual_seed(0))
    path = save_checkpoint(tmp_path, 1, models={"net": model}, optimizers={"net": opt}, emas={"net": ema})
    files = sorted(p.name for p in path.iterdir())
    assert files == ["ema_net.safetensors", "meta.json", "model_net.safetensors", "optim_net.json",
                     "optim_net.safetensors", "rng_rank0.json", "rng_rank0.safetensors"]
    for p in path.iterdir():
        if p.suffix == ".safetensors":
            assert is_safetensors_file(p), p
        else:
            assert p.suffix == ".json"
            json.loads(p.read_text())
        assert not p.read_bytes().startswith(b"PK")  # torch.save zip archive
    assert (tmp_path / "latest").read_text().strip() == "step_000001"
    # The model file is a plain state dict the loaders can read.
    from safetensors.torch import load_file

    assert set(load_file(str(path / "model_net.safetensors"))) == set(model.state_dict())


def test_kill_mid_write_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    seed_all(0)
    gen = torch.Generator().manual_seed(1)
    model, opt, ema = make()
    train_step(model, opt, ema, gen)
    save_checkpoint(tmp_path, 1, models={"net": model}, optimizers={"net": opt}, emas={"net": ema})
    good = snapshot(model, opt, ema)
    train_step(model, opt, ema, gen)

    real_save, calls = ckpt._save_tensors, {"n": 0}

    def dying_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # model written, optimizer file half-written, then the process "dies"
            Path(args[1]).write_bytes(b"\x00garbage")
            raise KeyboardInterrupt("killed")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt, "_save_tensors", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, models={"net": model}, optimizers={"net": opt}, emas={"net": ema})
    monkeypatch.setattr(ckpt, "_save_tensors", real_save)

    assert (tmp_path / "step_000002.tmp").is_dir() and not (tmp_path / "step_000002").exists()
    assert (tmp_path / "latest").read_text().strip() == "step_000001"
    assert find_latest_checkpoint(tmp_path) == tmp_path / "step_000001"
    model2, opt2, ema2 = make(seed=3)
    assert load_checkpoint(tmp_path, {"net": model2}, {"net": opt2}, {"net": ema2})[0] == 1
    assert_same(snapshot(model2, opt2, ema2), good)

    # The next save cleans the stale temp folder; a kill between the rename and the pointer update
    # (simulated: pointer removed) still finds the newest complete checkpoint.
    save_checkpoint(tmp_path, 2, models={"net": model}, optimizers={"net": opt}, emas={"net": ema})
    assert not (tmp_path / "step_000002.tmp").exists()
    (tmp_path / "latest").unlink()
    assert find_latest_checkpoint(tmp_path) == tmp_path / "step_000002"
    (tmp_path / "latest").write_text("step_000099\n")  # dangling pointer
    assert find_latest_checkpoint(tmp_path) == tmp_path / "step_000002"


def test_keep_last_pruning_and_resave(tmp_path):
    model, opt, ema = make()
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, models={"net": model}, optimizers={"net": opt}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    # A run resumed from step 4 that writes step 4 again replaces it in place.
    save_checkpoint(tmp_path, 4, models={"net": model}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert find_latest_checkpoint(tmp_path) == tmp_path / "step_000004"
    assert not list(tmp_path.glob("*.tmp"))
    # Pruning never deletes the checkpoint `latest` names, even when it is not among the newest K.
    ckpt._prune(tmp_path, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]


def test_errors(tmp_path):
    model, opt, _ = make()
    with pytest.raises(KeyError, match="no model of the same name"):
        save_checkpoint(tmp_path, 1, models={"net": model}, optimizers={"other": opt})
    with pytest.raises(ValueError, match="name"):
        save_checkpoint(tmp_path, 1, models={"bad/name": model})
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path, 1, models={"net": model}, extra={"t": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing", {"net": model})
    save_checkpoint(tmp_path, 1, models={"net": model})
    with pytest.raises(KeyError, match="no optimizer 'net'"):
        load_checkpoint(tmp_path, {"net": model}, {"net": opt})
    with pytest.raises(KeyError, match="no model 'gen'"):
        load_checkpoint(tmp_path / "step_000001", {"gen": model})


def test_ema_math_and_copy_to():
    model = nn.Linear(3, 2).to(torch.bfloat16)
    ema = EMA(model, decay=0.75)
    assert all(s.dtype == torch.float32 for s in ema.shadow.values())
    start = ema.state_dict()["weight"].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.state_dict()["weight"], 0.75 * start + 0.25 * model.weight.float())
    ema.update(model, decay=0.0)
    torch.testing.assert_close(ema.state_dict()["weight"], model.weight.float())
    other = nn.Linear(3, 2).to(torch.bfloat16)
    ema.copy_to(other)
    assert torch.equal(other.weight, model.weight) and other.weight.dtype == torch.bfloat16
    with pytest.raises(KeyError):
        ema.load_state_dict({"weight": start})
