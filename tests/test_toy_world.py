"""Toy world: determinism, exact ground truth (flow, depth order, pose, edges), truthful captions,
and a dataset whose every row parses and builds its task's VCU. No diffusers import: fast."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.data.manifest import ManifestDataset, read_manifest, sample_to_vcu
from training.toy.captions import OBJECT_COLORS, caption_vocabulary, direction_words
from training.toy.cli import toy_main
from training.toy.dataset import clip_controls, write_toy_dataset
from training.toy.world import (BACKGROUND_DEPTH, FIGURE, WorldConfig, depth_to_video, make_clip, sample_scene)
from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.preprocess import flow_to_color
from vdot_nodes.core.tasks import TASKS
from vdot_nodes.core.vcu import validate_vcu
from vdot_nodes.core.video_io import read_video

SEEDS = range(12)
SMALL = WorldConfig(height=32, width=32, num_frames=5, max_objects=2)


def test_same_seed_same_clip_and_different_seeds_differ():
    a, b, c = make_clip(7), make_clip(7), make_clip(8)
    for name in ("frames", "depth", "ids", "flow", "poses", "edges", "object_masks"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.caption == b.caption
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.shape == (5, 64, 64, 3) and a.flow.shape == (4, 64, 64, 2)
    assert a.frames.dtype == np.float32 and 0 <= a.frames.min() and a.frames.max() <= 1


def _warp_check(clip, flow):
    """Per frame pair: (pixels checked, pixels where frame t+1 at p + flow(p) != frame t at p)."""
    f, h, w = clip.ids.shape
    ys, xs = np.mgrid[0:h, 0:w]
    checked = wrong = 0
    for t in range(f - 1):
        qx = xs + flow[t, ..., 0].round().astype(int)
        qy = ys + flow[t, ..., 1].round().astype(int)
        inside = (qx >= 0) & (qx < w) & (qy >= 0) & (qy < h)
        qx, qy = np.clip(qx, 0, w - 1), np.clip(qy, 0, h - 1)
        same_surface = inside & (clip.ids[t + 1][qy, qx] == clip.ids[t])  # unoccluded in t+1
        diff = np.abs(clip.frames[t + 1][qy, qx] - clip.frames[t]).max(axis=-1)
        checked += int(same_surface.sum())
        wrong += int((same_surface & (diff > 0)).sum())
    return checked, wrong


@pytest.mark.parametrize("seed", SEEDS)
def test_ground_truth_flow_is_exact(seed):
    clip = make_clip(seed)
    checked, wrong = _warp_check(clip, clip.flow)
    assert checked > 0.8 * clip.flow[..., 0].size  # most pixels are checkable: the test is not vacuous
    assert wrong == 0
    # A flow off by one pixel must fail (proves the check can fail): on a patterned background the colours
    # disagree; flat colours hide a shift inside a surface, but fewer pixels then land on their own surface.
    checked_shifted, wrong_shifted = _warp_check(clip, clip.flow + np.array([1.0, 0.0], np.float32))
    if clip.scene.pattern != "plain":
        assert wrong_shifted > 0
    else:
        assert checked_shifted < checked


def _flat_per_cell(a: np.ndarray, cell: int) -> bool:
    """Every ``cell``×``cell`` block of ``a`` ``[F, H, W, ...]`` holds one value."""
    f, h, w = a.shape[:3]
    blocks = a.reshape(f, h // cell, cell, w // cell, cell, -1)
    return bool((blocks == blocks[:, :, :1, :, :1]).all())


@pytest.mark.parametrize("seed", SEEDS)
def test_a_world_of_cells_is_flat_per_cell_with_exact_flow(seed):
    clip = make_clip(seed, WorldConfig(cell=2))
    scene = clip.scene
    assert scene.period % 2 == 0 and scene.pan[0] % 2 == 0 and scene.pan[1] % 2 == 0
    for o in scene.objects:  # whole cells: centres, half sizes, speeds
        assert (o.x0 % 2, o.y0 % 2, o.size % 2, o.vx % 2, o.vy % 2) == (0, 0, 0, 0, 0) and (o.vx or o.vy)
    # Pixels, truth and every control video are one value per 2×2 cell (what the 2× toy VAE codes per latent pixel).
    for name in ("frames", "depth", "ids", "flow", "edges"):
        assert _flat_per_cell(getattr(clip, name), 2), name
    assert _flat_per_cell(np.moveaxis(clip.object_masks, 0, -1), 2)
    for kind, video in clip_controls(clip).items():
        assert _flat_per_cell(video.numpy(), 2), kind
    checked, wrong = _warp_check(clip, clip.flow)
    assert checked > 0.8 * clip.flow[..., 0].size and wrong == 0
    # Scribble strokes are whole cells: two cells wide across every silhouette boundary.
    if clip.edges.any():
        assert clip.edges[:, ::2, ::2].sum() * 4 == clip.edges.sum()
    # The same seed at cell 1 is not blocky (the check can fail): its circles and diagonals split cells.
    assert not all(_flat_per_cell(make_clip(s, WorldConfig(cell=1)).frames, 2) for s in SEEDS)


def test_a_cell_worlds_pose_control_is_the_full_size_drawing_sampled_per_cell():
    """The pose renderer's joint discs and limbs keep their size at every cell (drawing on the coarse grid and
    enlarging doubled them: lit-pixel IoU with the full-size drawing 0.55)."""
    from training.toy.dataset import render_pose

    clips = [c for c in (make_clip(s, WorldConfig(cell=2)) for s in range(20)) if c.figure_indices()]
    assert len(clips) >= 3
    for clip in clips:
        control = clip_controls(clip)["pose"].amax(-1) > 0.1
        full = render_pose(clip.poses, 64, 64).float().amax(-1) > 0.1
        assert (control & full).sum() / (control | full).sum() > 0.8


def test_world_cell_other_than_1_2_4_is_refused_in_one_line():
    with pytest.raises(VDOTInputError) as e:
        WorldConfig(cell=3).check()
    assert e.value.input_name == "cell" and "\n" not in str(e.value)


@pytest.mark.parametrize("seed", SEEDS)
def test_depth_order_matches_occlusion(seed):
    clip = make_clip(seed)
    objects = clip.scene.objects
    depths = np.array([BACKGROUND_DEPTH] + [o.depth for o in objects], np.float32)
    # The depth map is the depth of the visible surface, and background where no object covers.
    assert np.array_equal(clip.depth, depths[clip.ids.astype(int)])
    covered = clip.object_masks.any(axis=0)
    assert np.all(clip.ids[~covered] == 0)
    for k, a in enumerate(objects):
        assert np.all(clip.ids[clip.object_masks[k]] != 0)
        for j, b in enumerate(objects):
            overlap = clip.object_masks[k] & clip.object_masks[j]
            if j != k and overlap.any():
                nearest = k if a.depth < b.depth else j
                assert np.all(clip.ids[overlap] != (j if nearest == k else k) + 1)
                assert np.all(clip.depth[overlap] <= min(a.depth, b.depth) + 1e-6)
    # Near = bright in the depth control video.
    video = depth_to_video(clip.depth).numpy()
    if len(objects):
        near = clip.ids == len(objects)  # nearest object's visible pixels
        assert video[..., 0][near].min() > video[..., 0][clip.ids == 0].max()


def test_pose_keypoints_follow_the_stick_figures():
    found = 0
    for seed in range(60):
        clip = make_clip(seed)
        figures = clip.figure_indices()
        assert clip.poses.shape == (5, len(figures), 18, 3)
        for p, k in enumerate(figures):
            found += 1
            obj = clip.scene.objects[k]
            # Rigid translation: keypoints move by exactly the figure's velocity per frame.
            step = clip.poses[1:, p, :, :2] - clip.poses[:-1, p, :, :2]
            assert np.allclose(step, [obj.vx, obj.vy])
            for t in (0, 4):  # neck and hips lie on the drawn figure, first and last frame
                for j in (1, 8, 11):
                    x, y, visible = clip.poses[t, p, j]
                    if visible:
                        assert clip.object_masks[k, t, int(round(y)), int(round(x))]
    assert found >= 5


@pytest.mark.parametrize("cell", [1, 2])
def test_edges_are_silhouette_boundaries(cell):
    clip = make_clip(3, WorldConfig(cell=cell))
    ids, edges = clip.ids[:, ::cell, ::cell], clip.edges[:, ::cell, ::cell]  # one sample per cell (flat per cell)
    boundary = np.zeros_like(edges)
    boundary[:, :, :-1] |= ids[:, :, :-1] != ids[:, :, 1:]
    assert boundary.any() and np.all(edges[boundary])
    interior = np.ones_like(edges)  # cells whose 4-neighbours all share their id are not edges
    interior[:, 1:-1, 1:-1] = ((ids[:, 1:-1, 1:-1] == ids[:, :-2, 1:-1]) & (ids[:, 1:-1, 1:-1] == ids[:, 2:, 1:-1])
                               & (ids[:, 1:-1, 1:-1] == ids[:, 1:-1, :-2]) & (ids[:, 1:-1, 1:-1] == ids[:, 1:-1, 2:]))
    assert not np.any(edges[:, 1:-1, 1:-1][interior[:, 1:-1, 1:-1]])


def test_direction_words():
    assert direction_words(-1, 0) == "left" and direction_words(2, 0) == "right"
    assert direction_words(0, -1) == "up" and direction_words(0, 1) == "down"
    assert direction_words(1, -2) == "up and right" and direction_words(0, 0) == ""


@pytest.mark.parametrize("seed", SEEDS)
def test_captions_mention_colours_shapes_and_directions(seed):
    scene = sample_scene(seed)
    caption = scene.caption
    for obj in scene.objects:
        noun = "stick figure" if obj.kind == FIGURE else obj.kind
        verb = "walks" if obj.kind == FIGURE else "moves"
        assert f"{obj.color} {noun} {verb} {direction_words(obj.vx, obj.vy)}" in caption
    for color in set(OBJECT_COLORS) - {o.color for o in scene.objects}:
        assert f" {color} " not in f" {caption} "  # no colour that is not in the scene
    assert f"over a {scene.background} {scene.pattern} background" in caption
    if scene.pan != (0, 0):
        assert caption.endswith(f"the camera pans {direction_words(*scene.pan)}")
    assert set(caption.replace(",", " ").split()) <= set(caption_vocabulary())


def test_world_config_is_checked():
    with pytest.raises(VDOTInputError, match="4k\\+1"):
        sample_scene(0, WorldConfig(num_frames=16))
    with pytest.raises(VDOTInputError, match="multiples of 16"):
        sample_scene(0, WorldConfig(height=40))


def test_dataset_rows_parse_and_every_task_builds_its_vcu(tmp_path):
    manifest = write_toy_dataset(tmp_path / "toy", 2, seed=6, config=SMALL)  # a triangle; a triangle and a stick figure
    rows = read_manifest(manifest)
    # A pose control shows stick figures only: the clip without one poses no pose task.
    pose_tasks = {t for t, spec in TASKS.items() if spec.control_kind == "pose"}
    assert pose_tasks == {"pose", "firstframe_pose", "reference_pose"}
    assert [r.task for r in rows if r.meta["clip"] == 0] == [t for t in TASKS if t not in pose_tasks]
    assert [r.task for r in rows if r.meta["clip"] == 1] == list(TASKS)
    data = ManifestDataset(manifest, SMALL.num_frames, SMALL.height, SMALL.width)
    g = torch.Generator().manual_seed(0)
    for i in range(len(rows)):  # every row of both clips builds its VCU
        sample = data[i]
        vcu = sample_to_vcu(sample, generator=g)
        validate_vcu(vcu)
        assert vcu.task == sample["task"] and vcu.frames.shape == (5, 32, 32, 3)
        if TASKS[vcu.task].needs_references:
            assert len(vcu.references) == len(sample["meta"]["objects"])
    # The clip is stored losslessly and the flow control is the colour wheel of the exact GT flow.
    clip = make_clip(6, SMALL)
    video, _ = read_video(tmp_path / "toy" / "clips" / "00000" / "video")
    assert torch.allclose(video, torch.from_numpy(clip.frames), atol=1 / 255 + 1e-6)
    flow_video, _ = read_video(tmp_path / "toy" / "clips" / "00000" / "flow")
    truth = load_file(str(tmp_path / "toy" / "clips" / "00000" / "truth.safetensors"))
    expected = flow_to_color(np.concatenate([truth["flow"][:1].numpy(), truth["flow"].numpy()]))
    assert torch.allclose(flow_video, expected, atol=1e-6)
    assert np.array_equal(truth["depth"].numpy(), clip.depth)
    first = json.loads((tmp_path / "toy" / "manifest.jsonl").read_text().splitlines()[0])
    assert first["caption"] == clip.caption
    with pytest.raises(VDOTInputError, match="not empty"):  # never writes over an existing dataset
        write_toy_dataset(tmp_path / "toy", 1, config=SMALL)


def test_a_flow_control_that_shows_no_object_poses_no_flow_row(tmp_path):
    """Clip 105's triangle moves with the background (velocity = −pan): its flow control is one colour over
    the whole frame, so flow and reference_flow rows would ask for an object the control does not show;
    with a first frame the object is given and the row stays."""
    clip = make_clip(105, SMALL)
    assert all((o.vx, o.vy) == (-clip.scene.pan[0], -clip.scene.pan[1]) for o in clip.scene.objects)
    manifest = write_toy_dataset(tmp_path / "toy", 1, seed=105, config=SMALL)
    tasks = [r.task for r in read_manifest(manifest)]
    flow_tasks = [t for t, spec in TASKS.items() if spec.control_kind == "flow"]
    assert flow_tasks == ["flow", "firstframe_flow", "reference_flow"]
    assert "firstframe_flow" in tasks and "flow" not in tasks and "reference_flow" not in tasks
    flow_video, _ = read_video(tmp_path / "toy" / "clips" / "00000" / "flow")
    assert (flow_video - flow_video[0, 0, 0]).abs().max() < 1e-6  # the control shows nothing
    moving = make_clip(6, SMALL)  # the dataset test's clip: its objects move against the background
    assert any((o.vx, o.vy) != (-moving.scene.pan[0], -moving.scene.pan[1]) for o in moving.scene.objects)


def test_cli_world(tmp_path, capsys):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("world: {clips: 1, height: 32, width: 32, num_frames: 5}\n")
    assert toy_main(["--config", str(cfg), "world", "--out", str(tmp_path / "w")]) == 0
    assert len(read_manifest(tmp_path / "w" / "manifest.jsonl")) == len(TASKS) - 3  # a square: no pose tasks
    assert toy_main(["--config", str(tmp_path / "missing.yaml"), "world", "--out", str(tmp_path / "x")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_toy_recipe_rejects_unknown_keys(tmp_path, capsys):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("world: {clips: 1, cilps: 2}\n")
    assert toy_main(["--config", str(cfg), "world", "--out", str(tmp_path / "w")]) == 2
    assert "world.cilps" in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_a_bad_teacher_task_weight_exits_2_before_any_model_loads(tmp_path, capsys):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("world: {clips: 1, height: 32, width: 32, num_frames: 5}\n")
    assert toy_main(["--config", str(cfg), "world", "--out", str(tmp_path / "w")]) == 0
    cfg.write_text("world: {clips: 1, height: 32, width: 32, num_frames: 5}\nteacher: {task_weights: {flwo: 2}}\n")
    capsys.readouterr()
    # No components folder exists: the check must come before anything is loaded from it.
    code = toy_main(["--config", str(cfg), "teacher", "--data", str(tmp_path / "w" / "manifest.jsonl"),
                     "--components", str(tmp_path / "none"), "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and "teacher.task_weights" in err and "flwo" in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()
