"""VCU builders, task registry, mask geometry and validation (CPU, no diffusers)."""

from __future__ import annotations

import pytest
import torch

from vdot_nodes.core.errors import VDOTInputError, VDOTMissingInput
from vdot_nodes.core.preprocess.masks import (
    box_mask,
    extension_kept_range,
    extension_mask,
    first_frame_mask,
    outpaint_canvas,
)
from vdot_nodes.core.tasks import CONTROL_KINDS, TASKS, build_vcu
from vdot_nodes.core.vcu import (
    VCU,
    binarize_mask,
    build_control_vcu,
    build_extension_vcu,
    build_firstframe_control_vcu,
    build_inpaint_vcu,
    build_outpaint_vcu,
    build_r2v_vcu,
    build_reference_control_vcu,
    build_t2v_vcu,
    place_on_white_canvas,
    validate_vcu,
)

F, H, W = 9, 32, 48


def video(f=F, h=H, w=W, seed=0):
    return torch.rand(f, h, w, 3, generator=torch.Generator().manual_seed(seed))


def image(h, w, seed=1):
    return torch.rand(h, w, 3, generator=torch.Generator().manual_seed(seed))


def raises(input_name, fn, *args, match=None, **kwargs):
    with pytest.raises(VDOTInputError) as info:
        fn(*args, **kwargs)
    assert info.value.input_name == input_name, str(info.value)
    assert str(info.value).startswith(input_name)
    if match:
        assert match in str(info.value), str(info.value)
    return info.value


# ---------------------------------------------------------------- registry

def test_task_registry():
    assert sum(s.uvcbench for s in TASKS.values()) == 18
    assert len(TASKS) == 20
    assert not TASKS["inpaint"].uvcbench and not TASKS["t2v"].uvcbench
    for kind in CONTROL_KINDS:
        assert TASKS[kind].family == "V2V" and TASKS[kind].needs_control
        assert TASKS[f"firstframe_{kind}"].needs_first_frame and TASKS[f"firstframe_{kind}"].family == "composite"
        assert TASKS[f"reference_{kind}"].needs_references and TASKS[f"reference_{kind}"].needs_control
    assert TASKS["r2v"].needs_references and TASKS["inpaint"].needs_mask and TASKS["outpaint"].needs_source
    assert {s.family for s in TASKS.values()} == {"T2V", "R2V", "V2V", "MV2V", "composite"}
    for spec in TASKS.values():
        assert "\n" not in spec.description and spec.name


# ---------------------------------------------------------------- builders

def test_t2v():
    vcu = build_vcu("t2v", num_frames=5, height=16, width=32, prompt="a cat")
    assert vcu.task == "t2v" and vcu.prompt == "a cat" and vcu.references == []
    assert vcu.frames.shape == (5, 16, 32, 3) and vcu.frames.dtype == torch.float32
    assert (vcu.frames == 0.5).all() and (vcu.masks == 1).all() and vcu.masks.shape == (5, 16, 32)


def test_r2v_two_references_on_white_canvas():
    wide = image(10, 40, seed=1)   # aspect 4:1 -> fits width: 48x12 on a 48x32 canvas
    tall = image(64, 16, seed=2)   # aspect 1:4 -> fits height: 8x32
    vcu = build_vcu("r2v", references=[wide, tall], num_frames=F, height=H, width=W)
    assert (vcu.frames == 0.5).all() and (vcu.masks == 1).all()
    assert len(vcu.references) == 2 and all(r.shape == (H, W, 3) for r in vcu.references)
    r0, r1 = vcu.references
    # wide: scale = min(32/10, 48/40) = 1.2 -> 12 x 48, top = (32-12)//2 = 10
    assert (r0[:10] == 1).all() and (r0[22:] == 1).all()
    expect0 = torch.nn.functional.interpolate(wide.permute(2, 0, 1)[None], size=(12, 48), mode="bilinear",
                                              align_corners=False)[0].permute(1, 2, 0)
    torch.testing.assert_close(r0[10:22], expect0)
    # tall: scale = min(32/64, 48/16) = 0.5 -> 32 x 8, left = (48-8)//2 = 20
    assert (r1[:, :20] == 1).all() and (r1[:, 28:] == 1).all()
    assert not (r1[:, 20:28] == 1).all()
    # same-aspect, same-size reference is copied exactly
    exact = image(H, W, seed=3)
    torch.testing.assert_close(place_on_white_canvas(exact, H, W), exact)
    # ComfyUI batch [N, H, W, 3] counts as N references
    assert len(build_r2v_vcu(torch.stack([exact, exact]), num_frames=5, height=H, width=W).references) == 2


@pytest.mark.parametrize("kind", CONTROL_KINDS)
def test_control_tasks(kind):
    control = video()
    vcu = build_vcu(kind, control=control, prompt="p", num_frames=F, height=H, width=W)
    assert vcu.task == kind
    assert torch.equal(vcu.frames, control) and (vcu.masks == 1).all() and vcu.references == []


def test_outpaint_geometry():
    src = video(h=32, w=32)
    vcu = build_vcu("outpaint", source=src, expand=(0, 0, 16, 32))
    assert vcu.frames.shape == (F, 32, 80, 3) and vcu.masks.shape == (F, 32, 80)
    assert (vcu.masks[:, :, :16] == 1).all() and (vcu.masks[:, :, 48:] == 1).all()
    assert (vcu.masks[:, :, 16:48] == 0).all()
    assert torch.equal(vcu.frames[:, :, 16:48], src)
    assert (vcu.frames[:, :, :16] == 0.5).all() and (vcu.frames[:, :, 48:] == 0.5).all()
    # all four sides; the source need not be a multiple of 16, only the output
    src2 = video(h=24, w=40)
    vcu = build_outpaint_vcu(src2, {"top": 4, "bottom": 4, "left": 8, "right": 0})
    assert vcu.frames.shape[1:3] == (32, 48)
    assert torch.equal(vcu.frames[:, 4:28, 8:48], src2)
    expect = torch.ones(32, 48)
    expect[4:28, 8:48] = 0
    assert torch.equal(vcu.masks[0], expect)


def test_outpaint_overlap():
    canvas = outpaint_canvas(32, 32, top=0, bottom=0, left=16, right=16, overlap=2)
    assert (canvas.width, canvas.height) == (64, 32)
    assert (canvas.mask[:, :18] == 1).all() and (canvas.mask[:, 46:] == 1).all()
    assert (canvas.mask[:, 18:46] == 0).all()  # top/bottom were not expanded: no overlap there
    vcu = build_outpaint_vcu(video(h=32, w=32), (0, 0, 16, 16), overlap=2)
    assert (vcu.frames[:, :, 16:18] == 0.5).all()


def test_outpaint_errors():
    err = raises("expand", build_outpaint_vcu, video(h=32, w=32), (0, 0, 10, 0))
    assert "42" in err.problem and "left+right 16 (output 48)" in err.fix and "left=10,right=6" in err.fix
    raises("expand", build_outpaint_vcu, video(h=32, w=32), (3, 0, 0, 0), match="height")
    raises("expand", build_outpaint_vcu, video(h=32, w=32), (0, 0, 0, 0))
    raises("expand.left", build_outpaint_vcu, video(h=32, w=32), (0, 0, -16, 16))
    raises("expand", build_outpaint_vcu, video(h=32, w=32), (16, 16))
    raises("expand", build_vcu, "outpaint", source=video(h=32, w=32))


def test_extension_modes():
    src = video(f=17)
    first = build_extension_vcu(src, keep_frames=5, mode="first")
    assert torch.equal(first.masks[:, 0, 0], torch.tensor([0.0] * 5 + [1.0] * 12))
    assert torch.equal(first.frames[:5], src[:5]) and (first.frames[5:] == 0.5).all()
    last = build_vcu("extension", source=src, mode="last", keep_frames=3)
    assert torch.equal(last.masks[:, 0, 0], torch.tensor([1.0] * 14 + [0.0] * 3))
    assert torch.equal(last.frames[14:], src[14:]) and (last.frames[:14] == 0.5).all()
    assert (build_vcu("extension", source=src).masks[:, 0, 0] == 0).sum() == 4  # default: a quarter

    def kept(seed):
        vcu = build_vcu("extension", source=src, mode="random", keep_frames=4, seed=seed)
        idx = (vcu.masks[:, 0, 0] == 0).nonzero().flatten().tolist()
        assert idx == list(range(idx[0], idx[0] + 4))  # one contiguous clip
        assert torch.equal(vcu.frames[idx], src[idx]) and (vcu.masks[:, 0, 0].sum() == 13)
        return idx[0]

    assert kept(7) == kept(7)
    starts = {kept(s) for s in range(12)}
    assert len(starts) > 1 and all(0 <= s <= 13 for s in starts)
    g = torch.Generator().manual_seed(3)
    assert extension_kept_range(17, 4, "random", g) == extension_kept_range(17, 4, "random", torch.Generator().manual_seed(3))
    assert extension_mask(5, 2, "first", height=2, width=3).shape == (5, 2, 3)


def test_extension_errors():
    raises("keep_frames", build_extension_vcu, video(), keep_frames=F)
    raises("keep_frames", build_extension_vcu, video(), keep_frames=0)
    raises("mode", build_extension_vcu, video(), mode="middle")
    raises("seed", extension_kept_range, 9, 2, "random", None)


def test_inpaint_mask_and_box():
    src = video()
    soft = torch.zeros(H, W)
    soft[8:24, 16:32] = 0.8
    soft[0, 0] = 0.3  # below threshold: kept
    vcu = build_vcu("inpaint", source=src, mask=soft)  # [H, W] broadcast to all frames
    assert vcu.masks.shape == (F, H, W) and set(vcu.masks.unique().tolist()) == {0.0, 1.0}
    assert (vcu.masks[:, 8:24, 16:32] == 1).all() and vcu.masks.sum() == F * 16 * 16
    assert (vcu.frames[:, 8:24, 16:32] == 0.5).all()
    keep = vcu.masks[..., None] == 0
    assert torch.equal(vcu.frames[keep.expand_as(src)], src[keep.expand_as(src)])
    boxed = build_vcu("inpaint", source=src, box=(16, 8, 32, 24))
    assert torch.equal(boxed.masks, vcu.masks) and torch.equal(boxed.frames, vcu.frames)
    per_frame = torch.zeros(F, H, W)
    per_frame[2:, :16] = 1
    assert torch.equal(build_inpaint_vcu(src, mask=per_frame).masks, per_frame)
    assert torch.equal(box_mask(4, 4, (1, 1, 3, 2)), torch.tensor([[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0],
                                                                   [0, 0, 0, 0]], dtype=torch.float32))


def test_inpaint_errors():
    src = video()
    raises("mask", build_vcu, "inpaint", source=src)
    raises("mask", build_vcu, "inpaint", source=src, mask=torch.ones(H, W), box=(0, 0, 4, 4))
    raises("box", build_inpaint_vcu, src, box=(0, 0, W + 1, 4))
    raises("box", build_inpaint_vcu, src, box=(8, 0, 4, 4))
    raises("mask", build_inpaint_vcu, src, mask=torch.ones(H, W - 16), match="resize")
    raises("mask", build_inpaint_vcu, src, mask=torch.ones(F + 4, H, W), match="frames")
    raises("mask", build_inpaint_vcu, src, mask=torch.zeros(H, W), match="nothing")
    raises("mask", build_inpaint_vcu, src, mask=torch.ones(F, H, W, 3), match="channels")


@pytest.mark.parametrize("kind", CONTROL_KINDS)
def test_firstframe_composites(kind):
    control, first = video(), image(H, W, seed=5)
    vcu = build_vcu(f"firstframe_{kind}", control=control, first_frame=first)
    assert vcu.task == f"firstframe_{kind}"
    assert torch.equal(vcu.frames[0], first) and torch.equal(vcu.frames[1:], control[1:])
    assert (vcu.masks[0] == 0).all() and (vcu.masks[1:] == 1).all()
    assert torch.equal(first_frame_mask(F, H, W), vcu.masks)


def test_firstframe_resize_and_aspect():
    control = video()
    big = image(2 * H, 2 * W)
    assert build_firstframe_control_vcu(control, big[None], task="firstframe_pose").frames[0].shape == (H, W, 3)
    raises("first_frame", build_firstframe_control_vcu, control, image(H, H), task="firstframe_pose", match="aspect")
    raises("task", build_firstframe_control_vcu, control, big, task="reference_pose")


@pytest.mark.parametrize("kind", CONTROL_KINDS)
def test_reference_composites(kind):
    control, ref = video(), image(20, 20)
    vcu = build_vcu(f"reference_{kind}", control=control, references=[ref])
    assert torch.equal(vcu.frames, control) and (vcu.masks == 1).all()
    assert len(vcu.references) == 1 and vcu.references[0].shape == (H, W, 3)
    r = vcu.references[0]  # scale min(32/20, 48/20)=1.6 -> 32x32 at left 8
    assert (r[:, :8] == 1).all() and (r[:, 40:] == 1).all()
    assert torch.equal(r, place_on_white_canvas(ref, H, W))


def test_every_task_builds():
    inputs = dict(control=video(), source=video(), references=[image(16, 16)], first_frame=image(H, W),
                  mask=torch.ones(H, W), expand=(0, 0, 8, 8))
    for name, spec in TASKS.items():
        given = {k: inputs[k] for k in spec.required}
        if spec.one_of:
            given[spec.one_of[0]] = inputs[spec.one_of[0]]
        vcu = build_vcu(name, num_frames=F, height=H, width=W, **given)
        validate_vcu(vcu)
        assert vcu.task == name and vcu.num_frames == F


# ---------------------------------------------------------------- dispatcher errors

def test_unknown_task_lists_valid_ones():
    err = raises("task", build_vcu, "depthh", control=video())
    for name in TASKS:
        assert name in err.fix


def test_missing_and_ignored_inputs():
    err = raises("control", build_vcu, "depth")
    # core names the input semantically; the CLI and the nodes say how to give it (tests/test_cli.py)
    assert isinstance(err, VDOTMissingInput) and err.options == ("control",) and "control video" in err.fix
    assert "--" not in str(err) and "node" not in str(err)
    raises("references", build_vcu, "r2v", num_frames=5, height=16, width=16)
    raises("references", build_vcu, "reference_grey", control=video(), references=[])
    raises("first_frame", build_vcu, "firstframe_flow", control=video())
    raises("source", build_vcu, "extension")
    raises("mask", build_vcu, "depth", control=video(), mask=torch.ones(H, W), match="does not use")
    raises("references", build_vcu, "t2v", references=[image(16, 16)])
    raises("controll", build_vcu, "depth", controll=video())
    # None means absent (the CLI passes keep_frames=None)
    assert build_vcu("extension", source=video(), keep_frames=None, mode="first", seed=0).task == "extension"


def test_shape_args_must_agree_with_video():
    raises("num_frames", build_vcu, "depth", control=video(), num_frames=F + 4)
    raises("width", build_vcu, "inpaint", source=video(), box=(0, 0, 4, 4), width=W + 16)


# ---------------------------------------------------------------- input checks

def test_bad_frame_count_and_size():
    err = raises("control", build_control_vcu, video(f=8))
    assert "5" in err.fix and "9" in err.fix
    err = raises("num_frames", build_t2v_vcu, num_frames=80, height=16, width=16)
    assert "77" in err.fix and "81" in err.fix
    err = raises("control", build_control_vcu, video(h=40))
    assert "32" in err.fix and "48" in err.fix
    raises("height/width", build_t2v_vcu, num_frames=5, height=480, width=830)
    raises("source", build_inpaint_vcu, video(w=50), box=(0, 0, 4, 4))


def test_bad_values_and_channels():
    bad = video()
    bad[3, 2, 1, 0] = float("nan")
    raises("control", build_control_vcu, bad, match="NaN")
    raises("control", build_control_vcu, video() * 255, match="0..1")
    raises("control", build_control_vcu, (video() * 255).to(torch.uint8), match="dtype")
    raises("control", build_control_vcu, torch.rand(F, H, W, 4), match="RGBA")
    raises("control", build_control_vcu, torch.rand(F, H, W), match="greyscale")
    raises("control", build_control_vcu, torch.rand(F, H, W, 1), match="1 channel")
    raises("first_frame", build_vcu, "firstframe_depth", control=video(), first_frame=torch.rand(H, W, 4))
    raises("references[1]", build_r2v_vcu, [image(8, 8), torch.rand(8, 8)], num_frames=5, height=16, width=16)
    raises("control", build_control_vcu, video().numpy())
    # float round-off just above 1 is clamped, not rejected
    assert build_control_vcu(video().clamp(max=1) + 1e-6).frames.max() <= 1


def test_validate_vcu():
    good = build_t2v_vcu(num_frames=5, height=16, width=16)
    assert validate_vcu(good) is good
    soft = good.masks.clone()
    soft[0, 0, 0] = 0.7
    raises("masks", validate_vcu, VCU("t2v", good.frames, soft), match="binary")
    raises("masks", validate_vcu, VCU("t2v", good.frames, good.masks[:4]))
    nan = good.masks.clone()
    nan[1, 1, 1] = float("nan")
    raises("masks", validate_vcu, VCU("t2v", good.frames, nan))
    raises("frames", validate_vcu, VCU("t2v", good.frames[:4], good.masks[:4]), match="4k+1")
    raises("frames", validate_vcu, VCU("t2v", good.frames + 0.6, good.masks), match="0..1")
    raises("frames", validate_vcu, VCU("t2v", torch.full((5, 24, 16, 3), 0.5), torch.ones(5, 24, 16)))
    raises("references[0]", validate_vcu, VCU("r2v", good.frames, good.masks, [torch.ones(8, 8, 3)]))


def test_binarize_mask():
    m = torch.tensor([0.0, 0.5, 0.51, 1.0])
    assert torch.equal(binarize_mask(m), torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(binarize_mask(m, threshold=0.1), torch.tensor([0.0, 1.0, 1.0, 1.0]))
    assert binarize_mask(torch.tensor([True, False])).dtype == torch.float32
    raises("mask", binarize_mask, torch.tensor([float("inf")]))
