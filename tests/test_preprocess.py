"""Weight-free preprocessors (grey, scribble, flow), batching/progress/cancel, and `vdot preprocess`.

Known answers on synthetic videos: a texture translated by a known amount, shapes drawn at known
places, the colour wheel's defined colours. CPU only, a few seconds.
"""

from __future__ import annotations

import colorsys
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError
from vdot_nodes.core.preprocess import (
    flow_to_color,
    optical_flow,
    run_preprocessor,
    weight_free_preprocessors,
)
from vdot_nodes.preprocess_cli import preprocess_main
from vdot_nodes.core.preprocess.flow import make_colorwheel, wheel_color
from vdot_nodes.core.preprocess.grey import grey
from vdot_nodes.core.preprocess.scribble import scribble_canny, scribble_xdog, zhang_suen_thin
from vdot_nodes.core.video_io import read_video, write_frames, write_video

H, W = 96, 128


def _texture(h: int = 400, w: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    return (tex - tex.min()) / (tex.max() - tex.min())


def _moving_video(shifts, h: int = H, w: int = W) -> torch.Tensor:
    """Frame t+1 = frame t with its content moved by shifts[t] = (dx, dy) pixels (x right, y down)."""
    tex = _texture()
    x, y = 150, 150
    frames = []
    for t in range(len(shifts) + 1):
        g = tex[y:y + h, x:x + w]
        frames.append(np.stack([g, 0.5 * g + 0.25, 1.0 - g], axis=-1))
        if t < len(shifts):
            dx, dy = shifts[t]
            x, y = x - dx, y - dy  # content moves +dx ⇔ the window moves −dx
    return torch.from_numpy(np.stack(frames)).float()


def _image_video(img: np.ndarray, frames: int = 1) -> torch.Tensor:
    return (torch.from_numpy(img).float() / 255.0)[None].repeat(frames, 1, 1, 1)


# ----------------------------------------------------------------------------------------- grey
def test_grey_matches_opencv_formula():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    out = grey(torch.from_numpy(rgb).float() / 255.0)
    assert out.shape == (3, 20, 24, 3) and out.dtype == torch.float32
    assert torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 0], out[..., 2])
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    expected = (0.299 * r + 0.587 * g + 0.114 * b) / 255.0
    assert np.abs(out[..., 0].numpy() - expected).max() <= 1 / 255 + 1e-6
    vace = grey(torch.from_numpy(rgb).float() / 255.0, weights="vace")  # VACE's BGR2GRAY on RGB frames
    expected_vace = (0.114 * r + 0.587 * g + 0.299 * b) / 255.0
    assert np.abs(vace[..., 0].numpy() - expected_vace).max() <= 1 / 255 + 1e-6


# ------------------------------------------------------------------------------------- scribble
def _shape_image(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A flat light image with a dark 2-px outline; returns (RGB uint8, drawn-shape mask)."""
    img = np.full((H, W, 3), 200, np.uint8)
    shape = np.zeros((H, W), np.uint8)
    for target, colour in ((img, (40, 60, 30)), (shape, 255)):
        if kind == "circle":
            cv2.circle(target, (W // 2, H // 2), 30, colour, 2)
        else:
            cv2.rectangle(target, (20, 15), (105, 80), colour, 2)
    return img, shape > 0


def _strokes(out: torch.Tensor, background: str) -> np.ndarray:
    lum = out[0, ..., 0].numpy()
    return lum < 0.5 if background == "white" else lum > 0.5


def _check_follows(strokes: np.ndarray, shape: np.ndarray, tol: float = 2.0, coverage: float = 0.9):
    assert strokes.any(), "no strokes at all"
    dist_to_shape = cv2.distanceTransform((~shape).astype(np.uint8), cv2.DIST_L2, 5)
    assert dist_to_shape[strokes].max() <= tol, "a stroke lies away from the drawn shape"
    dist_to_stroke = cv2.distanceTransform((~strokes).astype(np.uint8), cv2.DIST_L2, 5)
    covered = (dist_to_stroke[shape] <= tol).mean()
    assert covered >= coverage, f"strokes cover only {covered:.0%} of the shape"


@pytest.mark.parametrize("kind", ["circle", "rectangle"])
@pytest.mark.parametrize("background", ["white", "black"])
@pytest.mark.parametrize("thin", [False, True])
def test_scribble_xdog_follows_drawn_shape(kind, background, thin):
    img, shape = _shape_image(kind)
    out = scribble_xdog(_image_video(img), background=background, thin=thin)
    assert out.shape == (1, H, W, 3)
    values = torch.unique(out)
    assert set(values.tolist()) <= {0.0, 1.0}  # binary strokes
    strokes = _strokes(out, background)
    assert strokes.mean() < 0.1  # thin lines, not filled regions
    _check_follows(strokes, shape)
    if background == "white":  # VACE polarity: mostly white
        assert out.mean() > 0.9


def test_scribble_xdog_flat_frame_is_blank_and_soft_strokes():
    flat = torch.full((2, 32, 40, 3), 0.3)
    assert torch.equal(scribble_xdog(flat), torch.ones_like(flat))
    assert torch.equal(scribble_xdog(flat, background="black"), torch.zeros_like(flat))
    img, shape = _shape_image("circle")
    soft = scribble_xdog(_image_video(img), phi=100.0, background="black")
    assert 0 < soft.max() <= 1 and ((soft > 0) & (soft < 1)).any()  # graded strokes
    _check_follows(soft[0, ..., 0].numpy() > 0.5, shape)


@pytest.mark.parametrize("kind", ["circle", "rectangle"])
def test_scribble_canny_follows_drawn_shape(kind):
    img, shape = _shape_image(kind)
    out = scribble_canny(_image_video(img), background="black")
    strokes = _strokes(out, "black")
    _check_follows(strokes, shape)
    white = scribble_canny(_image_video(img))
    assert torch.equal(white, 1.0 - out)


def test_zhang_suen_thins_bar_to_one_pixel():
    mask = np.zeros((30, 60), bool)
    mask[10:17, 5:55] = True  # 7-px-thick bar
    thin = zhang_suen_thin(mask)
    assert thin.any() and not (thin & ~mask).any()
    cols = thin[:, 10:50].sum(axis=0)
    assert (cols == 1).all()  # one pixel thick along the bar
    n, _ = cv2.connectedComponents(thin.astype(np.uint8), connectivity=8)
    assert n == 2  # background + one connected skeleton
    assert not zhang_suen_thin(np.zeros((5, 5), bool)).any()


# ----------------------------------------------------------------------------------------- flow
@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_recovers_known_translation(method):
    video = _moving_video([(3, -2)] * 3)
    flow = optical_flow(video, method=method)
    assert flow.shape == (4, H, W, 2) and flow.dtype == torch.float32
    for t in range(4):
        assert abs(flow[t, ..., 0].median().item() - 3.0) < 0.3
        assert abs(flow[t, ..., 1].median().item() + 2.0) < 0.3
    assert torch.equal(flow, optical_flow(video, method=method))  # deterministic


def test_flow_pad_conventions():
    video = _moving_video([(3, -2), (-2, 1), (1, 2)])
    med = lambda f: tuple(round(v) for v in f.reshape(-1, 2).median(dim=0).values.tolist())  # noqa: E731
    first = optical_flow(video, pad="first")  # VACE: out[0] = 0→1, out[t] = t-1→t
    assert [med(f) for f in first] == [(3, -2), (3, -2), (-2, 1), (1, 2)]
    last = optical_flow(video, pad="last", batch_size=1)  # out[t] = t→t+1, last repeated
    assert [med(f) for f in last] == [(3, -2), (-2, 1), (1, 2), (1, 2)]
    one = optical_flow(video[:1])
    assert one.shape == (1, H, W, 2) and not one.any()


def _hue_sat(rgb) -> tuple[float, float]:
    h, s, _ = colorsys.rgb_to_hsv(*[float(c) for c in rgb])
    return h, s


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def test_flow_colour_hue_matches_wheel_and_saturation_grows():
    video = _moving_video([(3, -2)] * 2)
    colours = run_preprocessor("flow", video)
    assert colours.shape == (3, H, W, 3)
    centre = colours[1, H // 2, W // 2]
    hue, sat = _hue_sat(centre)
    want_hue, _ = _hue_sat(wheel_color(3, -2))
    assert _hue_distance(hue, want_hue) < 0.02
    assert sat > 0.8  # per-frame normalisation: the (uniform) motion is near full saturation
    sats = []
    for m in (0.5, 1.0, 2.0, 4.0, 8.0):
        d = np.array([3.0, -2.0]) / np.hypot(3, -2) * m
        field = torch.tensor(d, dtype=torch.float32).expand(1, 4, 4, 2)
        rgb = flow_to_color(field, max_magnitude=10.0)[0, 2, 2]
        h, s = _hue_sat(rgb)
        assert _hue_distance(h, want_hue) < 0.02
        sats.append(s)
    assert all(a < b for a, b in zip(sats, sats[1:]))


def test_colour_wheel_known_colours():
    wheel = make_colorwheel()
    assert wheel.shape == (55, 3)
    assert wheel[0].tolist() == [255, 0, 0] and wheel[15].tolist() == [255, 255, 0]
    assert wheel[21].tolist() == [0, 255, 0] and wheel[25].tolist() == [0, 255, 255]
    assert wheel[36].tolist() == [0, 0, 255] and wheel[49].tolist() == [255, 0, 255]
    zero = flow_to_color(torch.zeros(2, 3, 3, 2))
    assert torch.equal(zero, torch.ones(2, 3, 3, 3))  # zero flow is white
    plus_x = flow_to_color(torch.tensor([[[[5.0, 0.0]]]]))[0, 0, 0] * 255
    assert plus_x.tolist() == [255.0, 0.0, 0.0]  # angle 0 = the wheel's first colour, full saturation
    assert np.allclose(wheel_color(1.0, 0.0), wheel[0] / 255)
    half = flow_to_color(torch.tensor([[[[5.0, 0.0]]]]), max_magnitude=10.0)[0, 0, 0] * 255
    assert half.tolist() == [255.0, 127.0, 127.0]  # RAFT: 1 - r (1 - colour), floored
    over = flow_to_color(torch.tensor([[[[20.0, 0.0]]]]), max_magnitude=10.0)[0, 0, 0] * 255
    assert over.tolist() == [191.0, 0.0, 0.0]  # beyond max: 75 % brightness, as RAFT


# --------------------------------------------------------------------- registry / batching / io
def test_run_preprocessor_size_frames_and_errors():
    video = _moving_video([(1, 1)] * 6)  # 7 frames of 96×128
    for name in weight_free_preprocessors():  # learned ones: tests/test_preprocess_learned.py
        out = run_preprocessor(name, video, frames=5, height=48, width=64)
        assert out.shape == (5, 48, 64, 3) and out.dtype == torch.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert torch.equal(out, run_preprocessor(name, video, frames=5, height=48, width=64))
    assert run_preprocessor("gray", video, width=64).shape == (7, 48, 64, 3)  # alias; aspect kept
    with pytest.raises(VDOTInputError, match="kind"):
        run_preprocessor("depthz", video)
    with pytest.raises(VDOTInputError, match="sigma"):
        run_preprocessor("grey", video, sigma=1.0)
    with pytest.raises(VDOTInputError, match="7 frames"):
        run_preprocessor("grey", video, frames=9)
    with pytest.raises(VDOTInputError, match="video"):
        run_preprocessor("grey", torch.zeros(4, 4))
    with pytest.raises(VDOTInputError, match="method"):
        run_preprocessor("flow", video, method="raft")


@pytest.mark.parametrize("name", ["grey", "scribble_xdog", "scribble_canny", "flow"])
def test_progress_increases_and_cancel_raises_between_batches(name):
    video = _moving_video([(1, 0)] * 6)  # 7 frames
    calls = []
    run_preprocessor(name, video, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    done = [d for d, _ in calls]
    assert len(calls) >= 3 and all(t == 7 for _, t in calls)
    assert all(a < b for a, b in zip(done, done[1:])) and done[-1] == 7

    checks, seen = [], []

    def cancel():
        checks.append(1)
        return len(checks) >= 2  # let the first batch run, cancel before the second

    with pytest.raises(VDOTCancelled):
        run_preprocessor(name, video, batch_size=2, progress=lambda d, t: seen.append(d), cancel=cancel)
    assert len(seen) == 1 and seen[0] < 7  # exactly one batch finished before the cancel


def test_import_is_light():
    code = ("import sys; import vdot_nodes.core.preprocess; "
            "print('cv2' in sys.modules, 'torchvision' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------------------- CLI
def _run_cli(argv, capsys):
    rc = preprocess_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_png_folder_round_trip_and_overwrite(tmp_path, capsys):
    src = tmp_path / "in"
    write_frames(_moving_video([(2, 1)] * 4, h=40, w=48), src)
    out = tmp_path / "out"
    rc, stdout, _ = _run_cli(["--kind", "scribble", src, out, "--width", "32", "--height", "24",
                              "--frames", "4", "--sigma", "1.2", "--quiet"], capsys)
    assert rc == 0 and "wrote" in stdout
    frames, _ = read_video(out)
    assert frames.shape == (4, 24, 32, 3)
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir())

    rc, _, err = _run_cli(["--kind", "grey", src, out, "--quiet"], capsys)  # refuses to overwrite
    assert rc == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before

    rc, _, _ = _run_cli(["--kind", "grey", src, out, "--frames", "2", "--overwrite", "--quiet"], capsys)
    assert rc == 0
    frames, _ = read_video(out)
    assert frames.shape == (2, 40, 48, 3)  # stale frames of the earlier run removed
    assert torch.allclose(frames[..., 0], frames[..., 2])


def test_cli_mp4_round_trip(tmp_path, capsys):
    src = tmp_path / "in.mp4"
    write_video(_moving_video([(2, -1)] * 5, h=48, w=64), src, fps=8)
    out = tmp_path / "flow.mp4"
    rc, _, _ = _run_cli(["--kind", "flow", src, out, "--method", "farneback", "--quiet"], capsys)
    assert rc == 0
    frames, fps = read_video(out)
    assert frames.shape == (6, 48, 64, 3) and fps == pytest.approx(8)
    rc, _, err = _run_cli(["--kind", "flow", src, out, "--quiet"], capsys)
    assert rc == 2 and "--overwrite" in err


@pytest.mark.parametrize("argv, needle", [
    (["--kind", "grey", "missing_dir", "out"], "does not exist"),
    (["--kind", "sepia", "IN", "out"], "unknown preprocessor"),
    (["--kind", "grey", "IN", "out", "--sigma", "2"], "not an option of --kind grey"),
    (["--kind", "grey", "IN", "out.avi"], ".mp4"),
    (["--kind", "grey", "IN", "out", "--frames", "0"], "--frames"),
    (["--kind", "grey", "IN", "out", "--frames", "99"], "frames"),
    (["--kind", "scribble", "IN", "out", "--sigma", "-1"], "sigma"),
    (["--kind", "canny", "IN", "out", "--low", "50", "--high", "10"], "low"),
    (["IN", "out"], "--kind"),
    (["--kind", "flow", "IN", "out", "--method", "raft"], "invalid choice"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, needle):
    src = tmp_path / "IN"
    write_frames(_moving_video([(1, 1)], h=16, w=16), src)
    argv = [str(tmp_path / a) if a in ("IN", "out", "out.avi") else a for a in argv]
    rc, _, err = _run_cli(argv, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value", [("--width", "100000"), ("--height", "5000"), ("--fps", "nan"),
                                         ("--crf", "99")])
def test_cli_caps_sizes_and_refuses_nan_before_reading(tmp_path, capsys, flag, value):
    src = tmp_path / "in"
    write_frames(_moving_video([(1, 1)], h=16, w=16), src)
    rc, _, err = _run_cli(["--kind", "grey", src, tmp_path / "out.mp4", flag, value, "--quiet"], capsys)
    assert rc == 2 and f"error: {flag}:" in err and "Traceback" not in err, err
    assert not (tmp_path / "out.mp4").exists()
