"""Learned preprocessors: Depth Anything V2, HED, DWPose pieces and the OpenPose renderer, plus their nodes.

Each network is a tiny randomly initialised model of the real architecture, saved as safetensors in
tmp_path and loaded through the real loading code (no hub). Key layouts are checked against key
names/shapes of the public checkpoints (Depth-Anything-V2-Small-hf, lllyasviel's ControlNetHED.pth).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.preprocess import PREPROCESSORS, run_preprocessor
from vdot_nodes.preprocess_cli import preprocess_main
from vdot_nodes.core.preprocess.depth import depth_anything_config, network_size
from vdot_nodes.core.preprocess.hed import ControlNetHED
from vdot_nodes.core.preprocess.pose import (
    BODY_COLORS, HAND_COLORS, LIMB_DIM, crop_transform, draw_pose, nms, simcc_decode, wholebody_to_openpose,
    yolox_decode,
)
from vdot_nodes.core.preprocess.weights import ENV_DIR, find_weights
from vdot_nodes.nodes.preprocess import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS


@pytest.fixture(autouse=True)
def no_annotator_env(monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)
    monkeypatch.delenv("VDOT_COMFY_ROOT", raising=False)


def _video(frames=3, h=20, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(frames, h, w, 3, generator=g)


# ------------------------------------------------------------------------------------------- draw_pose
def _body(points: dict) -> np.ndarray:
    body = np.zeros((18, 3))
    for i, (x, y, c) in points.items():
        body[i] = (x, y, c)
    return body


def test_draw_pose_limb_and_joint_colours():
    # neck (1) → right shoulder (2) is limb 0: red, dimmed to 60 %; joints full colour on top.
    img = draw_pose([{"body": _body({1: (50, 20, 1.0), 2: (50, 80, 0.9)}), "hands": [], "face": None}], 100, 100)
    assert img.dtype == np.uint8 and img.shape == (100, 100, 3)
    limb = tuple(int(c * LIMB_DIM) for c in BODY_COLORS[0])
    for y in (35, 50, 65):
        assert tuple(img[y, 50]) == limb
    assert tuple(img[20, 50]) == BODY_COLORS[1] and tuple(img[80, 50]) == BODY_COLORS[2]
    assert tuple(img[50, 70]) == (0, 0, 0)  # background stays black


def test_draw_pose_skips_low_confidence_and_off_canvas_points():
    low = _body({1: (50, 20, 0.1), 2: (50, 80, 1.0)})
    assert draw_pose({"body": low, "hands": [], "face": None}, 100, 100)[50, 50].sum() == 0
    off = _body({1: (50, 20, 1.0), 2: (50, 180, 1.0)})
    img = draw_pose({"body": off, "hands": [], "face": None}, 100, 100)
    assert img[60, 50].sum() == 0 and tuple(img[20, 50]) == BODY_COLORS[1]
    assert draw_pose([], 8, 9).shape == (8, 9, 3)


def test_draw_pose_hands_and_face():
    hand = np.zeros((21, 3))
    hand[0], hand[1] = (10, 50, 1), (90, 50, 1)  # wrist → thumb base: edge 0
    face = np.zeros((68, 3))
    face[0] = (30, 10, 1)
    img = draw_pose({"body": None, "hands": [hand], "face": face}, 64, 100)
    assert tuple(img[50, 50]) == HAND_COLORS[0] == (255, 0, 0)
    assert tuple(img[50, 10]) == (255, 0, 0)  # hand joints: red discs
    assert tuple(img[10, 30]) == (255, 255, 255)
    hand[1] = (90, 30, 1)
    img = draw_pose({"hands": [hand, hand]}, 64, 100)
    assert tuple(img[40, 50]) == HAND_COLORS[0]
    with pytest.raises(VDOTInputError, match="body"):
        draw_pose({"body": np.zeros((17, 3))}, 10, 10)


# ------------------------------------------------------------------------------ DWPose numeric pieces
def test_simcc_decode_and_wholebody_mapping():
    k = 133
    simcc_x, simcc_y = np.zeros((k, 576)), np.zeros((k, 768))
    xs, ys = np.arange(k) * 4 % 576, np.arange(k) * 5 % 768
    simcc_x[np.arange(k), xs] = 0.9
    simcc_y[np.arange(k), ys] = 0.8
    locs, scores = simcc_decode(simcc_x, simcc_y)
    np.testing.assert_allclose(locs, np.stack([xs, ys], 1) / 2.0)
    np.testing.assert_allclose(scores, 0.8)
    pose = wholebody_to_openpose(locs, scores)
    body = pose["body"]
    assert body.shape == (18, 3) and pose["face"].shape == (68, 3) and [h.shape for h in pose["hands"]] == [(21, 3)] * 2
    np.testing.assert_allclose(body[0, :2], locs[0])  # nose stays first
    np.testing.assert_allclose(body[1, :2], locs[[5, 6]].mean(0))  # neck = mid-shoulders
    np.testing.assert_allclose(body[2, :2], locs[6])  # OpenPose right shoulder = COCO 6
    np.testing.assert_allclose(body[5, :2], locs[5])
    np.testing.assert_allclose(pose["hands"][1][0, :2], locs[112])  # after the inserted neck: 113 ↔ COCO 112


def test_crop_transform_maps_box_centre_and_keeps_aspect():
    warp, center, scale = crop_transform(np.array([100.0, 50.0, 160.0, 250.0]))
    np.testing.assert_allclose(warp @ np.array([130.0, 150.0, 1.0]), [144.0, 192.0])
    assert scale[0] / scale[1] == pytest.approx(288 / 384) and scale[1] == pytest.approx(250.0)


def test_yolox_decode_and_nms():
    raw = np.zeros((80 * 80 + 40 * 40 + 20 * 20, 6))
    raw[81, :2] = (0.5, 0.5)  # stride-8 cell (x=1, y=1)
    out = yolox_decode(raw)
    np.testing.assert_allclose(out[81, :4], [12.0, 12.0, 8.0, 8.0])
    np.testing.assert_allclose(out[80 * 80, 2:4], [16.0, 16.0])  # first stride-16 cell: exp(0) * 16
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=float)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.45) == [0, 2]


# ------------------------------------------------------------------------------------------------ HED
HED_PUBLIC_KEYS = {  # ControlNetHED.pth (lllyasviel/Annotators)
    "norm": (1, 3, 1, 1), "block1.convs.0.weight": (64, 3, 3, 3), "block1.convs.1.weight": (64, 64, 3, 3),
    "block1.projection.weight": (1, 64, 1, 1), "block3.convs.2.weight": (256, 256, 3, 3),
    "block4.convs.0.weight": (512, 256, 3, 3), "block5.projection.bias": (1,),
}


def test_hed_key_layout_matches_public_checkpoint():
    with torch.device("meta"):
        state = ControlNetHED().state_dict()
    for key, shape in HED_PUBLIC_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert len(state) == 2 * (2 + 2 + 3 + 3 + 3 + 5) + 1


def _tiny_hed_file(path, seed=0):
    torch.manual_seed(seed)
    model = ControlNetHED(widths=(4, 4, 8, 8, 8))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["norm"] = torch.full((1, 3, 1, 1), 120.0)
    save_file(state, str(path))
    return path


def test_hed_scribble_shapes_range_determinism(tmp_path):
    weights = _tiny_hed_file(tmp_path / "ControlNetHED.safetensors")
    video = _video()
    out = run_preprocessor("hed", video, weights=str(weights), batch_size=2)
    assert out.shape == video.shape and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0
    assert torch.equal(out[..., 0], out[..., 2])
    assert torch.equal(out, run_preprocessor("hed", video, weights=str(weights), batch_size=2))  # deterministic
    by_folder = run_preprocessor("scribble_hed", video, weights=str(tmp_path))  # a folder works too
    torch.testing.assert_close(by_folder, out, atol=1e-5, rtol=0)  # other batch size: float-rounding only
    black = run_preprocessor("hed", video, weights=str(weights), background="black")
    torch.testing.assert_close(black, 1.0 - out)
    resized = run_preprocessor("hed", _video(5, 40, 48), weights=str(weights), frames=4, height=16, width=32)
    assert resized.shape == (4, 16, 32, 3)


def test_hed_edge_is_sigmoid_of_mean_side_output(tmp_path):
    """Zero convolutions: every side output is its projection bias, so edge = sigmoid(mean_k b_k) everywhere."""
    model = ControlNetHED(widths=(4, 4, 8, 8, 8))
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    biases = [0.5, -1.0, 2.0, 0.25, 1.25]
    for i, b in enumerate(biases):
        state[f"block{i + 1}.projection.bias"] = torch.tensor([b])
    save_file(state, str(tmp_path / "h.safetensors"))
    out = run_preprocessor("hed", _video(2, 16, 24), weights=str(tmp_path / "h.safetensors"), background="black")
    torch.testing.assert_close(out, torch.full_like(out, torch.sigmoid(torch.tensor(sum(biases) / 5)).item()))


def test_pickles_and_missing_files_are_refused_with_the_file_name(tmp_path, monkeypatch):
    pth = tmp_path / "ControlNetHED.pth"
    pth.write_bytes(b"not read")
    with pytest.raises(VDOTInputError, match="not a .safetensors"):
        run_preprocessor("hed", _video(), weights=str(pth))
    with pytest.raises(VDOTInputError, match="ControlNetHED.safetensors.*not found") as err:
        find_weights("hed", tmp_path)
    assert "huggingface.co/lllyasviel/Annotators" in str(err.value) and "safetensors" in str(err.value)
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    with pytest.raises(VDOTInputError, match="depth_anything_v2_vitl.safetensors") as err:
        run_preprocessor("depth", _video())
    assert str(tmp_path) in str(err.value)
    with pytest.raises(VDOTInputError, match="dw-ll_ucoco_384.onnx"):
        run_preprocessor("pose", _video())
    (tmp_path / "dw-ll_ucoco_384.onnx").write_bytes(b"x")
    with pytest.raises(VDOTInputError, match="yolox_l.onnx"):
        run_preprocessor("pose", _video())


# ---------------------------------------------------------------------------------------------- depth
DEPTH_PUBLIC_KEYS = {  # depth-anything/Depth-Anything-V2-Small-hf model.safetensors
    "backbone.embeddings.cls_token": (1, 1, 384),
    "backbone.embeddings.position_embeddings": (1, 1370, 384),
    "backbone.embeddings.patch_embeddings.projection.weight": (384, 3, 14, 14),
    "backbone.encoder.layer.0.attention.attention.query.weight": (384, 384),
    "backbone.encoder.layer.11.attention.output.dense.weight": (384, 384),
    "backbone.encoder.layer.0.layer_scale1.lambda1": (384,),
    "backbone.encoder.layer.0.mlp.fc1.weight": (1536, 384),
    "neck.reassemble_stage.layers.0.projection.weight": (48, 384, 1, 1),
    "neck.reassemble_stage.layers.0.resize.weight": (48, 48, 4, 4),
    "neck.reassemble_stage.layers.3.resize.weight": (384, 384, 3, 3),
    "neck.convs.3.weight": (64, 384, 3, 3),
    "neck.fusion_stage.layers.0.residual_layer1.convolution1.weight": (64, 64, 3, 3),
    "head.conv1.weight": (32, 64, 3, 3), "head.conv3.weight": (1, 32, 1, 1),
}


def _to_public_names(state: dict) -> dict:
    """transformers-5 DINOv2 names → the names stored in the published -hf checkpoints."""
    pairs = (("attention.q_proj.", "attention.attention.query."), ("attention.k_proj.", "attention.attention.key."),
             ("attention.v_proj.", "attention.attention.value."), ("attention.o_proj.", "attention.output.dense."))
    out = {}
    for key, value in state.items():
        for new, old in pairs:
            key = key.replace(new, old)
        out[key] = value.contiguous()
    return out


def _depth_model(config):
    from transformers import DepthAnythingForDepthEstimation

    return DepthAnythingForDepthEstimation(config)


def test_depth_config_from_public_key_layout_builds_the_small_model():
    from transformers import DepthAnythingConfig, Dinov2Config

    reference = DepthAnythingConfig(
        backbone_config=Dinov2Config(hidden_size=384, num_attention_heads=6, out_indices=[3, 6, 9, 12],
                                     apply_layernorm=True, reshape_hidden_states=False, image_size=518),
        neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64)
    with torch.device("meta"):
        public = _to_public_names(_depth_model(reference).state_dict())
    for key, shape in DEPTH_PUBLIC_KEYS.items():
        assert tuple(public[key].shape) == shape, key
    config = depth_anything_config(public)
    assert config.backbone_config.out_indices == [3, 6, 9, 12]
    assert config.backbone_config.num_attention_heads == 6 and config.backbone_config.image_size == 518
    assert list(config.neck_hidden_sizes) == [48, 96, 192, 384] and config.fusion_hidden_size == 64


def _tiny_depth_file(path, seed=0):
    from transformers import DepthAnythingConfig, Dinov2Config

    torch.manual_seed(seed)
    config = DepthAnythingConfig(
        backbone_config=Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=1, image_size=28,
                                     out_indices=[1, 2, 3, 4], apply_layernorm=True, reshape_hidden_states=False),
        reassemble_hidden_size=64, neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16, head_hidden_size=8)
    save_file(_to_public_names(_depth_model(config).state_dict()), str(path))
    return path


def test_depth_shapes_range_determinism_and_normalisation(tmp_path):
    weights = _tiny_depth_file(tmp_path / "depth_anything_v2_vits.safetensors")
    video = _video(3, 20, 24)
    out = run_preprocessor("depth", video, weights=str(weights), input_size=28, batch_size=2)
    assert out.shape == video.shape and out.dtype == torch.float32
    flat = out[..., 0].reshape(3, -1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(3))
    torch.testing.assert_close(flat.max(1).values, torch.ones(3))
    assert torch.equal(out[..., 0], out[..., 1])
    again = run_preprocessor("depth_anything", video, weights=str(tmp_path), input_size=28)
    torch.testing.assert_close(again, out, atol=1e-5, rtol=0)
    whole = run_preprocessor("depth", video, weights=str(weights), input_size=28, normalize="video")
    assert whole.min() == 0 and whole.max() == 1
    with pytest.raises(VDOTInputError, match="normalize"):
        run_preprocessor("depth", video, weights=str(weights), normalize="clip")


def test_depth_network_size_follows_depth_anything_resize():
    assert network_size(480, 832, 518) == (518, 896)
    assert network_size(518, 518, 518) == (518, 518)
    h, w = network_size(100, 300, 518)
    assert h == 518 and w % 14 == 0 and w >= 518 * 3 - 14


def test_cli_depth_with_weights_flag(tmp_path):
    from vdot_nodes.core.video_io import read_video, write_video

    weights = _tiny_depth_file(tmp_path / "d.safetensors")
    src = tmp_path / "in.mp4"
    write_video(_video(4, 32, 32), src, fps=8)
    out = tmp_path / "depth.mp4"
    rc = preprocess_main(["--kind", "depth", str(src), str(out), "--weights", str(weights), "--input-size", "28",
                          "--quiet"])
    assert rc == 0
    frames, _ = read_video(out)
    assert frames.shape == (4, 32, 32, 3)
    assert preprocess_main(["--kind", "depth", str(src), str(tmp_path / "x.mp4"), "--weights",
                            str(tmp_path / "none.safetensors"), "--quiet"]) == 2
    raft = _tiny_raft_file(tmp_path / "r.safetensors")
    frames_dir = tmp_path / "flow"
    assert preprocess_main(["--kind", "raft", str(src), str(frames_dir), "--weights", str(raft),
                            "--num-flow-updates", "1", "--quiet"]) == 0
    assert len(list(frames_dir.glob("frame_*.png"))) == 4
    assert preprocess_main(["--kind", "grey", str(src), str(tmp_path / "g.mp4"), "--num-flow-updates", "1"]) == 2


# ---------------------------------------------------------------------------------------------- nodes
def test_node_declarations():
    assert {"VDOTDepth", "VDOTPose", "VDOTScribble"} <= set(NODE_CLASS_MAPPINGS)
    assert "hed" in NODE_CLASS_MAPPINGS["VDOTScribble"].INPUT_TYPES()["required"]["method"][0]
    for key, cls in NODE_CLASS_MAPPINGS.items():
        assert key.startswith("VDOT") and NODE_DISPLAY_NAME_MAPPINGS[key].startswith("VDOT ")
        assert cls.CATEGORY == "VDOT/preprocess" and cls.RETURN_TYPES == ("IMAGE",) and cls.DESCRIPTION
        for name, decl in cls.INPUT_TYPES()["required"].items():
            assert decl[1].get("tooltip"), (key, name)
    assert set(PREPROCESSORS) >= {"depth", "pose", "scribble_hed"}


def test_nodes_run_on_annotator_folder(comfy_root):
    folder = comfy_root / "models" / "vdot_annotators"
    _tiny_depth_file(folder / "depth_anything_v2_vits.safetensors")
    _tiny_hed_file(folder / "ControlNetHED.safetensors")
    spec = NODE_CLASS_MAPPINGS["VDOTDepth"].INPUT_TYPES()["required"]
    assert spec["model"][0] == ["depth_anything_v2_vits.safetensors"]
    video = _video(2, 28, 28)
    (depth,) = NODE_CLASS_MAPPINGS["VDOTDepth"]().run(video, "depth_anything_v2_vits.safetensors", "frame")
    assert depth.shape == video.shape and depth.min() == 0 and depth.max() == 1
    (hed,) = NODE_CLASS_MAPPINGS["VDOTScribble"]().run(video, "hed", False)
    assert hed.shape == video.shape
    pose_choices = NODE_CLASS_MAPPINGS["VDOTPose"].INPUT_TYPES()["required"]
    assert pose_choices["pose_model"][0] == ["dw-ll_ucoco_384.onnx"]  # expected name shown when absent
    with pytest.raises(VDOTInputError, match="dw-ll_ucoco_384.onnx.*not found") as err:
        NODE_CLASS_MAPPINGS["VDOTPose"]().run(video, "dw-ll_ucoco_384.onnx", "yolox_l.onnx", True, True, True)
    assert "vdot_annotators" in str(err.value) and "huggingface.co/yzd-v/DWPose" in str(err.value)
    with pytest.raises(VDOTInputError, match="not in models/vdot_annotators"):
        NODE_CLASS_MAPPINGS["VDOTDepth"]().run(video, "other.safetensors", "frame")


# ----------------------------------------------------------------------------------------------- RAFT
RAFT_PUBLIC_KEYS = {  # torchvision raft_large / raft_small state dicts
    "feature_encoder.convnormrelu.0.weight": (64, 3, 7, 7),
    "feature_encoder.layer2.0.downsample.0.weight": (96, 64, 1, 1),
    "context_encoder.convnormrelu.1.running_var": (64,),
    "context_encoder.conv.weight": (256, 128, 1, 1),
    "update_block.motion_encoder.convcorr1.0.weight": (256, 324, 1, 1),
    "update_block.motion_encoder.conv.0.weight": (126, 256, 3, 3),
    "update_block.recurrent_block.convgru1.convz.weight": (128, 384, 1, 5),
    "update_block.recurrent_block.convgru2.convq.weight": (128, 384, 5, 1),
    "update_block.flow_head.conv2.weight": (2, 256, 3, 3),
    "mask_predictor.convrelu.0.weight": (256, 128, 3, 3), "mask_predictor.conv.weight": (576, 256, 1, 1),
}
RAFT_SMALL_PUBLIC_KEYS = {
    "feature_encoder.layer1.0.convnormrelu1.0.weight": (8, 32, 1, 1),
    "context_encoder.conv.weight": (160, 96, 1, 1),
    "update_block.motion_encoder.convcorr1.0.weight": (96, 196, 1, 1),
    "update_block.recurrent_block.convgru1.convz.weight": (96, 242, 3, 3),
}


def test_raft_key_layout_and_size_match_torchvision():
    from vdot_nodes.core.preprocess.raft import RAFT, RAFT_LARGE, RAFT_SMALL

    for cfg, keys, params in ((RAFT_LARGE, RAFT_PUBLIC_KEYS, 5257536), (RAFT_SMALL, RAFT_SMALL_PUBLIC_KEYS, 990162)):
        with torch.device("meta"):
            model = RAFT(cfg)
        state = model.state_dict()
        for key, shape in keys.items():
            assert tuple(state[key].shape) == shape, key
        assert sum(p.numel() for p in model.parameters()) == params  # torchvision's num_params
    assert not any(k.startswith("mask_predictor") for k in RAFT(RAFT_SMALL).state_dict())


def test_raft_correlation_lookup_and_convex_upsampling():
    from vdot_nodes.core.preprocess.raft import RAFT, RAFT_SMALL, coords_grid, upsample_flow

    model = RAFT(RAFT_SMALL)
    torch.manual_seed(0)
    f1, f2 = torch.randn(1, 8, 8, 9), torch.randn(1, 8, 8, 9)
    pyramid = model.correlation_pyramid(f1, f2)
    coords = coords_grid(1, 8, 9, "cpu")
    feats = model.lookup(pyramid, coords)
    assert feats.shape == (1, 4 * 49, 8, 9)
    centre = 3 * 7 + 3  # window centre at level 0 = <f1(p), f2(p)> / sqrt(C)
    torch.testing.assert_close(feats[0, centre], (f1 * f2).sum(1)[0] / 8 ** 0.5)
    # the window's first axis moves x (torchvision's order): offset (+1, 0) → f2 one pixel right
    torch.testing.assert_close(feats[0, 4 * 7 + 3, :, :8], (f1[0, :, :, :8] * f2[0, :, :, 1:]).sum(0) / 8 ** 0.5)
    flow = torch.full((1, 2, 3, 4), 1.5)
    torch.testing.assert_close(upsample_flow(flow, None), torch.full((1, 2, 24, 32), 12.0))
    up = upsample_flow(flow, torch.randn(1, 576, 3, 4))  # convex weights: interior stays 8 × flow
    torch.testing.assert_close(up[..., 8:16, 8:24], torch.full((1, 2, 8, 16), 12.0))


def _tiny_raft_file(path, seed=0):
    from vdot_nodes.core.preprocess.raft import RAFT, RAFT_SMALL

    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in RAFT(RAFT_SMALL).state_dict().items()}, str(path))
    return path


def test_raft_flow_video_shapes_determinism_and_pad(tmp_path):
    weights = _tiny_raft_file(tmp_path / "raft_small_C_T_V2.safetensors")
    video = _video(4, 36, 44)  # not multiples of 8: padded, then cropped back
    out = run_preprocessor("raft", video, weights=str(weights), num_flow_updates=2, batch_size=2)
    assert out.shape == video.shape and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, run_preprocessor("flow_raft", video, weights=str(tmp_path), num_flow_updates=2,
                                             batch_size=2))
    assert torch.equal(out[0], out[1])  # "first": frame 0 repeats flow 0→1 (VACE)
    last = run_preprocessor("raft", video, weights=str(weights), num_flow_updates=2, pad="last", batch_size=2)
    torch.testing.assert_close(last[:3], out[1:], atol=1e-6, rtol=0)
    assert run_preprocessor("raft", video[:1], weights=str(weights)).shape == (1, 36, 44, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VDOTInputError, match="raft_large_C_T_SKHT_V2.safetensors") as err:
        find_weights("raft", tmp_path / "empty")
    assert "torchvision" in str(err.value)  # the conversion the user runs once


def test_optical_flow_node_raft(comfy_root):
    _tiny_raft_file(comfy_root / "models" / "vdot_annotators" / "raft_small_C_T_V2.safetensors")
    video = _video(3, 32, 32)
    (out,) = NODE_CLASS_MAPPINGS["VDOTOpticalFlow"]().run(video, "raft")
    assert out.shape == video.shape
