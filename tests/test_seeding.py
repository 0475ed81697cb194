"""One seeding helper (core/seeding.py): seeded builders leave the caller's global RNG alone and build the
same weights as ``torch.manual_seed(seed)`` before the constructor (what the builders did before)."""

from __future__ import annotations

import pytest
import torch

from vdot_nodes.core import tiny
from vdot_nodes.core.seeding import seeded


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _old_recipe(seed, build):
    """The builders' former code: reset the global RNG, then construct."""
    torch.manual_seed(seed)
    return build()


@pytest.mark.parametrize("name", ["transformer", "vae", "text_encoder"])
def test_tiny_builders_keep_the_callers_rng_and_their_weights(name):
    from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    old = {
        "transformer": lambda: WanVACETransformer3DModel(**tiny.TINY_TRANSFORMER_CONFIG).eval(),
        "vae": lambda: AutoencoderKLWan(**tiny.TINY_VAE_CONFIG).eval(),
        "text_encoder": lambda: UMT5EncoderModel(UMT5Config(vocab_size=len(tiny.tiny_vocab()),
                                                            **tiny.TINY_TEXT_ENCODER_CONFIG)).eval(),
    }[name]
    build = getattr(tiny, f"build_tiny_{name}")
    torch.manual_seed(1234)
    expected_next = torch.rand(4)
    torch.manual_seed(1234)
    model = build(seed=3)
    assert torch.equal(torch.rand(4), expected_next)  # the caller's stream continues as if nothing ran
    reference = _old_recipe(3, old)
    assert _same_weights(model, reference)
    assert not _same_weights(model, build(seed=4))  # the seed does choose the weights


def test_seeded_restores_state_even_on_error():
    torch.manual_seed(7)
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError):
        with seeded(0):
            torch.rand(3)
            raise RuntimeError("boom")
    assert torch.equal(torch.get_rng_state(), state)
    with seeded(5):
        a = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(a, torch.rand(3))  # inside: exactly torch.manual_seed(seed)


def test_stage1_tiny_teacher_keeps_the_callers_rng_and_its_weights():
    from diffusers import WanTransformer3DModel

    from training.config import config_from_dict
    from training.init import t2v_config_from_vace
    from training.models import _tiny_teacher

    cfg = config_from_dict({"stage": 1, "data": {"captions": "c.txt"}, "schedule": {"generator_objectives": ["dm"]}})
    torch.manual_seed(99)
    expected_next = torch.rand(4)
    torch.manual_seed(99)
    teacher = _tiny_teacher(cfg)
    assert torch.equal(torch.rand(4), expected_next)
    overrides = {"num_layers": cfg.models.tiny_layers, **(cfg.models.tiny_overrides or {})}
    reference = _old_recipe(cfg.models.tiny_seed, lambda: WanTransformer3DModel(
        **t2v_config_from_vace({**tiny.TINY_TRANSFORMER_CONFIG, **overrides})).eval())
    assert _same_weights(teacher, reference)
