"""Write the shipped workflows, the one source of ``workflows/``:

* ``vdot_<task>.json`` — one per VCU task, plus ``vdot_long_t2v.json``: on the embedded toy model at its
  native 64×64, 5 frames, so a Run takes seconds on a CPU (the tests execute each at these defaults);
* ``vdot_14b_<task>.json`` — the same graphs set for VDOT-14B at 480p (832×480, 81 frames, preset ``vdot``),
  loaders on the converted / Comfy-Org file names so the frontend offers the downloads it can
  (validated by the tests, not executed);
* ``vdot_native_t2v.json`` (VDOT-14B on ComfyUI's own nodes with VDOT Sigmas) and
  ``vdot_lora_baseline_t2v.json`` (Wan2.1-VACE-14B + a step-distilled LoRA), both validated;
* ``api/<name>.json`` — the API-format twin of each (what the tests execute), and ``README.md``.

Each graph is described once in Python (:func:`describe` and friends); node positions come from
:func:`layout` (left to right by data flow, groups in bands, titles clear of nodes) and widget order
from the node classes themselves (``INPUT_TYPES``). ComfyUI lists only ``workflows/*.json`` as
templates (its glob is one folder deep), so the API twins in ``workflows/api/`` stay out of the browser.

    python tools/build_workflows.py            # rewrite workflows/ from the descriptions
    python tools/build_workflows.py --check    # exit 1 if a shipped file differs (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vdot_nodes.core.atomic import atomic_write_text  # noqa: E402
from vdot_nodes.core.long_video import DEFAULT_OVERLAP, DEFAULT_WINDOW  # noqa: E402
from vdot_nodes.core.source_prep import OFFICIAL_POLICY, TOY_POLICY  # noqa: E402
from vdot_nodes.core.tasks import TASKS  # noqa: E402
from vdot_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from vdot_nodes.nodes.comfy import EMBEDDED, has_control_widget  # noqa: E402
from vdot_nodes.nodes.text import DEFAULT_NEGATIVE  # noqa: E402

WORKFLOW_DIR = ROOT / "workflows"
API_DIR = WORKFLOW_DIR / "api"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
SEED = 42
FPS = 16.0  # Wan's frame rate

HF = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
VDOT_RELEASE = "https://huggingface.co/yutongwang1012/VDOT"
# Downloadable files (name, url) by ComfyUI model folder: Wan2.1's text encoder and VAE, which our loaders
# read as Comfy-Org repackaged them, and the undistilled Wan2.1-VACE-14B (the LoRA baseline's base).
MODEL_FILES = {
    "diffusion_models": ("wan2.1_vace_14B_fp16.safetensors", f"{HF}/diffusion_models/wan2.1_vace_14B_fp16.safetensors"),
    "vae": ("wan_2.1_vae.safetensors", f"{HF}/vae/wan_2.1_vae.safetensors"),
    "text_encoders": ("umt5_xxl_fp16.safetensors", f"{HF}/text_encoders/umt5_xxl_fp16.safetensors"),
}
# What `vdot convert` writes from the official release (vdot_nodes/convert_cli.py); the transformer ships
# only as a pickle, so it has no download link: the notes say how to convert it.
CONVERTED = {"diffusion_models": [f"vdot_14b_{d}.safetensors" for d in ("bf16", "fp16", "fp8_e4m3fn")],
             "text_encoders": [f"umt5_xxl_{d}.safetensors" for d in ("bf16", "fp16", "fp8_e4m3fn")],  # fp16 = Comfy-Org's
             "vae": ["wan_2.1_vae.safetensors"]}


@dataclass(frozen=True)
class Setup:
    """What a set of workflows is set for: model files, size, sampler preset."""

    key: str
    stem: str  # file names: <stem><task>.json
    width: int
    height: int
    frames: int
    model: str
    vae: str
    text_encoder: str
    preset: str
    outpaint_side: int  # pixels added left and right by the outpaint workflow
    keep_frames: int  # frames the extension workflow keeps
    long_frames: int  # the long-video workflow: frames, window, overlap
    long_window: int
    long_overlap: int
    prompts: dict


# The toy's prompts stay inside its caption grammar (training/toy/captions.py): it knows nothing else.
TOY_PROMPTS = {"t2v": "a green square moves right over a white checkered background",
               "r2v": "a yellow triangle moves up and right over a grey plain background",
               "pose": "a blue stick figure walks right over a grey striped background",
               "": "a red circle moves right over a brown striped background"}
REAL_PROMPTS = {"t2v": "A red ball bounces across a sunlit wooden floor, soft shadows, slow camera pan, cinematic.",
                "r2v": "A golden star-shaped toy spins slowly on a white table, studio lighting, smooth camera orbit.",
                "pose": "A person in a blue jacket walks across a city street at dusk, cinematic lighting.",
                "": "A red ball rolls across a striped wooden floor in a bright room, soft shadows, smooth camera motion."}
# The embedded toy at its native size (the size it was trained on), distilled with the re-noising rollout.
TOY = Setup("toy", "vdot_", TOY_POLICY.width, TOY_POLICY.height, TOY_POLICY.default_frames, EMBEDDED, EMBEDDED,
            EMBEDDED, "renoise", 16, 1, 13, 5, 1, TOY_PROMPTS)
# VDOT-14B at 480p, 5 s at 16 fps, with the official sampler.
REAL = Setup("14b", "vdot_14b_", OFFICIAL_POLICY.width, OFFICIAL_POLICY.height, OFFICIAL_POLICY.default_frames,
             CONVERTED["diffusion_models"][0], MODEL_FILES["vae"][0], MODEL_FILES["text_encoders"][0], "vdot", 96, 17,
             145, DEFAULT_WINDOW, DEFAULT_OVERLAP, REAL_PROMPTS)
SETUPS = (TOY, REAL)
LONG = "long_t2v"

CONTROL_LABEL = {"depth": "depth map", "pose": "pose skeleton", "flow": "optical flow", "grey": "greyscale",
                 "scribble": "scribble"}
# Control kinds with a bundled control video; the others are made from the source by a preprocess node.
BUNDLED_CONTROL = {"depth": "vdot_examples/ball_depth.mp4", "pose": "vdot_examples/walk_pose.mp4"}
SOURCE_VIDEO = "vdot_examples/ball.mp4"
REFERENCE_IMAGE = "vdot_examples/star_reference.png"
FIRST_FRAME = "vdot_examples/ball_first_frame.png"
MASK_IMAGE = "vdot_examples/box_mask.png"
LOAD_CAP = 81  # frames VDOT Load Video reads (the bundled examples have 81); Fit Video picks from them

# --- ComfyUI's own nodes, for the native workflow ----------------------------------------------------
# Their declarations as ComfyUI (Comfy-Org/ComfyUI at a125cd84) has them — nodes.py, comfy_extras/nodes_wan.py,
# nodes_custom_sampler.py, nodes_video.py — pinned as data, since ComfyUI is not importable here. Only what a
# workflow file needs: input order, types, widget ranges, outputs. File-name combos list the files
# `vdot convert` writes (ComfyUI offers whatever is in the model folder).
COMFY_SAMPLER_NAMES = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral",
    "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu",
    "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc",
    "uni_pc_bh2"]
_RES = {"min": 16, "max": 16384, "step": 16}
NATIVE_NODES: dict[str, tuple[dict, tuple, tuple]] = {  # type: (INPUT_TYPES, RETURN_TYPES, RETURN_NAMES)
    "UNETLoader": ({"required": {"unet_name": (CONVERTED["diffusion_models"],),
                                 "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],)}},
                   ("MODEL",), ("MODEL",)),
    "CLIPLoader": ({"required": {"clip_name": (CONVERTED["text_encoders"],),
                                 "type": (["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv",
                                           "pixart", "cosmos", "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2",
                                           "qwen_image", "hunyuan_image"],),
                                 "device": (["default", "cpu"], {"advanced": True})}}, ("CLIP",), ("CLIP",)),
    "VAELoader": ({"required": {"vae_name": (CONVERTED["vae"],)}}, ("VAE",), ("VAE",)),
    "CLIPTextEncode": ({"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}},
                       ("CONDITIONING",), ("CONDITIONING",)),
    "WanVaceToVideo": ({"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "vae": ("VAE",),
                                     "width": ("INT", {"default": 832, **_RES}), "height": ("INT", {"default": 480, **_RES}),
                                     "length": ("INT", {"default": 81, "min": 1, "max": 16384, "step": 4}),
                                     "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                                     "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1000.0, "step": 0.01})},
                        "optional": {"control_video": ("IMAGE",), "control_masks": ("MASK",),
                                     "reference_image": ("IMAGE",)}},
                       ("CONDITIONING", "CONDITIONING", "LATENT", "INT"), ("positive", "negative", "latent", "trim_latent")),
    "KSamplerSelect": ({"required": {"sampler_name": (COMFY_SAMPLER_NAMES,)}}, ("SAMPLER",), ("SAMPLER",)),
    "RandomNoise": ({"required": {"noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                                         "control_after_generate": True})}}, ("NOISE",), ("NOISE",)),
    "CFGGuider": ({"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1})}},
                  ("GUIDER",), ("GUIDER",)),
    "SamplerCustomAdvanced": ({"required": {"noise": ("NOISE",), "guider": ("GUIDER",), "sampler": ("SAMPLER",),
                                            "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)}},
                              ("LATENT", "LATENT"), ("output", "denoised_output")),
    "VAEDecode": ({"required": {"samples": ("LATENT",), "vae": ("VAE",)}}, ("IMAGE",), ("IMAGE",)),
    "CreateVideo": ({"required": {"images": ("IMAGE",), "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0,
                                                                          "step": 1.0})},
                     "optional": {"audio": ("AUDIO",)}}, ("VIDEO",), ("VIDEO",)),
    "SaveVideo": ({"required": {"video": ("VIDEO",), "filename_prefix": ("STRING", {"default": "video/ComfyUI"}),
                                "format": (["auto", "mp4"],), "codec": (["auto", "h264"],)}}, (), ()),
}




def _spec_class(type_: str, inputs: dict, returns: tuple, names: tuple) -> type:
    return type(type_, (), {"INPUT_TYPES": classmethod(lambda cls: inputs), "RETURN_TYPES": returns,
                            "RETURN_NAMES": names})


NATIVE_CLASSES = {name: _spec_class(name, *spec) for name, spec in NATIVE_NODES.items()}
ALL_CLASSES = {**NODE_CLASS_MAPPINGS, **NATIVE_CLASSES}
# ComfyUI's own sampler closest to the official FlowUniPC (benchmarks/bench_comfy_sampler_parity.py); the
# workflow uses our VDOT FlowUniPC SAMPLER, which is exact, and the note names this one as the alternative.
NATIVE_SAMPLER = "ipndm"
NATIVE_WORKFLOW = "vdot_native_t2v"
LORA_WORKFLOW = "vdot_lora_baseline_t2v"


# --- graphs --------------------------------------------------------------------------------------

# Groups, each in a band: "Load models" then "Prompt" side by side on top, "Inputs" below them, then
# "Sampling" and "Output" to the right of everything. Data flows left to right.
GROUPS = ("Load models", "Prompt", "Inputs", "Sampling", "Output")
BANDS = (("Load models", "Prompt"), ("Inputs",), ("Sampling",), ("Output",))
GROUP_COLOR = {"Load models": "#3f789e", "Prompt": "#3f789e", "Inputs": "#8A8", "Sampling": "#b06634",
               "Output": "#444"}


@dataclass
class Node:
    id: int
    type: str
    widgets: dict
    group: str
    links: dict = field(default_factory=dict)  # input name -> (source node id, output slot)
    properties: dict = field(default_factory=dict)
    pos: tuple = (0, 0)
    size: tuple = (0, 0)


@dataclass
class Graph:
    name: str  # the file stem
    nodes: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # (type, title, text, height)

    def add(self, type_: str, group: str, widgets: dict | None = None, links: dict | None = None,
            properties: dict | None = None) -> int:
        if group not in GROUPS:
            raise ValueError(f"unknown group {group!r}")
        node = Node(len(self.nodes) + 1, type_, widgets or {}, group, links or {}, properties or {})
        self.nodes.append(node)
        return node.id

    def node(self, type_: str) -> Node:
        (found,) = [n for n in self.nodes if n.type == type_]
        return found


def downloads(node_type: str, value: str) -> dict:
    """properties.models for a loader set to a downloadable file (the frontend offers a download only where
    the widget's value is that file's name); none otherwise."""
    folder = {"VDOTModelLoader": "diffusion_models", "VDOTVAELoader": "vae",
              "VDOTTextEncoderLoader": "text_encoders", "CLIPLoader": "text_encoders", "VAELoader": "vae",
              "UNETLoader": "diffusion_models"}[node_type]
    name, url = MODEL_FILES[folder]
    return {"models": [{"name": name, "url": url, "directory": folder}]} if value == name else {}


def _loaders(g: Graph, setup: Setup) -> tuple[int, int, int]:
    model = g.add("VDOTModelLoader", "Load models", {"model_name": setup.model, "precision": "bf16", "offload": "model",
                                                    "ram_budget_gb": 0.0, "vram_budget_gb": 0.0},
                  properties=downloads("VDOTModelLoader", setup.model))
    vae = g.add("VDOTVAELoader", "Load models", {"vae_name": setup.vae, "precision": "fp32"},
                properties=downloads("VDOTVAELoader", setup.vae))
    text_encoder = g.add("VDOTTextEncoderLoader", "Load models", {"text_encoder_name": setup.text_encoder,
                                                                 "precision": "bf16"},
                         properties=downloads("VDOTTextEncoderLoader", setup.text_encoder))
    return model, vae, text_encoder


def _load_video(g: Graph, setup: Setup, video: str, width: int | None = None) -> int:
    load = g.add("VDOTLoadVideo", "Inputs", {"video": video, "frame_load_cap": LOAD_CAP, "skip_first_frames": 0,
                                             "select_every_nth": 1})
    return g.add("VDOTFitVideo", "Inputs", {"width": width or setup.width, "height": setup.height,
                                            "num_frames": setup.frames, "mode": "crop", "frame_sampling": "uniform",
                                            "target_fps": FPS},
                 {"images": (load, 0), "fps": (load, 1)})


def _load_image(g: Graph, setup: Setup, image: str, fit: bool) -> int:
    load = g.add("VDOTLoadImage", "Inputs", {"image": image})
    if not fit:
        return load
    return g.add("VDOTFitVideo", "Inputs", {"width": setup.width, "height": setup.height, "num_frames": 1,
                                            "mode": "crop", "frame_sampling": "uniform", "target_fps": FPS},
                 {"images": (load, 0)})


def _control(g: Graph, setup: Setup, kind: str) -> int:
    """A control video at the workflow's size: bundled (depth, pose) or made from the source video."""
    if kind in BUNDLED_CONTROL:
        return _load_video(g, setup, BUNDLED_CONTROL[kind])
    source = _load_video(g, setup, SOURCE_VIDEO)
    if kind == "grey":
        return g.add("VDOTGrey", "Inputs", {}, {"images": (source, 0)})
    if kind == "scribble":
        return g.add("VDOTScribble", "Inputs", {"method": "xdog", "thin": False}, {"images": (source, 0)})
    return g.add("VDOTOpticalFlow", "Inputs", {"method": "dis"}, {"images": (source, 0)})


def _outputs(g: Graph, frames: int, prefix: str) -> None:
    g.add("VDOTPreviewVideo", "Output", {"fps": FPS}, {"frames": (frames, 0)})
    g.add("VDOTSaveVideo", "Output", {"fps": FPS, "filename_prefix": prefix, "format": "mp4", "crf": 17},
          {"frames": (frames, 0)})


def _task_input(g: Graph, setup: Setup, task: str, name: str) -> int:
    """The node that feeds task input ``name`` (a socket of the task's VCU node), made from the bundled examples."""
    if name == "control":
        return _control(g, setup, TASKS[task].control_kind)
    if name == "source":
        return _load_video(g, setup, SOURCE_VIDEO, width=_source_width(task, setup))
    if name == "references":
        return _load_image(g, setup, REFERENCE_IMAGE, fit=False)
    if name == "first_frame":
        return _load_image(g, setup, FIRST_FRAME, fit=True)
    if name == "mask":
        fitted_mask = _load_image(g, setup, MASK_IMAGE, fit=True)
        return g.add("VDOTImageToMask", "Inputs", {"channel": "luminance", "threshold": 0.5},
                     {"images": (fitted_mask, 0)})
    raise ValueError(f"no example feeds task input {name!r}")  # a new kind of task input needs an example here


def _vcu_widgets(setup: Setup, task: str) -> dict:
    """The value of every widget a VCU node may have, for ``task`` in ``setup`` (each node takes its own)."""
    side = setup.outpaint_side
    return {"width": setup.width, "height": setup.height, "num_frames": setup.frames, "kind": TASKS[task].control_kind,
            "top": 0, "bottom": 0, "left": side, "right": side, "overlap": 0,  # outpaint: the sides only
            "keep_frames": setup.keep_frames, "mode": "first", "seed": 0,  # extension
            "threshold": 0.5, "box": ""}  # inpaint: the mask socket, not a box


def _vcu(g: Graph, setup: Setup, task: str) -> int:
    """The task's VCU node (the registry's ``TaskSpec.node``), each of its sockets fed by an example and its
    widgets set for the setup."""
    node = TASKS[task].node
    links = {name: (_task_input(g, setup, task, name), 0)
             for name, type_, opts, _ in _inputs(node) if not _is_widget(type_, opts)}
    values = _vcu_widgets(setup, task)
    return g.add(node, "Inputs", {name: values[name] for name in widget_names(node)}, links)


def _sampler_widgets(setup: Setup) -> dict:
    # steps / shift 0: the preset's own (4 steps; shift 16 for vdot, 5 for renoise)
    return {"seed": SEED, "preset": setup.preset, "steps": 0, "shift": 0.0, "cfg": 1.0, "cfg_start": 0.0, "cfg_end": 1.0}


def describe(task: str, setup: Setup = TOY) -> Graph:
    """The graph of ``<setup.stem><task>.json``."""
    g = Graph(setup.stem + task)
    model, vae, text_encoder = _loaders(g, setup)
    kind = TASKS[task].control_kind
    prompt = setup.prompts.get(task) or setup.prompts.get(kind or "") or setup.prompts[""]
    embeds = g.add("VDOTTextEncode", "Prompt", {"positive": prompt, "negative": DEFAULT_NEGATIVE},
                   {"text_encoder": (text_encoder, 0)})
    vcu = _vcu(g, setup, task)
    frames = g.add("VDOTSampler", "Sampling", {**_sampler_widgets(setup), "denoise": 1.0, "control_scale": 1.0,
                                               "num_videos": 1},
                   {"model": (model, 0), "vae": (vae, 0), "embeds": (embeds, 0), "vcu": (vcu, 0)})
    _outputs(g, frames, f"VDOT/{setup.stem.removeprefix('vdot_')}{task}")
    g.notes += [("MarkdownNote", "Models", models_note(task, setup), 720),
                ("Note", "Inputs of this task", inputs_note(task, setup), 300)]
    return g


def describe_long(setup: Setup = TOY) -> Graph:
    """``<stem>long_t2v.json``: text to video longer than one window, with VDOT Long Video."""
    g = Graph(setup.stem + LONG)
    model, vae, text_encoder = _loaders(g, setup)
    embeds = g.add("VDOTTextEncode", "Prompt", {"positive": setup.prompts["t2v"], "negative": DEFAULT_NEGATIVE},
                   {"text_encoder": (text_encoder, 0)})
    vcu = g.add(TASKS["t2v"].node, "Inputs", {"width": setup.width, "height": setup.height,
                                              "num_frames": setup.long_frames})
    frames = g.add("VDOTLongVideo", "Sampling", {**_sampler_widgets(setup), "control_scale": 1.0,
                                                 "window": setup.long_window, "overlap": setup.long_overlap,
                                                 "colour_match": True},
                   {"model": (model, 0), "vae": (vae, 0), "embeds": (embeds, 0), "vcu": (vcu, 0)})
    _outputs(g, frames, f"VDOT/{setup.stem.removeprefix('vdot_')}{LONG}")
    g.notes += [("MarkdownNote", "Models", models_note(LONG, setup), 720),
                ("Note", "Long video", long_note(setup), 300)]
    return g



# --- notes: short, and true for the node they sit beside ---------------------------------------------

def _title(task: str) -> str:
    if task == LONG:
        return "long video (text to video, chained windows)"
    return f"{task}: {TASKS[task].description.split(' [')[0]}"


def _source_width(task: str, setup: Setup) -> int:
    """The width a task's source video is fitted to (outpaint's VCU adds the sides)."""
    return setup.width - 2 * setup.outpaint_side if task != LONG and "expand" in TASKS[task].required else setup.width


def _size_widgets(task: str) -> str:
    """Where a workflow's size is set."""
    if task == LONG or TASKS[task].driving_video is None:
        return "the VCU node"
    return "every VDOT Fit Video (num_frames 1 on images)"


FOLDERS = """```
📂 ComfyUI/models/
├── 📂 diffusion_models/  vdot_14b_bf16.safetensors   (vdot convert)
├── 📂 text_encoders/     umt5_xxl_fp16.safetensors   (download)
└── 📂 vae/               wan_2.1_vae.safetensors     (download)
```"""
CONVERT = (f"The VDOT-14B transformer is in the official release [yutongwang1012/VDOT]({VDOT_RELEASE}) as a pickle, "
           "`vdot-weights/vdot_14b.pt`: convert it once with\n"
           "`vdot convert VDOT/vdot-weights/vdot_14b.pt ComfyUI/models/diffusion_models/ --dtype bf16`\n"
           "→ `vdot_14b_bf16.safetensors` (read by torch's weights-only unpickler: no code in the file runs). "
           "The text encoder and VAE are Wan2.1's: Comfy-Org's files below (offered for download by the 14B workflows), "
           "or `vdot convert`'s `umt5_xxl_bf16` / `wan_2.1_vae` from the same release.")
LINKS = (f"- [{MODEL_FILES['text_encoders'][0]}]({MODEL_FILES['text_encoders'][1]}) → `models/text_encoders/`\n"
         f"- [{MODEL_FILES['vae'][0]}]({MODEL_FILES['vae'][1]}) → `models/vae/`")


def models_note(task: str, setup: Setup) -> str:
    if setup is TOY:
        return f"""## VDOT — {_title(task)}

**Runs at once on the embedded toy model** `{EMBEDDED}` at its native {setup.width}×{setup.height}, \
{setup.frames} frames: seconds on a CPU. The toy is a tiny model of a toy world; its videos are coloured blobs \
whose colours and background follow a caption of its grammar (e.g. "{TOY_PROMPTS['']}"); shapes are not \
recognisable. Preset `renoise`: the rollout it was distilled with.

**Real videos: VDOT-14B.** Open `{REAL.stem}{task}.json` — this graph set for VDOT-14B at 480p \
({REAL.width}×{REAL.height}, {REAL.frames} frames, preset `vdot`). To switch this one instead: pick \
`vdot_14b_bf16.safetensors`, `wan_2.1_vae.safetensors` and `umt5_xxl_fp16.safetensors` in the three loaders, \
set the sampler's preset to `vdot` and width / height / num_frames to {_source_width(task, REAL)} / \
{REAL.height} / {REAL.frames if task != LONG else REAL.long_frames} on {_size_widgets(task)}\
{'; ' + str(REAL.outpaint_side) + ' px on the outpaint sides' if task == 'outpaint' else ''}\
{'; keep_frames ' + str(REAL.keep_frames) if task == 'extension' else ''}\
{'; window ' + str(REAL.long_window) + ', overlap ' + str(REAL.long_overlap) if task == LONG else ''}.

{CONVERT}
{LINKS}
"""
    return f"""## VDOT-14B — {_title(task)}

Set for **VDOT-14B at 480p**: {setup.width}×{setup.height}, {setup.frames if task != LONG else setup.long_frames} \
frames at 16 fps, sampler preset `vdot` (the official 4-step FlowUniPC, shift 16, cfg 1). The same graph on the \
embedded toy model, runnable anywhere: `{TOY.stem}{task}.json`.

{CONVERT}
{LINKS}

{FOLDERS}
Low on GPU memory? Model loader: precision `fp8_e4m3fn`, or a `vram_budget_gb` (README, *Memory*). \
Undistilled Wan2.1-VACE-14B (`{MODEL_FILES['diffusion_models'][0]}`): preset `teacher_unipc`, cfg 5.
"""


def inputs_note(task: str, setup: Setup) -> str:
    spec = TASKS[task]
    kind = spec.control_kind
    lines = [f"Task {task} ({spec.family}): {spec.description}.", ""]
    if task == "t2v":
        lines.append("Nothing to load: the VCU node sets width, height and num_frames; write the prompt.")
    if "references" in spec.required:
        lines.append("Reference image(s): VDOT Load Image (upload yours). Each goes on a white canvas of the video "
                     "size, as VACE was trained; batch several into one IMAGE.")
    if kind is not None:
        if kind in BUNDLED_CONTROL:
            lines.append(f"Control video ({CONTROL_LABEL[kind]}): the bundled example; for yours, load a "
                         f"{CONTROL_LABEL[kind]} video made by an annotator.")
        else:
            lines.append(f"Control video ({CONTROL_LABEL[kind]}): made from the source video by the preprocess node; "
                         "load your source in VDOT Load Video.")
    if "first_frame" in spec.required:
        lines.append("First frame: an image; VDOT Fit Video crops it to the video's size.")
    if task in ("outpaint", "extension", "inpaint"):
        lines.append("Source video: load yours in VDOT Load Video (upload).")
    if task == "outpaint":
        width = setup.width - 2 * setup.outpaint_side
        lines.append(f"The source is fitted to {width}×{setup.height}; the VCU node adds {setup.outpaint_side} px left "
                     f"and right → {setup.width}×{setup.height}. Sides are multiples of 16.")
    if task == "extension":
        lines.append(f"The first {setup.keep_frames} source frames are kept (mode first / last / random clip); "
                     "the rest is generated.")
    if task == "inpaint":
        lines.append("Mask: white = regenerate. Or disconnect it and type a box x0,y0,x1,y1 (pixels) on the VCU node.")
    if kind is not None or task in ("outpaint", "extension", "inpaint"):  # a video goes through VDOT Fit Video
        lines += ["", f"VDOT Load Video reads up to {LOAD_CAP} frames; VDOT Fit Video picks num_frames of them "
                      f"({setup.frames} here, 4k+1) spread over the clip (frame_sampling: uniform / first / "
                      f"target_fps) and crops to {_source_width(task, setup)}×{setup.height} (multiples of 16)."]
    return "\n".join(lines)


def long_note(setup: Setup) -> str:
    return (f"VDOT Long Video makes {setup.long_frames} frames as windows of {setup.long_window} (4k+1): each next "
            f"window keeps at least {setup.long_overlap} frames of the video so far and generates the rest; each "
            "window's colours are matched to the video so far on the overlap. Window i uses seed + i; progress "
            "counts steps over all windows; Cancel stops between windows.\n\nAny VCU of 4k+1 frames works: a VCU "
            "over a long control video in place of the text-to-video one gives a long V2V.")



NATIVE_NOTE = f"""## VDOT-14B on ComfyUI's own nodes

ComfyUI's loaders, memory management, LoRAs and fp8 formats, with the official VDOT sampler: **VDOT Sigmas**
(preset `vdot`: σ 0.99994 / 0.97951 / 0.94107 / 0.84193 / 0) and **VDOT FlowUniPC** (Wan's FlowUniPC as a
SAMPLER, fed t = 999 / 979 / 941 / 841), cfg 1, 4 model calls — the official trajectory to float precision.
ComfyUI's own samplers come close but not exactly: the nearest is `{NATIVE_SAMPLER}` (KSamplerSelect), about
1e-3 away (README, *Native ComfyUI nodes*). Needs ComfyUI; does not run on the embedded toy model.

{CONVERT}
{LINKS}

{FOLDERS}
Low on GPU memory? Set UNETLoader's weight_dtype to `fp8_e4m3fn`.
"""


def describe_native() -> Graph:
    """``vdot_native_t2v.json``: VDOT-14B (converted) on ComfyUI's own nodes, with VDOT Sigmas."""
    g = Graph(NATIVE_WORKFLOW)
    unet, clip_name, vae_name = CONVERTED["diffusion_models"][0], MODEL_FILES["text_encoders"][0], CONVERTED["vae"][0]
    model = g.add("UNETLoader", "Load models", {"unet_name": unet, "weight_dtype": "default"},
                  properties=downloads("UNETLoader", unet))
    clip = g.add("CLIPLoader", "Load models", {"clip_name": clip_name, "type": "wan", "device": "default"},
                 properties=downloads("CLIPLoader", clip_name))
    vae = g.add("VAELoader", "Load models", {"vae_name": vae_name}, properties=downloads("VAELoader", vae_name))
    positive = g.add("CLIPTextEncode", "Prompt", {"text": REAL_PROMPTS["t2v"]}, {"clip": (clip, 0)})
    negative = g.add("CLIPTextEncode", "Prompt", {"text": DEFAULT_NEGATIVE}, {"clip": (clip, 0)})
    cond = g.add("WanVaceToVideo", "Inputs", {"width": REAL.width, "height": REAL.height, "length": REAL.frames,
                                              "batch_size": 1, "strength": 1.0},
                 {"positive": (positive, 0), "negative": (negative, 0), "vae": (vae, 0)})
    sigmas = g.add("VDOTSigmas", "Sampling", {"preset": "vdot", "steps": 0, "shift": 0.0, "denoise": 1.0})
    sampler = g.add("VDOTFlowUniPC", "Sampling", {"timesteps": "truncated"})
    noise = g.add("RandomNoise", "Sampling", {"noise_seed": SEED})
    guider = g.add("CFGGuider", "Sampling", {"cfg": 1.0},
                   {"model": (model, 0), "positive": (cond, 0), "negative": (cond, 1)})
    latent = g.add("SamplerCustomAdvanced", "Sampling", {},
                   {"noise": (noise, 0), "guider": (guider, 0), "sampler": (sampler, 0), "sigmas": (sigmas, 0),
                    "latent_image": (cond, 2)})
    images = g.add("VAEDecode", "Output", {}, {"samples": (latent, 0), "vae": (vae, 0)})
    video = g.add("CreateVideo", "Output", {"fps": FPS}, {"images": (images, 0)})
    g.add("SaveVideo", "Output", {"filename_prefix": "VDOT/native_t2v", "format": "auto", "codec": "auto"},
          {"video": (video, 0)})
    g.notes += [("MarkdownNote", "Models", NATIVE_NOTE, 720),
                ("Note", "Inputs", f"Text to video at {REAL.width}×{REAL.height}, {REAL.frames} frames (5 s at 16 fps). "
                 "WanVaceToVideo takes an optional control_video / control_masks / reference_image for the other "
                 "VACE tasks; with a reference image, cut its latent frame after sampling with TrimVideoLatent "
                 "(trim_latent).", 200)]
    return g


# --- the training-free 4-step baseline (VDOT paper, ablation row 1) -------------------------------

LIGHTX2V_LORA = ("lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank32_bf16.safetensors",
                 "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/Lightx2v/"
                 "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank32_bf16.safetensors")
LORA_BASELINE_NOTE = f"""## Training-free 4-step baseline: Wan2.1-VACE-14B + a step-distilled T2V LoRA

The VDOT paper's first ablation row: no VDOT training, just lightx2v's step- and CFG-distilled
**Wan2.1-T2V-14B** LoRA on Wan2.1-VACE-14B, sampled in 4 steps at cfg 1. Compare it with VDOT-14B
(`{REAL.stem}t2v.json`) on the same prompt and seed. The LoRA adapts only the Wan blocks it was trained on;
the VACE blocks stay undistilled — the gap VDOT's stage 2 closes.

**Set for the real 14B files** (the frontend offers their downloads; they do not fit the embedded toy model).
Sampler: preset `renoise` (x0 then fresh noise, 4 steps, shift 5 — how lightx2v-style distilled LoRAs are
sampled), cfg 1.

**Model links**
- [{MODEL_FILES['diffusion_models'][0]}]({MODEL_FILES['diffusion_models'][1]})
- [{MODEL_FILES['vae'][0]}]({MODEL_FILES['vae'][1]})
- [{MODEL_FILES['text_encoders'][0]}]({MODEL_FILES['text_encoders'][1]})
- [{LIGHTX2V_LORA[0]}]({LIGHTX2V_LORA[1]}) (rank 32; rank 64/128 files work the same)

**Model storage location**
```
📂 ComfyUI/models/
├── 📂 diffusion_models/  {MODEL_FILES['diffusion_models'][0]}
├── 📂 loras/             {LIGHTX2V_LORA[0]}
├── 📂 text_encoders/     {MODEL_FILES['text_encoders'][0]}
└── 📂 vae/               {MODEL_FILES['vae'][0]}
```
Low on GPU memory? Set the model loader's precision to `fp8_e4m3fn` (the LoRA stays on the fly).
"""


def describe_lora_baseline_t2v() -> Graph:
    """``vdot_lora_baseline_t2v.json``: the 14B t2v graph on Wan2.1-VACE-14B with VDOT LoRA Loader before the sampler."""
    g = describe("t2v", REAL)
    g.name = LORA_WORKFLOW
    loader = g.node("VDOTModelLoader")
    loader.widgets["model_name"] = MODEL_FILES["diffusion_models"][0]
    loader.properties = downloads(loader.type, loader.widgets["model_name"])
    lora = g.add("VDOTLoraLoader", "Load models", {"lora_name": LIGHTX2V_LORA[0], "strength": 1.0, "apply": "on_the_fly"},
                 {"model": (loader.id, 0)},
                 properties={"models": [{"name": LIGHTX2V_LORA[0], "url": LIGHTX2V_LORA[1], "directory": "loras"}]})
    sampler = g.node("VDOTSampler")
    sampler.links["model"] = (lora, 0)
    sampler.widgets.update(preset="renoise", steps=0, shift=0.0, cfg=1.0)  # renoise's own: 4 steps, shift 5
    g.node("VDOTSaveVideo").widgets["filename_prefix"] = "VDOT/lora_baseline_t2v"
    g.notes[0] = ("MarkdownNote", "Models", LORA_BASELINE_NOTE, 720)
    return g


def all_graphs() -> dict:
    """Every shipped workflow: file stem -> graph builder."""
    graphs = {}
    for setup in SETUPS:
        for task in TASKS:
            graphs[setup.stem + task] = (lambda t=task, s=setup: describe(t, s))
        graphs[setup.stem + LONG] = (lambda s=setup: describe_long(s))
    graphs[NATIVE_WORKFLOW] = describe_native
    graphs[LORA_WORKFLOW] = describe_lora_baseline_t2v
    return graphs



# --- widgets: read from the node classes, in ComfyUI's order -------------------------------------

def _inputs(node_type: str):
    spec = ALL_CLASSES[node_type].INPUT_TYPES()
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            yield name, decl[0], (decl[1] if len(decl) > 1 else {}), section == "optional"


def _is_widget(type_, opts: dict) -> bool:
    """A widget on the node (a combo, or a scalar not forced to be a socket)."""
    return isinstance(type_, (list, tuple)) or (type_ in WIDGET_TYPES and not opts.get("forceInput"))


def widget_names(node_type: str) -> list[str]:
    """Widget inputs (INT/FLOAT/STRING/BOOLEAN or a combo list), required then optional."""
    return [name for name, type_, opts, _ in _inputs(node_type) if _is_widget(type_, opts)]


def ui_widget_values(node: Node) -> list:
    """widgets_values in widget order; after a seed the frontend's "control after generate" value,
    always "fixed" so the shipped seed reproduces the shipped result."""
    unknown = set(node.widgets) - set(widget_names(node.type))
    if unknown:
        raise ValueError(f"{node.type}: {sorted(unknown)} are not widgets of this node")
    values = []
    for name, type_, opts, _ in _inputs(node.type):
        if not _is_widget(type_, opts):
            continue
        if name not in node.widgets:
            raise ValueError(f"{node.type} (node {node.id}): widget {name!r} has no value")
        values.append(node.widgets[name])
        if has_control_widget(name, type_, opts):
            values.append("fixed")
    return values


# --- layout ----------------------------------------------------------------------------------------
# LiteGraph draws a node's title bar *above* its pos and a group's title bar inside the top of its
# bounding box, so a group's top sits a group title + a node title + padding above its first node.

NODE_TITLE_H = 30  # LiteGraph.NODE_TITLE_HEIGHT
GROUP_TITLE_H = 34  # font_size 24 × 1.4
PAD = 10
COLUMN_W = 460  # node width + the gap a wire runs through
NODE_W = 380
NOTE_W = 460
GAP = 40  # between stacked nodes, and between the two bands
TOP = GROUP_TITLE_H + NODE_TITLE_H + PAD


def node_height(node_type: str) -> int:
    """About what the frontend draws: slot rows, widget rows, text boxes, file previews."""
    cls = ALL_CLASSES[node_type]
    sockets = widgets = boxes = 0
    preview = 0
    for name, type_, opts, _ in _inputs(node_type):
        if not _is_widget(type_, opts):
            sockets += 1
            continue
        widgets += 1 + has_control_widget(name, type_, opts)
        boxes += type_ == "STRING" and bool(opts.get("multiline"))
        preview = max(preview, 280 if opts.get("image_upload") or opts.get("video_upload") else 0)
    if getattr(cls, "OUTPUT_NODE", False) and "IMAGE" in [t for _, t, _, _ in _inputs(node_type)]:
        preview = 300  # the video shown after a run
    rows = max(sockets, len(cls.RETURN_TYPES))
    return 12 + 22 * rows + 26 * widgets + 110 * boxes + preview


def layout(g: Graph) -> None:
    """Positions: a node's column is right of every node it reads from and of the groups before it in its
    band; nodes of a group and column stack downwards; band 2 (Inputs) starts below band 1."""
    by_id = {n.id: n for n in g.nodes}
    column: dict[int, int] = {}
    band_end = 0  # first free column after the previous bands' groups
    y_start = {}
    for band in BANDS:
        base = band_end if band[0] in ("Sampling", "Output") else 0
        for group in band:
            members = [n for n in _topological(g) if by_id[n].group == group]
            for node_id in members:
                sources = [column[src] + 1 for src, _ in by_id[node_id].links.values()]
                column[node_id] = max([base, *sources])
            if members:
                base = max(column[m] for m in members) + 1
            band_end = max(band_end, base)
    # Vertical: stack per (group, column); the Inputs band starts below the tallest top-band stack.
    cursor: dict[tuple, int] = {}
    for group in GROUPS:
        if group == "Inputs":
            top_band = [n for n in g.nodes if n.group in BANDS[0]]
            start = max((n.pos[1] + n.size[1] for n in top_band), default=0) + PAD + GAP + TOP
        else:
            start = TOP
        for node_id in _topological(g):
            node = by_id[node_id]
            if node.group != group:
                continue
            key = (group, column[node_id])
            y = cursor.get(key, start)
            node.size = (NODE_W, node_height(node.type))
            node.pos = (column[node_id] * COLUMN_W, y)
            cursor[key] = y + node.size[1] + NODE_TITLE_H + GAP


def _topological(g: Graph) -> list[int]:
    done: list[int] = []

    def visit(node_id: int) -> None:
        if node_id not in done:
            for src, _ in g.nodes[node_id - 1].links.values():
                visit(src)
            done.append(node_id)

    for node in g.nodes:
        visit(node.id)
    return done


# --- formats -------------------------------------------------------------------------------------

def to_api(g: Graph) -> dict:
    """ComfyUI API ("prompt") format: {id: {class_type, inputs, _meta}}."""
    api = {}
    for node in g.nodes:
        inputs = {name: node.widgets[name] for name in widget_names(node.type)}
        inputs.update({name: [str(src), slot] for name, (src, slot) in node.links.items()})
        api[str(node.id)] = {"class_type": node.type, "inputs": inputs,
                             "_meta": {"title": NODE_DISPLAY_NAME_MAPPINGS.get(node.type, node.type)}}
    return api


def to_ui(g: Graph) -> dict:
    """ComfyUI frontend workflow (schema version 0.4)."""
    layout(g)
    by_id = {n.id: n for n in g.nodes}
    links: list[list] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_links: dict[tuple[int, str], int] = {}
    for node in g.nodes:
        sockets = [name for name, type_, opts, _ in _inputs(node.type) if not _is_widget(type_, opts)]
        for name, (src, slot) in node.links.items():
            link_id = len(links) + 1
            links.append([link_id, src, slot, node.id, sockets.index(name),
                          ALL_CLASSES[by_id[src].type].RETURN_TYPES[slot]])
            out_links.setdefault((src, slot), []).append(link_id)
            in_links[(node.id, name)] = link_id

    order = {node_id: i for i, node_id in enumerate(_topological(g))}
    ui_nodes = []
    for node in g.nodes:
        cls = ALL_CLASSES[node.type]
        inputs = []
        for name, type_, opts, optional in _inputs(node.type):
            if _is_widget(type_, opts):
                continue
            entry = {"name": name, "type": type_, "link": in_links.get((node.id, name))}
            if optional:
                entry["shape"] = 7  # the frontend draws optional sockets hollow
            inputs.append(entry)
        names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        outputs = [{"name": name, "type": type_, "links": out_links.get((node.id, slot), []), "slot_index": slot}
                   for slot, (name, type_) in enumerate(zip(names, cls.RETURN_TYPES))]
        ui_nodes.append({"id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size),
                         "flags": {}, "order": order[node.id], "mode": 0, "inputs": inputs, "outputs": outputs,
                         "properties": {"Node name for S&R": node.type, **node.properties},
                         "widgets_values": ui_widget_values(node)})

    groups = []
    for title in GROUPS:
        nodes = [n for n in g.nodes if n.group == title]
        if not nodes:
            continue
        x0 = min(n.pos[0] for n in nodes) - PAD
        y0 = min(n.pos[1] for n in nodes) - NODE_TITLE_H - GROUP_TITLE_H - PAD
        x1 = max(n.pos[0] + n.size[0] for n in nodes) + PAD
        y1 = max(n.pos[1] + n.size[1] for n in nodes) + PAD
        groups.append({"id": len(groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                       "color": GROUP_COLOR[title], "font_size": 24, "flags": {}})

    # Notes are frontend-only (never in the API twin), in a column left of the groups.
    y = TOP
    for type_, title, text, height in g.notes:
        ui_nodes.append({"id": len(ui_nodes) + 1, "type": type_, "title": title, "pos": [-NOTE_W - 60, y],
                         "size": [NOTE_W, height], "flags": {}, "order": len(ui_nodes), "mode": 0, "inputs": [],
                         "outputs": [], "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"})
        y += height + NODE_TITLE_H + GAP
    # The frontend's schema wants a UUID; a fixed one per file keeps the files reproducible.
    workflow_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ComfyUI-VDOT/workflows/{g.name}.json"))
    return {"id": workflow_id, "revision": 0, "last_node_id": len(ui_nodes), "last_link_id": len(links),
            "nodes": ui_nodes, "links": links, "groups": groups, "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [NOTE_W + 100, 40]}}, "version": 0.4}


def render(name: str) -> tuple[str, str]:
    """(UI JSON, API JSON) text of ``<name>.json``."""
    g = all_graphs()[name]()
    return (json.dumps(to_ui(g), indent=2, ensure_ascii=False) + "\n",
            json.dumps(to_api(g), indent=2, ensure_ascii=False) + "\n")



# --- workflows/README.md ---------------------------------------------------------------------------

def _needs(task: str) -> tuple[str, str]:
    """(what the task needs, the bundled examples its workflow loads)."""
    spec = TASKS[task]
    g = describe(task, TOY)
    files = [n.widgets.get("video") or n.widgets.get("image") for n in g.nodes
             if n.type in ("VDOTLoadVideo", "VDOTLoadImage")]
    needs = {"t2v": "prompt only", "r2v": "reference image(s)"}.get(task)
    if needs is None:
        parts = []
        if spec.control_kind:
            how = "bundled" if spec.control_kind in BUNDLED_CONTROL else "made from the source by a preprocess node"
            parts.append(f"{CONTROL_LABEL[spec.control_kind]} video ({how})")
        parts += {"outpaint": ["source video + sides"], "extension": ["source video"],
                  "inpaint": ["source video + mask or box"]}.get(task, [])
        if "first_frame" in spec.required:
            parts.append("first-frame image")
        if "references" in spec.required and task != "r2v":
            parts.append("reference image(s)")
        needs = " + ".join(parts)
    return needs, ", ".join(f"`{f.removeprefix('vdot_examples/')}`" for f in dict.fromkeys(files)) or "—"


def readme() -> str:
    rows = []
    for task in TASKS:
        needs, examples = _needs(task)
        rows.append(f"| {_title(task)} | [`{TOY.stem}{task}.json`]({TOY.stem}{task}.json) | "
                    f"[`{REAL.stem}{task}.json`]({REAL.stem}{task}.json) | {needs} | {examples} |")
    rows.append(f"| {_title(LONG)} | [`{TOY.stem}{LONG}.json`]({TOY.stem}{LONG}.json) | "
                f"[`{REAL.stem}{LONG}.json`]({REAL.stem}{LONG}.json) | prompt only | — |")
    table = "\n".join(rows)
    return f"""# VDOT workflows

Written by `python tools/build_workflows.py` (edit that, not the JSON). In ComfyUI they are under **Workflow →
Browse Templates → ComfyUI-VDOT**, or drag a file onto the canvas.

Two sets of the same graphs:

- **`{TOY.stem}<task>.json` run at once** on the embedded toy model `{EMBEDDED}` at its native
  {TOY.width}×{TOY.height}, {TOY.frames} frames (seconds on a CPU; preset `renoise`, the rollout it was distilled with).
  Its videos are coloured blobs that follow a caption of the toy grammar, e.g. "{TOY_PROMPTS['']}".
- **`{REAL.stem}<task>.json` are set for VDOT-14B at 480p**: {REAL.width}×{REAL.height}, {REAL.frames} frames
  (5 s at 16 fps), preset `vdot` (the official 4-step sampler, cfg 1), loaders on `vdot_14b_bf16.safetensors`,
  `wan_2.1_vae.safetensors` and `umt5_xxl_fp16.safetensors`. The frontend offers the text encoder and VAE
  downloads (Comfy-Org's repackaged Wan2.1 files); the VDOT-14B transformer ships as a pickle in
  [yutongwang1012/VDOT]({VDOT_RELEASE}) — convert it once:
  `vdot convert VDOT/vdot-weights/vdot_14b.pt ComfyUI/models/diffusion_models/ --dtype bf16`.

To move a toy workflow to VDOT-14B by hand: pick those three files in the loaders, set the sampler's preset to
`vdot`, and width / height / num_frames to {REAL.width} / {REAL.height} / {REAL.frames} on the VCU node or every
VDOT Fit Video (each note says which).

Every graph reads left to right in groups **Load models**, **Prompt**, **Inputs**, **Sampling**, **Output**
(VDOT Preview Video shows the result, VDOT Save Video writes it under `output/VDOT/`), with a note on the
models and one on the task's inputs. Frame counts are 4k+1 and sizes multiples of 16; VDOT Fit Video is the one
place a video's frames are picked (spread over the clip, the first ones, or at a target fps) and resized. The
bundled example inputs (`vdot_examples/…`) are copied into `ComfyUI/input/vdot_examples/` the first time the
load nodes are listed (never over a file already there), so the load nodes preview them.

| Task | Toy model (runs anywhere) | VDOT-14B 480p | Inputs it needs | Bundled examples |
|---|---|---|---|---|
{table}

**Native ComfyUI nodes:** [`{NATIVE_WORKFLOW}.json`]({NATIVE_WORKFLOW}.json) runs VDOT-14B on ComfyUI's own nodes —
UNETLoader, CLIPLoader (wan), WanVaceToVideo, SamplerCustomAdvanced with **VDOT Sigmas** (preset `vdot`) and
**VDOT FlowUniPC** (Wan's sampler as a SAMPLER), CFGGuider cfg 1 — so ComfyUI's memory management, LoRAs and fp8
formats apply and the trajectory is the official one (README, *Native ComfyUI nodes*).

**Baseline: [`{LORA_WORKFLOW}.json`]({LORA_WORKFLOW}.json)** — the training-free 4-step baseline of the VDOT
paper's ablation (row 1): Wan2.1-VACE-14B with lightx2v's step-distilled Wan2.1-T2V-14B LoRA
([`{LIGHTX2V_LORA[0]}`]({LIGHTX2V_LORA[1]}), `ComfyUI/models/loras/`) through VDOT LoRA Loader, preset `renoise`
(4 steps, shift 5), cfg 1. Its loaders are set to the real 14B files (the frontend offers their downloads).

The tests (`tests/test_workflows.py`) execute every toy-model workflow at these shipped defaults and validate
the VDOT-14B, native and baseline ones (graph, links, widget values, file names) without running them.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write workflows/*.json, their workflows/api/ twins and README.md.")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file would change")
    args = parser.parse_args(argv)
    stale = []
    outputs = {WORKFLOW_DIR / "README.md": readme()}
    for name in all_graphs():
        ui, api = render(name)
        outputs[WORKFLOW_DIR / f"{name}.json"] = ui
        outputs[API_DIR / f"{name}.json"] = api
    for path, text in outputs.items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text, overwrite=True)
    # A shipped workflow no description writes any more (a renamed task) is stale too.
    # It is reported, never deleted here: remove it by hand (git rm) if it is ours.
    extra = [p for p in (*WORKFLOW_DIR.glob("*.json"), *API_DIR.glob("*.json")) if p not in outputs]
    stale += extra
    print(f"{len(stale)} workflow file(s) {'differ' if args.check else 'written'}"
          + "".join(f"\n  {p.relative_to(ROOT)}" + (" (no description writes it: remove it)" if p in extra else "")
                    for p in stale))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
