"""The shipped workflows (``workflows/``): every one validates and runs end to end on the embedded
toy model, its UI and API twins describe the same graph, and they are what the generator writes.

CI shrink rule (the only change made to a shipped workflow before running it, see ``shrink``):
every ``width``/``height`` widget becomes 64, every frame-count widget (``num_frames``,
``frame_load_cap``) above 1 becomes 9, outpaint sides that are not 0 become 16, and extension's
``keep_frames`` becomes 5. Everything else — model names, prompts, seeds, steps, example files —
runs as shipped.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workflow_executor import WorkflowError, execute, load_workflow, ui_to_api, validate  # noqa: E402

from vdot_nodes.core.vcu import TASKS  # noqa: E402
from vdot_nodes.core.video_io import read_video  # noqa: E402
from vdot_nodes.nodes import NODE_CLASS_MAPPINGS, comfy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
API = WORKFLOWS / "api"
TINY_SIZE, TINY_FRAMES, TINY_SIDE, TINY_KEEP = 64, 9, 16, 5
OUTPAINT_SIDES = ("top", "bottom", "left", "right")


def shrink(workflow: dict) -> dict:
    """The documented CI shrink rule (module docstring); returns a changed copy."""
    workflow = copy.deepcopy(workflow)
    for node in workflow.values():
        inputs = node["inputs"]
        for name, value in inputs.items():
            if isinstance(value, list):  # a link
                continue
            if name in ("width", "height"):
                inputs[name] = TINY_SIZE
            elif name in ("num_frames", "frame_load_cap") and value > 1:
                inputs[name] = TINY_FRAMES
            elif node["class_type"] == "VDOTVCUOutpaint" and name in OUTPAINT_SIDES and value:
                inputs[name] = TINY_SIDE
            elif node["class_type"] == "VDOTVCUExtension" and name == "keep_frames":
                inputs[name] = TINY_KEEP
    return workflow


NATIVE = "vdot_native_t2v"  # ComfyUI's own nodes + VDOT Sigmas: validated here, not executed (needs ComfyUI)
LORA_BASELINE = "vdot_lora_baseline_t2v"  # the real 14B files + a LoRA: validated in tests/test_lora.py


def test_one_workflow_per_task():
    shipped = sorted([f"vdot_{t}" for t in TASKS] + [NATIVE, LORA_BASELINE])
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == shipped
    assert sorted(p.stem for p in API.glob("*.json")) == shipped


def test_every_shipped_workflow_is_executed_or_validated_structurally():
    """Nothing is skipped silently: a workflow made only of our nodes is one of the executed task workflows or the
    LoRA baseline (set to the real 14B files; validated in tests/test_lora.py); the only other one is the native
    workflow, which the native tests below validate."""
    executed = {f"vdot_{t}" for t in TASKS}
    for path in API.glob("*.json"):
        classes = {node["class_type"] for node in load_workflow(path).values()}
        if classes <= set(NODE_CLASS_MAPPINGS):
            assert path.stem in executed | {LORA_BASELINE}, path.name
        else:
            assert path.stem == NATIVE, f"{path.name} uses {sorted(classes - set(NODE_CLASS_MAPPINGS))}"


@pytest.mark.parametrize("task", list(TASKS))
def test_workflow_runs_and_saves_video(task, comfy_root):
    workflow = shrink(load_workflow(API / f"vdot_{task}.json"))
    results = execute(workflow, NODE_CLASS_MAPPINGS)

    saves = [nid for nid, node in workflow.items() if node["class_type"] == "VDOTSaveVideo"]
    assert len(saves) == 1
    (saved,) = results[saves[0]]["ui"]["images"]
    assert saved["type"] == "output" and saved["subfolder"] == "VDOT"
    path = comfy_root / "output" / saved["subfolder"] / saved["filename"]
    frames, fps = read_video(path)
    width = TINY_SIZE + (2 * TINY_SIDE if task == "outpaint" else 0)  # outpaint adds left + right
    assert tuple(frames.shape) == (TINY_FRAMES, TINY_SIZE, width, 3)
    assert fps == 16.0
    # the sampler's output is what was saved (mp4 is lossy: compare loosely)
    (sampled,) = [results[nid]["outputs"][0] for nid, n in workflow.items() if n["class_type"] == "VDOTSampler"]
    assert tuple(sampled.shape) == (TINY_FRAMES, TINY_SIZE, width, 3)
    assert (frames - sampled).abs().mean() < 0.05


@pytest.mark.parametrize("task", list(TASKS))
def test_ui_and_api_twins_match(task):
    ui = load_workflow(WORKFLOWS / f"vdot_{task}.json")
    api = load_workflow(API / f"vdot_{task}.json")
    converted = ui_to_api(ui, NODE_CLASS_MAPPINGS)
    assert converted == {nid: {k: v for k, v in node.items() if k != "_meta"} for nid, node in api.items()}
    validate(api, NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("task", list(TASKS))
def test_ui_workflow_structure(task):
    ui = load_workflow(WORKFLOWS / f"vdot_{task}.json")
    assert ui["version"] == 0.4
    uuid.UUID(ui["id"])  # the frontend's schema (zComfyWorkflow) wants a UUID or no id
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == max(link[0] for link in ui["links"])
    for link_id, src, src_slot, dst, dst_slot, type_ in ui["links"]:
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert nodes[src]["outputs"][src_slot]["type"] == type_ == nodes[dst]["inputs"][dst_slot]["type"]
    for node in ui["nodes"]:
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                    "widgets_values"):
            assert key in node, (node["type"], key)
    assert {g["title"] for g in ui["groups"]} == {"Load models", "Inputs", "Prompt", "Sampling", "Save"}
    (markdown,) = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
    for file in ("wan2.1_vace_14B_fp16.safetensors", "wan_2.1_vae.safetensors", "umt5_xxl_fp16.safetensors"):
        assert f"/split_files/" in markdown["widgets_values"][0] and file in markdown["widgets_values"][0]
    (note,) = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert task in note["widgets_values"][0]
    loaders = {n["type"]: n for n in ui["nodes"] if n["type"].endswith("Loader")}
    for loader, folder in (("VDOTModelLoader", "diffusion_models"), ("VDOTVAELoader", "vae"),
                           ("VDOTTextEncoderLoader", "text_encoders")):
        (entry,) = loaders[loader]["properties"]["models"]
        assert entry["directory"] == folder and entry["url"].endswith("/" + entry["name"])
        assert entry["url"].startswith("https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/")
        assert loaders[loader]["widgets_values"][0] == comfy.EMBEDDED
    (sampler,) = [n for n in ui["nodes"] if n["type"] == "VDOTSampler"]
    assert sampler["widgets_values"][1] == "fixed"  # control_after_generate follows the seed


def test_generator_matches_shipped_files():
    """The shipped files are exactly what tools/build_workflows.py writes from the node declarations."""
    spec = importlib.util.spec_from_file_location("build_workflows", ROOT / "tools" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run: python tools/build_workflows.py"


def test_readme_lists_every_workflow():
    readme = (WORKFLOWS / "README.md").read_text(encoding="utf-8")
    for task in TASKS:
        assert f"vdot_{task}.json" in readme
    assert f"{NATIVE}.json" in readme


# --- negative: the executor refuses broken graphs with a message naming the problem ----------------

def _t2v() -> dict:
    return load_workflow(API / "vdot_t2v.json")


def _node(workflow: dict, class_type: str) -> str:
    return next(nid for nid, node in workflow.items() if node["class_type"] == class_type)


def test_unknown_node_class_is_refused():
    workflow = _t2v()
    workflow[_node(workflow, "VDOTSaveVideo")]["class_type"] = "VHS_VideoCombine"
    with pytest.raises(WorkflowError, match=r"unknown node class 'VHS_VideoCombine'"):
        validate(workflow, NODE_CLASS_MAPPINGS)


def test_mismatched_socket_type_is_refused():
    workflow = _t2v()
    sampler = workflow[_node(workflow, "VDOTSampler")]
    sampler["inputs"]["model"] = [_node(workflow, "VDOTVAELoader"), 0]  # a VAE into the model socket
    with pytest.raises(WorkflowError, match=r"input 'model' expects VDOT_MODEL .* of type VDOT_VAE"):
        validate(workflow, NODE_CLASS_MAPPINGS)


def test_undeclared_input_bad_combo_and_range_are_refused():
    workflow = _t2v()
    workflow[_node(workflow, "VDOTSampler")]["inputs"]["guidance"] = 3.0
    with pytest.raises(WorkflowError, match=r"input 'guidance' is not declared"):
        validate(workflow, NODE_CLASS_MAPPINGS)
    workflow = _t2v()
    workflow[_node(workflow, "VDOTModelLoader")]["inputs"]["precision"] = "int4"
    with pytest.raises(WorkflowError, match=r"precision='int4' is not one of the options"):
        validate(workflow, NODE_CLASS_MAPPINGS)
    workflow = _t2v()
    workflow[_node(workflow, "VDOTSampler")]["inputs"]["steps"] = 500
    with pytest.raises(WorkflowError, match=r"steps=500 is above the maximum 100"):
        validate(workflow, NODE_CLASS_MAPPINGS)
    workflow = _t2v()
    del workflow[_node(workflow, "VDOTSampler")]["inputs"]["vcu"]
    with pytest.raises(WorkflowError, match=r"required input\(s\) \['vcu'\] missing"):
        validate(workflow, NODE_CLASS_MAPPINGS)


def test_cycle_is_refused():
    workflow = _t2v()
    fit = {"class_type": "VDOTFitVideo", "inputs": {"images": ["101", 0], "width": 64, "height": 64,
                                                    "num_frames": 9, "mode": "crop"}}
    workflow["100"], workflow["101"] = fit, copy.deepcopy(fit)
    workflow["101"]["inputs"]["images"] = ["100", 0]
    with pytest.raises(WorkflowError, match="cycle"):
        validate(workflow, NODE_CLASS_MAPPINGS)


# --- the native workflow: ComfyUI's own nodes, checked against their declarations in ComfyUI ---------
# Input names (in order) and output types of ComfyUI's nodes as Comfy-Org/ComfyUI a125cd84 declares them
# (nodes.py, comfy_extras/nodes_wan.py, nodes_custom_sampler.py, nodes_video.py), pinned here as data.
COMFY_NODES = {
    "UNETLoader": (["unet_name", "weight_dtype"], ["MODEL"]),
    "CLIPLoader": (["clip_name", "type", "device"], ["CLIP"]),
    "VAELoader": (["vae_name"], ["VAE"]),
    "CLIPTextEncode": (["text", "clip"], ["CONDITIONING"]),
    "WanVaceToVideo": (["positive", "negative", "vae", "width", "height", "length", "batch_size", "strength",
                        "control_video", "control_masks", "reference_image"],
                       ["CONDITIONING", "CONDITIONING", "LATENT", "INT"]),
    "KSamplerSelect": (["sampler_name"], ["SAMPLER"]),
    "RandomNoise": (["noise_seed"], ["NOISE"]),
    "CFGGuider": (["model", "positive", "negative", "cfg"], ["GUIDER"]),
    "SamplerCustomAdvanced": (["noise", "guider", "sampler", "sigmas", "latent_image"], ["LATENT", "LATENT"]),
    "VAEDecode": (["samples", "vae"], ["IMAGE"]),
    "CreateVideo": (["images", "fps", "audio"], ["VIDEO"]),
    "SaveVideo": (["video", "filename_prefix", "format", "codec"], []),
}
COMFY_DETERMINISTIC_SAMPLERS = {"euler", "heun", "dpm_2", "lms", "dpmpp_2m", "ipndm", "ipndm_v", "deis", "res_multistep",
                                "gradient_estimation", "uni_pc", "uni_pc_bh2"}


def _builder():
    spec = importlib.util.spec_from_file_location("build_workflows", ROOT / "tools" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_native_workflow_uses_comfyuis_declarations_and_vdot_sigmas():
    builder = _builder()
    for name, (inputs, outputs) in COMFY_NODES.items():  # the builder's table agrees with ComfyUI's
        cls = builder.NATIVE_CLASSES[name]
        declared = cls.INPUT_TYPES()
        assert [*declared["required"], *declared.get("optional", {})] == inputs, name
        assert list(cls.RETURN_TYPES) == outputs, name
    api = load_workflow(API / f"{NATIVE}.json")
    ui = load_workflow(WORKFLOWS / f"{NATIVE}.json")
    classes = builder.ALL_CLASSES
    validate(api, classes)  # every input declared, links type-correct, widget values in range
    assert ui_to_api(ui, classes) == {nid: {k: v for k, v in n.items() if k != "_meta"} for nid, n in api.items()}
    by_type = {}
    for nid, node in api.items():
        assert node["class_type"] in COMFY_NODES or node["class_type"] in ("VDOTSigmas", "VDOTFlowUniPC"), node["class_type"]
        by_type.setdefault(node["class_type"], []).append((nid, node["inputs"]))
    (_, loader), = by_type["UNETLoader"]
    assert loader["unet_name"] == "vdot_14b_bf16.safetensors"
    assert by_type["CLIPLoader"][0][1]["type"] == "wan"
    (sig_id, sig), = by_type["VDOTSigmas"]
    (_, flow_unipc), = by_type["VDOTFlowUniPC"]  # our exact SAMPLER (ComfyUI's nearest: ipndm, README)
    assert flow_unipc["timesteps"] == "truncated"
    assert builder.NATIVE_SAMPLER in COMFY_DETERMINISTIC_SAMPLERS and builder.NATIVE_SAMPLER in builder.COMFY_SAMPLER_NAMES
    (_, guider), = by_type["CFGGuider"]
    assert guider["cfg"] == 1.0  # one model call per step, as VDOT samples
    (_, sca), = by_type["SamplerCustomAdvanced"]
    assert sca["sigmas"] == [sig_id, 0] and api[sca["latent_image"][0]]["class_type"] == "WanVaceToVideo"
    assert api[sca["sampler"][0]]["class_type"] == "VDOTFlowUniPC"
    # our node runs for real here: the sigmas ComfyUI will get are the official ones
    (sigmas,) = getattr(NODE_CLASS_MAPPINGS["VDOTSigmas"](), "sigmas")(**sig)
    assert sigmas.tolist() == pytest.approx([0.99993742, 0.97951180, 0.94106567, 0.84192783, 0.0], abs=1e-6)
    # the UI file: link table consistent, download entries where a file can be downloaded
    nodes = {n["id"]: n for n in ui["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, type_ in ui["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == type_ == nodes[dst]["inputs"][dst_slot]["type"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
    for node in ui["nodes"]:
        for entry in node["properties"].get("models", []):
            assert node["widgets_values"][0] == entry["name"] and entry["url"].endswith("/" + entry["name"])
    (note,) = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
    assert "huggingface.co/yutongwang1012/VDOT" in note["widgets_values"][0]
    assert "vdot convert" in note["widgets_values"][0]
