"""Write the shipped workflows: ``workflows/vdot_<task>.json`` (ComfyUI UI format, what users load)
and ``workflows/api/vdot_<task>.json`` (API format, what the tests execute), one per VCU task, plus
``vdot_native_t2v.json``: VDOT-14B on ComfyUI's own nodes with our VDOT Sigmas (validated, not executed,
by the tests: it needs ComfyUI).

Both formats come from one Python description of each graph (:func:`describe`), so node layout,
groups, notes and widget values stay consistent across the 20 files. Widget order is read from the
node classes themselves (``INPUT_TYPES``), so a changed node declaration is picked up on the next
run. ComfyUI lists only ``workflows/*.json`` as templates (its glob is one folder level deep), so
the API twins in ``workflows/api/`` do not clutter the template browser.

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
from vdot_nodes.core.vcu import TASKS  # noqa: E402
from vdot_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from vdot_nodes.nodes.comfy import EMBEDDED  # noqa: E402
from vdot_nodes.nodes.text import DEFAULT_NEGATIVE  # noqa: E402

WORKFLOW_DIR = ROOT / "workflows"
API_DIR = WORKFLOW_DIR / "api"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")

# Real-use size (Wan2.1-VACE 480p, 5 s at 16 fps); the tests shrink these by a documented rule.
WIDTH, HEIGHT, FRAMES = 832, 480, 81
SEED = 42

HF = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
MODEL_FILES = {
    "diffusion_models": ("wan2.1_vace_14B_fp16.safetensors", f"{HF}/diffusion_models/wan2.1_vace_14B_fp16.safetensors"),
    "vae": ("wan_2.1_vae.safetensors", f"{HF}/vae/wan_2.1_vae.safetensors"),
    "text_encoders": ("umt5_xxl_fp16.safetensors", f"{HF}/text_encoders/umt5_xxl_fp16.safetensors"),
}

MODELS_NOTE = f"""## VDOT — {{title}}

**Runs out of the box** on the tiny embedded toy model `{EMBEDDED}` (coloured blobs that follow the toy
caption grammar; it checks the graph). The toy was distilled with the re-noising rollout, so these graphs use
the sampler **preset** `renoise`.

**Real videos with VDOT-14B** (the official release, [yutongwang1012/VDOT](https://huggingface.co/yutongwang1012/VDOT)):
download `vdot-weights/vdot_14b.pt`, `models_t5_umt5-xxl-enc-bf16.pth`, `Wan2.1_VAE.pth` and the
`google/umt5-xxl` folder, convert them once with `vdot convert VDOT/ ComfyUI/models/ --dtype bf16`
(pickles are read only through torch's weights-only unpickler), pick the converted files in the three loaders
and set the sampler's **preset** to `vdot` (the official 4-step FlowUniPC, shift 16, cfg 1).
Undistilled Wan2.1-VACE-14B works too: preset `teacher_unipc`, **cfg** 5.

**Model links** (Wan2.1-VACE, ComfyUI's repackaged files)
- [wan2.1_vace_14B_fp16.safetensors]({MODEL_FILES['diffusion_models'][1]})
- [wan_2.1_vae.safetensors]({MODEL_FILES['vae'][1]})
- [umt5_xxl_fp16.safetensors]({MODEL_FILES['text_encoders'][1]})

**Model storage location**
```
📂 ComfyUI/
├── 📂 models/
│   ├── 📂 diffusion_models/
│   │   └── vdot_14b_bf16.safetensors           (vdot convert; or wan2.1_vace_14B_fp16.safetensors)
│   ├── 📂 text_encoders/
│   │   └── umt5_xxl_bf16.safetensors            (vdot convert; or umt5_xxl_fp16.safetensors)
│   └── 📂 vae/
│       └── wan_2.1_vae.safetensors
```
Low on GPU memory? Set the model loader's precision to `fp8_e4m3fn`.
"""

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
CONVERTED = {"diffusion_models": [f"vdot_14b_{d}.safetensors" for d in ("bf16", "fp16", "fp8_e4m3fn")],
             "text_encoders": [f"umt5_xxl_{d}.safetensors" for d in ("bf16", "fp16", "fp8_e4m3fn")],  # fp16 = Comfy-Org's
             "vae": ["wan_2.1_vae.safetensors"]}
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

CONTROL_LABEL = {"depth": "depth map", "pose": "pose skeleton", "flow": "optical flow", "grey": "greyscale",
                 "scribble": "scribble"}
# Control kinds with a bundled control video; the others are made from the source by a preprocess node.
BUNDLED_CONTROL = {"depth": "vdot_examples/ball_depth.mp4", "pose": "vdot_examples/walk_pose.mp4"}
SOURCE_VIDEO = "vdot_examples/ball.mp4"
REFERENCE_IMAGE = "vdot_examples/star_reference.png"
FIRST_FRAME = "vdot_examples/ball_first_frame.png"
MASK_IMAGE = "vdot_examples/box_mask.png"

PROMPTS = {
    "t2v": "A red ball bounces across a sunlit wooden floor, soft shadows, slow camera pan, cinematic.",
    "r2v": "A golden star-shaped toy spins slowly on a white table, studio lighting, smooth camera orbit.",
    "pose": "A person in a blue jacket walks across a city street at dusk, cinematic lighting.",
}
DEFAULT_PROMPT = "A red ball rolls across a striped wooden floor in a bright room, soft shadows, smooth camera motion."

# Layout: one column per group, like ComfyUI's Wan VACE templates (notes at the far left).
GROUP_X = {"Load models": 0, "Prompt": 0, "Inputs": 440, "Sampling": 1300, "Save": 1700}
GROUP_COLOR = {"Load models": "#3f789e", "Prompt": "#3f789e", "Inputs": "#8A8", "Sampling": "#b06634",
               "Save": "#444"}
NODE_WIDTH = {"Inputs": 380}


@dataclass
class Node:
    id: int
    type: str
    widgets: dict
    group: str
    links: dict = field(default_factory=dict)  # input name -> (source node id, output slot)
    pos: tuple = (0, 0)
    size: tuple = (340, 130)
    properties: dict = field(default_factory=dict)


@dataclass
class Graph:
    task: str
    nodes: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # (type, title, text, pos or None, size)
    _cursor: dict = field(default_factory=dict)

    def add(self, type_: str, group: str, widgets: dict | None = None, links: dict | None = None,
            height: int = 130, properties: dict | None = None, column: int = 0) -> int:
        """Append a node below the previous node of its group column; returns its id."""
        key = (group, column)
        x = GROUP_X[group] + 20 + column * 420
        y = self._cursor.get(key, 620 if group == "Prompt" else 60)
        node = Node(len(self.nodes) + 1, type_, widgets or {}, group, links or {}, (x, y),
                    (NODE_WIDTH.get(group, 340), height), properties or {})
        self.nodes.append(node)
        self._cursor[key] = y + height + 50
        return node.id


def _loader_properties(kind: str) -> dict:
    name, url = MODEL_FILES[kind]
    return {"models": [{"name": name, "url": url, "directory": kind}]}


def _load_video(g: Graph, video: str, width: int = WIDTH) -> int:
    load = g.add("VDOTLoadVideo", "Inputs", {"video": video, "frame_load_cap": FRAMES, "skip_first_frames": 0,
                                             "select_every_nth": 1}, height=300)
    return g.add("VDOTFitVideo", "Inputs", {"width": width, "height": HEIGHT, "num_frames": FRAMES, "mode": "crop"},
                 {"images": (load, 0)}, height=180)


def _load_image(g: Graph, image: str, fit: bool) -> int:
    load = g.add("VDOTLoadImage", "Inputs", {"image": image}, height=320, column=1)
    if not fit:
        return load
    return g.add("VDOTFitVideo", "Inputs", {"width": WIDTH, "height": HEIGHT, "num_frames": 1, "mode": "crop"},
                 {"images": (load, 0)}, height=180, column=1)


def _control(g: Graph, kind: str) -> int:
    """A control video at the workflow's size: bundled (depth, pose) or made from the source video."""
    if kind in BUNDLED_CONTROL:
        return _load_video(g, BUNDLED_CONTROL[kind])
    source = _load_video(g, SOURCE_VIDEO)
    if kind == "grey":
        return g.add("VDOTGrey", "Inputs", {}, {"images": (source, 0)}, height=80)
    if kind == "scribble":
        return g.add("VDOTScribble", "Inputs", {"method": "xdog", "thin": False}, {"images": (source, 0)}, height=110)
    return g.add("VDOTOpticalFlow", "Inputs", {"method": "dis"}, {"images": (source, 0)}, height=90)


def _inputs_note(task: str) -> str:
    spec = TASKS[task]
    kind = spec.control_kind
    lines = [f"Task {task} ({spec.family}): {spec.description}.", ""]
    if task == "t2v":
        lines.append("Nothing to load: set width, height and num_frames (4k+1) on the VCU node and write the prompt.")
    if "references" in spec.required:
        lines.append("Reference image(s): load your own in VDOT Load Image (upload). For several references, batch "
                     "them into one IMAGE. Each is placed on a white canvas of the video size, as VACE was trained.")
    if kind is not None:
        if kind in BUNDLED_CONTROL:
            lines.append(f"Control video ({CONTROL_LABEL[kind]}): the bundled example. For your own, load a "
                         f"{CONTROL_LABEL[kind]} video made by an annotator.")
        else:
            lines.append(f"Control video ({CONTROL_LABEL[kind]}): made from the source video by the VDOT preprocess "
                         "node; load your own source video in VDOT Load Video (upload).")
    if "first_frame" in spec.required:
        lines.append("First frame: an image with the video's aspect ratio (VDOT Fit Video sizes it).")
    if task in ("outpaint", "extension", "inpaint"):
        lines.append("Source video: load yours in VDOT Load Video (upload).")
    if task == "outpaint":
        lines.append("The source is fitted to 640×480; the VCU node adds 96 px left and right → 832×480. "
                     "Output size = source + sides (multiples of 16).")
    if task == "extension":
        lines.append("keep_frames source frames are kept (first / last / random clip); the rest is generated.")
    if task == "inpaint":
        lines.append("Mask: white = regenerate. Instead of a mask you may disconnect it and type a box "
                     "x0,y0,x1,y1 (pixels) on the VCU node.")
    lines += ["", f"VDOT Fit Video cuts each video to num_frames (4k+1) and resizes it to width×height (multiples "
                  f"of 16): {WIDTH}×{HEIGHT}, {FRAMES} frames here (5 s at 16 fps)."]
    return "\n".join(lines)


def describe(task: str) -> Graph:
    """The graph of workflow ``vdot_<task>.json``."""
    spec = TASKS[task]
    kind = spec.control_kind
    g = Graph(task)
    model = g.add("VDOTModelLoader", "Load models", {"model_name": EMBEDDED, "precision": "bf16", "offload": "model",
                                                    "ram_budget_gb": 0.0, "vram_budget_gb": 0.0},
                  properties=_loader_properties("diffusion_models"))
    vae = g.add("VDOTVAELoader", "Load models", {"vae_name": EMBEDDED, "precision": "fp32"},
                height=110, properties=_loader_properties("vae"))
    text_encoder = g.add("VDOTTextEncoderLoader", "Load models", {"text_encoder_name": EMBEDDED, "precision": "bf16"},
                         height=110, properties=_loader_properties("text_encoders"))
    prompt = PROMPTS.get(task) or PROMPTS.get(kind or "") or DEFAULT_PROMPT
    embeds = g.add("VDOTTextEncode", "Prompt", {"positive": prompt, "negative": DEFAULT_NEGATIVE},
                   {"text_encoder": (text_encoder, 0)}, height=340)

    if task == "t2v":
        vcu = g.add("VDOTVCUText2Video", "Inputs", {"width": WIDTH, "height": HEIGHT, "num_frames": FRAMES})
    elif task == "r2v":
        ref = _load_image(g, REFERENCE_IMAGE, fit=False)
        vcu = g.add("VDOTVCUReference", "Inputs", {"width": WIDTH, "height": HEIGHT, "num_frames": FRAMES},
                    {"references": (ref, 0)}, height=160)
    elif spec.family == "V2V":
        vcu = g.add("VDOTVCUControl", "Inputs", {"kind": kind}, {"control": (_control(g, kind), 0)}, height=80)
    elif task == "outpaint":
        source = _load_video(g, SOURCE_VIDEO, width=WIDTH - 2 * 96)
        vcu = g.add("VDOTVCUOutpaint", "Inputs", {"top": 0, "bottom": 0, "left": 96, "right": 96, "overlap": 0},
                    {"source": (source, 0)}, height=200)
    elif task == "extension":
        source = _load_video(g, SOURCE_VIDEO)
        vcu = g.add("VDOTVCUExtension", "Inputs", {"keep_frames": 17, "mode": "first", "seed": 0},
                    {"source": (source, 0)}, height=150)
    elif task == "inpaint":
        source = _load_video(g, SOURCE_VIDEO)
        fitted_mask = _load_image(g, MASK_IMAGE, fit=True)
        mask = g.add("VDOTImageToMask", "Inputs", {"channel": "luminance", "threshold": 0.5},
                     {"images": (fitted_mask, 0)}, height=110, column=1)
        vcu = g.add("VDOTVCUInpaint", "Inputs", {"threshold": 0.5, "box": ""},
                    {"source": (source, 0), "mask": (mask, 0)}, height=130)
    elif task.startswith("firstframe_"):
        control = _control(g, kind)
        first = _load_image(g, FIRST_FRAME, fit=True)
        vcu = g.add("VDOTVCUFirstFrameControl", "Inputs", {"kind": kind},
                    {"control": (control, 0), "first_frame": (first, 0)}, height=100)
    elif task.startswith("reference_"):
        control = _control(g, kind)
        ref = _load_image(g, REFERENCE_IMAGE, fit=False)
        vcu = g.add("VDOTVCUReferenceControl", "Inputs", {"kind": kind},
                    {"control": (control, 0), "references": (ref, 0)}, height=100)
    else:  # a task added to TASKS needs its graph described here
        raise ValueError(f"no workflow description for task {task!r}")

    frames = g.add("VDOTSampler", "Sampling", {"seed": SEED, "preset": "renoise", "steps": 0, "shift": 0.0, "cfg": 1.0,
                                               "denoise": 1.0, "control_scale": 1.0, "num_videos": 1},
                   {"model": (model, 0), "vae": (vae, 0), "embeds": (embeds, 0), "vcu": (vcu, 0)}, height=340)
    g.add("VDOTSaveVideo", "Save", {"fps": 16.0, "filename_prefix": f"VDOT/{task}", "format": "mp4", "crf": 17},
          {"frames": (frames, 0)}, height=460)  # room for the video preview
    title = f"{task}: {spec.description.split(' [')[0]}"
    g.notes.append(("MarkdownNote", "Models", MODELS_NOTE.format(title=title), (-480, 60), (460, 760)))
    g.notes.append(("Note", "Inputs of this task", _inputs_note(task), None, (380, 280)))
    return g


NATIVE_NOTE = f"""## VDOT-14B on ComfyUI's own nodes

ComfyUI's loaders, memory management, LoRAs and fp8 formats, with the official VDOT sampler: **VDOT Sigmas**
(preset `vdot`: σ 0.99994 / 0.97951 / 0.94107 / 0.84193 / 0) and **VDOT FlowUniPC** (Wan's FlowUniPC as a
SAMPLER, fed t = 999 / 979 / 941 / 841), cfg 1, 4 model calls — the official trajectory to float precision.
ComfyUI's own samplers come close but not exactly: the nearest is `{NATIVE_SAMPLER}` (KSamplerSelect), about
1e-3 away (README, *Native ComfyUI nodes*).

**Weights**: the official release, [yutongwang1012/VDOT](https://huggingface.co/yutongwang1012/VDOT)
(`vdot-weights/vdot_14b.pt`, `models_t5_umt5-xxl-enc-bf16.pth`, `Wan2.1_VAE.pth`), converted once to
safetensors with `vdot convert` (the pickles are read weights-only, never executed), which writes
`vdot_14b_<dtype>`, `umt5_xxl_<dtype>` and `wan_2.1_vae` `.safetensors`:
```
vdot convert VDOT/ out/ --dtype bf16
```
```
📂 ComfyUI/models/
├── 📂 diffusion_models/  vdot_14b_bf16.safetensors
├── 📂 text_encoders/     umt5_xxl_fp16.safetensors
└── 📂 vae/               wan_2.1_vae.safetensors
```
The text encoder and VAE are Wan2.1's own, so Comfy-Org's [umt5_xxl_fp16.safetensors]({MODEL_FILES['text_encoders'][1]})
and [wan_2.1_vae.safetensors]({MODEL_FILES['vae'][1]}) (offered for download here) work as well as the converted ones.
Low on GPU memory? Set UNETLoader's weight_dtype to `fp8_e4m3fn`.
"""


def describe_native() -> Graph:
    """``vdot_native_t2v.json``: VDOT-14B (converted) on ComfyUI's own nodes, with VDOT Sigmas."""
    g = Graph("native_t2v")
    model = g.add("UNETLoader", "Load models", {"unet_name": CONVERTED["diffusion_models"][0], "weight_dtype": "default"},
                  height=110)
    clip = g.add("CLIPLoader", "Load models", {"clip_name": MODEL_FILES["text_encoders"][0], "type": "wan",
                                               "device": "default"},
                 height=130, properties=_loader_properties("text_encoders"))
    vae = g.add("VAELoader", "Load models", {"vae_name": CONVERTED["vae"][0]}, height=90,
                properties=_loader_properties("vae"))
    positive = g.add("CLIPTextEncode", "Prompt", {"text": PROMPTS["t2v"]}, {"clip": (clip, 0)}, height=200)
    negative = g.add("CLIPTextEncode", "Prompt", {"text": DEFAULT_NEGATIVE}, {"clip": (clip, 0)}, height=200)
    cond = g.add("WanVaceToVideo", "Inputs", {"width": WIDTH, "height": HEIGHT, "length": FRAMES, "batch_size": 1,
                                              "strength": 1.0},
                 {"positive": (positive, 0), "negative": (negative, 0), "vae": (vae, 0)}, height=260)
    sigmas = g.add("VDOTSigmas", "Sampling", {"preset": "vdot", "steps": 0, "shift": 0.0, "denoise": 1.0}, height=150)
    sampler = g.add("VDOTFlowUniPC", "Sampling", {"timesteps": "truncated"}, height=60)
    noise = g.add("RandomNoise", "Sampling", {"noise_seed": SEED}, height=80)
    guider = g.add("CFGGuider", "Sampling", {"cfg": 1.0},
                   {"model": (model, 0), "positive": (cond, 0), "negative": (cond, 1)}, height=100)
    latent = g.add("SamplerCustomAdvanced", "Sampling", {},
                   {"noise": (noise, 0), "guider": (guider, 0), "sampler": (sampler, 0), "sigmas": (sigmas, 0),
                    "latent_image": (cond, 2)}, height=110)
    images = g.add("VAEDecode", "Save", {}, {"samples": (latent, 0), "vae": (vae, 0)}, height=50)
    video = g.add("CreateVideo", "Save", {"fps": 16.0}, {"images": (images, 0)}, height=80)
    g.add("SaveVideo", "Save", {"filename_prefix": "VDOT/native_t2v", "format": "auto", "codec": "auto"},
          {"video": (video, 0)}, height=460)
    g.notes.append(("MarkdownNote", "Models", NATIVE_NOTE, (-480, 60), (460, 760)))
    g.notes.append(("Note", "Inputs", "Text to video at 832×480, 81 frames (5 s at 16 fps). WanVaceToVideo takes an "
                    "optional control_video / control_masks / reference_image for the other VACE tasks; with a "
                    "reference image, cut its latent frame after sampling with TrimVideoLatent (trim_latent).",
                    None, (380, 160)))
    return g


# --- widgets: read from the node classes, in ComfyUI's order -------------------------------------

def _inputs(node_type: str):
    spec = ALL_CLASSES[node_type].INPUT_TYPES()
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            yield name, decl[0], (decl[1] if len(decl) > 1 else {}), section == "optional"


def _is_widget(type_) -> bool:
    return isinstance(type_, (list, tuple)) or type_ in WIDGET_TYPES


def widget_names(node_type: str) -> list[str]:
    """Widget inputs (INT/FLOAT/STRING/BOOLEAN or a combo list), required then optional."""
    return [name for name, type_, _, _ in _inputs(node_type) if _is_widget(type_)]


def ui_widget_values(node: Node) -> list:
    """widgets_values in widget order; a seed widget with control_after_generate is followed by the
    frontend's control value ("fixed", so the shipped seed reproduces the shipped result)."""
    unknown = set(node.widgets) - set(widget_names(node.type))
    if unknown:
        raise ValueError(f"{node.type}: {sorted(unknown)} are not widgets of this node")
    values = []
    for name, type_, opts, _ in _inputs(node.type):
        if not _is_widget(type_):
            continue
        if name not in node.widgets:
            raise ValueError(f"{node.type} (node {node.id}): widget {name!r} has no value")
        values.append(node.widgets[name])
        if opts.get("control_after_generate"):
            values.append("fixed")
    return values


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


def to_ui(g: Graph) -> dict:
    """ComfyUI frontend workflow (schema version 0.4)."""
    by_id = {n.id: n for n in g.nodes}
    links: list[list] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_links: dict[tuple[int, str], int] = {}
    for node in g.nodes:
        sockets = [name for name, type_, _, _ in _inputs(node.type) if not _is_widget(type_)]
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
        for name, type_, _, optional in _inputs(node.type):
            if _is_widget(type_):
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

    # Notes are frontend-only: never in the API twin. The inputs note goes below the Inputs group.
    inputs_bottom = max(n.pos[1] + n.size[1] for n in g.nodes if n.group == "Inputs")
    members = {title: [n for n in ui_nodes if by_id[n["id"]].group == title] for title in GROUP_X}
    for type_, title, text, pos, size in g.notes:
        note = {"id": len(ui_nodes) + 1, "type": type_, "title": title, "pos": list(pos or (GROUP_X["Inputs"] + 20, inputs_bottom + 50)),
                "size": list(size), "flags": {}, "order": len(ui_nodes), "mode": 0, "inputs": [], "outputs": [],
                "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"}
        ui_nodes.append(note)
        if pos is None:
            members["Inputs"].append(note)

    groups = []
    for title, nodes in members.items():
        if not nodes:
            continue
        x0 = min(n["pos"][0] for n in nodes) - 10
        y0 = min(n["pos"][1] for n in nodes) - 40
        x1 = max(n["pos"][0] + n["size"][0] for n in nodes) + 10
        y1 = max(n["pos"][1] + n["size"][1] for n in nodes) + 10
        groups.append({"id": len(groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                       "color": GROUP_COLOR[title], "font_size": 24, "flags": {}})
    # The frontend's schema wants a UUID; a fixed one per task keeps the files reproducible.
    workflow_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ComfyUI-VDOT/workflows/vdot_{g.task}.json"))
    return {"id": workflow_id, "revision": 0, "last_node_id": len(ui_nodes), "last_link_id": len(links),
            "nodes": ui_nodes, "links": links, "groups": groups, "config": {},
            "extra": {"ds": {"scale": 0.7, "offset": [520, 40]}}, "version": 0.4}


def render(task: str) -> tuple[str, str]:
    """(UI JSON, API JSON) text of ``vdot_<task>.json``."""
    if task in EXTRA_WORKFLOWS:
        g = EXTRA_WORKFLOWS[task]()
    else:
        g = describe_native() if f"vdot_{task}" == NATIVE_WORKFLOW else describe(task)
    return (json.dumps(to_ui(g), indent=2, ensure_ascii=False) + "\n",
            json.dumps(to_api(g), indent=2, ensure_ascii=False) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write workflows/vdot_<task>.json and workflows/api/ twins.")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file would change")
    args = parser.parse_args(argv)
    stale = []
    for task in [*TASKS, NATIVE_WORKFLOW.removeprefix("vdot_"), *EXTRA_WORKFLOWS]:
        ui, api = render(task)
        for path, text in ((WORKFLOW_DIR / f"vdot_{task}.json", ui), (API_DIR / f"vdot_{task}.json", api)):
            if path.exists() and path.read_text(encoding="utf-8") == text:
                continue
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, text, overwrite=True)
    print(f"{len(stale)} workflow file(s) {'differ' if args.check else 'written'}"
          + "".join(f"\n  {p.relative_to(ROOT)}" for p in stale))
    return 1 if (args.check and stale) else 0


# --- the training-free 4-step baseline (VDOT paper, ablation row 1) -------------------------------

LIGHTX2V_LORA = ("lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank32_bf16.safetensors",
                 "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/Lightx2v/"
                 "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank32_bf16.safetensors")
LORA_BASELINE_NOTE = f"""## Training-free 4-step baseline: Wan2.1-VACE-14B + a step-distilled T2V LoRA

The VDOT paper's first ablation row: no VDOT training, just lightx2v's step- and CFG-distilled
**Wan2.1-T2V-14B** LoRA on Wan2.1-VACE-14B, sampled in 4 steps at cfg 1. Compare it with your VDOT
checkpoint on the same prompt and seed. The LoRA adapts only the Wan blocks it was trained on; the VACE
blocks stay undistilled — the gap VDOT's stage 2 closes.

**Set for the real 14B files** (they do not fit the embedded toy model). Sampler: preset `renoise` (x0 then
fresh noise, 4 steps, shift 5 — how lightx2v-style distilled LoRAs are sampled), cfg 1.

**Model links**
- [wan2.1_vace_14B_fp16.safetensors]({MODEL_FILES['diffusion_models'][1]})
- [wan_2.1_vae.safetensors]({MODEL_FILES['vae'][1]})
- [umt5_xxl_fp16.safetensors]({MODEL_FILES['text_encoders'][1]})
- [{LIGHTX2V_LORA[0]}]({LIGHTX2V_LORA[1]}) (rank 32; rank 64/128 files work the same)

**Model storage location**
```
📂 ComfyUI/models/
├── 📂 diffusion_models/  wan2.1_vace_14B_fp16.safetensors
├── 📂 loras/             {LIGHTX2V_LORA[0]}
├── 📂 text_encoders/     umt5_xxl_fp16.safetensors
└── 📂 vae/               wan_2.1_vae.safetensors
```
Low on GPU memory? Set the model loader's precision to `fp8_e4m3fn` (the LoRA stays on the fly).
"""


def describe_lora_baseline_t2v() -> Graph:
    """``vdot_lora_baseline_t2v.json``: the t2v graph on the real 14B files with VDOT LoRA Loader before the sampler."""
    g = describe("t2v")
    g.task = "lora_baseline_t2v"
    real = {"VDOTModelLoader": ("model_name", "diffusion_models"), "VDOTVAELoader": ("vae_name", "vae"),
            "VDOTTextEncoderLoader": ("text_encoder_name", "text_encoders")}
    for node in g.nodes:
        if node.type in real:
            widget, kind = real[node.type]
            node.widgets[widget] = MODEL_FILES[kind][0]
    model = next(n.id for n in g.nodes if n.type == "VDOTModelLoader")
    lora = g.add("VDOTLoraLoader", "Load models", {"lora_name": LIGHTX2V_LORA[0], "strength": 1.0, "apply": "on_the_fly"},
                 {"model": (model, 0)}, height=130,
                 properties={"models": [{"name": LIGHTX2V_LORA[0], "url": LIGHTX2V_LORA[1], "directory": "loras"}]})
    sampler = next(n for n in g.nodes if n.type == "VDOTSampler")
    sampler.links["model"] = (lora, 0)
    sampler.widgets.update(preset="renoise", steps=0, shift=0.0, cfg=1.0)  # renoise's own: 4 steps, shift 5
    next(n for n in g.nodes if n.type == "VDOTSaveVideo").widgets["filename_prefix"] = "VDOT/lora_baseline_t2v"
    g.notes[0] = ("MarkdownNote", "Models", LORA_BASELINE_NOTE, g.notes[0][3], g.notes[0][4])
    return g


EXTRA_WORKFLOWS = {"lora_baseline_t2v": describe_lora_baseline_t2v}


if __name__ == "__main__":
    raise SystemExit(main())
