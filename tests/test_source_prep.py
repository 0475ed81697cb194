"""Source preparation pinned to the official VDOT loader (VDOT_REFERENCE.md §7.1–7.2).

Expected numbers are derived by hand from the official formulas (``VaceVideoProcessor`` keep_last
path, ``WanVace.prepare_source`` / ``vace_encode_frames`` / ``vace_encode_masks``), not from our code.
"""

import numpy as np
import pytest
import torch

from vdot_nodes.cli import build_parser, build_vcu_from_args, resolve_output_shape
from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.pipeline import VDOTPipeline
from vdot_nodes.core.preprocess.masks import image_to_mask
from vdot_nodes.core.source_prep import (
    OFFICIAL_POLICY,
    TOY_POLICY,
    cover_crop,
    official_shape,
    plan_source,
    sample_frame_ids,
)
from vdot_nodes.core.vcu import VCU, build_inpaint_vcu, place_on_white_canvas
from vdot_nodes.core.video_io import constant_rate_timestamps, probe_video, write_frames, write_image, write_video


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    return tiny_pipeline


def _numbered_video(path, num_frames, fps, height=16, width=16):
    """Frame k is flat grey at level round(k·250/(num_frames−1)). An .mp4 path gets an H.264 file at
    ``fps``; any other path a folder of PNG frames (exact levels; a folder plays at 16 fps)."""
    levels = torch.tensor([round(k * 250 / (num_frames - 1)) for k in range(num_frames)], dtype=torch.float32)
    frames = (levels / 255.0).view(-1, 1, 1, 1).expand(num_frames, height, width, 3).contiguous()
    if str(path).endswith(".mp4"):
        write_video(frames, path, fps=fps)
    else:
        write_frames(frames, path)
    return levels


def _frame_indices(frames, levels):
    """Which source frame each decoded output frame was (nearest grey level)."""
    means = frames.mean(dim=(1, 2, 3)) * 255.0
    return (means[:, None] - levels[None]).abs().argmin(dim=1).tolist()


# ---------------------------------------------------------------------------------------------- frames


def test_frame_ids_161_frames_at_30fps_are_every_second_frame(tmp_path):
    # duration = mid of the last frame = (160/30 + 161/30)/2 = 5.35 s; 81 timestamps k·5.35/80 s
    # fall in frame floor(k·2.00625) = 2k for k ≤ 80 (2.00625·80 = 160.5).
    path = tmp_path / "clip.mp4"
    _numbered_video(path, 161, 30)
    probe = probe_video(path)
    assert probe.num_frames == 161 and probe.fps == 30
    np.testing.assert_array_equal(probe.timestamps, constant_rate_timestamps(161, 30.0))
    assert sample_frame_ids(probe.timestamps, 81) == list(range(0, 161, 2))
    plan = plan_source(probe.timestamps, 720, 1280)
    assert plan.frame_ids == tuple(range(0, 161, 2)) and (plan.height, plan.width) == (480, 832)


def test_frame_ids_100_frames_at_24fps():
    # duration = 99.5/24 s; timestamp k·99.5/(24·80) s lies in frame floor(k·99.5/80) = floor(k·199/160).
    ids = sample_frame_ids(constant_rate_timestamps(100, 24.0), 81)
    assert ids == [k * 199 // 160 for k in range(81)]
    assert ids[:10] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 11] and ids[-1] == 99


def test_a_timestamp_between_frames_takes_the_frame_before_the_gap_not_frame_0():
    # Frames with gaps between them (webm stores millisecond times: 41 ms frames on a 41–42 ms step).
    # Here [0, .3], [.5, .8], [1, 1.3]: duration 1.15, times 0, .2875, .575, .8625, 1.15; .8625 lies
    # in the gap after frame 1 (the official code would answer frame 0 there).
    ts = np.array([[0.0, 0.3], [0.5, 0.8], [1.0, 1.3]], dtype=np.float32)
    assert sample_frame_ids(ts, 5) == [0, 0, 1, 1, 2]


def test_a_clip_of_exactly_n_frames_keeps_every_frame():
    for n, fps in ((17, 16.0), (81, 30.0), (33, 24.0)):
        assert sample_frame_ids(constant_rate_timestamps(n, fps), n) == list(range(n))


# ---------------------------------------------------------------------------------------------- size rule


@pytest.mark.parametrize("frames, h, w, expected", [
    # area_z = min(32760, 480·832/256 = 1560, (h//16)(w//16)) = 1560; ratio 0.5625:
    # oh = round(sqrt(1560·0.5625) = 29.62) = 30, ow = int(1560/30) = 52 → 480×832, 21 latent frames.
    (161, 720, 1280, (81, 480, 832)),
    (161, 1152, 2048, (81, 480, 832)),
    # portrait: oh = round(sqrt(1560·16/9) = 52.66) = 53, ow = int(1560/53) = 29 → 848×464
    (161, 1280, 720, (81, 848, 464)),
    # 480×832 stays; 50 frames → (49//4)+1 = 13 latent frames = 49 frames
    (50, 480, 832, (49, 480, 832)),
    # smaller than the area: area_z = 22·40 = 880 (no upscaling), frame cap int(32760/880) = 37 latent
    # frames, so 100 frames give 25 latent frames = 97; oh = round(sqrt(495) = 22.25) = 22, ow = 40.
    (100, 360, 640, (97, 352, 640)),
])
def test_official_size_rule(frames, h, w, expected):
    assert official_shape(frames, h, w, OFFICIAL_POLICY) == expected


def test_toy_policy_scales_the_rule_to_64x64_and_5_frames():
    # seq_len = 2·64·64/256 = 32, area_z = min(32, 16.0, 3600) = 16, frames min(41, 32/16 = 2) latent
    # (the official rule's 4 frames per latent frame: 5 frames); oh = round(sqrt(16·0.5625) = 3) = 3,
    # ow = int(16/3) = 5 → 48×80.
    assert official_shape(161, 720, 1280, TOY_POLICY) == (5, 48, 80)
    # small videos keep their size, and then the token budget allows more frames: area_z 6, 32/6 → 5 ≥ 4
    assert official_shape(13, 32, 48, TOY_POLICY) == (13, 32, 48)
    assert (TOY_POLICY.seq_len, OFFICIAL_POLICY.seq_len) == (32, 32760)
    assert TOY_POLICY.default_frames == 5


def test_explicit_size_and_frames_win_and_one_side_keeps_aspect():
    ts = constant_rate_timestamps(161, 30.0)
    plan = plan_source(ts, 720, 1280, frames=17, height=256, width=256)
    assert (plan.num_frames, plan.height, plan.width) == (17, 256, 256)
    assert plan.frame_ids == tuple(range(0, 161, 10))  # still spread over the clip: floor(k·10.03125)
    assert plan_source(ts, 720, 1280, height=288).width == 512
    assert plan_source(ts, 720, 1280, frames=9, sampling="first").frame_ids == tuple(range(9))
    with pytest.raises(VDOTInputError, match="has 161 frames but 165 were asked for"):
        plan_source(ts, 720, 1280, frames=165)


# ---------------------------------------------------------------------------------------------- pixels


def test_cover_crop_is_bicubic_antialias_on_uint8_with_floor_centre_offsets():
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (3, 72, 128, 3), dtype=torch.uint8, generator=gen)
    out = cover_crop(frames, 48, 80)
    # scale = max(80/128, 48/72) = 2/3 → (48, round(85.33) = 85), left = (85 − 80)//2 = 2, top 0.
    full = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2), size=(48, 85), mode="bicubic", antialias=True)
    assert out.dtype == torch.uint8 and out.shape == (3, 48, 80, 3)
    assert torch.equal(out, full[:, :, :, 2:82].permute(0, 2, 3, 1))
    assert torch.equal(cover_crop(frames, 72, 128), frames)


def test_soft_mask_is_channel0_mapped_like_the_official_code():
    u = torch.tensor([0, 127, 128, 200, 255], dtype=torch.uint8)
    frames = torch.zeros(1, 1, 5, 3, dtype=torch.uint8)
    frames[0, 0, :, 0] = u
    frames[0, 0, :, 1] = 255 - u  # other channels are ignored
    soft = image_to_mask(frames)[0, 0]
    expected = torch.clamp((u.float() / 127.5 - 1 + 1) / 2, 0, 1)
    assert torch.equal(soft, expected)
    assert (soft > 0.5).tolist() == [False, False, True, True, True]  # 128 is the first "generate" level


def test_image_to_mask_reads_8_bit_and_float_frames_alike():
    """A mask file (uint8) and the same pixels as a ComfyUI IMAGE (float) give the same binary mask, for
    every channel; luminance weighs the channels BT.601; a channel the frames lack is a clear error."""
    from vdot_nodes.core.preprocess.masks import MASK_CHANNELS, binarize_mask

    u8 = torch.randint(0, 256, (2, 6, 7, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for channel in MASK_CHANNELS:
        official, comfy = image_to_mask(u8, channel), image_to_mask(u8.float() / 255, channel)
        assert official.shape == (2, 6, 7) and torch.allclose(official, comfy, atol=1e-6, rtol=0), channel
        assert torch.equal(binarize_mask(official), binarize_mask(comfy)), channel
    assert torch.equal(image_to_mask(u8, "green"), image_to_mask(u8[..., [1, 0, 2]], "red"))
    grey = u8.float() @ torch.tensor([0.299, 0.587, 0.114]) / 255
    torch.testing.assert_close(image_to_mask(u8, "luminance"), grey, atol=1e-6, rtol=0)
    with pytest.raises(VDOTInputError, match="^images: has 1 channel"):
        image_to_mask(u8[..., :1], "blue", "images")
    with pytest.raises(VDOTInputError, match="^channel: unknown mask channel 'alpha'"):
        image_to_mask(u8, "alpha")


def test_white_canvas_fit_matches_the_official_arithmetic():
    gen = torch.Generator().manual_seed(1)
    ref = torch.rand(30, 50, 3, generator=gen)
    placed = place_on_white_canvas(ref, 64, 48)
    # scale = min(64/30, 48/50) = 0.96 → int(28.8) = 28 rows, int(48.0) = 48 cols; top (64−28)//2 = 18.
    assert torch.equal(placed[:18], torch.ones(18, 48, 3)) and torch.equal(placed[46:], torch.ones(18, 48, 3))
    official = torch.nn.functional.interpolate((ref * 2 - 1).permute(2, 0, 1)[None], size=(28, 48), mode="bilinear",
                                               align_corners=False)[0].permute(1, 2, 0)
    torch.testing.assert_close(placed[18:46] * 2 - 1, official, atol=1e-6, rtol=0)
    # a tall reference on a wide canvas: scale = min(32/40, 48/20) = 0.8 → 32×16, left (48−16)//2 = 16
    tall = place_on_white_canvas(torch.zeros(40, 20, 3), 32, 48)
    assert torch.equal(tall[:, :16], torch.ones(32, 16, 3)) and torch.equal(tall[:, 32:], torch.ones(32, 16, 3))
    assert torch.equal(tall[:, 16:32], torch.zeros(32, 16, 3))


# ---------------------------------------------------------------------------------------------- encoding


def test_two_references_are_prepended_in_the_given_order(pipe):
    f, h, w = 5, 16, 16
    first, second = torch.full((h, w, 3), 0.9), torch.full((h, w, 3), 0.1)
    vcu = VCU("reference_depth", torch.rand(f, h, w, 3, generator=torch.Generator().manual_seed(0)),
              torch.ones(f, h, w), [first, second])
    control = pipe.encode_vcu(vcu).control
    for i, ref in enumerate((first, second)):
        expected = pipe._encode_pixels(ref.permute(2, 0, 1)[None, :, None] * 2 - 1)[0, :, 0]
        torch.testing.assert_close(control[0, :16, i], expected)
        assert control[0, 16:32, i].abs().max() == 0 and control[0, 32:, i].abs().max() == 0
    assert not torch.allclose(control[0, :16, 0], control[0, :16, 1])


def test_soft_mask_reaches_the_64_channel_input_and_binary_mask_forms_inactive_reactive(pipe):
    f, h, w = 5, 16, 16
    gen = torch.Generator().manual_seed(3)
    video = torch.rand(f, h, w, 3, generator=gen)
    soft = torch.rand(f, h, w, generator=gen)
    vcu = build_inpaint_vcu(video, mask=soft)
    binary = (soft > 0.5).float()
    assert torch.equal(vcu.masks, binary) and torch.equal(vcu.soft_masks, soft)
    control = pipe.encode_vcu(vcu).control
    frames = vcu.frames.permute(3, 0, 1, 2)[None] * 2 - 1
    torch.testing.assert_close(control[:, :16], pipe._encode_pixels(frames * (1 - binary)[None, None]))
    torch.testing.assert_close(control[:, 16:32], pipe._encode_pixels(frames * binary[None, None]))
    # latent frames (5+3)//4 = 2 take pixel frames floor((j+0.5)·5/2) = [1, 3] (nearest-exact); channel 8·dy + dx.
    for lf, pf in enumerate((1, 3)):
        for dy, dx in ((0, 0), (3, 5), (7, 7)):
            assert torch.equal(control[0, 32 + 8 * dy + dx, lf], soft[pf, dy::8, dx::8])


def test_mask_temporal_resampling_81_to_21_picks_the_official_frames():
    f, h, w = 81, 16, 16
    # frame k of the soft mask holds k/100, so each latent frame tells which pixel frame it took
    soft = (torch.arange(f, dtype=torch.float32) / 100).view(f, 1, 1).expand(f, h, w).contiguous()
    mask64 = VDOTPipeline.unshuffle_mask(soft, (f + 3) // 4, 8)[0]
    assert mask64.shape == (64, 21, 2, 2)
    picked = [round(float(mask64[0, j, 0, 0]) * 100) for j in range(21)]
    assert picked == [1, 5, 9, 13, 17, 21, 25, 28, 32, 36, 40, 44, 48, 52, 55, 59, 63, 67, 71, 75, 79]


# ---------------------------------------------------------------------------------------------- CLI


def _args(*argv):
    return build_parser().parse_args(["generate", *map(str, argv), "--out", "unused.mp4"])


def test_cli_samples_the_whole_clip_by_default_and_first_frames_on_request(tmp_path):
    path = tmp_path / "control"  # 161 PNG frames at 16 fps: duration (160 + 161)/2/16 s
    levels = _numbered_video(path, 161, 16, height=64, width=112)
    args = _args("--task", "depth", "--control", path)
    resolve_output_shape(args, is_toy=True)
    # toy: 5 frames; timestamps k·40.125/16 s are in frame floor(k·40.125) = 40k; 64×112 → area_z 16,
    # oh = round(sqrt(16·64/112) = 3.02) = 3, ow = int(16/3) = 5 → 48×80.
    assert (args.frames, args.height, args.width) == (5, 48, 80)
    vcu = build_vcu_from_args(args)
    assert vcu.frames.shape == (5, 48, 80, 3)
    assert _frame_indices(vcu.frames, levels) == list(range(0, 161, 40))

    first = _args("--task", "depth", "--control", path, "--frame-sampling", "first", "--frames", 9)
    resolve_output_shape(first, is_toy=True)
    assert _frame_indices(build_vcu_from_args(first).frames, levels) == list(range(9))

    real = _args("--task", "depth", "--control", path)
    resolve_output_shape(real, is_toy=False)  # 64×112 is below 480·832: kept at (64//16)(112//16) tokens
    assert (real.frames, real.height, real.width) == (161, 64, 112)


def test_cli_mask_video_uses_the_same_frames_and_stays_soft(tmp_path):
    src, mask = tmp_path / "source", tmp_path / "mask"
    levels = _numbered_video(src, 41, 16, height=32, width=32)
    _numbered_video(mask, 41, 16, height=32, width=32)
    args = _args("--task", "inpaint", "--source", src, "--mask", mask, "--frames", 9)
    resolve_output_shape(args, is_toy=True)
    vcu = build_vcu_from_args(args)
    ids = sample_frame_ids(constant_rate_timestamps(41, 16.0), 9)
    assert _frame_indices(vcu.soft_masks[..., None].expand(-1, -1, -1, 3), levels) == ids
    assert torch.equal(vcu.masks, (vcu.soft_masks > 0.5).float())
    assert ((vcu.soft_masks > 0) & (vcu.soft_masks < 1)).any()  # soft levels, not only 0/1


def test_cli_mask_image_is_fitted_like_the_video(tmp_path):
    src, mask = tmp_path / "source.mp4", tmp_path / "mask.png"
    _numbered_video(src, 9, 16, height=32, width=64)
    image = torch.zeros(32, 64, 3)
    image[:, 32:] = 1.0
    write_image(image, mask)
    args = _args("--task", "inpaint", "--source", src, "--mask", mask, "--height", 32, "--width", 32)
    resolve_output_shape(args, is_toy=True)
    vcu = build_vcu_from_args(args)
    # cover 32×32 from 32×64: no scaling, centre crop columns 16..47 → right half of the crop is white
    assert vcu.masks.shape == (9, 32, 32)
    assert vcu.masks[:, :, :16].max() == 0 and vcu.masks[:, :, 16:].min() == 1


def test_cli_first_frame_is_fitted_like_the_control(tmp_path):
    control, first = tmp_path / "control", tmp_path / "first.png"
    _numbered_video(control, 17, 16, height=64, width=112)
    write_image(torch.full((64, 112, 3), 0.25), first)
    args = _args("--task", "firstframe_depth", "--control", control, "--first-frame", first)
    resolve_output_shape(args, is_toy=True)  # 64×112 → 48×80: another aspect ratio than the image
    vcu = build_vcu_from_args(args)
    assert vcu.frames.shape == (5, 48, 80, 3)
    torch.testing.assert_close(vcu.frames[0], torch.full((48, 80, 3), 64 / 255))


def test_training_clips_are_sampled_over_the_whole_clip_like_inference(tmp_path):
    import json

    from training.data.manifest import ManifestDataset

    levels = _numbered_video(tmp_path / "clip", 17, 16, height=32, width=64)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"caption": "c", "task": "t2v", "video": "clip"}) + "\n")
    item = ManifestDataset(manifest, num_frames=5, height=32, width=32)[0]
    # duration (16 + 17)/2/16 s; timestamps k·16.5/(16·4) s are in frame floor(k·4.125) = 4k
    assert _frame_indices(item["video"], levels) == [0, 4, 8, 12, 16]
    assert item["video"].shape == (5, 32, 32, 3)  # 32×64 covered and centre-cropped, not stretched


def test_one_policy_every_front_end_prepares_a_clip_identically(tmp_path):
    """One clip, mask and first frame through `vdot generate`, the training manifest, the nodes (Fit Video
    crop, Image to Mask, the VCU nodes) and `vdot preprocess`'s fit: bit-identical pixels. A second resize
    policy or image→mask conversion in any of them fails here."""
    import json

    from training.data.manifest import ManifestDataset, sample_to_vcu
    from vdot_nodes.core.preprocess.video_ops import fit_video
    from vdot_nodes.core.video_io import read_image, read_video
    from vdot_nodes.nodes import NODE_CLASS_MAPPINGS

    def node(name, **kw):
        cls = NODE_CLASS_MAPPINGS[name]
        return getattr(cls(), cls.FUNCTION)(**kw)[0]

    g = torch.Generator().manual_seed(0)
    clip, mask, first = tmp_path / "clip", tmp_path / "mask.png", tmp_path / "first.png"
    write_frames(torch.rand(5, 40, 72, 3, generator=g), clip)  # 5 frames: every front end keeps all of them
    write_image(torch.rand(40, 72, 3, generator=g), mask)  # soft everywhere: many levels near the threshold
    write_image(torch.rand(64, 96, 3, generator=g), first)  # the output's aspect ratio, another size
    size = ("--frames", 5, "--height", 32, "--width", 48)  # 40×72 → cover 32×48: resized and cropped

    cli = build_vcu_from_args(_args("--task", "inpaint", "--source", clip, "--mask", mask, *size))
    rows = [{"caption": "c", "task": "inpaint", "video": "clip", "mask": "mask.png"},
            {"caption": "c", "task": "firstframe_depth", "video": "clip", "control": "clip", "first_frame": "first.png"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = ManifestDataset(tmp_path / "m.jsonl", num_frames=5, height=32, width=48)
    train = sample_to_vcu(data[0])
    assert cli.frames.shape == (5, 32, 48, 3) and 0 < cli.masks.mean() < 1
    for field in ("frames", "masks", "soft_masks"):
        assert torch.equal(getattr(train, field), getattr(cli, field)), field

    frames = read_video(clip)[0]
    fitted = node("VDOTFitVideo", images=frames, width=48, height=32, num_frames=5, mode="crop")
    assert torch.equal(fitted, data[0]["video"])
    assert torch.equal(fit_video(frames, height=32, width=48), fitted)  # vdot preprocess / run_preprocessor
    mask_image = node("VDOTFitVideo", images=read_image(mask)[None], width=48, height=32, num_frames=1, mode="crop")
    node_mask = node("VDOTImageToMask", images=mask_image, channel="red", threshold=0.5)
    assert torch.equal(node_mask[0], cli.masks[0])
    inpaint = node("VDOTVCUInpaint", source=fitted, threshold=0.5, mask=node_mask)
    assert torch.equal(inpaint.frames, cli.frames) and torch.equal(inpaint.masks, cli.masks)

    cli_ff = build_vcu_from_args(_args("--task", "firstframe_depth", "--control", clip, "--first-frame", first, *size))
    train_ff = sample_to_vcu(data[1])
    node_ff = node("VDOTVCUFirstFrameControl", control=fitted, first_frame=read_image(first)[None], kind="depth")
    assert torch.equal(train_ff.frames, cli_ff.frames) and torch.equal(node_ff.frames, cli_ff.frames)


# Every resize in the package, and why it is not a second policy for a user's frames. A new one fails
# the test below: fit frames with source_prep (cover_crop / fit_clip / resize_exact) instead.
RESIZE_SITES = {
    "vdot_nodes/core/source_prep.py": "the one frame resampler",
    "vdot_nodes/core/vcu.py": "reference images on the white canvas (the official arithmetic)",
    "vdot_nodes/core/vace_context.py": "the mask resampled to latent frames (VACE's nearest-exact)",
    "vdot_nodes/core/preprocess/depth.py": "the network's input size and back",
    "vdot_nodes/core/preprocess/hed.py": "side outputs to the frame size inside the network",
    "vdot_nodes/core/preprocess/raft.py": "flow upsampling inside the network",
    "vdot_nodes/core/preprocess/pose.py": "the detector's input size",
    "training/toy/report.py": "the report's contact sheet, enlarged for viewing",
}


def test_frames_are_resized_in_one_place():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    call = re.compile(r"\binterpolate\(|\bresize\(|\.thumbnail\(")
    found = {str(p.relative_to(root)) for folder in ("vdot_nodes", "training") for p in (root / folder).rglob("*.py")
             if any(call.search(line.split("#")[0]) for line in p.read_text(encoding="utf-8").splitlines())}
    assert found <= set(RESIZE_SITES), f"a new resize in {sorted(found - set(RESIZE_SITES))}: fit frames with source_prep"
