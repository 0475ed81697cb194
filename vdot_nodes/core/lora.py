"""Wan LoRAs in the formats users download, applied to a ``WanVACETransformer3DModel``.

Formats read (safetensors only; pickles are refused unopened):

* **ComfyUI / Kijai / lightx2v**: ``diffusion_model.blocks.N.self_attn.q.lora_down.weight`` /
  ``.lora_up.weight`` (or ``lora_A`` / ``lora_B``), ``.alpha``, full-weight deltas ``.diff`` and
  bias deltas ``.diff_b`` — original Wan module names, with or without a prefix.
* **musubi-tuner / kohya**: ``lora_unet_blocks_N_self_attn_q.lora_down.weight`` + ``.alpha``:
  the original names with dots turned into underscores (Wan-Fun's ``lora_unet__`` too).
* **diffusers / PEFT**: ``transformer.blocks.N.attn1.to_q.lora_A.weight`` / ``lora_B.weight``
  (``lora_B.bias`` = a bias delta): diffusers module names.

Every entry is normalised to one internal form keyed by the ORIGINAL Wan module name
(``blocks.3.self_attn.q``, ``vace_blocks.0.after_proj``), which is what Wan checkpoints and
ComfyUI use. The in-memory model has diffusers names; the link between the two is diffusers' own
checkpoint converter (:func:`vdot_nodes.core.models.convert.wan_transformer.to_diffusers`), checked name by name, so
Wan blocks and VACE blocks are both reachable.

A patch changes a parameter by ``strength · (up @ down) · alpha / rank`` (alpha absent: alpha =
rank), plus ``strength · diff`` and ``strength · diff_b`` on the bias. It is either **merged**
into the weight or applied **on the fly** by a forward hook on the Linear
(``+ strength · alpha/rank · up(down(x))``): weights stored in fp8 are always patched on the fly,
since a rank-32 delta rounded into fp8 mostly vanishes. Keys that match nothing in the model are
reported (count and first names); a file of which nothing matches, or whose shapes do not fit
(a 14B or Wan2.2-5B LoRA on 1.3B), is a :class:`VDOTInputError` before any weight changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import VDOTInputError

logger = logging.getLogger(__name__)

__all__ = [
    "APPLY_MODES", "LoraFile", "LoraReport", "LoraSpec", "apply_loras", "applied", "check_lora", "check_lora_for_checkpoint",
    "parse_lora_arg",
    "read_lora",
]

APPLY_MODES = ("auto", "merge", "on_the_fly")
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# Wrappers trainers put in front of the module name.
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "unet.")
_KOHYA = re.compile(r"^(?:lora_unet__?|lycoris_)(.+)$")
# Suffix -> role. Order matters: longest first.
_SUFFIXES = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"), (".lora_B.bias", "diff_b"),
    (".alpha", "alpha"), (".diff_b", "diff_b"), (".diff", "diff"),
)
_UNSUPPORTED = (".dora_scale", ".lora_mid.weight")


@dataclass
class ModulePatch:
    """One module's change, keyed by its original Wan name in :class:`LoraFile`."""

    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None
    diff: torch.Tensor | None = None
    diff_b: torch.Tensor | None = None
    keys: list[str] = field(default_factory=list)  # the file keys it came from

    @property
    def rank(self) -> int | None:
        return None if self.down is None else int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """alpha / rank (1 when the file has no alpha: kohya's and PEFT's convention)."""
        if self.down is None or self.alpha is None:
            return 1.0
        return float(self.alpha) / self.rank

    def delta(self) -> torch.Tensor:
        """``(up @ down) · alpha/rank`` in fp32, shaped like the 2-D (or flattened conv) weight."""
        return (self.up.float().flatten(1) @ self.down.float().flatten(1)) * self.scale


@dataclass
class LoraFile:
    """A LoRA as read from disk: patches by original Wan module name, plus what was not understood."""

    name: str
    format: str  # "comfy" | "kohya" | "diffusers" (the majority of its keys)
    stems: dict[str, ModulePatch]  # file stem (prefix stripped) -> patch; resolved against a model later
    unknown_keys: list[str]  # keys with no LoRA role (e.g. DoRA scales, LoCon mids)


@dataclass(frozen=True)
class LoraSpec:
    """What to apply: a file (path or :class:`LoraFile` already read), a strength and how
    (``auto``: merge unless the weight is stored in fp8; ``merge``; ``on_the_fly``)."""

    path: "str | LoraFile"
    strength: float = 1.0
    mode: str = "auto"


@dataclass
class LoraReport:
    name: str
    format: str
    strength: float
    merged: list[str] = field(default_factory=list)  # original module names merged into weights
    on_the_fly: list[str] = field(default_factory=list)  # original module names hooked
    excluded: list[str] = field(default_factory=list)  # matched but filtered out (e.g. VACE blocks in AccWanInit)
    unmatched: list[str] = field(default_factory=list)  # file keys that match nothing in the model

    def summary(self) -> str:
        parts = [f"LoRA {self.name} ({self.format} format, strength {self.strength:g}):"]
        if self.merged:
            parts.append(f"{len(self.merged)} modules merged")
        if self.on_the_fly:
            parts.append(f"{len(self.on_the_fly)} modules on the fly")
        if self.excluded:
            parts.append(f"{len(self.excluded)} modules left out ({', '.join(self.excluded[:2])}, ...)")
        if self.unmatched:
            parts.append(f"{len(self.unmatched)} keys matched nothing in the model (first: {', '.join(self.unmatched[:4])})")
        else:
            parts.append("every key matched")
        return " ".join(parts[:1]) + " " + "; ".join(parts[1:])


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def parse_lora_arg(text: str, input_name: str = "lora") -> tuple[str, float]:
    """``FILE[:STRENGTH]`` -> ``(FILE, STRENGTH)``; a colon not followed by a number is part of the path."""
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            pass
    if not text:
        raise VDOTInputError(input_name, "is empty", "give FILE or FILE:STRENGTH, e.g. my_lora.safetensors:0.8")
    return text, 1.0


def read_lora(path, input_name: str = "lora") -> LoraFile:
    """Read a LoRA file into patches keyed by its module stems (resolved to a model by :func:`apply_loras`)."""
    from safetensors import safe_open

    from .models.files import pickle_hint, refuse_non_safetensors

    path = Path(path).expanduser()
    if not path.is_file():
        raise VDOTInputError(input_name, f"{path} does not exist", "check the path; ComfyUI keeps LoRAs in models/loras")
    refuse_non_safetensors(path, input_name)
    try:
        with safe_open(path, framework="pt") as st:
            metadata = st.metadata() or {}
            tensors = {k: st.get_tensor(k) for k in st.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise VDOTInputError(input_name, f"{path.name} is not a readable safetensors file ({pickle_hint(path) or e})",
                             "download it again (it may be truncated)") from None
    if not tensors:
        raise VDOTInputError(input_name, f"{path.name} holds no tensors", "use a LoRA file")
    return lora_from_state_dict(tensors, path.name, metadata, input_name)


def lora_from_state_dict(tensors: dict[str, torch.Tensor], name: str = "<lora>", metadata: dict | None = None,
                         input_name: str = "lora") -> LoraFile:
    stems: dict[str, ModulePatch] = {}
    unknown: list[str] = []
    votes = {"comfy": 0, "kohya": 0, "diffusers": 0}
    for key, tensor in tensors.items():
        if key.endswith(_UNSUPPORTED) or re.search(r"\.(dora_scale|hada_|lokr_)", key):
            unknown.append(key)
            continue
        role = next(((suffix, r) for suffix, r in _SUFFIXES if key.endswith(suffix)), None)
        if role is None:
            unknown.append(key)
            continue
        stem = key[: -len(role[0])]
        m = _KOHYA.match(stem)
        if m:
            stem, kind = "_" + m.group(1), "kohya"  # leading "_" marks an underscore name
        else:
            for prefix in _PREFIXES:
                if stem.startswith(prefix):
                    stem = stem[len(prefix):]
                    break
            kind = "diffusers" if re.search(r"\.(attn[12]|proj_out|proj_in|ffn\.net|condition_embedder)\b", stem) else "comfy"
        votes[kind] += 1
        patch = stems.setdefault(stem, ModulePatch())
        patch.keys.append(key)
        if role[1] == "alpha":
            patch.alpha = float(tensor.float().reshape(-1)[0])
        else:
            setattr(patch, role[1], tensor)
    for stem, patch in stems.items():
        if (patch.down is None) != (patch.up is None):
            have = "down" if patch.down is not None else "up"
            raise VDOTInputError(input_name, f"{name}: {patch.keys[0]} has a LoRA {have} matrix but no "
                                 f"{'up' if have == 'down' else 'down'} matrix", "the file is incomplete; download it again")
        if patch.down is not None and patch.up.shape[1] != patch.down.shape[0]:
            raise VDOTInputError(input_name, f"{name}: {patch.keys[0]}: up {list(patch.up.shape)} and down "
                                 f"{list(patch.down.shape)} have different ranks", "the file is damaged; download it again")
    for marker, what in (("dora_scale", "a DoRA (it rescales weights)"), (".hada_", "a LyCORIS LoHa"),
                         (".lokr_", "a LyCORIS LoKr")):
        found = [k for k in unknown if marker in k]
        if found:
            raise VDOTInputError(input_name, f"{name} is {what}, not a plain LoRA ({len(found)} such tensors, e.g. "
                                 f"{found[0]})", "use a plain LoRA (lora_down/lora_up, lora_A/lora_B or diff)")
    alpha = _metadata_alpha(metadata or {})
    if alpha is not None:
        for patch in stems.values():
            if patch.alpha is None and patch.down is not None:
                patch.alpha = alpha
    fmt = max(votes, key=votes.get)
    return LoraFile(name, fmt, stems, unknown)


def _metadata_alpha(metadata: dict) -> float | None:
    """diffusers writes PEFT's ``lora_alpha`` into ``lora_adapter_metadata``; one global alpha only."""
    raw = metadata.get("lora_adapter_metadata") or metadata.get("ss_network_alpha")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if isinstance(value, dict):
        if value.get("alpha_pattern") or value.get("rank_pattern"):
            logger.warning("LoRA metadata has per-module alpha/rank patterns; only the global lora_alpha is used")
        value = value.get("lora_alpha")
    return float(value) if isinstance(value, (int, float)) else None


# --------------------------------------------------------------------------------------------
# Names: original Wan <-> diffusers, for one model
# --------------------------------------------------------------------------------------------

_TO_ORIGINAL = (
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"\.attn1\.", ".self_attn."), (r"\.attn2\.", ".cross_attn."),
    (r"\.to_out\.0\.", ".o."), (r"\.to_q\.", ".q."), (r"\.to_k\.", ".k."), (r"\.to_v\.", ".v."),
    (r"\.add_k_proj\.", ".k_img."), (r"\.add_v_proj\.", ".v_img."), (r"\.norm_added_k\.", ".norm_k_img."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."), (r"\.ffn\.net\.2\.", ".ffn.2."),
    (r"^(vace_blocks\.\d+)\.proj_in\.", r"\1.before_proj."), (r"^(vace_blocks\.\d+)\.proj_out\.", r"\1.after_proj."),
    (r"^proj_out\.", "head.head."),
    (r"^((?:vace_)?blocks\.\d+)\.scale_shift_table$", r"\1.modulation"), (r"^scale_shift_table$", "head.modulation"),
)


def _candidate_original(name: str) -> str:
    for pattern, repl in _TO_ORIGINAL:
        name = re.sub(pattern, repl, name)
    # diffusers swapped Wan's norm2 / norm3 (Wan: norm3 = cross-attention norm).
    return re.sub(r"\.norm([23])\.", lambda m: ".norm3." if m.group(1) == "2" else ".norm2.", name)


def original_names(model) -> dict[str, str]:
    """``{original Wan parameter name: diffusers parameter name}`` for every parameter of ``model``.

    Candidates come from inverting the renames; each is kept only if diffusers' own converter
    (the one the loaders use) maps it back to exactly that diffusers name.
    """
    from .models.convert.wan_transformer import to_diffusers

    params = [n for n, _ in model.named_parameters()]
    candidates = {_candidate_original(n): n for n in params}
    forward = to_diffusers(candidates)  # diffusers name -> original name
    return {orig: dif for dif, orig in forward.items() if candidates.get(orig) == dif}


# --------------------------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------------------------


@dataclass
class _Target:
    original: str  # original module name
    patch: ModulePatch
    weight: str | None  # diffusers parameter names
    bias: str | None


def _resolve(lora: LoraFile, names: dict[str, str]):
    """Map the file's stems to the model's parameters; returns (targets, unmatched keys)."""
    modules = {}  # original module (or bare parameter) name -> (weight param, bias param)
    for orig, dif in names.items():
        if orig.endswith(".weight"):
            modules.setdefault(orig[:-7], [None, None])[0] = dif
        elif orig.endswith(".bias"):
            modules.setdefault(orig[:-5], [None, None])[1] = dif
        else:  # a bare parameter such as blocks.N.modulation
            modules.setdefault(orig, [None, None])[0] = dif
    by_diffusers = {}
    for orig, (w, b) in modules.items():
        for p in (w, b):
            if p is not None:
                by_diffusers[p.rsplit(".", 1)[0] if p.endswith((".weight", ".bias")) else p] = orig
    underscored = {orig.replace(".", "_"): orig for orig in modules}
    targets, unmatched = [], list(lora.unknown_keys)
    for stem, patch in lora.stems.items():
        if stem.startswith("_"):
            orig = underscored.get(stem[1:])
        else:
            orig = stem if stem in modules else by_diffusers.get(stem)
        if orig is None:
            unmatched += patch.keys
            continue
        w, b = modules[orig]
        targets.append(_Target(orig, patch, w, b))
    return targets, unmatched


def _check_shapes(lora: LoraFile, targets: list[_Target], params: dict, input_name: str) -> None:
    for t in targets:
        p, k = t.patch, t.patch.keys[0]
        weight = params[t.weight] if t.weight else None
        problem = None
        if p.down is not None:
            if weight is None or weight.ndim < 2:
                problem = f"{t.original} has no matrix weight to apply lora_up/lora_down to"
            else:
                flat = (weight.shape[0], weight[0].numel())
                if (p.up.shape[0], p.down[0].numel()) != flat:
                    problem = (f"{k}: the LoRA maps {p.down[0].numel()} -> {p.up.shape[0]} features but "
                               f"{t.original} is {list(weight.shape)}")
        if problem is None and p.diff is not None and (weight is None or tuple(p.diff.shape) != tuple(weight.shape)):
            problem = f"{k}: diff {list(p.diff.shape)} but {t.original} is {list(weight.shape) if weight is not None else 'absent'}"
        if problem is None and p.diff_b is not None:
            bias = params[t.bias] if t.bias else None
            if bias is None or tuple(p.diff_b.shape) != tuple(bias.shape):
                problem = (f"{k}: diff_b {list(p.diff_b.shape)} but the bias of {t.original} is "
                           f"{list(bias.shape) if bias is not None else 'absent'}")
        if problem:
            raise VDOTInputError(
                input_name, f"{lora.name} does not fit this model: {problem}",
                "use a LoRA made for this Wan2.1 size (a 14B LoRA does not fit 1.3B; Wan2.2-5B LoRAs fit neither)",
            )


class _OnTheFly:
    """Forward hook on a Linear: ``out += strength·scale·up(down(x)) + strength·(x @ diffᵀ + diff_b)``."""

    def __init__(self, patch: ModulePatch, strength: float):
        self.strength = strength
        self.patch = patch
        self._cache: dict = {}

    def _tensors(self, device, dtype):
        key = (device, dtype)
        if key not in self._cache:
            p, s = self.patch, self.strength
            self._cache = {key: (
                None if p.down is None else p.down.to(device, dtype),
                None if p.up is None else (p.up.float() * (s * p.scale)).to(device, dtype),
                None if p.diff is None else (p.diff.float() * s).to(device, dtype),
                None if p.diff_b is None else (p.diff_b.float() * s).to(device, dtype),
            )}
        return self._cache[key]

    def __call__(self, module, args, output):
        x = args[0]
        down, up, diff, diff_b = self._tensors(x.device, x.dtype)
        extra = 0
        if down is not None:
            extra = torch.nn.functional.linear(torch.nn.functional.linear(x, down), up)
        if diff is not None:
            extra = extra + torch.nn.functional.linear(x, diff)
        if diff_b is not None:
            extra = extra + diff_b
        return output + extra.to(output.dtype)


def _stored_in_fp8(module) -> bool:
    return any(p.dtype in FP8_DTYPES for p in module.parameters(recurse=False))


def _set_param(model, name: str, value: torch.Tensor) -> torch.nn.Parameter:
    """Replace a parameter object (not its storage), returning the old one."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    old = getattr(module, attr)
    if not isinstance(value, torch.nn.Parameter):
        value = torch.nn.Parameter(value, requires_grad=old.requires_grad)
    setattr(module, attr, value)
    return old


class _Applied:
    """What :func:`apply_loras` changed, so :meth:`undo` can put the original parameters back."""

    def __init__(self):
        self.originals: dict[str, torch.nn.Parameter] = {}
        self.hooks: list = []
        self.reports: list[LoraReport] = []

    def undo(self, model) -> None:
        for handle in self.hooks:
            handle.remove()
        for name, original in self.originals.items():
            current = model.get_parameter(name)
            if original.device != current.device:  # the pipeline moved the model meanwhile
                original.data = original.data.to(current.device)
            _set_param(model, name, original)
        self.hooks, self.originals = [], {}


def _plan(item, names: dict, params: dict, input_name: str):
    spec = item if isinstance(item, LoraSpec) else LoraSpec(*item)
    if spec.mode not in APPLY_MODES:
        raise VDOTInputError(input_name, f"unknown apply mode {spec.mode!r}", f"use one of {', '.join(APPLY_MODES)}")
    lora = spec.path if isinstance(spec.path, LoraFile) else read_lora(spec.path, input_name)
    targets, unmatched = _resolve(lora, names)
    if not targets:
        first = ", ".join(k for p in list(lora.stems.values())[:3] for k in p.keys[:1]) or ", ".join(lora.unknown_keys[:3])
        raise VDOTInputError(
            input_name, f"none of the {sum(len(p.keys) for p in lora.stems.values()) + len(lora.unknown_keys)} keys "
            f"of {lora.name} match a Wan-VACE module (first: {first})",
            "use a Wan2.1 LoRA (T2V or VACE) in ComfyUI, musubi/kohya or diffusers format",
        )
    _check_shapes(lora, targets, params, input_name)
    return spec, lora, targets, unmatched


def check_lora(model, lora: LoraFile, input_name: str = "lora") -> LoraReport:
    """Check that ``lora`` fits ``model`` (names, shapes) without changing it; the report lists what would
    be patched (as ``merged``) and what matched nothing."""
    model = getattr(model, "_orig_mod", model)
    _, _, targets, unmatched = _plan((lora, 1.0), original_names(model), dict(model.named_parameters()), input_name)
    return LoraReport(lora.name, lora.format, 1.0, merged=[t.original for t in targets], unmatched=unmatched)


def check_lora_for_checkpoint(path, loras: Iterable[LoraSpec], input_name: str = "lora") -> list[LoraReport]:
    """:func:`check_lora` against a transformer checkpoint's architecture, read from its header (no weights are
    loaded: the model is built on the meta device), so a LoRA that does not fit fails before a 14B load.
    A checkpoint whose architecture cannot be read is left to the loader to report (returns [])."""
    from accelerate import init_empty_weights
    from diffusers import WanVACETransformer3DModel

    from .models import Checkpoint

    try:
        info = Checkpoint.open(path, "transformer", "model").identify()
    except VDOTInputError:
        return []
    if info.kind != "transformer" or info.variant != "vace" or not info.config:
        return []
    with init_empty_weights():
        model = WanVACETransformer3DModel.from_config(info.config)
    return [check_lora(model, spec.path if isinstance(spec.path, LoraFile) else read_lora(spec.path, input_name),
                       input_name) for spec in loras]


@torch.no_grad()
def apply_loras(model, loras: Iterable[LoraSpec | tuple], *, exclude_prefixes: tuple[str, ...] = (),
                keep_originals: bool = False, input_name: str = "lora") -> _Applied:
    """Apply LoRAs to ``model`` (a ``WanVACETransformer3DModel``); returns what changed.

    ``loras``: :class:`LoraSpec` or ``(path_or_LoraFile, strength[, mode])``. ``exclude_prefixes``
    (original names, e.g. ``("vace_blocks.", "vace_patch_embedding.")``) leaves those modules as they
    are. ``keep_originals``: merged weights become new parameters and the originals are kept for
    :meth:`_Applied.undo` (the model's own tensors are never written); otherwise they are updated in
    place. Every file is read and checked (names, shapes) before the first weight changes.
    """
    model = getattr(model, "_orig_mod", model)
    names = original_names(model)
    params = dict(model.named_parameters())
    plans = [_plan(item, names, params, input_name) for item in loras]
    # Decide every target's handling before the first change, so an error leaves the model as it was.
    decided = [(spec, lora, unmatched, [(t, *_how(model, t, spec, exclude_prefixes, input_name)) for t in targets])
               for spec, lora, targets, unmatched in plans]
    done = _Applied()
    try:
        for spec, lora, unmatched, targets in decided:
            report = LoraReport(lora.name, lora.format, spec.strength, unmatched=unmatched)
            for t, how, module in targets:
                if how == "excluded":
                    report.excluded.append(t.original)
                elif how == "on_the_fly":
                    done.hooks.append(module.register_forward_hook(_OnTheFly(t.patch, spec.strength)))
                    report.on_the_fly.append(t.original)
                else:
                    _merge(model, t, spec.strength, done, keep_originals)
                    report.merged.append(t.original)
            if report.unmatched:
                logger.warning("%s", report.summary())
            else:
                logger.info("%s", report.summary())
            done.reports.append(report)
    except Exception:
        done.undo(model)
        raise
    return done


def _how(model, t: _Target, spec: LoraSpec, exclude_prefixes: tuple[str, ...], input_name: str):
    """``(excluded | on_the_fly | merge, module)`` for one target. On the fly works on Linear layers; other
    targets (norms, bare parameters) are merged, which fp8 storage (Linear/Conv only) never concerns."""
    if t.original.startswith(exclude_prefixes):
        return "excluded", None
    module = model.get_submodule(t.weight.rsplit(".", 1)[0]) if t.weight and "." in t.weight else model
    fp8 = t.weight is not None and t.weight.endswith(".weight") and _stored_in_fp8(module)
    mode = spec.mode if spec.mode != "auto" else ("on_the_fly" if fp8 else "merge")
    if mode == "on_the_fly" and not isinstance(module, torch.nn.Linear):
        if fp8:
            raise VDOTInputError(input_name, f"{t.original} is stored in fp8 and is not a Linear layer, so the LoRA "
                                 "can be neither merged (fp8 would round it away) nor added on the fly",
                                 "load the model in bf16")
        mode = "merge"
    if mode == "merge" and fp8:
        raise VDOTInputError(input_name, f"{t.original} is stored in fp8: merging the LoRA would round it away",
                             "use apply auto or on_the_fly (the default for fp8 weights)")
    return mode, module


def _merge(model, t: _Target, strength: float, done: _Applied, keep_originals: bool) -> None:
    p = t.patch
    for pname, delta in ((t.weight, _weight_delta(p)), (t.bias, p.diff_b)):
        if delta is None or pname is None:
            continue
        param = model.get_parameter(pname)  # a previous LoRA may have replaced it already
        new = (param.float() + strength * delta.to(param.device).float().reshape(param.shape)).to(param.dtype)
        if keep_originals:
            old = _set_param(model, pname, new)
            done.originals.setdefault(pname, old)
        else:
            param.copy_(new)


def _weight_delta(p: ModulePatch) -> torch.Tensor | None:
    delta = None
    if p.down is not None:
        delta = p.delta()
    if p.diff is not None:
        delta = p.diff.float() if delta is None else delta + p.diff.float().reshape(delta.shape)
    return delta


@contextlib.contextmanager
def applied(model, loras: Iterable[LoraSpec], input_name: str = "lora") -> Iterator[list[LoraReport]]:
    """Apply LoRAs for the duration of a block and restore the model exactly afterwards.

    For models shared between runs (the ComfyUI loader's cached model): merged weights are new
    tensors while the block runs, hooks are removed after it, and the original parameters go back
    in place, so the next run (another strength, no LoRA, another graph) starts from them.
    """
    loras = list(loras)
    if not loras:
        yield []
        return
    done = apply_loras(model, loras, keep_originals=True, input_name=input_name)
    try:
        yield done.reports
    finally:
        done.undo(getattr(model, "_orig_mod", model))
