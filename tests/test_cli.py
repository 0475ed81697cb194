"""`vdot` CLI end to end on the embedded default model: outputs, shapes, and one-line errors."""

import pytest
import torch

from vdot_nodes.cli import main
from vdot_nodes.core.video_io import read_video, write_image, write_video

F, H, W = 9, 32, 48


@pytest.fixture()
def inputs(tmp_path):
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(F + 4, H, W, 3, generator=gen)
    write_video(video, tmp_path / "control.mp4", fps=8)
    write_image(torch.rand(40, 40, 3, generator=gen), tmp_path / "ref.png")
    return tmp_path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_tasks_lists_every_task(capsys):
    from vdot_nodes.core.vcu import TASKS

    code, out, _ = run(capsys, "tasks")
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines()[1:] if line.strip() and not line[0].isdigit()}
    assert listed == set(TASKS)
    assert "18 UVCBench tasks" in out


def test_generate_t2v_writes_video_of_requested_shape(tmp_path, capsys):
    out = tmp_path / "t2v.mp4"
    code, stdout, _ = run(capsys, "generate", "--prompt", "a red ball", "--frames", F, "--height", H, "--width", W,
                          "--out", out)
    assert code == 0, stdout
    video, fps = read_video(out)
    assert video.shape == (F, H, W, 3) and fps == 16


def test_generate_control_task_takes_size_from_the_control_video(inputs, capsys):
    out = inputs / "depth.mp4"
    code, _, err = run(capsys, "generate", "--task", "depth", "--control", inputs / "control.mp4", "--frames", F,
                       "--out", out)
    assert code == 0, err
    assert read_video(out)[0].shape == (F, H, W, 3)


def test_generate_reference_task_and_num_videos_png_frames(inputs, capsys):
    out = inputs / "frames"
    code, _, err = run(capsys, "generate", "--task", "r2v", "--ref", inputs / "ref.png", "--frames", 5, "--height", H,
                       "--width", W, "--num-videos", 2, "--out", out)
    assert code == 0, err
    for i in range(2):
        folder = inputs / f"frames_{i:02d}"
        assert len(sorted(folder.glob("*.png"))) == 5


def test_same_seed_same_video(tmp_path, capsys):
    args = ["generate", "--prompt", "x", "--frames", 5, "--height", H, "--width", W, "--seed", 3]
    run(capsys, *args, "--out", tmp_path / "a")
    run(capsys, *args, "--out", tmp_path / "b")
    a = read_video(tmp_path / "a")[0]
    b = read_video(tmp_path / "b")[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--frames", "10"], "num_frames: has 10 frames; VACE needs 4k+1"),
        (["--height", "40"], "height"),
        (["--task", "depth"], "control: task 'depth' needs a control video"),
        (["--task", "nope"], "task"),
        (["--task", "t2v", "--ref", "missing.png"], "ref"),
        (["--steps", "0"], "steps"),
        (["--shift", "0"], "shift"),
        (["--preset", "rollout_official", "--steps", "3"], "fixed schedule"),
        (["--preset", "vdot", "--timesteps", "1000,500"], "timesteps"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path, capsys, argv, needle):
    code, _, err = run(capsys, "generate", *argv, "--out", tmp_path / "x.mp4")
    lines = [line for line in err.splitlines() if line.startswith("vdot: error:")]
    assert code == 2, err
    assert len(lines) == 1 and needle in lines[0] and "Fix:" in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "x.mp4").exists()


def test_control_shorter_than_frames_is_an_error_not_a_pad(inputs, capsys):
    code, _, err = run(capsys, "generate", "--task", "grey", "--control", inputs / "control.mp4", "--frames", 17,
                       "--out", inputs / "x.mp4")
    assert code == 2 and "has 13 frames but --frames is 17" in err


def test_existing_output_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"user data")
    code, _, err = run(capsys, "generate", "--frames", 5, "--height", H, "--width", W, "--out", out)
    assert code == 2 and "already exists" in err
    assert out.read_bytes() == b"user data"


def test_preset_and_overrides_choose_the_sampler(tmp_path, capsys, monkeypatch):
    """--preset / --steps / --shift / --timesteps reach the pipeline as one resolved preset."""
    from vdot_nodes.core.pipeline import VDOTPipeline
    from vdot_nodes.core.sampling import get_preset

    seen = []
    generate = VDOTPipeline.generate

    def spy(self, vcu, **kw):
        seen.append(kw["preset"])
        return generate(self, vcu, **kw)

    monkeypatch.setattr(VDOTPipeline, "generate", spy)
    base = ["generate", "--prompt", "x", "--frames", 5, "--height", H, "--width", W]
    for i, extra in enumerate(([], ["--preset", "renoise", "--steps", "2"], ["--timesteps", "1000,500", "--shift", "1"],
                               ["--preset", "teacher_euler", "--steps", "3", "--shift", "8"])):
        code, _, err = run(capsys, *base, *extra, "--out", tmp_path / f"v{i}")
        assert code == 0, err
    assert seen[0] == get_preset("vdot")
    assert seen[1] == get_preset("renoise", steps=2)
    assert seen[2] == get_preset("renoise", shift=1.0, unshifted_timesteps=[1000, 500])
    assert seen[3] == get_preset("teacher_euler", steps=3, shift=8.0)
    assert [read_video(tmp_path / f"v{i}")[0].shape[0] for i in range(4)] == [5] * 4
