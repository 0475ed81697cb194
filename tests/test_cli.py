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
    from vdot_nodes.core.tasks import TASKS

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
        (["--frames", "10"], "--frames: has 10 frames; VACE needs 4k+1"),  # the flag, not core's num_frames
        (["--height", "40"], "--height/--width: is "),
        (["--task", "depth"], "--control: task 'depth' needs a control video but none was given. "
                              "Fix: pass --control <video|frame folder>"),
        (["--task", "nope"], "argument --task: invalid choice: 'nope'"),
        (["--box", "0,0,8,8"], "--box: task 't2v' does not use it"),  # was silently ignored
        (["--extension-mode", "last"], "--extension-mode: task 't2v' does not use it"),
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
    runs = ([], ["--preset", "renoise", "--steps", "2"], ["--timesteps", "1000,500", "--shift", "1"],
            ["--preset", "teacher_euler", "--steps", "3", "--shift", "8"], ["--preset", "vdot"])
    for i, extra in enumerate(runs):
        code, _, err = run(capsys, *base, *extra, "--out", tmp_path / f"v{i}")
        assert code == 0, err
    assert seen[0] == get_preset("renoise")  # no --model: the embedded toy's own preset (it was distilled with it)
    assert seen[1] == get_preset("renoise", steps=2)
    assert seen[2] == get_preset("renoise", shift=1.0, unshifted_timesteps=[1000, 500])
    assert seen[3] == get_preset("teacher_euler", steps=3, shift=8.0)
    assert seen[4] == get_preset("vdot")
    assert [read_video(tmp_path / f"v{i}")[0].shape[0] for i in range(len(runs))] == [5] * len(runs)


@pytest.fixture()
def loader_must_not_run(monkeypatch):
    """Replace the pipeline loader with one that fails the test if it is ever reached."""
    import vdot_nodes.core.components as components

    def load_pipeline(*_a, **_k):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(components, "load_pipeline", load_pipeline)


BAD_BEFORE_LOAD = [
    (["--shift", "nan"], "--shift: is nan"),
    (["--cfg", "inf"], "--cfg: is inf"),
    (["--cfg", "3", "--cfg-start", "0.3", "--cfg-end", "0.4"],
     "--cfg-start: the guidance interval 0.3..0.4 holds none of the 4 steps (they sit at 0.00, 0.25, 0.50, 0.75)"),
    (["--cfg-start", "0.5", "--cfg-end", "0.2"], "--cfg-end: 0.2 is not after --cfg-start 0.5"),
    (["--cfg-end", "nan"], "--cfg-end: nan is not a number in [0, 1]"),
    (["--control-scale", "nan"], "--control-scale: is nan"),
    (["--fps", "nan"], "--fps: is nan"),
    (["--fps", "0"], "--fps: is 0.0, outside"),
    (["--fps", "-5"], "--fps"),
    (["--shift", "0"], "--shift: is 0.0, outside"),
    (["--timesteps", "1000,1000,500"], "--timesteps: repeats 1000"),
    (["--timesteps", "500,1000"], "--timesteps: 500, 1000 are not in decreasing order"),
    (["--preset", "teacher_euler", "--steps", "0"], "--steps: is 0, outside"),
    (["--preset", "rollout_official", "--steps", "3"], "--preset: 'rollout_official' has a fixed schedule"),
    (["--seed", str(2**64)], "--seed"),
    (["--seed", str(2**64 - 1), "--num-videos", "2"], "--seed: 18446744073709551615 + 1"),
    (["--seed", "-1"], "--seed"),
    (["--device", "gpu0"], "--device: 'gpu0' is not a device name"),
    (["--device", f"cuda:{torch.cuda.device_count()}"], "--device"),
    (["--frames", "100001"], "--frames: is 100001, outside"),
    (["--num-videos", "1000000"], "--num-videos: is 1000000, outside"),
    (["--width", "100000"], "--width: is 100000, outside"),
    (["--frames", "1025", "--height", "2048", "--width", "2048"], "GiB"),
]


@pytest.mark.parametrize("argv, needle", BAD_BEFORE_LOAD)
def test_bad_flags_are_refused_before_the_model_loads(tmp_path, capsys, loader_must_not_run, argv, needle):
    code, _, err = run(capsys, "generate", "--frames", 5, "--height", H, "--width", W, *argv,
                       "--out", tmp_path / "x.mp4")
    lines = [line for line in err.splitlines() if line.startswith("vdot: error:")]
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Fix:" in lines[0], err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case, needle", [
    ("missing_folder", "--out: folder"), ("parent_is_file", "is a file, not a folder"),
    ("unwritable", "is not writable"), ("webm", "'.webm', which VDOT does not write"),
    ("gif", "'.gif', which VDOT does not write"), ("numbered", "v_01.mp4 already exists"),
])
def test_output_targets_are_checked_before_the_model_loads(tmp_path, capsys, loader_must_not_run, case, needle):
    (tmp_path / "file").write_text("x")
    (tmp_path / "v_01.mp4").write_bytes(b"user data")
    out, extra = {"missing_folder": (tmp_path / "no" / "x.mp4", []), "parent_is_file": (tmp_path / "file" / "x.mp4", []),
                  "unwritable": ("/proc/1/x.mp4", []), "webm": (tmp_path / "x.webm", []),
                  "gif": (tmp_path / "x.gif", []), "numbered": (tmp_path / "v.mp4", ["--num-videos", 2])}[case]
    code, _, err = run(capsys, "generate", "--frames", 5, "--height", H, "--width", W, *extra, "--out", out)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "v_01.mp4"]
    assert (tmp_path / "v_01.mp4").read_bytes() == b"user data"


def test_loader_guard_is_the_loader_generate_uses(tmp_path, capsys, loader_must_not_run):
    """The guard above is real: with good input, generate reaches the loader (and the guard fires)."""
    with pytest.raises(AssertionError, match="model was loaded"):
        run(capsys, "generate", "--frames", 5, "--height", H, "--width", W, "--out", tmp_path / "x.mp4")


def test_nan_from_the_vae_is_an_error_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """A VAE decoder that overflows (here: a real toy VAE with one NaN weight) is named, never an
    all-black video with exit 0."""
    import vdot_nodes.core.components as components

    real_load = components.load_pipeline

    def load_with_broken_vae(*args, **kwargs):
        pipe = real_load(*args, **kwargs)
        with torch.no_grad():
            pipe.vae.decoder.conv_out.bias[0] = float("nan")
        return pipe

    monkeypatch.setattr(components, "load_pipeline", load_with_broken_vae)
    out = tmp_path / "black.mp4"
    code, _, err = run(capsys, "generate", "--frames", 5, "--height", H, "--width", W, "--out", out)
    assert code == 2 and "vae: VAE produced NaN/inf" in err and "decode in fp32" in err, err
    assert list(tmp_path.iterdir()) == []


def test_mask_of_another_size_than_the_source_is_refused(inputs, capsys):
    write_image(torch.ones(40, 40, 3), inputs / "mask.png")
    code, _, err = run(capsys, "generate", "--task", "inpaint", "--source", inputs / "control.mp4",
                       "--mask", inputs / "mask.png", "--frames", F, "--out", inputs / "x.mp4")
    assert code == 2 and f"--mask: is 40x40 (WxH) but the video is {W}x{H}" in err, err
    assert not (inputs / "x.mp4").exists()


def test_mask_of_the_source_size_is_resized_with_the_source(inputs, capsys):
    mask = torch.zeros(H, W, 3)
    mask[8:24, 16:32] = 1.0
    write_image(mask, inputs / "mask.png")
    out = inputs / "inpaint.mp4"
    code, _, err = run(capsys, "generate", "--task", "inpaint", "--source", inputs / "control.mp4",
                       "--mask", inputs / "mask.png", "--frames", 5, "--height", 48, "--width", 64, "--out", out)
    assert code == 0, err
    assert read_video(out)[0].shape == (5, 48, 64, 3)


ENTRY_POINTS = [  # (argv, function the command calls once its line is parsed, where it is looked up)
    (["generate", "--out", "x.mp4"], "vdot_nodes.cli", "resolve_output_shape"),
    (["train", "cfg.yaml"], "training.config", "load_config"),
    (["toy", "world", "--out", "w"], "training.toy.cli", "load_toy_config"),
    (["train-reward", "--manifest", "m.jsonl", "--out", "r.safetensors"], "vdot_nodes.core.tiny", "build_tiny_vae"),
    (["preprocess", "--kind", "grey", "in", "out"], "vdot_nodes.preprocess_cli", "_run"),
]


@pytest.mark.parametrize("argv, module, function", ENTRY_POINTS)
def test_every_entry_point_has_the_one_error_wrapper(tmp_path, capsys, monkeypatch, argv, module, function):
    """One wrapper (core.errors.run_subcommand) for every `vdot` command: a bad flag is one line and exit 2,
    Ctrl-C one line and exit 130, each naming the command."""
    import importlib

    prog = "vdot" if argv[0] == "generate" else f"vdot {argv[0]}"
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: unrecognized arguments: --no-such-flag") \
        and "Fix: see" in err, err

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), function, interrupt)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: interrupted") and "Traceback" not in err, err


def test_missing_pyav_is_refused_before_the_model_loads(tmp_path, capsys, loader_must_not_run, monkeypatch):
    """Seen on a fresh GPU machine without PyAV: a whole run, then a traceback at the mp4 write."""
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    code, _, err = run(capsys, "generate", "--frames", 5, "--height", H, "--width", W, "--out", tmp_path / "x.mp4")
    lines = [line for line in err.splitlines() if line.startswith("vdot: error:")]
    assert code == 2 and len(lines) == 1 and "--out: needs PyAV" in lines[0] and "pip install av" in lines[0], err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_embedded_default_says_which_speed_options_ran(tmp_path, capsys):
    """The embedded model once ignored --attention/--compile/--precision without a word."""
    code, _, err = run(capsys, "generate", "--frames", 5, "--height", H, "--width", W, "--attention", "sage",
                       "--out", tmp_path / "x.mp4")
    ran = [line for line in err.splitlines() if line.startswith("vdot: ran with")]
    assert code == 0 and len(ran) == 1, err
    assert "fp32 weights (the embedded toy model; precision bf16 applies to a loaded model)" in ran[0]
    assert "attention sdpa (sage needs a CUDA device)" in ran[0]
