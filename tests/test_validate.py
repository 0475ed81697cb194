"""The one validation layer (core/validate.py) and the one output path (core/video_io.write_output):
each family of bad input is refused by the rule that covers it, with one error naming the input."""

import math
from pathlib import Path

import pytest
import torch

from vdot_nodes.core import validate
from vdot_nodes.core.errors import VDOTInputError, inputs_named
from vdot_nodes.core.validate import (
    BOUNDS,
    MAX_SEED,
    check_device,
    check_memory,
    check_outputs,
    check_timesteps,
    output_kind,
    validate_generate,
)
from vdot_nodes.core.video_io import check_frames, read_video, write_frames, write_output, write_video


@pytest.mark.parametrize("key", sorted(BOUNDS))
def test_every_bound_accepts_its_ends_and_refuses_past_them(key):
    """The rule, not the cases: for every number any front end takes, the ends pass (the open low
    end excepted) and anything past them, NaN, inf, a bool and a string are refused naming it."""
    bound = BOUNDS[key]
    step = 1 if bound.kind is int else 1e-6
    if not bound.low_open:
        validate_generate({key: bound.kind(bound.low)})
    validate_generate({key: bound.kind(bound.high)})
    bad = [bound.low - step if not bound.low_open else bound.low, bound.high + step, True, "5"]
    if bound.kind is float:
        bad += [math.nan, math.inf, -math.inf]
    else:
        bad += [bound.low + 0.5]
    for value in bad:
        with pytest.raises(VDOTInputError) as err, inputs_named({key: f"--{key}"}):  # a front end's table
            validate_generate({key: value})
        assert err.value.input_name == f"--{key}" and err.value.fix, (key, value)


@pytest.mark.parametrize("key, value, needle", [
    ("shift", math.nan, "is nan"), ("cfg", math.inf, "is inf"), ("control_scale", math.nan, "is nan"),
    ("fps", 0.0, "outside"), ("fps", -1.0, "outside"), ("shift", 0.0, "outside"), ("teacher_steps", 0, "outside"),
    ("num_frames", 100001, "outside"), ("num_videos", 10**6, "outside"), ("width", 100000, "outside"),
    ("seed", 2**64, "outside"), ("seed", -1, "outside"), ("steps", 2.5, "whole number"), ("cfg", "x", "number"),
])
def test_issue_cases_are_named_not_sent_to_the_sampler(key, value, needle):
    with pytest.raises(VDOTInputError, match=needle) as err:
        validate_generate({key: value})
    assert err.value.input_name == key


def test_seed_plus_num_videos_must_stay_a_64_bit_seed():
    validate_generate({"seed": MAX_SEED - 1, "num_videos": 2})
    with pytest.raises(VDOTInputError, match="passes 2\\^64") as err, inputs_named({"seed": "--seed"}):
        validate_generate({"seed": MAX_SEED, "num_videos": 2})
    assert err.value.input_name == "--seed" and str(MAX_SEED - 1) in err.value.fix


@pytest.mark.parametrize("steps, needle", [
    ([1000, 1000, 500], "repeats 1000"), ([500, 1000], "not in decreasing order"), ([1000, 0], "outside"),
    ([1001], "outside"), ([math.nan], "nan"), ([], "0 entries"), ("1000", "list"),
])
def test_timesteps_must_be_strictly_decreasing_in_range(steps, needle):
    with pytest.raises(VDOTInputError, match=needle):
        check_timesteps(steps)


def test_timesteps_accepted():
    assert check_timesteps([1000, 750, 500, 250]) == (1000.0, 750.0, 500.0, 250.0)


def test_device_strings_are_checked_against_this_machine():
    assert check_device(None) is None and check_device("cpu") == torch.device("cpu")
    for bad in ("gpu0", "cuda:x", "banana"):
        with pytest.raises(VDOTInputError, match="not a device name"):
            check_device(bad, "--device")
    # One past the last CUDA device: "no CUDA device" on a CPU box, "has N cuda device(s)" on a GPU box.
    with pytest.raises(VDOTInputError, match="cuda") as err:
        check_device(f"cuda:{torch.cuda.device_count()}", "--device")
    assert err.value.input_name == "--device"
    with pytest.raises(VDOTInputError, match="not supported"):
        check_device("meta")


@pytest.mark.parametrize("name, kind", [("a.mp4", "video"), ("A.MP4", "video"), ("frames", "frames"),
                                        ("run.v2/", "frames"), ("out/", "frames")])
def test_output_kind_from_the_name(name, kind):
    assert output_kind(name) == kind


@pytest.mark.parametrize("name", ["x.webm", "x.gif", "x.png", "run.v2", "x.mov"])
def test_unsupported_output_suffix_is_refused_not_a_folder(tmp_path, name):
    with pytest.raises(VDOTInputError, match="does not write"):
        check_outputs(tmp_path / name)
    with pytest.raises(VDOTInputError, match="does not write"):
        write_output(torch.rand(1, 16, 16, 3), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_every_numbered_output_is_checked(tmp_path):
    (tmp_path / "v_01.mp4").write_bytes(b"user data")
    targets = check_outputs(tmp_path / "v.mp4", num_videos=1)
    assert targets == [tmp_path / "v.mp4"]
    with pytest.raises(VDOTInputError, match="v_01.mp4 already exists"):
        check_outputs(tmp_path / "v.mp4", num_videos=2)
    assert check_outputs(tmp_path / "v.mp4", num_videos=3, overwrite=True) == [
        tmp_path / f"v_{i:02d}.mp4" for i in range(3)]
    (tmp_path / "f_00").mkdir()
    (tmp_path / "f_00" / "frame_00000.png").write_bytes(b"user data")
    (tmp_path / "f_01").mkdir()  # an empty folder counts as free
    with pytest.raises(VDOTInputError, match="f_00 already exists"):
        check_outputs(tmp_path / "f", num_videos=2)
    (tmp_path / "g_00").write_bytes(b"a file")
    with pytest.raises(VDOTInputError, match="is an existing file, not a folder"):
        check_outputs(tmp_path / "g", num_videos=2, overwrite=True)


@pytest.mark.parametrize("case, needle", [("missing", "does not exist"), ("parent_file", "is a file"),
                                          ("unwritable", "not writable"), ("is_folder", "is a folder")])
def test_output_target_problems(tmp_path, case, needle):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.mp4").mkdir()
    out = {"missing": tmp_path / "nope" / "a.mp4", "parent_file": tmp_path / "file" / "a.mp4",
           # /proc/1 refuses writes even to root, so this is a real unwritable folder wherever tests run
           "unwritable": Path("/proc/1/a.mp4"), "is_folder": tmp_path / "dir.mp4"}[case]
    with pytest.raises(VDOTInputError, match=needle) as err, inputs_named({"out": "--out"}):
        validate_generate({"out": str(out)})
    assert err.value.input_name == "--out"


def test_memory_estimate_names_what_to_lower():
    assert check_memory(81, 480, 832, 2) == 2 * (81 * 480 * 832 * 3 + 16 * 21 * 60 * 104) * 4
    shape = {"num_frames": 1025, "height": 2048, "width": 2048, "num_videos": 1}
    with pytest.raises(VDOTInputError, match="GiB") as err:
        validate_generate(shape)
    assert err.value.input_name == "num_frames" and err.value.fix == "lower num_frames, width/height or num_videos"
    with pytest.raises(VDOTInputError, match="GiB") as err, inputs_named({"num_frames": "--frames",
                                                                          "num_videos": "--num-videos"}):
        validate_generate(shape)
    assert err.value.input_name == "--frames" and err.value.fix == "lower --frames, width/height or --num-videos"
    assert validate.MAX_OUTPUT_BYTES < 1025 * 2048 * 2048 * 12


def test_nan_frames_are_never_written(tmp_path):
    frames = torch.rand(5, 16, 16, 3)
    frames[2, 3, 4, 1] = math.nan
    with pytest.raises(VDOTInputError, match="1 of 5 frames contain NaN") as err:
        write_video(frames, tmp_path / "a.mp4", input_name="frames")
    assert err.value.input_name == "frames"
    with pytest.raises(VDOTInputError, match="NaN"):
        write_frames(frames, tmp_path / "pngs")
    with pytest.raises(VDOTInputError, match="is empty"):
        check_frames(torch.zeros(0, 16, 16, 3))
    assert list(tmp_path.iterdir()) == []  # no file, no folder, no temporary


def test_write_output_makes_a_file_or_a_folder_as_named(tmp_path):
    frames = torch.rand(5, 16, 16, 3)
    assert write_output(frames, tmp_path / "a.mp4").is_file()
    assert read_video(tmp_path / "a.mp4")[0].shape == (5, 16, 16, 3)
    assert len(list(write_output(frames, tmp_path / "pngs").glob("frame_*.png"))) == 5
    with pytest.raises(VDOTInputError, match="already exists"):
        write_output(frames, tmp_path / "a.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "pngs"]


def test_vcu_builders_cap_sizes_before_allocating():
    from vdot_nodes.core.vcu import build_outpaint_vcu, build_t2v_vcu

    with pytest.raises(VDOTInputError, match="expand: makes a 100048x32 canvas"):
        build_outpaint_vcu(torch.rand(5, 32, 48, 3), (0, 0, 100000, 0))
    with pytest.raises(VDOTInputError, match="num_frames: is 100001, outside"):
        build_t2v_vcu(100001, 32, 32)
    with pytest.raises(VDOTInputError, match="height: is 4096, outside"):
        build_t2v_vcu(5, 4096, 32)
    with pytest.raises(VDOTInputError, match="num_frames: .* GiB"):
        build_t2v_vcu(1025, 2048, 2048)
    assert build_outpaint_vcu(torch.rand(5, 32, 48, 3), (0, 0, 8, 8)).frames.shape == (5, 32, 64, 3)


def test_overwriting_a_frame_folder_leaves_no_frames_of_the_old_run(tmp_path):
    write_frames(torch.rand(9, 16, 16, 3), tmp_path / "pngs")
    (tmp_path / "pngs" / "notes.txt").write_text("user file")
    with pytest.raises(VDOTInputError, match="already exists"):
        write_frames(torch.rand(5, 16, 16, 3), tmp_path / "pngs")
    write_frames(torch.rand(5, 16, 16, 3), tmp_path / "pngs", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [f"frame_{i:05d}.png" for i in range(5)] + [
        "notes.txt"]
