"""Does a toy model draw what a caption of the grammar says? ``python -m training.toy.check_default``.

Held-out scenes of the toy world with one horizontally moving object give captions ("a cyan triangle
moves right over a dark striped background") and their exact truth. The check: the model (default: the
embedded default, ``vdot_nodes/assets/toy``) generates each of :data:`CHECK_SCENES` scenes from its depth
control and its caption recoloured with each of the six palette colours (the 4-step ``renoise`` preset
it was distilled with). A depth map holds no colour, so the object's colour can come only from the words:
each video is checked for the named colour (nearest palette colour of its object pixels), the true
place (object IoU ≥ :data:`MIN_IOU`) and the true motion (the named colour's centroid moves the caption's
way by at least half the true distance). It passes when each of the three holds in at least
:data:`PASS_SHARE` of the videos (a model deaf to colour words names the colour in 1 of 6). Exit status
0 when it passes, 1 otherwise, 2 on bad input, 130 when interrupted. ``tests/test_toy_default.py``
runs it on the embedded default; ``tests/test_toy_metrics.py`` checks the checker (the truth passes; a
deaf, reversed or shifted video fails).

``--model FILE [--components DIR]`` checks another model (a build's teacher or stage-2 export);
``--captions N`` counts instead, over N held-out captions alone (t2v, no control), the videos with the
named colour, the named motion and no object at all; with it, ``--steps N`` samples with N Euler steps
instead of the 4-step preset (a teacher), ``--cfg W`` guides, ``--control-scale S`` scales the VACE hints
of the t2v context. From captions alone no default has followed them yet: toy12_5400's student (the
embedded default) draws the named colour in 7 of 16, the named motion in 3 and no object in 6 (toy12's 6, 1
and 6; toy10's 6, 0 and 8; its teacher, 25 steps, CFG 3: colour 12, no object 4; training/toy/HISTORY.md,
"Where the captions are lost" and "toy12")."""

from __future__ import annotations

import math
import sys

HELD_OUT = 3_000_000  # seeds far from the training world (0..clips) and the report's (1_000_000 + k)
MIN_IOU = 0.5
CHECK_SCENES = 8  # scenes of the pass/fail check: 8 × 6 colours = 48 videos
PASS_SHARE = 0.85  # of the videos, per check: a model deaf to the colour words names 1 colour in 6


def held_out_scenes(count: int, config=None):
    """The first ``count`` held-out clips with a single object that moves horizontally."""
    from .world import make_clip

    found, seed = [], HELD_OUT
    while len(found) < count:
        clip = make_clip(seed, config)
        if len(clip.scene.objects) == 1 and clip.scene.objects[0].vx != 0:
            found.append(clip)
        seed += 1
    return found


def edge_frames(num_frames: int) -> int:
    """Frames averaged at each end of a clip to measure its motion: 4 of 17, 1 of 5."""
    return max(1, num_frames // 4)


def horizontal_motion(video, clip, color: str | None = None) -> float:
    """Centroid x of the pixels of the named colour (default: the object's): mean over the last
    :func:`edge_frames` frames minus the first ones (pixels)."""
    from .metrics import object_track

    track = object_track(video, clip.scene.background, color or clip.scene.objects[0].color)[:, 0]
    k = edge_frames(track.shape[0])
    first, last = track[:k], track[-k:]
    first, last = first[~first.isnan()], last[~last.isnan()]
    return float(last.mean() - first.mean()) if len(first) and len(last) else math.nan


def needed_motion(clip) -> float:
    """Half the true x motion of the object between the first and last :func:`edge_frames` frames (px):
    the least that counts as following it (the true centroid moves (F − k)·|vx|)."""
    frames = clip.scene.config.num_frames
    return 0.5 * (frames - edge_frames(frames)) * abs(clip.scene.objects[0].vx)


def recoloured(caption: str, old: str, new: str) -> str:
    """``caption`` with its first object's colour word ``old`` replaced by ``new`` (and its article)."""
    from .captions import article

    words = caption.split(" ")
    k = words.index(old)  # word by word: "checkered" ends in "red"
    words[k - 1:k + 1] = [article(new), new]
    return " ".join(words)


def caption_alone(pipe, clip, seed: int, preset="renoise", cfg: float = 1.0, control_scale: float = 1.0) -> tuple:
    """Generate ``clip``'s caption alone (t2v) and read ``(colour, moved, needed)`` off the video: the
    palette colour found (None: no object pixels), the x motion of the named colour's centroid (px; NaN
    when the first or last frames have no pixels of that colour) and half the true motion, the least that
    counts as following the caption. ``control_scale`` scales the VACE hints of the t2v context."""
    from vdot_nodes.core.tasks import build_vcu

    from .metrics import object_colour_name

    cfg_world = clip.scene.config
    vcu = build_vcu("t2v", num_frames=cfg_world.num_frames, height=cfg_world.height, width=cfg_world.width,
                    prompt=clip.caption)
    video = pipe.generate(vcu, seed=seed, preset=preset, cfg=cfg, control_scale=control_scale)[0]
    return object_colour_name(video, clip.scene.background), horizontal_motion(video, clip), needed_motion(clip)


def follows_motion(moved: float, needed: float, vx: int) -> bool:
    return bool(moved * vx > 0 and abs(moved) >= needed)


def caption_tally(pipe, count: int, preset="renoise", cfg: float = 1.0, control_scale: float = 1.0) -> dict:
    """Over ``count`` held-out one-object captions alone: how many videos show the named colour, the named
    horizontal motion, and no object at all."""
    tally = {"count": count, "colour": 0, "motion": 0, "no_object": 0}
    for k, clip in enumerate(held_out_scenes(count)):
        colour, moved, needed = caption_alone(pipe, clip, k, preset, cfg, control_scale)
        tally["colour"] += colour == clip.scene.objects[0].color
        tally["motion"] += follows_motion(moved, needed, clip.scene.objects[0].vx)
        tally["no_object"] += colour is None
    return tally


def controlled_caption_results(pipe, count: int) -> list[dict]:
    """Each of ``count`` held-out scenes, sampled (4-step ``renoise`` preset) from its depth control and
    its caption recoloured with every palette colour in turn (the true one first): the colour named,
    the colour drawn, the object IoU with the true pixels and the x motion of the named colour against
    the least that counts. The depth control holds no colour, so the colour can only come from the words."""
    from vdot_nodes.core.tasks import build_vcu

    from .captions import OBJECT_COLORS
    from .metrics import object_colour_name, object_iou
    from .world import depth_to_video

    results = []
    for k, clip in enumerate(held_out_scenes(count)):
        obj, control, needed = clip.scene.objects[0], depth_to_video(clip.depth), needed_motion(clip)
        for colour in [obj.color] + [c for c in OBJECT_COLORS if c != obj.color]:
            caption = recoloured(clip.caption, obj.color, colour)
            video = pipe.generate(build_vcu("depth", control=control, prompt=caption), seed=k, preset="renoise")[0]
            results.append({"caption": caption, "named": colour, "drawn": object_colour_name(video, clip.scene.background),
                            "iou": object_iou(video, clip), "moved": horizontal_motion(video, clip, colour),
                            "needed": needed, "vx": obj.vx})
    return results


def check_caption_truth(pipe, count: int = CHECK_SCENES) -> tuple[list[str], list[str]]:
    """``(misses, failures)`` of :func:`controlled_caption_results`: one line per video that misses the
    named colour, the true place (IoU < :data:`MIN_IOU`) or the named motion, and one line per check met
    by fewer than :data:`PASS_SHARE` of the videos (empty: the model follows the captions)."""
    results = controlled_caption_results(pipe, count)
    misses, failures = [], []
    checks = {"named colour": lambda r: r["drawn"] == r["named"],
              f"object IoU >= {MIN_IOU}": lambda r: r["iou"] >= MIN_IOU,
              "named motion": lambda r: follows_motion(r["moved"], r["needed"], r["vx"])}
    for r in results:
        missed = [name for name, holds in checks.items() if not holds(r)]
        if missed:
            misses.append(f"{r['caption']!r} + depth control: drew {r['drawn']}, IoU {r['iou']:.2f}, moved "
                          f"{r['moved']:+.1f} px in x ({r['vx']:+d} px/frame): misses {', '.join(missed)}")
    for name, holds in checks.items():
        met = sum(holds(r) for r in results)
        if met < PASS_SHARE * len(results):
            failures.append(f"{name}: {met} of {len(results)} videos, fewer than {PASS_SHARE:.0%}")
    return misses, failures


COUNT_ONLY = ("steps", "cfg", "control_scale")  # options of --captions (the check samples like the student)


def _parser():
    from vdot_nodes.core.errors import one_line_parser_class

    p = one_line_parser_class()(prog="python -m training.toy.check_default",
                                description="Check that a toy model draws what captions of the grammar say.")
    p.add_argument("--model", help="a VACE transformer .safetensors (a build's teacher/teacher_vace.safetensors or "
                                   "a stage-2 export); default: the embedded default")
    p.add_argument("--components", help="folder with the toy vae.safetensors and text_encoder.safetensors "
                                        "(a build's components/); default: the embedded default's")
    p.add_argument("--captions", type=int, metavar="N",
                   help="instead of the pass/fail check, count over N held-out captions alone: named colour, "
                        "named motion, no object")
    p.add_argument("--steps", type=int, metavar="N",
                   help="with --captions: N Euler steps (a teacher) instead of the 4-step renoise preset")
    p.add_argument("--cfg", type=float, metavar="W", help="with --captions: classifier-free guidance (default 1)")
    p.add_argument("--control-scale", type=float, metavar="S",
                   help="with --captions: scale of the t2v context's VACE hints (default 1; 0 = hints off)")
    return p


def _settings(args):
    """Checked before any model loads: the sampler preset, CFG and VACE scale of ``--captions``."""
    from vdot_nodes.core.errors import VDOTInputError
    from vdot_nodes.core.sampling import get_preset
    from vdot_nodes.core.validate import BOUNDS, Bound, check_number

    given = [k for k in COUNT_ONLY if getattr(args, k) is not None]
    if args.captions is None:
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise VDOTInputError(flag, "applies only when counting captions",
                                 "add --captions N, or leave it out (the check samples like the student)")
        return "renoise", 1.0, 1.0
    check_number("captions", args.captions, Bound(int, 1, 10_000, "use e.g. 16"), "--captions")
    steps = check_number("steps", args.steps, BOUNDS["teacher_steps"], "--steps") if args.steps is not None else None
    cfg = check_number("cfg", args.cfg, BOUNDS["cfg"], "--cfg") if args.cfg is not None else 1.0
    scale = (check_number("control_scale", args.control_scale, BOUNDS["control_scale"], "--control-scale")
             if args.control_scale is not None else 1.0)
    return (get_preset("teacher_euler", steps=steps) if steps else "renoise"), cfg, scale


def _pipeline(args):
    from pathlib import Path

    from vdot_nodes.core.components import TOY_DIR, TOY_FILES, toy_checkpoints_available
    from vdot_nodes.core.errors import VDOTInputError

    if not args.model and not toy_checkpoints_available():
        raise VDOTInputError("--model", "vdot_nodes/assets/toy holds no embedded default",
                             "pass --model and --components, or install one: vdot toy install --build DIR")
    if args.model and not Path(args.model).is_file():
        raise VDOTInputError("--model", f"{args.model} not found", "pass a VACE transformer .safetensors")
    components = Path(args.components) if args.components else TOY_DIR
    for name in ("vae", "text_encoder"):
        if not (components / TOY_FILES[name]).is_file():
            raise VDOTInputError("--components", f"{components / TOY_FILES[name]} not found",
                                 "pass a toy build's components/ folder (or install a default: vdot toy install)")
    from vdot_nodes.core.models import load_transformer

    from .cli import _toy_components, _toy_pipeline

    model = Path(args.model) if args.model else TOY_DIR / TOY_FILES["transformer"]
    return _toy_pipeline(load_transformer(model, precision="fp32", input_name="--model"), _toy_components(components))


def _run(args) -> int:
    preset, cfg, control_scale = _settings(args)
    pipe = _pipeline(args)
    if args.captions is not None:
        t = caption_tally(pipe, args.captions, preset, cfg, control_scale)
        print(f"{t['count']} captions alone: named colour {t['colour']}, named motion {t['motion']}, "
              f"no object {t['no_object']}")
        return 0
    misses, failures = check_caption_truth(pipe)
    for line in misses + failures:
        print(line)
    print(f"the model follows the captions ({len(misses)} videos with a miss)" if not failures
          else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """0: every check holds (``--captions``: the tally was printed); 1: problems; 2: bad input (one line,
    before any model loads); 130: interrupted."""
    from vdot_nodes.core.errors import run_subcommand

    return run_subcommand("check_default", _parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
