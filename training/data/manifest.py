"""Training-data manifests for VDOT: one JSON object per line (JSON Lines), validated up front.

Format
------
A UTF-8 text file, ``*.jsonl``, one sample per line; blank lines are skipped. Paths are relative to
the manifest's folder (or absolute). A video is a video file FFmpeg reads (mp4, webm, ...) or a
folder of PNG/JPG frames read in name order. Fields::

    {"video": "clips/0001.mp4",            # the real clip: GAN real data, source of MV2V tasks
     "caption": "a red ball rolls ...",    # required, non-empty
     "task": "depth",                      # a task of vdot_nodes.core.tasks.TASKS; default "t2v"
     "control": "controls/0001_depth.mp4", # precomputed control video (V2V and composite tasks)
     "mask": "masks/0001.mp4",             # or null; a video, frame folder or one image (white = generate)
     "references": ["refs/0001_a.png"],    # reference images (r2v, reference_* tasks)
     "first_frame": null,                  # image for firstframe_* tasks; null = the video's first frame
     "reward": 0.73,                       # optional: a score of the video (any scale), the label of the
                                           # latent reward model (python -m training.reward); ignored otherwise
     "meta": {...}}                        # anything else (source, licence, scores...), passed through

Stage 1 (text-to-video distillation) needs only ``{"caption": ...}`` per line, plus ``"video"`` for
samples that should feed the GAN's real branch. Stage 2 needs, per task (see :data:`TASK_FIELDS`):

=====================================  ==========================================================
task                                   required fields (besides caption)
=====================================  ==========================================================
``t2v``                                — (video optional)
``r2v``                                video, references
``depth pose flow grey scribble``      video, control
``outpaint`` ``extension``             video (the expansion / kept clip are drawn when building the VCU)
``inpaint``                            video (mask optional: null = drawn when building the VCU)
``firstframe_<control>``               video, control (first_frame optional)
``reference_<control>``                video, control, references
=====================================  ==========================================================

:func:`read_manifest` validates every line — JSON syntax, unknown keys, field types, the task name,
the fields the task needs and that each file exists — and reports *all* problems at once, each with
its line number, field and fix. :class:`ManifestDataset` loads a sample into ComfyUI-layout tensors and
:func:`sample_to_vcu` turns one into its task's VCU with the VCU builders (``vdot_nodes.core.vcu``).
:class:`ResumableSampler` + :class:`ResumableLoader` give a deterministic, rank-sharded, resumable
order whose state goes into the training checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vdot_nodes.core.errors import VDOTInputError, renamed_input
from vdot_nodes.core.preprocess.masks import image_to_mask
from vdot_nodes.core.source_prep import cover_crop, fit_clip, sample_frame_ids, unit_frames
from vdot_nodes.core.tasks import CONTROL_KINDS, TASKS, DrawRanges, build_vcu, released_task_names
from vdot_nodes.core.vcu import VCU
from vdot_nodes.core.video_io import IMAGE_EXTENSIONS, probe_video, read_image, read_video_frames, to_uint8

__all__ = [
    "CONTROL_KINDS",
    "TASK_FIELDS",
    "INPUT_FIELDS",
    "FIELDS",
    "ManifestError",
    "ManifestSample",
    "CSV_COLUMNS",
    "read_manifest",
    "ManifestDataset",
    "collate_samples",
    "sample_to_vcu",
    "ResumableSampler",
    "ResumableLoader",
]

#: The manifest field that gives each task input of the registry (``vdot_nodes.core.tasks.INPUTS``); an
#: MV2V task's ``source`` is made from the ``video`` (the target clip) by the task's draw.
INPUT_FIELDS = {"control": "control", "mask": "mask", "references": "references", "first_frame": "first_frame",
                "source": "video"}
#: ``meta`` keys that fix what a task's draw would otherwise choose → the registry's input names.
META_INPUTS = {"expand": "expand", "box": "box", "extension_mode": "mode", "keep_frames": "keep_frames"}


def _task_fields() -> dict[str, tuple[str, ...]]:
    # Read from the task registry, so the two can never disagree on task names.
    table: dict[str, tuple[str, ...]] = {}
    for name, spec in TASKS.items():
        needs = () if spec.family == "T2V" else ("video",)  # the clip: GAN real data and MV2V source
        needs += tuple(INPUT_FIELDS[i] for i in ("control", "references") if i in spec.required)
        table[name] = needs
    return table


TASK_FIELDS: dict[str, tuple[str, ...]] = _task_fields()
"""Task name (a key of ``vdot_nodes.core.tasks.TASKS``) → fields a manifest line for it must have (besides ``caption``)."""

FIELDS = ("video", "caption", "task", "control", "mask", "references", "first_frame", "reward", "meta")
_PATH_FIELDS = ("video", "control", "mask", "first_frame")


class ManifestError(VDOTInputError):
    """Every problem found in a manifest, each ``(line, field, problem, fix)``."""

    def __init__(self, manifest: str | os.PathLike, errors: list[tuple[int, str, str, str]], shown: int = 20):
        self.manifest = str(manifest)
        self.errors = errors
        lines = [f"line {ln}, field '{fld}': {problem}. Fix: {fix}" for ln, fld, problem, fix in errors[:shown]]
        if len(errors) > shown:
            lines.append(f"... and {len(errors) - shown} more")
        ValueError.__init__(self, f"{self.manifest}: {len(errors)} problem(s)\n  " + "\n  ".join(lines))
        ln, fld, problem, fix = errors[0]
        self.input_name, self.problem, self.fix = f"{self.manifest}:{ln}", f"field '{fld}': {problem}", fix


@dataclass
class ManifestSample:
    """One validated manifest line; paths are absolute."""

    line: int
    caption: str
    task: str = "t2v"
    video: Path | None = None
    control: Path | None = None
    mask: Path | None = None
    references: list[Path] = field(default_factory=list)
    first_frame: Path | None = None
    reward: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _parse_line(text: str, line: int, base: Path, check_files: bool, errors: list) -> ManifestSample | None:
    def err(fld: str, problem: str, fix: str) -> None:
        errors.append((line, fld, problem, fix))

    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        err("-", f"not valid JSON ({exc.msg} at column {exc.colno})", "write one JSON object per line, double-quoted keys")
        return None
    if not isinstance(obj, dict):
        err("-", f"expected a JSON object, got {type(obj).__name__}", 'write {"caption": "...", ...}')
        return None
    n_before = len(errors)
    for key in obj:
        if key not in FIELDS:
            err(key, "unknown field", f"use only {', '.join(FIELDS)}; put anything else under \"meta\"")

    caption = obj.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        err("caption", "missing or empty" if caption in (None, "") else f"must be a string, got {type(caption).__name__}",
            "give every sample a non-empty text caption")
    task = obj.get("task", "t2v")
    if task is None:
        task = "t2v"
    if not isinstance(task, str) or task not in TASK_FIELDS:
        err("task", f"unknown task {task!r}", f"use one of {', '.join(TASK_FIELDS)}")

    paths: dict[str, Path | None] = {}
    for fld in _PATH_FIELDS:
        value = obj.get(fld)
        if value is None:
            paths[fld] = None
        elif not isinstance(value, str) or not value:
            err(fld, f"must be a path string or null, got {value!r}", "write a path relative to the manifest's folder")
            paths[fld] = None
        else:
            paths[fld] = (base / value) if not os.path.isabs(value) else Path(value)
    refs_value = obj.get("references")
    if refs_value is None:
        refs_value = []
    elif isinstance(refs_value, str):
        refs_value = [refs_value]
    references: list[Path] = []
    if not isinstance(refs_value, list) or not all(isinstance(r, str) and r for r in refs_value):
        err("references", f"must be a list of image paths, got {refs_value!r}", 'write ["refs/a.png", ...] or []')
    else:
        references = [(base / r) if not os.path.isabs(r) else Path(r) for r in refs_value]
    reward = obj.get("reward")
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward)):
        err("reward", f"must be a finite number or null, got {reward!r}", 'write e.g. "reward": 0.73 (or leave it out)')
        reward = None
    meta = obj.get("meta")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        err("meta", f"must be a JSON object, got {type(meta).__name__}", 'write "meta": {...} or leave it out')
        meta = {}

    if isinstance(task, str) and task in TASK_FIELDS:
        for need in TASK_FIELDS[task]:
            missing = not references if need == "references" else paths.get(need) is None
            if missing and not any(e[0] == line and e[1] == need for e in errors):
                what = "at least one reference image" if need == "references" else f"a {need} path"
                err(need, f"task {task!r} needs {what}", f"add \"{need}\" to this line, or change its task")

    if check_files:
        for fld, p in paths.items():
            if p is not None and not p.exists():
                err(fld, f"file not found: {p}", "check the path (relative paths start at the manifest's folder)")
            elif p is not None and fld == "first_frame" and not p.is_file():
                err(fld, f"not an image file: {p}", f"use a {'/'.join(IMAGE_EXTENSIONS)} image")
        for p in references:
            if not p.is_file():
                err("references", f"image not found: {p}", "check the path (relative paths start at the manifest's folder)")

    if len(errors) > n_before:
        return None
    return ManifestSample(
        line=line,
        caption=caption,
        task=task,
        video=paths["video"],
        control=paths["control"],
        mask=paths["mask"],
        references=references,
        first_frame=paths["first_frame"],
        reward=None if reward is None else float(reward),
        meta=meta,
    )


CSV_COLUMNS = ("task_name", "src_video_path", "mask_video_path", "ref_image_path", "internvl_short")
"""Columns of the released training CSV (hhhh1138/VDOT ``utils/dataset.py`` ``TextMultiTaskVideoDataset``)."""
CSV_TASK_NAMES = released_task_names()
"""Released task names that differ from ours (``reference`` → ``r2v``; ``grey`` and the control names are the same)."""


def _csv_rows(path: Path, gt_dir: str | os.PathLike | None, base: Path, errors: list) -> list[tuple[int, str]]:
    """The released CSV as ``(line, JSON text)`` rows in our manifest schema, for :func:`_parse_line`.

    ``internvl_short`` → caption; ``task_name`` → task (``reference`` → ``r2v``); ``src_video_path`` → control
    (tasks that take one; otherwise kept in meta); ``mask_video_path`` → mask; ``ref_image_path`` (comma-separated) →
    references; the ground-truth clip → video: ``gt_dir/basename(src_video_path)``, or for ``reference`` rows
    ``gt_dir/<first reference's name up to its first '.' or '_'>.mp4``. Empty cells are null; other columns → meta.
    """
    import csv

    if gt_dir is None:
        raise VDOTInputError("data.gt_dir", f"{path.name} is a CSV manifest, whose ground-truth clips are found by "
                             "file name in a folder, and no folder is set", "set data.gt_dir to the folder of the clips")
    gt = Path(gt_dir) if os.path.isabs(gt_dir) else base / gt_dir
    rows: list[tuple[int, str]] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            errors.append((1, missing[0], f"the header lacks column(s) {missing}",
                           f"a training CSV has the columns {', '.join(CSV_COLUMNS)}"))
            return rows
        for row in reader:
            line = reader.line_num
            cell = {k: (v.strip() if isinstance(v, str) and v.strip() and v.strip().lower() != "nan" else None)
                    for k, v in row.items() if k is not None}
            if not any(cell.values()):
                continue
            released = cell.get("task_name")
            task = CSV_TASK_NAMES.get(released, released)
            refs = [r.strip() for r in (cell.get("ref_image_path") or "").split(",") if r.strip()]
            src = cell.get("src_video_path")
            if released == "reference" and refs:
                clip = os.path.basename(refs[0]).split(".")[0].split("_")[0] + ".mp4"
            else:
                clip = os.path.basename(src) if src else None
            takes_control = task in TASK_FIELDS and "control" in TASK_FIELDS[task]
            meta = {k: v for k, v in cell.items() if k not in CSV_COLUMNS and v is not None}
            if src and not takes_control:
                meta["src_video_path"] = src
            obj = {"caption": cell.get("internvl_short"), "task": task, "video": str(gt / clip) if clip else None,
                   "control": src if takes_control else None, "mask": cell.get("mask_video_path"),
                   "references": refs, "meta": meta}
            rows.append((line, json.dumps(obj)))
    return rows


def read_manifest(path: str | os.PathLike, check_files: bool = True,
                  gt_dir: str | os.PathLike | None = None) -> list[ManifestSample]:
    """Parse and validate a JSON Lines manifest, or the released training CSV (``*.csv``, :data:`CSV_COLUMNS`,
    ground-truth clips in ``gt_dir``, see :func:`_csv_rows`); raises :class:`ManifestError` listing every bad line.

    ``check_files=False`` skips the existence checks (for huge manifests on slow storage).
    """
    path = Path(path)
    if not path.is_file():
        raise VDOTInputError(str(path), "manifest file not found", "give the path of a .jsonl manifest (or a training .csv)")
    base = path.resolve().parent
    samples: list[ManifestSample] = []
    errors: list[tuple[int, str, str, str]] = []
    if path.suffix.lower() == ".csv":
        lines = _csv_rows(path, gt_dir, base, errors)
    else:
        with open(path, encoding="utf-8") as f:
            lines = [(n, text) for n, text in enumerate(f, start=1) if text.strip()]
    for line_no, text in lines:
        sample = _parse_line(text, line_no, base, check_files, errors)
        if sample is not None:
            samples.append(sample)
    if errors:
        raise ManifestError(path, errors)
    if not samples:
        raise VDOTInputError(str(path), "manifest holds no samples", "write one JSON object per line")
    return samples


# ----------------------------------------------------------------------------------------------
# Dataset


class ManifestDataset(Dataset):
    """Samples of a manifest loaded as tensors in ComfyUI layout.

    Each item is a dict:

    - ``caption`` (str), ``task`` (str), ``index`` (int), ``line`` (int), ``meta`` (dict),
      ``num_frames`` / ``height`` / ``width`` (the dataset's clip size);
    - ``video``: ``[F, H, W, 3]`` float32 0..1, ``num_frames`` frames spread uniformly over the clip,
      resized to cover ``height``×``width`` and centre-cropped (``core.source_prep``), or None (t2v
      without video);
    - ``control``: same layout as ``video`` (or None);
    - ``mask``: ``[F, H, W]`` soft mask float32 in 0..1 (1 = generate; channel 0, as the CLI reads it),
      or None; one mask image is repeated over the frames. The VCU builder thresholds it at 0.5 and
      keeps the soft values for VACE's 64-channel mask input, as inference and the official trainer do;
    - ``references``: list of ``[h, w, 3]`` images at their own size (the VCU builder places them on
      the white canvas);
    - ``first_frame``: ``[H, W, 3]`` fitted like the video; for ``firstframe_*`` tasks without one,
      the video's first frame; otherwise None;
    - ``reward``: the line's ``reward`` (float) or None.

    ``tasks`` keeps only samples of those tasks. Items differ in which fields are None, so batch
    them with :func:`collate_samples` (a list of dicts), not the default collate.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        num_frames: int,
        height: int,
        width: int,
        tasks: Sequence[str] | None = None,
        check_files: bool = True,
        gt_dir: str | os.PathLike | None = None,
    ):
        if num_frames < 1 or (num_frames - 1) % 4:
            raise VDOTInputError("num_frames", f"{num_frames} is not 4k+1", "use 17, 33, 49, 81 ...")
        if height % 16 or width % 16 or height <= 0 or width <= 0:
            raise VDOTInputError("height/width", f"{height}x{width} is not a multiple of 16", "use e.g. 480x832")
        self.path = Path(path)
        self.num_frames, self.height, self.width = num_frames, height, width
        samples = read_manifest(path, check_files=check_files, gt_dir=gt_dir)
        if tasks is not None:
            unknown = sorted(set(tasks) - set(TASK_FIELDS))
            if unknown:
                raise VDOTInputError("tasks", f"unknown task(s) {unknown}", f"use names from {', '.join(TASK_FIELDS)}")
            samples = [s for s in samples if s.task in set(tasks)]
            if not samples:
                raise VDOTInputError(str(path), f"no samples of tasks {list(tasks)}", "check the manifest's task fields")
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def _frames(self, path: Path, what: str):
        """uint8 frames of a clip: ``num_frames`` spread uniformly over the whole clip (as the official
        loader samples them; a clip of exactly ``num_frames`` keeps every frame), fitted to the size."""
        probe = probe_video(path)
        if probe.num_frames < self.num_frames:
            raise VDOTInputError(what, f"{path.name} has {probe.num_frames} frames, {self.num_frames} needed",
                                 "use longer clips or train with fewer frames")
        ids = sample_frame_ids(probe.timestamps, self.num_frames)
        return cover_crop(read_video_frames(path, ids), self.height, self.width)

    def _clip(self, path: Path, sample: ManifestSample, fld: str) -> torch.Tensor:
        return unit_frames(self._frames(path, f"{self.path}:{sample.line} {fld}"))

    def _mask(self, path: Path) -> torch.Tensor:
        """The soft mask of a mask video or one mask image (``image_to_mask``, as ``vdot generate --mask``)."""
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            image = torch.from_numpy(to_uint8(read_image(path)))[None]
            return image_to_mask(cover_crop(image, self.height, self.width)).expand(self.num_frames, -1, -1).contiguous()
        return image_to_mask(self._frames(path, f"mask {path}"))

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        video = self._clip(s.video, s, "video") if s.video is not None else None
        control = self._clip(s.control, s, "control") if s.control is not None else None
        mask = self._mask(s.mask) if s.mask is not None else None
        references = [read_image(p) for p in s.references]
        first_frame = None
        if s.first_frame is not None:
            # the inference policy (core.source_prep), so training sees what the CLI feeds the model
            first_frame = fit_clip(read_image(s.first_frame)[None], self.height, self.width)[0]
        elif s.task.startswith("firstframe_") and video is not None:
            first_frame = video[0].clone()
        return {
            "index": index,
            "line": s.line,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "caption": s.caption,
            "task": s.task,
            "video": video,
            "control": control,
            "mask": mask,
            "references": references,
            "first_frame": first_frame,
            "reward": s.reward,
            "meta": s.meta,
        }


def collate_samples(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DataLoader ``collate_fn`` keeping samples as a list (tasks and None-fields differ per sample)."""
    return list(batch)


def sample_to_vcu(
    sample: dict[str, Any],
    *,
    generator: torch.Generator | None = None,
    negative_prompt: str = "",
    outpaint_ratio: tuple[float, float] = (0.05, 0.25),
    inpaint_box_ratio: tuple[float, float] = (0.2, 0.6),
) -> VCU:
    """Turn a :class:`ManifestDataset` item into the task's VCU (``vdot_nodes.core.tasks.build_vcu``).

    The VCU's target is always the sample's video (``F × H × W`` of the dataset). The task inputs come
    from the item's fields (:data:`INPUT_FIELDS`); what the manifest leaves open, the task's draw in
    the registry picks from ``generator`` (checkpoint it for exact resumes), unless ``meta`` fixes it
    (:data:`META_INPUTS`):

    - outpaint: the source is the video's interior; each expanded side removes a fraction in
      ``outpaint_ratio`` of that axis, on both horizontal sides, both vertical sides or all four
      (``meta["expand"] = [top, bottom, left, right]`` pixels fixes it);
    - extension: mode first / last / random and its clip position (``meta["extension_mode"]``,
      ``meta["keep_frames"]`` fix them);
    - inpaint without a mask: a random box, each side a fraction in ``inpaint_box_ratio`` of the frame
      (``meta["box"] = [x0, y0, x1, y1]`` fixes it);
    - firstframe_*: the dataset already put the video's first frame in ``first_frame`` if the manifest
      gave none.

    Errors name the manifest field (and line) of the input that was wrong.
    """
    task, meta = sample["task"], sample.get("meta") or {}
    spec = TASKS[task]
    line = sample.get("line")
    fields = {**INPUT_FIELDS, **{i: f"meta.{k}" for k, i in META_INPUTS.items()},
              "num_frames": "data.num_frames", "height": "data.height", "width": "data.width"}
    names = {i: f if line is None else f"line {line} {f}" for i, f in fields.items()}
    inputs = {i: sample.get(f) for i, f in INPUT_FIELDS.items() if i in spec.accepted_inputs and f != "video"}
    if spec.draw is not None:
        video = sample.get("video")
        if video is None:
            raise VDOTInputError(f"sample line {line}", f"task {task!r} needs the video", "add it to the manifest")
        given = {**inputs, **{i: meta[k] for k, i in META_INPUTS.items() if k in meta}}
        inputs.update(spec.draw(video, given, generator, DrawRanges(outpaint_ratio, inpaint_box_ratio)))
    elif spec.driving_video is None:  # t2v / r2v: the dataset's clip size
        inputs.update(num_frames=sample["num_frames"], height=sample["height"], width=sample["width"])
    try:
        return build_vcu(task, **inputs, prompt=sample["caption"], negative_prompt=negative_prompt)
    except VDOTInputError as exc:
        raise renamed_input(exc, names) from None


# ----------------------------------------------------------------------------------------------
# Resumable, rank-sharded order


class ResumableSampler(Sampler[int]):
    """Deterministic epoch-shuffled order, sharded across ranks, resumable to the exact sample.

    Epoch ``e``'s global order is a permutation drawn from ``torch.Generator().manual_seed(seed + e)``
    (the identity when ``shuffle=False``). Global position ``p`` belongs to rank ``p % world_size``,
    so ranks get disjoint samples and all ranks get the same number per epoch: ``drop_last=True``
    drops the last ``len % world_size`` samples of the permutation, ``drop_last=False`` wraps around
    to fill the last round instead.

    State — ``{"epoch", "position"}``, ``position`` counting global samples already *consumed* in
    the epoch — is the same on all ranks. Iterating does not change it (a DataLoader's workers read
    ahead); call :meth:`advance` with the number of samples this rank has actually used, or let
    :class:`ResumableLoader` do it. ``__iter__`` yields this rank's remaining indices of the current
    epoch; :meth:`next_epoch` moves on once they are used.

    ``weights`` (one per row, ``data.task_weights``): each epoch's order is instead ``len`` draws with
    replacement in proportion to them, from the same per-epoch generator, so it resumes the same way; the
    state carries their fingerprint and a resume with other weights is refused.
    """

    def __init__(
        self,
        data_source_or_len,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = True,
        weights: Sequence[float] | None = None,
    ):
        from .. import distributed as D

        self.num_samples_total = data_source_or_len if isinstance(data_source_or_len, int) else len(data_source_or_len)
        self.rank = D.get_rank() if rank is None else int(rank)
        self.world_size = D.get_world_size() if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")
        if self.num_samples_total < 1 or (drop_last and self.num_samples_total < self.world_size):
            raise VDOTInputError("dataset", f"{self.num_samples_total} samples for {self.world_size} ranks",
                                 "give at least one sample per rank")
        self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.weights is not None and (len(self.weights) != self.num_samples_total or not self.weights.sum() > 0):
            raise VDOTInputError("data.task_weights", f"the {self.num_samples_total} rows have weights summing to "
                                 f"{float(self.weights.sum()):g}", "give at least one task of the data a weight > 0")
        self.epoch = 0
        self.position = 0

    @property
    def per_rank(self) -> int:
        """Samples each rank sees per epoch."""
        n, w = self.num_samples_total, self.world_size
        return n // w if self.drop_last else -(-n // w)

    @property
    def epoch_length(self) -> int:
        """Global samples per epoch (all ranks together)."""
        return self.per_rank * self.world_size

    def global_order(self, epoch: int) -> list[int]:
        n = self.num_samples_total
        g = torch.Generator().manual_seed(self.seed + int(epoch))  # one per epoch: resumable
        if self.weights is not None:  # n draws with replacement in proportion to the weights
            order = torch.multinomial(self.weights, n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        length = self.epoch_length
        while len(order) < length:
            order += order[: length - len(order)]
        return order[:length]

    def __len__(self) -> int:
        """This rank's remaining samples in the current epoch."""
        return (self.epoch_length - self.position) // self.world_size

    def __iter__(self) -> Iterator[int]:
        order = self.global_order(self.epoch)
        return iter(order[self.position + self.rank :: self.world_size])

    def advance(self, num_samples: int) -> None:
        """Mark ``num_samples`` more samples used on this rank (so ``num_samples × world`` globally)."""
        self.position += int(num_samples) * self.world_size
        if self.position >= self.epoch_length:
            self.next_epoch()

    def next_epoch(self) -> None:
        self.epoch += 1
        self.position = 0

    @property
    def weights_digest(self) -> str | None:
        """A short fingerprint of the row weights (None: unweighted), so a resume can tell they changed."""
        if self.weights is None:
            return None
        import hashlib

        return hashlib.sha256(self.weights.numpy().tobytes()).hexdigest()[:16]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_samples": self.num_samples_total, "world_size": self.world_size, "weights": self.weights_digest}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore ``epoch`` / ``position``. Refuses a different seed or dataset size (the order would differ)
        with a :class:`VDOTInputError`.

        A different world size is accepted: the global position stays exact, only the split of the
        remaining samples among ranks changes.
        """
        # The saved position only means something in the same order over the same rows.
        if "seed" in state and int(state["seed"]) != self.seed:
            raise VDOTInputError("seed", f"the checkpoint's data order was drawn with seed {state['seed']}, "
                                         f"this run has {self.seed}",
                                 "resume with the seed the run started with, or start a new run in another out folder")
        if "num_samples" in state and int(state["num_samples"]) != self.num_samples_total:
            raise VDOTInputError("data", f"the checkpoint's data order covers {state['num_samples']} rows, the data "
                                         f"now has {self.num_samples_total}",
                                 "resume with the manifest or captions (and data.tasks) the run started with, "
                                 "or start a new run in another out folder")
        if state.get("weights") != self.weights_digest:
            raise VDOTInputError("data.task_weights", "differ from the weights the checkpoint's data order was drawn with",
                                 "resume with the task_weights the run started with, or start a new run in another out folder")
        self.epoch = int(state["epoch"])
        position = int(state["position"])
        self.position = position - position % self.world_size  # a world-size change rounds down to a full round
        if self.position >= self.epoch_length:
            self.next_epoch()


@dataclass
class _SkippedRow:
    """What the row guard hands on for a row that could not be read (picklable: it crosses worker processes)."""

    index: int
    where: str
    reason: str


class _RowGuard(Dataset):
    """``dataset[i]``, or a :class:`_SkippedRow` when the row's files cannot be read (corrupt / truncated /
    short video, unreadable image). Only data errors are caught; a bug still raises."""

    DATA_ERRORS = (VDOTInputError, OSError, ValueError, RuntimeError, EOFError)

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except self.DATA_ERRORS as exc:
            samples, path = getattr(self.dataset, "samples", None), getattr(self.dataset, "path", None)
            where = f"line {samples[index].line} of {Path(path).name}" if samples is not None and path else f"row {index}"
            return _SkippedRow(index, where, str(exc).replace("\n", " "))


def _single(items: list):
    """The DataLoader reads one row at a time (batches are filled past skipped rows): unwrap it."""
    return items[0]


def _agree(values: list[int], ops: list[str]) -> list[int]:
    """The same integers on every rank: each reduced over ranks by its op (``max`` / ``sum``); identity in one process."""
    from .. import distributed as D

    if not D.is_distributed():
        return values
    import torch.distributed as dist

    out = []
    for value, op in zip(values, ops):
        t = torch.tensor([int(value)], dtype=torch.int64, device=D.comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        out.append(int(t.item()))
    return out


class ResumableLoader:
    """An endless iterator of batches over epochs whose progress is exact in the sampler's state.

    Reads one sample at a time through a fresh :class:`torch.utils.data.DataLoader` per epoch (``loader_kwargs``
    — ``num_workers``, ``pin_memory``, ... — go to it) and calls ``sampler.advance(n)`` with the samples a batch
    used as the batch is handed to the caller, so ``state_dict()`` saved after step *k* resumes at step *k + 1*
    even with prefetching workers. A batch never spans epochs (the short tail is dropped), so every rank takes
    the same number of steps.

    Unreadable rows: a row whose files fail to load is skipped (logged the first time), and the batch is
    filled from the next rows; the skip is part of the position (the same rows are skipped at the same place
    after a resume) and the set of skipped rows is in the state. More than ``max_skipped`` distinct skipped
    rows (over the whole run, every epoch) stop the run with a :class:`VDOTInputError` naming them. Under
    torchrun the ranks agree each batch on the rows used (the most any rank needed) and on the rows skipped,
    so the shared position and the budget stay exact.
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, batch_size: int = 1,
                 collate_fn=collate_samples, max_skipped: int = 0, **loader_kwargs):
        if sampler.per_rank < batch_size:
            raise VDOTInputError("batch_size", f"{batch_size} exceeds the {sampler.per_rank} samples each rank has per epoch",
                                 "use a smaller batch or more data")
        self.dataset, self.sampler, self.batch_size = dataset, sampler, int(batch_size)
        self.collate_fn, self.loader_kwargs = collate_fn, loader_kwargs
        self.max_skipped = int(max_skipped)
        self.skipped: dict[int, str] = {}  # dataset index -> where (line of the manifest), every rank's

    def state_dict(self) -> dict:
        return {**self.sampler.state_dict(), "skipped_rows": sorted(self.skipped.items())}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self.skipped = {int(i): str(where) for i, where in state.get("skipped_rows", [])}

    def _note_skips(self, rows: list[_SkippedRow]) -> None:
        """Add this batch's skipped rows (all ranks') to the run's set; log new ones; enforce the budget."""
        import logging

        from .. import distributed as D

        if D.is_distributed():
            import torch.distributed as dist

            gathered: list = [None] * D.get_world_size()
            dist.all_gather_object(gathered, rows)  # between our own processes only
            rows = [r for part in gathered for r in part]
        for row in rows:
            if row.index not in self.skipped:
                self.skipped[row.index] = row.where
                logging.getLogger(__name__).warning(
                    f"data: skipped {row.where}: {row.reason} ({len(self.skipped)} row(s) skipped, "
                    f"data.max_skipped_rows: {self.max_skipped})")
        if len(self.skipped) > self.max_skipped:
            names = ", ".join(list(self.skipped.values())[:5]) + (", ..." if len(self.skipped) > 5 else "")
            raise VDOTInputError(
                "data.max_skipped_rows",
                f"{len(self.skipped)} data rows could not be read ({names}; the last: {rows[-1].reason}), "
                f"more than the {self.max_skipped} allowed",
                "fix or remove those rows (the log says why each failed), or raise data.max_skipped_rows")

    def __iter__(self):
        guarded = _RowGuard(self.dataset)
        while True:
            epoch = self.sampler.epoch
            loader = DataLoader(guarded, batch_size=1, sampler=self.sampler, collate_fn=_single, **self.loader_kwargs)
            rows = iter(loader)
            while self.sampler.epoch == epoch:
                batch, used, skipped, exhausted = [], 0, [], False
                while len(batch) < self.batch_size:
                    try:
                        item = next(rows)
                    except StopIteration:
                        exhausted = True
                        break
                    used += 1
                    if isinstance(item, _SkippedRow):
                        skipped.append(item)
                    else:
                        batch.append(item)
                most, any_skipped, exhausted = _agree([used, len(skipped), int(exhausted)], ["max", "sum", "max"])
                if any_skipped:
                    self._note_skips(skipped)
                if exhausted:  # the epoch's tail could not fill a batch on some rank: drop it everywhere
                    break
                for _ in range(most - used):  # rows another rank needed: this rank passes over them too
                    next(rows, None)
                self.sampler.advance(most)
                yield self.collate_fn(batch)
            if self.sampler.epoch == epoch:
                self.sampler.next_epoch()
