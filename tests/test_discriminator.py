"""Tests for training.discriminator: tap rule, hidden-state capture hooks, register-token head."""

from __future__ import annotations

import pytest
import torch

from training.discriminator import (
    RegisterTokenDiscriminator,
    capture_block_hidden_states,
    default_tap_blocks,
)
from vdot_nodes.core.tiny import build_tiny_transformer

F_, H_, W_ = 2, 4, 4  # latent frames / height / width → L = 2·2·2 = 8 tokens with patch (1, 2, 2)
L_TOKENS = F_ * (H_ // 2) * (W_ // 2)
HIDDEN = 24  # tiny: 2 heads × 12


def _inputs(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, 16, F_, H_, W_, generator=g),
        timestep=torch.full((batch,), 500),
        encoder_hidden_states=torch.randn(batch, 7, 32, generator=g),
        control_hidden_states=torch.randn(batch, 96, F_, H_, W_, generator=g),
        return_dict=False,
    )


@pytest.fixture(scope="module")
def model():
    return build_tiny_transformer(num_layers=4)


def test_default_tap_blocks_rule():
    assert default_tap_blocks(40) == [23, 31, 39]
    assert default_tap_blocks(30) == [13, 21, 29]
    assert default_tap_blocks(17) == [0, 8, 16]
    assert default_tap_blocks(10) == [1, 5, 9]
    assert default_tap_blocks(4) == [1, 2, 3]
    assert default_tap_blocks(3) == [0, 1, 2]
    assert default_tap_blocks(2) == [0, 1]
    assert default_tap_blocks(1) == [0]
    for n in range(3, 60):
        taps = default_tap_blocks(n)
        assert len(set(taps)) == 3 and taps == sorted(taps) and taps[-1] == n - 1 and taps[0] >= 0
    with pytest.raises(ValueError):
        default_tap_blocks(0)


def test_capture_records_exactly_the_tapped_blocks(model):
    with torch.no_grad():
        with capture_block_hidden_states(model, [1, 3]) as feats:
            out = model(**_inputs())[0]
        assert sorted(feats) == [1, 3]
        for h in feats.values():
            assert h.shape == (1, L_TOKENS, HIDDEN)
        # hooks are gone after the block: a new forward does not record
        n_hooks = sum(len(b._forward_hooks) + len(b._forward_pre_hooks) for b in model.blocks)
        assert n_hooks == 0
        with capture_block_hidden_states(model, [1]) as f1:
            out1 = model(**_inputs())[0]
        with capture_block_hidden_states(model, [3]) as f3:
            model(**_inputs())
    assert torch.equal(out, out1)  # capturing does not change the forward
    assert torch.equal(f1[1], feats[1]) and torch.equal(f3[3], feats[3])
    assert not torch.allclose(f1[1], f3[3])
    # cross-check against a manual run of the blocks
    captured = {}
    hs = [model.blocks[i].register_forward_hook(lambda m, a, o, i=i: captured.__setitem__(i, o))
          for i in range(4)]
    with torch.no_grad():
        model(**_inputs())
    for h in hs:
        h.remove()
    assert torch.equal(captured[1], feats[1]) and torch.equal(captured[3], feats[3])
    with pytest.raises(ValueError):
        with capture_block_hidden_states(model, [4]):
            pass


def test_vace_layer_tap_includes_the_hint(model):
    """Block 0 is a VACE layer: the hint is added after blocks[0]; the default tap includes it."""
    scale0 = torch.zeros(1)
    with torch.no_grad():
        with capture_block_hidden_states(model, [0]) as with_hint:
            model(**_inputs())
        with capture_block_hidden_states(model, [0], include_vace_hint=False) as raw:
            model(**_inputs())
        with capture_block_hidden_states(model, [0]) as zero_hint:
            model(**_inputs(), control_hidden_states_scale=scale0)
    assert not torch.allclose(with_hint[0], raw[0])
    assert torch.allclose(zero_hint[0], raw[0])


def test_discriminator_shapes_and_gradient_paths(model):
    model = build_tiny_transformer(num_layers=4)
    model.train()
    disc = RegisterTokenDiscriminator(HIDDEN, [1], num_heads=2)
    with capture_block_hidden_states(model, [1]) as feats:
        model(**_inputs(batch=2))
    logits = disc(feats)
    assert logits.shape == (2,)
    logits.sum().backward()
    assert disc.register_tokens.grad is not None and disc.register_tokens.grad.abs().sum() > 0
    assert all(p.grad is not None for p in disc.parameters())

    def grad_mass(module):
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    # before / at the tap: trained; after the tap (and the output head): untouched
    assert grad_mass(model.blocks[0]) > 0 and grad_mass(model.blocks[1]) > 0
    assert grad_mass(model.patch_embedding) > 0
    assert grad_mass(model.blocks[2]) == 0 and grad_mass(model.blocks[3]) == 0
    assert grad_mass(model.proj_out) == 0


def test_three_taps_default_and_gradient_checkpointing():
    model = build_tiny_transformer(num_layers=4)
    model.enable_gradient_checkpointing()
    model.train()
    disc = RegisterTokenDiscriminator.from_transformer(model)
    assert disc.tap_blocks == [1, 2, 3] and disc.register_tokens.shape == (3, HIDDEN)
    with capture_block_hidden_states(model, disc.tap_blocks) as feats:
        model(**_inputs(batch=2))
    logits = disc(feats)
    assert logits.shape == (2,)
    assert disc.classifier.in_features == 3 * HIDDEN
    # backward inside the capture block (checkpoint recomputation must not clobber the features)
    with capture_block_hidden_states(model, disc.tap_blocks) as feats2:
        model(**_inputs(batch=2))
        kept = {k: v for k, v in feats2.items()}
        disc(feats2).sum().backward()
        assert all(feats2[k] is kept[k] for k in kept)
    assert model.blocks[0].attn1.to_q.weight.grad.abs().sum() > 0
    assert model.blocks[3].attn1.to_q.weight.grad.abs().sum() > 0
    # each token reads its own block: perturbing one tap's features moves the logits
    with torch.no_grad():
        detached = {k: v.detach() for k, v in feats.items()}
        base = disc(detached)
        moved = disc({**detached, 2: detached[2] * torch.linspace(-1, 2, HIDDEN)})
    assert not torch.allclose(base, moved)
    with pytest.raises(KeyError):
        disc({1: feats[1]})


def test_discriminator_projection_mlp_and_dtype():
    disc = RegisterTokenDiscriminator(64, [0, 5, 9], attn_dim=16, classifier_hidden_dim=8)
    assert disc.attns[0].num_heads == 1
    feats = [torch.randn(3, 11, 64, dtype=torch.bfloat16) for _ in range(3)]
    out = disc(feats)
    assert out.shape == (3,) and out.dtype == torch.float32
    big = RegisterTokenDiscriminator(256, [0, 1, 2])
    assert big.attns[0].num_heads == 2
    with pytest.raises(ValueError):
        disc([torch.randn(3, 11, 32)] * 3)


def test_in_backward_guard():
    """Hooks ignore calls made while autograd runs backward (checkpoint recomputation)."""
    from training.discriminator import _in_backward

    seen = []
    x = torch.randn(3, requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: seen.append(_in_backward()))
    assert not _in_backward()
    y.sum().backward()
    assert seen == [True]
