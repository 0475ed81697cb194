"""Toy-world report metrics against known answers, and `vdot toy report` end to end on tiny models."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from training.toy import metrics
from training.toy.captions import BACKGROUND_COLORS, OBJECT_COLORS
from training.toy.report import markdown_table, write_report
from training.toy.world import WorldConfig, make_clip


def _reference_fd(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(ca @ cb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * covmean))


def test_frechet_distance_matches_the_scipy_formula_and_its_invariances():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((150, 6)) * 2 + 1
    assert metrics.frechet_distance(a, b) == pytest.approx(_reference_fd(a, b), rel=1e-6)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.arange(6.0)
    assert metrics.frechet_distance(a, a + shift) == pytest.approx(float((shift ** 2).sum()), rel=1e-6)
    with pytest.raises(ValueError, match="feature sets"):
        metrics.frechet_distance(a, b[:, :3])


def test_features_are_fixed_and_catch_collapsed_or_frozen_videos():
    world = WorldConfig(height=32, width=32, num_frames=5)
    real = [torch.from_numpy(make_clip(s, world).frames) for s in range(40)]
    other = [torch.from_numpy(make_clip(100 + s, world).frames) for s in range(40)]
    f1 = metrics.video_features(real)
    assert f1.shape == (40, metrics.FEATURE_DIM) and np.array_equal(f1, metrics.video_features(real))
    scale = metrics.feature_scale(metrics.video_features([torch.from_numpy(make_clip(500 + s, world).frames)
                                                          for s in range(100)]))
    fd = lambda videos: metrics.frechet_distance(f1 / scale, metrics.video_features(videos) / scale)
    floor = fd(other)
    assert fd([v.mean(dim=(0, 1, 2), keepdim=True).expand_as(v) for v in other]) > 20 * floor  # mean colour
    assert fd([v[:1].expand_as(v) for v in other]) > 2 * floor  # frozen frames
    assert fd([torch.rand(5, 32, 32, 3, generator=torch.Generator().manual_seed(s)) for s in range(40)]) > 100 * floor


def test_object_iou_is_high_on_truth_and_zero_on_background():
    clip = make_clip(3, WorldConfig(height=64, width=64, num_frames=9))
    assert metrics.object_iou(torch.from_numpy(clip.frames), clip) > 0.95
    bg = torch.tensor(BACKGROUND_COLORS[clip.scene.background][0]).expand(9, 64, 64, 3)
    assert metrics.object_iou(bg, clip) == 0.0


def test_object_iou_measures_placement_not_background_noise():
    """Colour noise of a VAE's size (≈ 21 dB) leaves the truth's IoU high; the same objects drawn
    elsewhere score low, so the metric reads where objects are, not how clean the background is."""
    clips = [make_clip(s, WorldConfig(height=64, width=64, num_frames=9)) for s in range(6)]
    g = torch.Generator().manual_seed(0)
    for clip in clips:
        truth = torch.from_numpy(clip.frames)
        noisy = (truth + 0.09 * torch.randn(truth.shape, generator=g)).clamp(0, 1)
        assert metrics.object_iou(noisy, clip) > 0.9
        # Objects 16 px down and right of where they are (the background where they were): their own
        # pixels mostly missed. A full-frame object colour fails too.
        moved = torch.from_numpy(clip.frames.copy())
        bg = torch.tensor(BACKGROUND_COLORS[clip.scene.background][0])
        objects = torch.from_numpy(clip.ids > 0)
        moved[objects] = bg
        moved[torch.roll(objects, (16, 16), (1, 2))] = truth[objects].mean(0)
        assert metrics.object_iou(moved, clip) < 0.5
        assert metrics.object_iou(torch.tensor([0.9, 0.12, 0.12]).expand_as(truth), clip) < 0.35


def test_object_iou_of_chosen_objects_ignores_the_others():
    """Pose rows measure the stick figures only: a video missing the triangle beside the figure still
    scores 1 on the figure, while the whole-scene IoU drops."""
    clip = make_clip(7, WorldConfig(height=64, width=64, num_frames=9))  # a cyan triangle and a red figure
    assert [o.kind for o in clip.scene.objects] == ["triangle", "figure"] and clip.figure_indices() == [1]
    video = torch.from_numpy(clip.frames.copy())
    video[torch.from_numpy(clip.ids == 1)] = torch.tensor(BACKGROUND_COLORS[clip.scene.background][0])
    assert metrics.object_iou(video, clip, [1]) == pytest.approx(1.0)
    assert metrics.object_iou(video, clip) < 0.9
    recoloured = torch.from_numpy(clip.frames.copy())
    recoloured[torch.from_numpy(clip.ids == 2)] = torch.tensor(OBJECT_COLORS["blue"])  # the figure in the wrong colour
    assert metrics.object_iou(recoloured, clip, [1]) == 0.0


def test_colour_bound_iou_counts_each_object_only_in_its_own_colour():
    """Object IoU measures placement: the scene with its two objects' colours swapped scores as the truth.
    The colour-bound IoU scores the swap 0 and the truth as object IoU does."""
    clip = make_clip(7, WorldConfig(height=64, width=64, num_frames=9))  # a cyan triangle and a red figure
    truth = torch.from_numpy(clip.frames.copy())
    swapped = truth.clone()
    for k, other in ((1, 2), (2, 1)):
        swapped[torch.from_numpy(clip.ids == k)] = torch.tensor(OBJECT_COLORS[clip.scene.objects[other - 1].color])
    assert metrics.object_iou(truth, clip) > 0.95
    assert metrics.object_iou(swapped, clip) == pytest.approx(metrics.object_iou(truth, clip))
    assert metrics.colour_bound_iou(truth, clip) > 0.95
    assert metrics.colour_bound_iou(swapped, clip) == 0.0
    assert metrics.colour_bound_iou(swapped, clip, [1]) == metrics.object_iou(swapped, clip, [1]) == 0.0
    # Both in the figure's colour: the triangle scores 0, the figure its pixels over both objects' pixels.
    one = truth.clone()
    one[torch.from_numpy(clip.ids == 1)] = torch.tensor(OBJECT_COLORS[clip.scene.objects[1].color])
    figure, triangle = int((clip.ids == 2).sum()), int((clip.ids == 1).sum())
    assert metrics.colour_bound_iou(one, clip) == pytest.approx(0.5 * figure / (figure + triangle), abs=0.01)


def test_flow_epe_is_small_on_truth_and_large_on_a_frozen_video():
    clip = make_clip(5, WorldConfig(height=64, width=64, num_frames=9))
    frames = torch.from_numpy(clip.frames)
    frozen = frames[:1].expand_as(frames)
    speed = float(np.linalg.norm(clip.flow, axis=-1)[clip.ids[:-1] > 0].mean())
    assert speed > 0.5
    assert metrics.flow_epe(frames, clip) < 0.5 * metrics.flow_epe(frozen, clip)
    assert metrics.flow_epe(frozen, clip) == pytest.approx(speed, rel=0.3)


def test_lost_object_flags_a_frame_without_its_object_and_never_a_real_clip():
    world = WorldConfig(height=64, width=64, num_frames=5)
    clips = [make_clip(s, world) for s in range(60)]
    assert not any(metrics.lost_object(torch.from_numpy(c.frames)) for c in clips)  # real clips keep their objects
    clip = clips[0]
    video = torch.from_numpy(clip.frames).clone()
    background = torch.from_numpy(clip.frames[0][clip.ids[0] == 0]).float().mean(0)
    gone = video.clone()
    gone[-1][torch.from_numpy(clip.ids[-1] > 0)] = background  # the object vanishes in the last frame only
    assert metrics.lost_object(gone)
    few = video.clone()  # a stray saturated blot of 10 px (under 0.5 % of 64×64) is not an object either
    few[2] = background
    few[2, :2, :5] = torch.tensor([1.0, 0.0, 0.0])
    assert metrics.lost_object(few)
    few[2, :5, :5] = torch.tensor([1.0, 0.0, 0.0])  # 25 px is
    assert not metrics.lost_object(few)


def test_kept_psnr_and_diversity_known_answers():
    src = torch.rand(5, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(5, 16, 16)
    masks[:, :, 8:] = 1  # right half generated
    out = src.clone()
    out[:, :, 8:] = 0.5  # anything in the generated half does not count
    out[:, :, :8] += 0.1  # the kept half is off by 0.1 → PSNR 20 dB
    assert metrics.kept_psnr(out, src, masks) == pytest.approx(20.0, abs=1e-3)
    assert metrics.seed_diversity([src, src, src]) == 0.0
    assert metrics.seed_diversity([src, src + 0.1]) == pytest.approx(0.1, rel=1e-5)
    with pytest.raises(ValueError, match="two videos"):
        metrics.seed_diversity([src])


def _fake_report():
    model = lambda steps, fd, iou: {"steps": steps, "transformer_evals": steps * (2 if steps != 4 else 1),
                                    "seconds_per_video": 0.5, "fd": fd, "object_iou": iou, "flow_epe": 1.0,
                                    "kept_psnr": 20.0, "diversity": 0.1, "tasks": {"depth": {"object_iou": iou}}}
    return {"world": {"num_frames": 17, "height": 64, "width": 64}, "clips": 2, "seeds": 3, "tasks": ["depth"],
            "cfg_scale": 3.0, "fd_real_vs_real": 0.2,
            "models": {"teacher": model(50, 1.0, 0.5), "dmd": {**model(4, 1.2, 0.45), "otd_plan_diag_mass": float("nan")}}}


def test_report_files(tmp_path):
    report = _fake_report()
    table = markdown_table(report)
    assert "| dmd | 4 |" in table and "1.200 (+20 %)" in table and "0.450 (-10 %)" in table
    out = write_report(report, tmp_path / "rep")
    assert json.loads((out / "report.json").read_text())["models"]["dmd"]["fd"] == 1.2
    root = ET.fromstring((out / "report.svg").read_text())  # well-formed SVG
    assert root.tag.endswith("svg") and len(root) > 10
    assert "![toy report](report.svg)" in (out / "REPORT.md").read_text()
    # A report from before the colour-bound IoU: its column reads "–" and there is no per-task table of it.
    assert "| colour-bound IoU ↑ |" in table and "Colour-bound IoU per task" not in (out / "REPORT.md").read_text()


def test_report_shows_the_colour_bound_iou_beside_object_iou(tmp_path):
    report = _fake_report()
    for r in report["models"].values():
        r["colour_iou"] = r["object_iou"] / 2
        r["tasks"]["depth"]["colour_iou"] = r["object_iou"] / 2
    report["fd_truth_rows"] = 0.9
    table = markdown_table(report)
    lines = table.splitlines()
    assert all(line.count("|") == lines[0].count("|") for line in lines), table  # every row fills the columns
    assert "| 0.450 (-10 %) | 0.225 (-10 %) |" in table  # dmd: object IoU, then colour-bound IoU
    text = (write_report(report, tmp_path / "rep") / "REPORT.md").read_text()
    assert "Colour-bound IoU per task" in text and "| teacher | 0.250 |" in text


def test_toy_report_cli_end_to_end_on_tiny_models(tmp_path, capsys):
    """The whole `vdot toy report` path (held-out world, teacher with CFG, a student, all metrics, files)."""
    from training.toy.cli import TEACHER_VACE, toy_main
    from training.toy.components import build_toy_text_encoder, build_toy_tokenizer, build_toy_vae, set_latent_statistics
    from training.toy.teacher import build_toy_teacher
    from vdot_nodes.core.models import save_text_encoder, save_transformer, save_vae

    build = tmp_path / "build"
    (build / "components").mkdir(parents=True)
    (build / "teacher").mkdir()
    world = WorldConfig(height=32, width=32, num_frames=5)
    vae = build_toy_vae(seed=0)
    set_latent_statistics(vae, [1, 2], world)
    save_vae(vae, build / "components" / "vae.safetensors")
    save_text_encoder(build_toy_text_encoder(seed=0), build_toy_tokenizer(), build / "components" / "text_encoder.safetensors")
    save_transformer(build_toy_teacher(seed=0, num_layers=2, vace_layers=[0]).eval(), build / "teacher" / TEACHER_VACE)
    config = tmp_path / "toy.yaml"
    config.write_text("world: {height: 32, width: 32, num_frames: 5}\n")
    code = toy_main(["--config", str(config), "report", "--build", str(build), "--clips", "1", "--seeds", "2",
                     "--tasks", "t2v,inpaint", "--teacher-steps", "2", "--cfg", "2,1",
                     "--student", f"same={build / 'teacher' / TEACHER_VACE}"])
    assert code == 0
    report = json.loads((build / "report" / "report.json").read_text())
    teacher, student = report["models"]["teacher"], report["models"]["same"]
    assert teacher["transformer_evals"] == 4 and student["transformer_evals"] == 4  # 2 steps × CFG vs 4 steps
    # The second scale: the same teacher without guidance beside it (one eval a step), different videos.
    unguided = report["models"]["teacher CFG 1"]
    assert (report["cfg_scale"], teacher["cfg"], unguided["cfg"], student["cfg"]) == (2.0, 2.0, 1.0, 1.0)
    assert unguided["transformer_evals"] == 2 and unguided["kept_psnr"] != teacher["kept_psnr"]
    assert "CFG 2 (and, in the rows so named, at CFG 1)" in (build / "report" / "REPORT.md").read_text()
    assert set(student["tasks"]) == {"t2v", "inpaint"} and 0 <= student["object_iou"] <= 1
    assert 0 <= student["no_object"] <= 1 and set(student["tasks"]["t2v"]) >= {"no_object"}
    assert 0 <= report["vae_round_trip"]["no_object"] <= 1  # an untrained VAE here: any share
    assert "| videos without an object ↓ |" in (build / "report" / "REPORT.md").read_text()
    assert "Videos without an object per task" in (build / "report" / "REPORT.md").read_text()
    assert np.isfinite([student["fd"], teacher["fd"], student["diversity"], report["fd_real_vs_real"]]).all()
    assert student["diversity"] > 0  # two seeds, two different videos
    assert student["preset"] == "renoise" and teacher["preset"] == "teacher_euler"  # no inference preset in its metadata
    assert (build / "eval_world_1" / "manifest.jsonl").is_file() and (build / "report" / "report.svg").is_file()
    assert report["clips"] == 1 and report["rows"] == 2  # one held-out clip × two tasks
    assert (build / "report" / "samples.png").is_file() and "![samples](samples.png)" in (build / "report" / "REPORT.md").read_text()
    # The ceiling row: the held-out truth through the build's VAE, measured like a model. Its PSNR matches
    # a round trip done directly with diffusers' AutoencoderKLWan.
    from training.data.manifest import ManifestDataset
    from training.toy.components import psnr

    ceiling = report["vae_round_trip"]
    assert set(ceiling["tasks"]) == {"t2v", "inpaint"} and 0 <= ceiling["object_iou"] <= 1
    assert np.isfinite([ceiling["fd"], ceiling["kept_psnr"]]).all() and "diversity" not in ceiling["tasks"]["t2v"]
    truth = ManifestDataset(build / "eval_world_1" / "manifest.jsonl", 5, 32, 32, tasks=["t2v"])[0]["video"]
    with torch.no_grad():
        x = truth.permute(3, 0, 1, 2)[None] * 2 - 1
        direct = (vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)[0].permute(1, 2, 3, 0) + 1) / 2
    assert ceiling["tasks"]["t2v"]["psnr"] == pytest.approx(psnr(direct, truth), abs=0.05)
    assert "| VAE round trip of the truth (ceiling) |" in (build / "report" / "REPORT.md").read_text()
    # The rows' own truth (both rows show the one held-out clip) against the same real clips as the models.
    from training.toy.cli import REAL_SEED
    from training.toy.report import TRUTH_ROWS

    held_out_world = WorldConfig(**report["world"])
    real = [metrics.video_features([torch.from_numpy(make_clip(REAL_SEED + k, held_out_world).frames) for k in ks])
            for ks in (range(4), range(4, 8))]  # n = 2 rows × 2 seeds
    scale = metrics.feature_scale(np.concatenate(real))
    own = metrics.video_features([truth, truth])
    assert report["fd_truth_rows"] == pytest.approx(metrics.frechet_distance(own / scale, real[0] / scale))
    assert f"| {TRUTH_ROWS} | | | {report['fd_truth_rows']:.3f} |" in (build / "report" / "REPORT.md").read_text()
    assert toy_main(["report", "--build", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err
    for bad in ("3,x", "0", "1,1"):  # refused before anything loads or samples
        assert toy_main(["report", "--build", str(build), "--cfg", bad]) == 2
        err = capsys.readouterr().err
        assert "--cfg" in err and "distinct numbers > 0" in err and len(err.strip().splitlines()) == 1
    from training.toy.cli import _cfg_scales

    assert _cfg_scales(None) == [3.0] and _cfg_scales("1,3") == [1.0, 3.0]  # default: stage 2's guidance.cfg_scale
    # A guidance interval on the guided teacher rows: 2 Euler steps (percents 0 and 0.5), cfg_end 0.4 guides
    # the first only: 3 evals; the unguided row and the students keep theirs.
    code = toy_main(["--config", str(config), "report", "--build", str(build), "--clips", "1", "--seeds", "1",
                     "--tasks", "t2v,inpaint", "--teacher-steps", "2", "--cfg", "2,1", "--cfg-end", "0.4",
                     "--student", f"same={build / 'teacher' / TEACHER_VACE}", "--out", str(tmp_path / "interval")])
    assert code == 0
    interval = json.loads((tmp_path / "interval" / "report.json").read_text())
    models = interval["models"]
    assert interval["cfg_interval"] == [0.0, 0.4] and (models["teacher"]["cfg_start"], models["teacher"]["cfg_end"]) == (0.0, 0.4)
    assert [models[m]["transformer_evals"] for m in ("teacher", "teacher CFG 1", "same")] == [3, 2, 4]
    assert "guided only from 0 to 0.4 of the denoising" in (tmp_path / "interval" / "REPORT.md").read_text()
    capsys.readouterr()
    assert toy_main(["report", "--build", str(build), "--teacher-steps", "2", "--cfg", "2", "--cfg-start", "0.6",
                     "--cfg-end", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "--cfg-start: the guidance interval 0.6..0.9 holds none of the 2 steps" in err and len(err.strip().splitlines()) == 1



def test_caption_truth_helpers_read_colour_and_motion_from_truth_and_catch_wrong_ones():
    from training.toy.captions import OBJECT_COLORS
    from training.toy.check_default import held_out_scenes, horizontal_motion
    from training.toy.metrics import object_colour_name

    clip = held_out_scenes(1)[0]
    obj, background = clip.scene.objects[0], clip.scene.background
    video = torch.from_numpy(clip.frames)
    assert object_colour_name(video, background) == obj.color
    assert video.shape[0] == 5
    assert horizontal_motion(video, clip) == pytest.approx(4 * obj.vx, abs=1.0)  # frame 0 vs frame 4
    assert horizontal_motion(video.flip(0), clip) * obj.vx < 0  # played backwards: the wrong way
    other = next(c for c in OBJECT_COLORS if c != obj.color)
    repainted = video.clone()
    repainted[torch.from_numpy(clip.ids > 0)] = torch.tensor(OBJECT_COLORS[other])
    assert object_colour_name(repainted, background) == other
    plain = torch.ones_like(video) * torch.tensor(BACKGROUND_COLORS[background][0])
    assert object_colour_name(plain, background) is None


class _ReplayPipeline:
    """Answers each VCU with the true clip its caption was written for (optionally played backwards, or
    moved sideways by ``shift`` pixels); a caption recoloured by the check gets the clip with its object
    painted in the named colour (the truth of that caption), unless ``deaf`` (the clip's own colour): the
    thing under test is the caption check, so its input is the truth the check compares with."""

    def __init__(self, clips, backwards: bool = False, shift: int = 0, deaf: bool = False):
        from training.toy.captions import OBJECT_COLORS
        from training.toy.check_default import recoloured

        self.by_caption = {}
        for c in clips:
            for colour in OBJECT_COLORS:
                video = torch.from_numpy(c.frames).clone()
                if not deaf:
                    video[torch.from_numpy(c.ids > 0)] = torch.tensor(OBJECT_COLORS[colour])
                self.by_caption[recoloured(c.caption, c.scene.objects[0].color, colour)] = video
            self.by_caption[c.caption] = torch.from_numpy(c.frames)
        self.backwards, self.shift = backwards, shift
        self.tasks = []

    def generate(self, vcu, *, seed=0, preset=None, **_):
        self.tasks.append(vcu.task)
        video = self.by_caption[vcu.prompt].roll(self.shift, dims=2)
        return [video.flip(0) if self.backwards else video]


def test_recoloured_caption_changes_only_the_object_colour_word():
    from training.toy.check_default import recoloured

    text = "a red circle moves left over a white checkered background"
    assert recoloured(text, "red", "cyan") == "a cyan circle moves left over a white checkered background"
    assert recoloured(text, "red", "red") == text


def test_caption_check_passes_the_truth_and_flags_a_deaf_reversed_or_misplaced_video():
    from training.toy.check_default import CHECK_SCENES, PASS_SHARE, check_caption_truth, held_out_scenes

    scenes = held_out_scenes(CHECK_SCENES)
    truth = _ReplayPipeline(scenes)
    assert check_caption_truth(truth) == ([], [])
    assert truth.tasks == ["depth"] * 6 * CHECK_SCENES  # every scene with its depth control, in each palette colour
    # Deaf to the colour words: right only for each scene's own colour, 1 video in 6 (and no pixels of
    # the named colour to track in the others).
    misses, failures = check_caption_truth(_ReplayPipeline(scenes, deaf=True))
    assert len(misses) == 5 * CHECK_SCENES and all(m.endswith("misses named colour, named motion") for m in misses)
    assert failures[0] == f"named colour: {CHECK_SCENES} of {6 * CHECK_SCENES} videos, fewer than {PASS_SHARE:.0%}"
    assert [f.split(":")[0] for f in failures] == ["named colour", "named motion"]
    misses, failures = check_caption_truth(_ReplayPipeline(scenes, backwards=True))
    kinds = [f.split(":")[0] for f in failures]  # every object moves the wrong way (and off its place between)
    assert "named motion" in kinds and "named colour" not in kinds
    assert sum("misses" in m and "named motion" in m for m in misses) == 6 * CHECK_SCENES
    # Half a frame to the side: the objects keep their colour, but not the place the depth control says.
    misses, failures = check_caption_truth(_ReplayPipeline(scenes, shift=32))
    kinds = [f.split(":")[0] for f in failures]  # (an object rolled across the frame's edge loses its track too)
    assert "object IoU >= 0.5" in kinds and "named colour" not in kinds
    assert sum("misses" in m and "object IoU" in m for m in misses) == 6 * CHECK_SCENES


def test_seed_table_reports_mean_spread_and_range_over_training_seeds(tmp_path):
    report = _fake_report()
    base = report["models"]["dmd"]
    for seed, (fd, diag) in enumerate([(1.0, 0.6), (2.0, 0.7), (3.0, 0.8)]):
        report["models"]["vdot" if seed == 0 else f"vdot seed{seed}"] = {
            **base, "fd": fd, "otd_plan_diag_mass": diag, "otd_rel_diff_dmd": 0.5, "variant": "vdot", "train_seed": seed}
    from training.toy.report import seed_table

    table = seed_table(report)
    row = next(line for line in table.splitlines() if line.startswith("| vdot |"))
    assert "| 3 |" in row and "2.000 ± 1.000 (1.000–3.000)" in row and "0.700 ± 0.100 (0.600–0.800)" in row
    assert "0.500 ± 0.000" in row and "dmd" not in table  # one seed: no row
    assert "‖g_OT − g_DMD‖ / ‖g_DMD‖" in markdown_table(report)
    out = write_report(report, tmp_path / "rep")
    assert "Students trained with several seeds" in (out / "REPORT.md").read_text()


def test_report_samples_each_student_with_the_preset_it_was_trained_for(tmp_path):
    """The released recipe writes vdot_inference_preset into its exports; the toy recipe's students carry none."""
    from safetensors.torch import save_file

    from training.toy.cli import _student, variant_dir

    run = tmp_path / "stage2_vdot"
    (run / "exports").mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, run / "exports" / "a.safetensors", metadata={"vdot_inference_preset": "vdot"})
    save_file({"x": torch.zeros(1)}, run / "exports" / "b.safetensors")
    (run / "metrics.jsonl").write_text(json.dumps({"otd_plan_diag_mass": 0.7, "otd_rel_diff_dmd": 0.4}) + "\n"
                                       + json.dumps({"otd_plan_diag_mass": 0.5, "otd_rel_diff_dmd": 0.2}) + "\n")
    a, b = _student(run / "exports" / "a.safetensors"), _student(run / "exports" / "b.safetensors")
    assert (a["preset"], b["preset"], a["steps"]) == ("vdot", "renoise", 4)
    assert a["extra"] == pytest.approx({"otd_plan_diag_mass": 0.6, "otd_rel_diff_dmd": 0.3, "otd_steps": 2,
                                        "otd_rel_diff_steps": 2})
    # The released OT logs its plan as ot_plan_diag_mass (otd_pooled.py); runs before the ratio was logged have none.
    (run / "metrics.jsonl").write_text(json.dumps({"ot_plan_diag_mass": 0.2}) + "\n" + json.dumps({"loss_dm": 1.0}) + "\n")
    diag = _student(run / "exports" / "a.safetensors")["extra"]
    assert diag["otd_plan_diag_mass"] == pytest.approx(0.2) and diag["otd_steps"] == 1 and np.isnan(diag["otd_rel_diff_dmd"])
    assert variant_dir(tmp_path, "dmd+otd+gan") == tmp_path / "stage2"
    assert variant_dir(tmp_path, "vdot-dmd", 2) == tmp_path / "stage2_vdot_dmd_seed2"


def test_toy_build_refuses_zero_training_seeds_before_building(tmp_path, capsys):
    from training.toy.cli import toy_main

    assert toy_main(["build", "--out", str(tmp_path / "b"), "--train-seeds", "0"]) == 2
    assert "--train-seeds: is 0" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert toy_main(["build", "--out", str(tmp_path / "b"), "--variants", "vdot,nope"]) == 2
    assert "--variants: unknown variant 'nope'" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert toy_main(["report", "--build", str(tmp_path), "--variants", "vdot,nope"]) == 2
    assert "--variants: unknown variant 'nope'" in capsys.readouterr().err


def test_every_student_variant_is_a_valid_training_config_with_its_terms(tmp_path):
    """What `vdot toy build --variants all --train-seeds 2` trains, checked by the trainer's own validation."""
    from training.config import config_from_dict
    from training.toy.cli import STUDENT_VARIANTS, load_toy_config, student_run

    cfg = load_toy_config(None)
    runs = {(name, seed): config_from_dict(student_run(tmp_path, cfg, name, seed, tmp_path / "s1.safetensors", 40))
            for name in STUDENT_VARIANTS for seed in (0, 1)}
    vdot, vdot_dmd = runs["vdot", 1], runs["vdot-dmd", 1]
    assert (vdot.loss.dm, vdot.loss.dm_mix, vdot.loss.dmd_normalizer, vdot.loss.otd_cloud) == (
        "dmd+otd", [0.2, 0.8], "sigma", "pooled_positions")  # the released recipe
    assert vdot.loss.gan_weight == 0.1 and vdot.schedule.critic_objectives == ["denoise", "disc"]
    assert (vdot_dmd.loss.dm, vdot_dmd.loss.dmd_normalizer, vdot_dmd.loss.gan_weight) == ("dmd", "sigma", 0.0)
    assert vdot_dmd.schedule.generator_objectives == ["dm"] and vdot_dmd.schedule.critic_objectives == ["denoise"]
    assert vdot_dmd.optim.grad_accumulation == vdot.optim.grad_accumulation == 3  # same recipe otherwise
    assert runs["dmd+otd+gan", 0].loss.dm == "otd" and runs["dmd", 0].loss.gan_weight == 0.0  # the toy recipe's
    assert {r.max_steps for r in runs.values()} == {40}
    assert (runs["vdot", 0].seed, vdot.seed) == (0, 1) and str(vdot.out).endswith("stage2_vdot_seed1")
    assert runs["vdot", 0].rollout.inference_preset == "vdot" and runs["dmd", 0].rollout.inference_preset is None


def test_stage2_draws_rows_with_the_teachers_task_weights(tmp_path):
    """A teacher trained on a weighted row mix (teacher.task_weights) hands that mix to every stage-2 student;
    the uniform recipe leaves stage 2 uniform."""
    from training.config import config_from_dict
    from training.toy.cli import load_toy_config, student_run

    cfg = load_toy_config(None)
    assert cfg["teacher"]["task_weights"] == {"t2v": 3, "inpaint": 1.5, "outpaint": 1.5}  # the recipe (toy12_mix)
    for name in ("dmd+otd+gan", "vdot"):
        run = config_from_dict(student_run(tmp_path, cfg, name, 1, tmp_path / "s1.safetensors"))
        assert run.data.task_weights == {"t2v": 3, "inpaint": 1.5, "outpaint": 1.5}
    cfg["teacher"]["task_weights"] = {}
    assert config_from_dict(student_run(tmp_path, cfg, "dmd", 0, tmp_path / "s1.safetensors")).data.task_weights is None


def test_build_stage_configs_point_into_a_relative_build_folder(tmp_path, monkeypatch, capsys):
    """`vdot toy build --out b`: the stage YAMLs in b/ name b's files however the trainer resolves them
    (it reads relative paths from the YAML's folder: a relative `b/world` there was b/b/world)."""
    from training.config import load_config
    from training.toy.cli import load_toy_config, run_distillation

    monkeypatch.chdir(tmp_path)
    (tmp_path / "b").mkdir()
    assert run_distillation(Path("b"), load_toy_config(None), ["dmd"]) == 2  # nothing built: stage 1's input check
    err = capsys.readouterr().err
    assert f"{tmp_path / 'b' / 'world' / 'manifest.jsonl'}: manifest file not found" in err, err
    stage1 = load_config(tmp_path / "b" / "toy_stage1.yaml")
    assert Path(stage1.resolve(stage1.data.manifest)) == tmp_path / "b" / "world" / "manifest.jsonl"
    assert Path(stage1.resolve(stage1.models.teacher)).parent == tmp_path / "b" / "teacher"


def test_caption_tally_counts_colour_motion_and_missing_objects():
    from training.toy.check_default import caption_tally, held_out_scenes

    scenes = held_out_scenes(4)
    truth = _ReplayPipeline(scenes)
    assert caption_tally(truth, 4) == {"count": 4, "colour": 4, "motion": 4, "no_object": 0}
    assert truth.tasks == ["t2v"] * 4  # captions alone
    backwards = caption_tally(_ReplayPipeline(scenes, backwards=True), 4)
    assert backwards == {"count": 4, "colour": 4, "motion": 0, "no_object": 0}

    class Edited(_ReplayPipeline):
        """The scene with its object painted over: in the background colour (no object) or another
        palette colour (an object, the wrong one); records what it was asked to sample with."""

        def __init__(self, clips, paint):
            super().__init__(clips)
            self.paint, self.asked = paint, []

        def generate(self, vcu, *, seed=0, preset=None, cfg=1.0, control_scale=1.0):
            self.asked.append((preset, cfg, control_scale))
            clip = next(c for c in scenes if c.caption == vcu.prompt)
            video = torch.from_numpy(clip.frames).clone()
            video[torch.from_numpy(clip.ids > 0)] = self.paint(clip)
            return [video]

    background = Edited(scenes, lambda c: torch.tensor(BACKGROUND_COLORS[c.scene.background][0]))
    assert caption_tally(background, 4) == {"count": 4, "colour": 0, "motion": 0, "no_object": 4}
    wrong = Edited(scenes, lambda c: torch.tensor(OBJECT_COLORS[next(k for k in OBJECT_COLORS
                                                                      if k != c.scene.objects[0].color)]))
    assert caption_tally(wrong, 4, preset="teacher_euler", cfg=3.0, control_scale=0.0) == {
        "count": 4, "colour": 0, "motion": 0, "no_object": 0}  # an object, in the wrong colour
    assert wrong.asked == [("teacher_euler", 3.0, 0.0)] * 4


def test_check_default_rejects_bad_input_in_one_line_before_loading(tmp_path, capsys):
    from training.toy.check_default import main

    def error(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.strip().count("\n") == 0
        return err

    assert "--captions" in error(["--captions", "0"])
    assert "--cfg" in error(["--captions", "4", "--cfg", "nan"])
    assert "--steps" in error(["--captions", "4", "--steps", "5000"])
    assert "--control-scale" in error(["--captions", "4", "--control-scale", "-1"])
    # Sampling options without --captions are refused, not ignored (the check samples like the student).
    assert "--captions" in error(["--cfg", "1"])
    assert "--captions" in error(["--steps", "25"])
    err = error(["--model", str(tmp_path / "missing.safetensors")])
    assert "--model" in err and "missing.safetensors not found" in err
    (tmp_path / "model.safetensors").write_bytes(b"")
    err = error(["--model", str(tmp_path / "model.safetensors"), "--components", str(tmp_path)])
    assert "--components" in err and "vae.safetensors not found" in err
    error(["--bogus"])
