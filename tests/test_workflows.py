"""The shipped workflows (``workflows/``), written by ``tools/build_workflows.py``.

* Every workflow that starts on the embedded toy model is **executed at its shipped defaults** (nothing is
  shrunk: the toy set is sized to the toy's native 64×64, 5 frames) and its saved and previewed videos
  are checked.
* The VDOT-14B set, the native workflow and the LoRA baseline are **validated** — graph, links, widget
  values against the node declarations, file names — with empty stand-in model files, not run.
* Every UI file is checked geometrically as the frontend draws it: group title bars clear of nodes,
  nodes inside their group, no overlaps, every wire running left to right.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
import uuid
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workflow_executor import WorkflowError, execute, load_workflow, ui_to_api, validate  # noqa: E402

from vdot_nodes.core.errors import VDOTInputError  # noqa: E402
from vdot_nodes.core.tasks import TASKS  # noqa: E402
from vdot_nodes.core.video_io import read_video  # noqa: E402
from vdot_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, comfy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
API = WORKFLOWS / "api"
LOADERS = {"VDOTModelLoader": ("model_name", "diffusion_models"), "VDOTVAELoader": ("vae_name", "vae"),
           "VDOTTextEncoderLoader": ("text_encoder_name", "text_encoders"), "VDOTLoraLoader": ("lora_name", "loras"),
           "UNETLoader": ("unet_name", "diffusion_models"), "CLIPLoader": ("clip_name", "text_encoders"),
           "VAELoader": ("vae_name", "vae")}
NATIVE = "vdot_native_t2v"  # ComfyUI's own nodes + VDOT Sigmas: needs ComfyUI
LORA_BASELINE = "vdot_lora_baseline_t2v"  # the real 14B files + a LoRA (also checked in tests/test_lora.py)


def _builder():
    spec = importlib.util.spec_from_file_location("build_workflows", ROOT / "tools" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


builder = _builder()
SHIPPED = sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def _model_files(api: dict) -> dict[str, str]:
    """{folder: file} of every loader in an API workflow."""
    return {LOADERS[n["class_type"]][1]: n["inputs"][LOADERS[n["class_type"]][0]]
            for n in api.values() if n["class_type"] in LOADERS}


def _on_toy(name: str) -> bool:
    files = _model_files(load_workflow(API / f"{name}.json"))
    return bool(files) and set(files.values()) == {comfy.EMBEDDED}


ON_TOY = [n for n in SHIPPED if _on_toy(n)]
ON_14B = [n for n in SHIPPED if n.startswith(builder.REAL.stem)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: the toy gains nothing from threads


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """A ComfyUI folder root with empty stand-ins of every model file a shipped workflow names (so the
    loaders' file lists offer them, as after the downloads); the toy workflows never read them."""
    root = tmp_path_factory.mktemp("comfy")
    for sub in ("input", "output", "models", "temp"):
        (root / sub).mkdir()
    for name in SHIPPED:
        for folder, file in _model_files(load_workflow(API / f"{name}.json")).items():
            if file != comfy.EMBEDDED:
                (root / "models" / folder).mkdir(parents=True, exist_ok=True)
                (root / "models" / folder / file).write_bytes(b"")
    comfy.set_fallback_root(root)
    yield root
    comfy.set_fallback_root(None)


def _classes():
    return {**NODE_CLASS_MAPPINGS, **builder.NATIVE_CLASSES}


# --- what is shipped, and that each is run or validated -------------------------------------------

def test_shipped_files_are_what_the_generator_writes():
    """workflows/ (UI files, API twins, README) is exactly what tools/build_workflows.py writes."""
    assert builder.main(["--check"]) == 0, "run: python tools/build_workflows.py"
    assert SHIPPED == sorted(builder.all_graphs())
    assert sorted(p.stem for p in API.glob("*.json")) == SHIPPED


def test_every_shipped_workflow_is_executed_or_validated():
    """The toy set (one per task + long video) is exactly what runs on the embedded model; every other
    workflow is the 14B twin of one, the native one or the LoRA baseline — all validated below."""
    toy = sorted([builder.TOY.stem + t for t in TASKS] + [builder.TOY.stem + builder.LONG])
    assert ON_TOY == toy
    assert sorted(ON_14B) == sorted(builder.REAL.stem + n.removeprefix(builder.TOY.stem) for n in toy)
    assert sorted(set(SHIPPED) - set(ON_TOY) - set(ON_14B)) == [LORA_BASELINE, NATIVE]


# --- the toy set: executed at the shipped defaults ----------------------------------------------------

def _expected_shape(name: str) -> tuple[int, int, int]:
    toy = builder.TOY
    return (toy.long_frames if name.endswith(builder.LONG) else toy.frames, toy.height, toy.width)


@pytest.mark.parametrize("name", ON_TOY)
def test_toy_workflow_runs_at_its_shipped_defaults(name, shared_root):
    workflow = load_workflow(API / f"{name}.json")
    results = execute(workflow, NODE_CLASS_MAPPINGS)  # as shipped: nothing shrunk or replaced

    frames_node = [nid for nid, n in workflow.items() if n["class_type"] in ("VDOTSampler", "VDOTLongVideo")]
    (sampled,) = [results[nid]["outputs"][0] for nid in frames_node]
    expected = _expected_shape(name)
    assert tuple(sampled.shape) == (*expected, 3) and torch.isfinite(sampled).all()
    shown = {}
    for nid, node in workflow.items():
        if node["class_type"] in ("VDOTSaveVideo", "VDOTPreviewVideo"):
            (entry,) = results[nid]["ui"]["images"]
            folder = {"output": "output", "temp": "temp"}[entry["type"]]
            frames, fps = read_video(shared_root / folder / entry["subfolder"] / entry["filename"])
            assert tuple(frames.shape) == (*expected, 3) and fps == 16.0
            assert (frames - sampled).abs().mean() < 0.05  # mp4 is lossy: what was sampled, loosely
            shown[node["class_type"]] = entry["type"]
    assert shown == {"VDOTSaveVideo": "output", "VDOTPreviewVideo": "temp"}


# --- the VDOT-14B set and every other file: validated, not run ---------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_ui_and_api_twins_describe_one_valid_graph(name, shared_root):
    """The UI file converts (as the frontend's Save (API) does) to its API twin, and that validates against
    the node declarations: classes, inputs, socket types, combo options (model files included), ranges."""
    classes = _classes()
    ui = load_workflow(WORKFLOWS / f"{name}.json")
    api = load_workflow(API / f"{name}.json")
    assert ui_to_api(ui, classes) == {nid: {k: v for k, v in node.items() if k != "_meta"} for nid, node in api.items()}
    validate(api, classes)


@pytest.mark.parametrize("name", SHIPPED)
def test_ui_file_structure(name):
    """What the frontend's schema (zComfyWorkflow 0.4) needs, and a link table consistent both ways."""
    ui = load_workflow(WORKFLOWS / f"{name}.json")
    assert ui["version"] == 0.4
    uuid.UUID(ui["id"])
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
    assert sorted(n["type"] for n in ui["nodes"] if n["type"] in ("Note", "MarkdownNote")) == ["MarkdownNote", "Note"]


@pytest.mark.parametrize("name", ON_14B)
def test_14b_workflow_is_set_for_vdot_14b_at_480p(name):
    from vdot_nodes.core.release import ReleaseComponent, output_name

    api = load_workflow(API / f"{name}.json")
    twin = load_workflow(API / f"{builder.TOY.stem}{name.removeprefix(builder.REAL.stem)}.json")
    # the same graph as its toy twin: same nodes and links; only sizes, files, preset and prompt differ
    assert [(n["class_type"], sorted(k for k, v in n["inputs"].items() if isinstance(v, list))) for n in api.values()] \
        == [(n["class_type"], sorted(k for k, v in n["inputs"].items() if isinstance(v, list))) for n in twin.values()]
    transformer = ReleaseComponent("transformer", Path("vdot_14b.pt"), {}, "", "14B", {})
    assert _model_files(api) == {"diffusion_models": output_name(transformer, "bf16"),  # what `vdot convert` writes
                                 "vae": "wan_2.1_vae.safetensors", "text_encoders": "umt5_xxl_fp16.safetensors"}
    long, outpaint = name.endswith(builder.LONG), name.endswith("outpaint")
    for node in api.values():  # 832×480, 81 frames (145 for long video); images fitted as 1 frame
        inputs = node["inputs"]
        if "height" in inputs:
            assert inputs["height"] == 480
            assert inputs["width"] == (832 - 2 * 96 if outpaint else 832)  # outpaint: the VCU adds 96 + 96
        if "num_frames" in inputs:
            assert inputs["num_frames"] in ({145} if long else {81, 1})  # long: 2 windows of 81, overlap 17
        if node["class_type"] == "VDOTVCUOutpaint":
            assert inputs["left"] + inputs["right"] == 2 * 96
    (sampler,) = [n["inputs"] for n in api.values() if n["class_type"] in ("VDOTSampler", "VDOTLongVideo")]
    assert (sampler["preset"], sampler["steps"], sampler["shift"], sampler["cfg"]) == ("vdot", 0, 0.0, 1.0)
    ui = load_workflow(WORKFLOWS / f"{name}.json")
    note = next(n for n in ui["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    assert "huggingface.co/yutongwang1012/VDOT" in note and "vdot convert" in note and "vdot_14b.pt" in note


@pytest.mark.parametrize("name", SHIPPED)
def test_download_entries_match_the_loader_values(name):
    """The frontend offers properties.models only where the loader's value is that file: every entry names
    its loader's value and a Hugging Face URL ending in it; every loader set to a file with a known download
    has its entry; loaders on the toy model or on a file that must be converted have none."""
    ui = load_workflow(WORKFLOWS / f"{name}.json")
    for node in ui["nodes"]:
        if node["type"] not in LOADERS:
            continue
        value, entries = node["widgets_values"][0], node["properties"].get("models", [])
        known = {f[0]: (folder, f[1]) for folder, f in builder.MODEL_FILES.items()}
        known[builder.LIGHTX2V_LORA[0]] = ("loras", builder.LIGHTX2V_LORA[1])
        if value in known:
            (entry,) = entries
            assert (entry["name"], entry["directory"], entry["url"]) == (value, *known[value])
            assert entry["directory"] == LOADERS[node["type"]][1]
            assert entry["url"].startswith("https://huggingface.co/") and entry["url"].endswith("/" + value)
        else:
            assert entries == [], (node["type"], value)


def _control_values(node: dict, classes) -> list:
    """The frontend's "control after generate" values stored in a UI node's widgets_values."""
    values = list(node["widgets_values"])
    controls = []
    cls = classes[node["type"]]
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            type_, opts = decl[0], (decl[1] if len(decl) > 1 else {})
            if isinstance(type_, list) or (type_ in ("INT", "FLOAT", "STRING", "BOOLEAN") and not opts.get("forceInput")):
                values.pop(0)
                if comfy.has_control_widget(name, type_, opts):
                    controls.append(values.pop(0))
    assert values == []
    return controls


def test_seeds_are_fixed_and_no_vcu_seed_randomises():
    """Every shipped seed's control is "fixed" (the shipped result reproduces), and a VCU node's seed
    declares "fixed" as its control default, so a VCU node added from the menu keeps its clip too (the
    frontend gives any INT named seed a control, "randomize" unless the input says otherwise)."""
    classes = _classes()
    seen = 0
    for name in SHIPPED:
        for node in load_workflow(WORKFLOWS / f"{name}.json")["nodes"]:
            if node["type"] in classes:
                controls = _control_values(node, classes)
                assert set(controls) <= {"fixed"}, (name, node["type"], controls)
                seen += len(controls)
    assert seen >= len(SHIPPED)  # every workflow has at least its sampler's seed
    for cls in NODE_CLASS_MAPPINGS.values():
        if getattr(cls, "CATEGORY", "") != "VDOT/VCU":
            continue
        for name, decl in cls.INPUT_TYPES().get("required", {}).items():
            opts = decl[1] if len(decl) > 1 else {}
            if comfy.has_control_widget(name, decl[0], opts):
                assert opts["control_after_generate"] == "fixed", (cls.__name__, name)
    extension = NODE_CLASS_MAPPINGS["VDOTVCUExtension"].INPUT_TYPES()["required"]["seed"]
    assert comfy.has_control_widget("seed", "INT", extension[1]) and extension[1]["control_after_generate"] == "fixed"


# --- layout, as the frontend draws it ---------------------------------------------------------------

NODE_TITLE_HEIGHT = 30  # LiteGraph: a node's title bar is drawn above its pos


def _node_rect(node: dict) -> tuple:
    (x, y), (w, h) = node["pos"], node["size"]
    return (x, y - NODE_TITLE_HEIGHT, x + w, y + h)


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(inner: tuple, outer: tuple) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


@pytest.mark.parametrize("name", SHIPPED)
def test_layout_reads_left_to_right_with_visible_group_titles(name):
    ui = load_workflow(WORKFLOWS / f"{name}.json")
    nodes = {n["id"]: n for n in ui["nodes"]}
    rects = {i: _node_rect(n) for i, n in nodes.items()}
    ids = sorted(rects)
    for i in ids:  # no node (title bar included) covers another
        for j in ids[ids.index(i) + 1:]:
            assert not _overlap(rects[i], rects[j]), (name, nodes[i]["type"], nodes[j]["type"])
    groups = ui["groups"]
    assert [g["title"] for g in groups] == [t for t in ("Load models", "Prompt", "Inputs", "Sampling", "Output")
                                            if any(t == g["title"] for g in groups)]
    assert {g["title"] for g in groups} >= {"Load models", "Prompt", "Inputs", "Sampling", "Output"}
    boxes = {}
    for g in groups:
        x, y, w, h = g["bounding"]
        box, title = (x, y, x + w, y + h), (x, y, x + w, y + g["font_size"] * 1.4)
        boxes[g["title"]] = box
        for i, rect in rects.items():
            assert not _overlap(title, rect), f"{name}: group {g['title']!r} title hidden by {nodes[i]['type']}"
            if _overlap(box, rect):  # a node touching a group lies wholly inside it
                assert _inside(rect, box), f"{name}: {nodes[i]['type']} sticks out of group {g['title']!r}"
    titles = list(boxes)
    for a in titles:
        for b in titles[titles.index(a) + 1:]:
            assert not _overlap(boxes[a], boxes[b]), (name, a, b)
    for i, node in nodes.items():  # every graph node is in exactly one group; notes in none
        holders = [t for t, box in boxes.items() if _inside(rects[i], box)]
        assert len(holders) == (0 if node["type"] in ("Note", "MarkdownNote") else 1), (name, node["type"], holders)
    for _, src, _, dst, _, _ in ui["links"]:  # every wire leaves a right edge for a node further right
        assert nodes[dst]["pos"][0] >= nodes[src]["pos"][0] + nodes[src]["size"][0] + 40, \
            (name, nodes[src]["type"], nodes[dst]["type"])


# --- notes: short and true -------------------------------------------------------------------------

def _in_toy_grammar(text: str) -> bool:
    """Whether ``text`` is a caption of the toy grammar (training/toy/captions.py)."""
    from training.toy import captions as c

    colour, bg = "|".join(c.OBJECT_COLORS), "|".join(c.BACKGROUND_COLORS)
    direction = r"(?:left|right|up|down|(?:up|down) and (?:left|right))"
    clause = (rf"an? (?:{colour}) (?:(?:{'|'.join(c.SHAPES)}) (?:moves {direction}|stays still)"
              rf"|stick figure (?:walks {direction}|stays still))")
    pattern = (rf"{clause}(?:, {clause})* over an? (?:{bg}) (?:{'|'.join(c.PATTERNS)}) background"
               rf"(?:, the camera pans {direction})?")
    return re.fullmatch(pattern, text) is not None


@pytest.mark.parametrize("name", ON_TOY)
def test_toy_notes_and_prompt_are_true(name):
    ui = load_workflow(WORKFLOWS / f"{name}.json")
    api = load_workflow(API / f"{name}.json")
    (encode,) = [n["inputs"] for n in api.values() if n["class_type"] == "VDOTTextEncode"]
    assert _in_toy_grammar(encode["positive"]), encode["positive"]  # the toy knows nothing else
    note = next(n for n in ui["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "coloured blobs" in note and "coloured blobs" in readme  # the same description of the toy's output
    assert "noise-like" not in note.lower()  # what the notes used to claim, against the README
    example = re.search(r'e\.g\. "([^"]+)"', note).group(1)
    assert _in_toy_grammar(example)
    twin = builder.REAL.stem + name.removeprefix(builder.TOY.stem)
    assert f"`{twin}.json`" in note and (WORKFLOWS / f"{twin}.json").exists()  # how to switch to the real model
    for note_node in ui["nodes"]:
        if note_node["type"] == "Note":
            text = note_node["widgets_values"][0]
            assert "Fit Video" not in text or any(n["class_type"] == "VDOTFitVideo" for n in api.values())


@pytest.mark.parametrize("name", SHIPPED)
def test_note_advice_is_within_the_widgets_limits(name):
    """Presets a note names exist; a cfg or steps it advises is one the sampler accepts."""
    from vdot_nodes.core.sampling import MAX_STEPS, SAMPLER_PRESETS

    ui = load_workflow(WORKFLOWS / f"{name}.json")
    cfg_max = NODE_CLASS_MAPPINGS["VDOTSampler"].INPUT_TYPES()["required"]["cfg"][1]["max"]
    for node in ui["nodes"]:
        if node["type"] not in ("Note", "MarkdownNote"):
            continue
        text = node["widgets_values"][0]
        assert len(text) < 2500, (name, node["title"], len(text))
        for preset in re.findall(r"preset[’']?s? (?:to )?`(\w+)`", text, re.I):
            assert preset in SAMPLER_PRESETS, (name, preset)
        for value in re.findall(r"cfg (\d+(?:\.\d+)?)", text):
            assert 1.0 <= float(value) <= cfg_max, (name, value)
        for value in re.findall(r"(\d+) steps", text):
            assert int(value) <= MAX_STEPS, (name, value)


# --- README --------------------------------------------------------------------------------------

def test_readmes_match_the_shipped_nodes_and_workflows():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## ComfyUI nodes"):readme.index("### LoRA")]
    listed = re.findall(r"^\| ([^|]+?) \| VDOT/", table, re.M)
    assert sorted(listed) == sorted(NODE_DISPLAY_NAME_MAPPINGS.values())
    section = readme[readme.index("## Workflows"):readme.index("## Training")]
    for name in (builder.TOY.stem + "<task>.json", builder.REAL.stem + "<task>.json", f"{NATIVE}.json",
                 f"{LORA_BASELINE}.json", builder.TOY.stem + builder.LONG + ".json"):
        assert name in section, name
    workflows_readme = (WORKFLOWS / "README.md").read_text(encoding="utf-8")
    for name in SHIPPED:
        assert f"({name}.json)" in workflows_readme, name


# --- the nodes the workflows rely on: Fit Video's frame choice, Preview Video, examples in input/ -------

def test_fit_video_picks_frames_first_uniform_or_at_a_target_fps():
    fit = NODE_CLASS_MAPPINGS["VDOTFitVideo"]().fit
    video = torch.arange(81, dtype=torch.float32).div(80).view(81, 1, 1, 1).expand(81, 32, 32, 3).contiguous()

    def picked(**kw):
        (out,) = fit(video, 32, 32, kw.pop("num_frames", 17), "crop", **kw)
        return (out[:, 0, 0, 0] * 80).round().int().tolist()

    assert picked(frame_sampling="first") == list(range(17))
    assert picked(frame_sampling="uniform") == list(range(0, 81, 5))  # spread over the whole clip, both ends kept
    assert picked() == list(range(0, 81, 5))  # uniform is the default, as `vdot generate` samples a source
    assert picked(frame_sampling="target_fps", target_fps=8.0, fps=16.0) == list(range(0, 33, 2))
    assert picked(frame_sampling="target_fps", target_fps=16.0, fps=16.0, num_frames=81) == list(range(81))
    with pytest.raises(VDOTInputError, match="fps: frame_sampling target_fps needs the source's frame rate"):
        picked(frame_sampling="target_fps", target_fps=8.0)
    with pytest.raises(VDOTInputError, match="target_fps: 24 is not in"):
        picked(frame_sampling="target_fps", target_fps=24.0, fps=16.0)  # would repeat frames
    with pytest.raises(VDOTInputError, match="81 frames at 16 fps: 17 frames at 2 fps need 129"):
        picked(frame_sampling="target_fps", target_fps=2.0, fps=16.0)
    with pytest.raises(VDOTInputError, match="has 81 frames but 85"):
        picked(frame_sampling="uniform", num_frames=85)


def test_preview_video_writes_only_to_the_temp_folder(comfy_root):
    frames = torch.rand(5, 32, 48, 3)
    preview = NODE_CLASS_MAPPINGS["VDOTPreviewVideo"]()
    first = preview.preview(frames, 16.0)["ui"]["images"][0]
    second = preview.preview(frames, 16.0)["ui"]["images"][0]
    assert first["type"] == second["type"] == "temp" and first["filename"] != second["filename"]
    saved, fps = read_video(comfy_root / "temp" / first["subfolder"] / first["filename"])
    assert saved.shape == (5, 32, 48, 3) and fps == 16.0
    assert list((comfy_root / "output").iterdir()) == []
    with pytest.raises(VDOTInputError, match="frames"):
        preview.preview(torch.full((5, 32, 48, 3), float("nan")), 16.0)


def test_examples_are_copied_into_input_once_and_never_over_a_users_file(comfy_root):
    from vdot_nodes.nodes.io import copy_examples_to_input

    (comfy_root / "input" / "vdot_examples").mkdir(parents=True)
    mine = comfy_root / "input" / "vdot_examples" / "ball.mp4"
    mine.write_bytes(b"the user's own file")
    listed = NODE_CLASS_MAPPINGS["VDOTLoadImage"].INPUT_TYPES()["required"]["image"][0]  # listing copies
    bundled = sorted(p.name for p in comfy.EXAMPLES_DIR.iterdir())
    assert sorted(p.name for p in (comfy_root / "input" / "vdot_examples").iterdir()) == bundled
    assert mine.read_bytes() == b"the user's own file"  # never overwritten
    for name in bundled:
        if name != "ball.mp4":
            assert (comfy_root / "input" / "vdot_examples" / name).read_bytes() == (comfy.EXAMPLES_DIR / name).read_bytes()
    assert listed.count("vdot_examples/star_reference.png") == 1  # listed once, as the frontend previews it
    assert copy_examples_to_input() == []  # a second listing copies nothing
    # the name runs what the preview shows: the copy in input/ (here the user's file), else the bundled one
    assert comfy.input_path("vdot_examples/ball.mp4") == mine
    (comfy_root / "input" / "vdot_examples" / "box_mask.png").unlink()
    assert comfy.input_path("vdot_examples/box_mask.png") == comfy.EXAMPLES_DIR / "box_mask.png"


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


def test_native_workflow_uses_comfyuis_declarations_and_vdot_sigmas(shared_root):
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
