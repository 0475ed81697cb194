"""The one place that touches ComfyUI: model/input/output folders, progress bar, interrupt.

Inside ComfyUI these call ``folder_paths``, ``comfy.utils.ProgressBar`` and
``comfy.model_management``. Without ComfyUI (tests, scripts) the folders come from
:func:`set_fallback_root` or the ``VDOT_COMFY_ROOT`` environment variable (a folder holding
``input/``, ``output/`` and ``models/``), progress goes to tqdm, and interrupt is a no-op.

Workflows are shared between strangers, so every name a workflow gives is checked here: models
only from the models folders, inputs only from the input folder or the pack's bundled examples,
outputs only under the output folder and never over an existing file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..core.errors import VDOTInputError
from ..core.preprocess.weights import COMFY_ROOT_ENV
from ..core.progress import Progress, SamplerStep

EMBEDDED = "vdot-toy (embedded)"
MODEL_KINDS = ("diffusion_models", "vae", "text_encoders", "vdot_annotators", "loras", "vae_approx")
EXAMPLES_PREFIX = "vdot_examples/"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".gif", ".avi")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
WEIGHT_EXTENSIONS = (".safetensors", ".sft")

_fallback_root: Path | None = None


def _folder_paths():
    try:
        import folder_paths  # ComfyUI's module; absent outside ComfyUI

        return folder_paths
    except ImportError:
        return None


def has_control_widget(name: str, type_, options: dict) -> bool:
    """Whether ComfyUI's frontend puts a "control after generate" widget after this input (and stores
    its value next in a workflow's widgets_values): an INT that declares ``control_after_generate``
    (a string is the control's default), or, when it declares nothing, an INT named seed / noise_seed."""
    if type_ != "INT":
        return False
    flag = options.get("control_after_generate")
    return bool(name in ("seed", "noise_seed") if flag is None else flag)


def _register_annotator_folder() -> None:
    fp = _folder_paths()
    if fp is not None and "vdot_annotators" not in fp.folder_names_and_paths:
        fp.folder_names_and_paths["vdot_annotators"] = (
            [os.path.join(fp.models_dir, "vdot_annotators")], set(WEIGHT_EXTENSIONS) | {".onnx"}
        )


_register_annotator_folder()


def set_fallback_root(path: str | os.PathLike | None) -> None:
    """Use ``path/input``, ``path/output``, ``path/models`` when ComfyUI is not importable."""
    global _fallback_root
    _fallback_root = None if path is None else Path(path)


def _root() -> Path:
    if _fallback_root is not None:
        return _fallback_root
    env = os.environ.get(COMFY_ROOT_ENV)
    if env:
        return Path(env)
    raise VDOTInputError(
        "VDOT_COMFY_ROOT", "ComfyUI is not running and no folder root is set",
        "set the environment variable VDOT_COMFY_ROOT to a folder holding input/, output/ and models/",
    )


def models_dir() -> Path:
    fp = _folder_paths()
    return Path(fp.models_dir) if fp is not None else _root() / "models"


def input_dir() -> Path:
    fp = _folder_paths()
    return Path(fp.get_input_directory()) if fp is not None else _root() / "input"


def output_dir() -> Path:
    fp = _folder_paths()
    return Path(fp.get_output_directory()) if fp is not None else _root() / "output"


def temp_dir() -> Path:
    """ComfyUI's temp folder (emptied when ComfyUI starts): where previews go."""
    fp = _folder_paths()
    return Path(fp.get_temp_directory()) if fp is not None else _root() / "temp"


def _check_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise VDOTInputError("kind", f"unknown model folder {kind!r}", f"use one of {MODEL_KINDS}")


def _scan(folder: Path, extensions) -> list[str]:
    if not folder.is_dir():
        return []
    names = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in extensions:
            names.append(path.relative_to(folder).as_posix())
    return names


def list_models(kind: str) -> list[str]:
    """Weight files in ComfyUI's ``models/<kind>`` folders; the embedded toy model first."""
    _check_kind(kind)
    # Safetensors only (never pickle); annotators may also be ONNX graphs (no code execution either).
    extensions = WEIGHT_EXTENSIONS + ((".onnx",) if kind == "vdot_annotators" else ())
    fp = _folder_paths()
    try:
        if fp is not None:
            names = [n for n in fp.get_filename_list(kind) if Path(n).suffix.lower() in extensions]
        else:
            names = _scan(models_dir() / kind, extensions)
    except VDOTInputError:
        names = []
    return ([EMBEDDED] if kind not in ("vdot_annotators", "loras", "vae_approx") else []) + names


def model_folders(kind: str) -> list[Path]:
    """ComfyUI's folders for ``models/<kind>`` (all of them, extra_model_paths included); [] when no
    ComfyUI and no root is set. Core receives these as data (it never imports this module)."""
    _check_kind(kind)
    fp = _folder_paths()
    try:
        return [Path(p) for p in fp.get_folder_paths(kind)] if fp is not None else [models_dir() / kind]
    except VDOTInputError:
        return []


def list_model_folders(kind: str = "diffusion_models") -> list[str]:
    """Diffusers folders (holding ``transformer/``) in ComfyUI's ``models/<kind>`` folders."""
    _check_kind(kind)
    fp = _folder_paths()
    try:
        roots = [Path(p) for p in fp.get_folder_paths(kind)] if fp is not None else [models_dir() / kind]
    except VDOTInputError:  # no ComfyUI and no root: nothing to list (declarations must still load)
        return []
    found = []
    for root in roots:
        if root.is_dir():
            found += sorted(p.name for p in root.iterdir() if (p / "transformer").is_dir())
    return found


def _reject_unsafe(name: str, input_name: str) -> None:
    if not isinstance(name, str) or any(ord(c) < 32 for c in name):
        raise VDOTInputError(input_name, f"{name!r} is not a plain file name (control characters or NUL)",
                             "use letters, digits, '_', '-', '.' and '/'")
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or name.startswith(("~", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise VDOTInputError(input_name, f"{name!r} is not a plain file name",
                             "pick a file from the list (absolute paths and '..' are not allowed in workflows)")


def model_path(kind: str, name: str, input_name: str = "model_name") -> Path:
    """Full path of a listed model file (or diffusers folder); anything not listed is refused."""
    _check_kind(kind)
    _reject_unsafe(name, input_name)
    fp = _folder_paths()
    if kind == "diffusion_models" and name in list_model_folders(kind):
        roots = [Path(p) for p in fp.get_folder_paths(kind)] if fp is not None else [models_dir() / kind]
        for root in roots:
            if (root / name / "transformer").is_dir():
                return root / name
    if name not in list_models(kind) or name == EMBEDDED:
        raise VDOTInputError(input_name, f"{name!r} is not in ComfyUI's models/{kind} folder",
                             f"put the file in models/{kind}/ and refresh (R), or pick one from the list")
    if fp is not None:
        return Path(fp.get_full_path(kind, name))
    return models_dir() / kind / name


def list_inputs(extensions) -> list[str]:
    """Files in ComfyUI's input folder with these extensions, then the pack's bundled examples (once:
    a copy of them in ``input/vdot_examples/`` lists under the same name)."""
    exts = tuple(e.lower() for e in extensions)
    try:
        names = _scan(input_dir(), exts)
    except VDOTInputError:
        names = []
    return list(dict.fromkeys(names + [EXAMPLES_PREFIX + n for n in _scan(EXAMPLES_DIR, exts)]))


def _confined(path: Path, root: Path, input_name: str, what: str) -> Path:
    """``path`` when its real location (symlinks resolved) is inside ``root``'s; a symlink that leads
    out of ComfyUI's folders is refused (a shared workflow must not read or write elsewhere)."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    try:
        inside = os.path.commonpath([real, real_root]) == real_root
    except ValueError:  # Windows: another drive
        inside = False
    if not inside:
        raise VDOTInputError(input_name, f"{path} leads (through a symlink) to {real}, outside ComfyUI's {what} folder",
                             f"copy the file into the {what} folder instead of linking to it")
    return path


def input_path(name: str, extensions=VIDEO_EXTENSIONS + IMAGE_EXTENSIONS, input_name: str = "file") -> Path:
    """Full path of a listed input file; absolute paths, ``..``, unlisted names and symlinks that
    lead out of the input folder (or the bundled examples) are refused."""
    _reject_unsafe(name, input_name)
    if name not in list_inputs(extensions):
        raise VDOTInputError(input_name, f"{name!r} is not in ComfyUI's input folder",
                             "upload the file (or copy it into ComfyUI/input/) and pick it from the list")
    # An example copied into input/vdot_examples/ (what the frontend previews) is read from there, so the
    # preview and the run show the same file; without a copy, the bundled one.
    if name.startswith(EXAMPLES_PREFIX) and not _in_input(name):
        return _confined(EXAMPLES_DIR / name[len(EXAMPLES_PREFIX):], EXAMPLES_DIR, input_name, "examples")
    return _confined(input_dir() / name, input_dir(), input_name, "input")


def _in_input(name: str) -> bool:
    try:
        return (input_dir() / name).is_file()
    except VDOTInputError:
        return False


def unique_output_path(filename_prefix: str, extension: str, root: Path | None = None) -> Path:
    """``<output>/<prefix>_00001_.<ext>`` with the first free counter; never an existing file.

    ``extension`` "" gives a folder name (for PNG frame sequences); ``root`` another folder than
    the output folder (the temp folder, for previews).
    """
    _reject_unsafe(filename_prefix, "filename_prefix")
    prefix = filename_prefix.strip() or "VDOT/video"
    _reject_unsafe(prefix, "filename_prefix")
    out = output_dir() if root is None else root
    target_dir = (out / prefix).parent
    stem = Path(prefix).name
    # Checked before and after creating the folders: a symlinked folder under output/ must not
    # receive a single directory or file.
    _confined(target_dir, out, "filename_prefix", "output")
    target_dir.mkdir(parents=True, exist_ok=True)
    _confined(target_dir, out, "filename_prefix", "output")
    suffix = f".{extension}" if extension else ""
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)_")
    used = [int(m.group(1)) for p in target_dir.iterdir() if (m := pattern.match(p.name))]
    counter = max(used, default=0) + 1
    while os.path.lexists(path := target_dir / f"{stem}_{counter:05d}_{suffix}"):
        counter += 1
    return path


class _TqdmBar:
    def __init__(self, total: int, desc: str):
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="step", leave=False)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)
        if self._bar.n >= self._bar.total:
            self._bar.close()

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        """ComfyUI's ``ProgressBar.update_absolute`` (a preview has nowhere to go here)."""
        if total is not None:
            self._bar.total = total
        self.update(value - self._bar.n)


def progress_bar(total: int, desc: str = "VDOT"):
    """ComfyUI's ProgressBar when running in ComfyUI, else a tqdm bar; both have ``update(n)`` and
    ``update_absolute(value, total)``."""
    try:
        import comfy.utils

        return comfy.utils.ProgressBar(total)
    except ImportError:
        return _TqdmBar(total, desc)


def torch_device():
    """ComfyUI's compute device when running in ComfyUI, else None (the pipeline picks cuda/cpu)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return None
    return mm.get_torch_device()


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel (no-op outside ComfyUI)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


class ComfyProgress(Progress):
    """The core :class:`~vdot_nodes.core.progress.Progress` on ComfyUI: its ProgressBar (a tqdm bar outside
    ComfyUI), its interrupt (Cancel raises ComfyUI's own exception between steps and chunks) and, given
    ``step_image`` (a sampler step's x0 latents → one frame ``[H, W, 3]`` in 0..1), a preview image per
    sampler step in the bar, as ComfyUI's own samplers show (off with ComfyUI's ``--preview-method none``,
    and outside ComfyUI, where a preview has nowhere to go)."""

    def __init__(self, total: int, desc: str = "VDOT", step_image=None):
        super().__init__(total)
        self.desc = desc
        self.bar = progress_bar(total, desc)
        settings = _comfy_preview_settings() if step_image is not None else None
        self._step_image = step_image if settings is not None and settings[0] else None
        self._preview_size = settings[1] if settings is not None else None
        self._pending = None  # the latest preview, shown with the next count

    def set_total(self, total: int) -> None:
        if int(total) != self.total:  # ComfyUI's bar takes its total when made: a new total, a new bar
            self.total, self.done = int(total), 0
            self.bar = progress_bar(self.total, self.desc)

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        if self._pending is None:
            self.bar.update(int(n))
        else:
            self.bar.update_absolute(self.done, self.total, self._pending)
            self._pending = None

    def check_cancel(self) -> None:
        check_interrupt()

    def preview(self, result) -> None:
        if self._step_image is None or not isinstance(result, SamplerStep):
            return
        import torch
        from PIL import Image

        frame = (self._step_image(result.x0) * 255).round().to(torch.uint8).cpu().numpy()
        self._pending = ("JPEG", Image.fromarray(frame), self._preview_size)


class SamplerCallbackProgress(Progress):
    """The core Progress as a ComfyUI sampler function's ``callback`` (k-diffusion style: each step's
    ``x``, ``i``, ``sigma``, ``denoised``; ComfyUI counts and previews steps from it) and its interrupt."""

    def __init__(self, callback, sigmas):
        super().__init__()
        self._callback, self._sigmas = callback, sigmas

    def check_cancel(self) -> None:
        check_interrupt()

    def preview(self, result) -> None:
        if self._callback is not None and isinstance(result, SamplerStep):
            sigma = self._sigmas[result.step]
            self._callback({"x": result.x, "i": result.step, "sigma": sigma, "sigma_hat": sigma,
                            "denoised": result.x0})


def make_progress(total: int, desc: str = "VDOT", step_image=None) -> ComfyProgress:
    """A :class:`ComfyProgress` (also callable as ``progress(done, total)``) ticking one bar; with
    ``step_image`` it shows each sampler step's preview too."""
    return ComfyProgress(total, desc, step_image)


def _comfy_preview_settings():
    """``(enabled, max size)`` of ComfyUI's own preview options (``--preview-method none`` turns ours off
    too); None outside ComfyUI, where a preview has nowhere to go."""
    try:
        from comfy.cli_args import LatentPreviewMethod, args
    except ImportError:
        return None
    return args.preview_method != LatentPreviewMethod.NoPreviews, getattr(args, "preview_size", 512)


def make_vae_progress(totals: dict[str, int]):
    """A ``vae_progress(phase, chunks_done)`` callback: one bar per phase ("encode", "decode") with the
    totals of ``vae_tiling.generate_chunk_totals``. Each ``vae_chunks`` block counts from 1 again, so
    the counts of successive blocks of one phase are added up."""
    bars: dict[str, object] = {}
    state = {phase: {"last": 0, "base": 0} for phase in totals}

    def progress(phase: str, done: int) -> None:
        total = max(int(totals.get(phase, 0)), 1)
        s = state.setdefault(phase, {"last": 0, "base": 0})
        if done <= s["last"]:  # a new block of this phase started
            s["base"] += s["last"]
        s["last"] = done
        if phase not in bars:
            bars[phase] = progress_bar(total, f"VAE {phase}")
        bar = bars[phase]
        bar.update_absolute(min(s["base"] + done, total), total)

    return progress


def make_cancel():  # the callback form, for loops that take ``cancel()`` (ComfyUI's SAMPLER)
    """A ``cancel()`` callback: raises ComfyUI's interrupt when pressed, else returns False."""

    def cancel() -> bool:
        check_interrupt()
        return False

    return cancel


def ksampler(sampler_function):
    """ComfyUI's SAMPLER object (``comfy.samplers.KSAMPLER``) around a k-diffusion style sampler function."""
    try:
        import comfy.samplers
    except ImportError:
        raise VDOTInputError("sampler", "a SAMPLER object needs ComfyUI (comfy.samplers is not importable)",
                             "use this node inside ComfyUI, or VDOT Sampler outside it") from None
    return comfy.samplers.KSAMPLER(sampler_function)


def model_loader(patcher, latent_shape):
    """A ``load()`` that brings a ComfyUI MODEL onto its device with its weight patches (LoRA) applied and room
    for a ``latent_shape`` batch, as ComfyUI's samplers do; None outside ComfyUI (nothing to load)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return None
    return lambda: mm.load_models_gpu([patcher], memory_required=patcher.memory_required(list(latent_shape)))


def wan_latent_format():
    """ComfyUI's Wan 2.1 latent format (normalisation of the Wan VAE's latents)."""
    try:
        import comfy.latent_formats
    except ImportError:
        raise VDOTInputError("vae", "ComfyUI's latent formats are not importable",
                             "use this node inside ComfyUI") from None
    return comfy.latent_formats.Wan21()
