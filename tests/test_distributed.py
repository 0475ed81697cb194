"""training.distributed: single-process fallbacks, and a real 2-process FSDP2 run on CPU (gloo).

The 2-process run (tests/_fsdp_worker.py under torchrun) uses fp32: it checks sharded training
against an unsharded reference to 1e-6, which bf16 compute could not meet. bf16 mixed precision is
exercised there too (one step: runs on gloo, master weights stay fp32).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training import distributed as D
from training.checkpoint import load_checkpoint
from training.ema import EMA

ROOT = Path(__file__).resolve().parents[1]


def test_single_process_fallbacks(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = D.init_distributed()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    assert not D.is_distributed() and D.is_main_process() and D.get_world_size() == 1
    D.barrier()

    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    assert D.shard_model(model) is model
    x = torch.randn(4, 3, requires_grad=True)
    assert D.all_gather_with_grad(x) is x
    values = [D.shared_random_int(0, 4, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert values == [D.shared_random_int(0, 4, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert all(0 <= v < 4 for v in values)
    with pytest.raises(ValueError):
        D.shared_random_int(3, 3)
    sd = D.full_model_state_dict(model)
    assert set(sd) == {"0.weight", "0.bias"}
    osd = D.full_optimizer_state_dict(model, torch.optim.AdamW(model.parameters()))
    assert osd["param_groups"][0]["params"] == ["0.weight", "0.bias"]  # keyed by name, not id


def test_gradient_checkpointing_same_gradients_in_train_mode():
    from vdot_nodes.core.tiny import build_tiny_transformer

    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(1, 16, 2, 8, 8, generator=g), torch.randn(1, 96, 2, 8, 8, generator=g)
    text, t = torch.randn(1, 7, 32, generator=g), torch.tensor([500])
    grads = []
    calls = {"n": 0}
    for checkpointing in (False, True):
        model = build_tiny_transformer(seed=0).train()
        if checkpointing:
            D.enable_gradient_checkpointing(model)
            model.blocks[0].register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
        model(x, t, text, control_hidden_states=c, return_dict=False)[0].square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert model.gradient_checkpointing and model.training
    assert calls["n"] == 2  # forward + recomputation in backward (a pre-hook: recompute stops early)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=1e-6, msg=name)
    with pytest.raises(TypeError):
        D.enable_gradient_checkpointing(torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, torchrun):
    out = tmp_path_factory.mktemp("fsdp")
    torchrun([ROOT / "tests" / "_fsdp_worker.py", out], timeout=240)
    return out, json.loads((out / "results.json").read_text())


def test_fsdp2_two_process_matches_single_process(fsdp_run):
    _, r = fsdp_run
    assert r["world_size"] == 2 and r["sharded_is_dtensor"]
    assert r["reference_moved"] > 1e-4  # the 3 steps changed the weights far beyond the tolerance
    for rank in (0, 1):
        assert r[f"max_diff_vs_reference_rank{rank}"] < 1e-6
        assert r[f"ema_max_diff_rank{rank}"] < 1e-6
    assert r["ranks_hold_same_full_weights"]
    assert r["bf16_loss_finite"] and r["bf16_param_dtype"] == "torch.float32"


def test_fsdp2_collectives(fsdp_run):
    _, r = fsdp_run
    a, b = r["shared_random_int"]
    assert a == b and len(set(a)) > 1
    for rank in (0, 1):
        assert r[f"gather_rows_rank{rank}"] == [5, 3]  # uneven 2 + 3 rows
        assert r[f"gather_values_ok_rank{rank}"] and r[f"gather_grad_ok_rank{rank}"]


def test_fsdp2_checkpoint_round_trip_and_single_process_load(fsdp_run):
    out, r = fsdp_run
    for rank in (0, 1):
        assert r[f"reload_max_diff_rank{rank}"] == 0.0
        assert r[f"reload_ema_max_diff_rank{rank}"] == 0.0
        assert r[f"continue_max_diff_rank{rank}"] == 0.0  # optimizer state restored exactly
        assert r[f"reload_every_rank_reads_ok_rank{rank}"]  # broadcast_from_rank0=False path
    step, data_state, extra, decay, num_updates = r["reload_meta"]
    assert (step, extra, decay, num_updates) == (3, {"note": "fsdp"}, 0.9, 3)
    assert data_state["position"] == 4

    # The sharded run's checkpoint loads in one process, unsharded.
    from vdot_nodes.core.tiny import build_tiny_transformer

    model = build_tiny_transformer(seed=9, num_layers=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema = EMA(model)
    step, data_state, _ = load_checkpoint(out / "ckpt", {"generator": model}, {"generator": opt}, {"generator": ema},
                                          rng=False)  # keep this test process's RNG as it is
    assert step == 3
    ref = load_file(str(out / "reference.safetensors"))
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), ref[name], rtol=0, atol=1e-6, msg=name)
    assert opt.state_dict()["state"][0]["exp_avg"].abs().sum() > 0
    assert sorted(os.listdir(out / "ckpt" / "step_000003")) == sorted([
        "meta.json", "model_generator.safetensors", "optim_generator.safetensors", "optim_generator.json",
        "ema_generator.safetensors", "rng_rank0.safetensors", "rng_rank0.json", "rng_rank1.safetensors",
        "rng_rank1.json",
    ])
