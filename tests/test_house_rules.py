"""House rules checked on the source text: core never imports ComfyUI or the node layer, never spells a CLI
flag (each front end renames core's semantic input names), and every file this project writes goes
through vdot_nodes/core/atomic.py."""

import ast
import re
import types
from pathlib import Path

import pytest

from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.preprocess.weights import COMFY_ROOT_ENV, ENV_DIR, find_weights

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("vdot_nodes", "training", "tools", "benchmarks")

# Direct writes that are not a torn-file risk, each with the reason it may stay.
WRITER_ALLOWED = {
    ("training/run_dir.py", "os.replace("): "moves a run's existing entries aside; writes no bytes",
    ("training/trainer.py", "open("): "metrics.jsonl is an append-only log; a torn last line is dropped on resume",
    ("training/toy/teacher.py", "open("): "the toy teacher's append-only metrics.jsonl",
    ("training/toy/components.py", "open("): "the toy VAE's append-only metrics.jsonl",
    ("vdot_nodes/core/release.py", "open("): "streams a safetensors file into the temporary path atomic_path gives",
    ("benchmarks/bench_memory_targets.py", "open("): "streams a large file into the temporary path atomic_path gives",
    ("benchmarks/bench_convert.py", "torch.save("): "builds a stand-in of the official release pickle to convert",
    ("benchmarks/bench_scale.py", ".write_text("): "writes /proc/self/clear_refs (a kernel control, not a file)",
    ("vdot_nodes/core/preprocess/weights.py", "save_file("): "a one-line conversion the user is told to run",
    ("training/toy/cli.py", "shutil.copy"): "copies the toy checkpoints into the temporary path atomic_path gives",
}
WRITERS = ("save_file(", "torch.save(", "os.replace(", ".write_text(", ".write_bytes(", "shutil.copy", "shutil.move",
           ".tofile(", "np.save(")
OPEN_FOR_WRITING = re.compile(r"""\bopen\([^)]*['"][wax]b?\+?['"]""")


def _sources():
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")


def test_core_never_imports_comfyui_or_the_node_layer():
    pattern = re.compile(r"^\s*(from|import)\s+(folder_paths|comfy\b|comfy\.|vdot_nodes\.nodes|\.\.+nodes|\.nodes\b)",
                         re.MULTILINE)
    offenders = [f"{name}: {m.group(0).strip()}" for name, text in _sources() if name.startswith("vdot_nodes/core/")
                 for m in pattern.finditer(text)]
    assert offenders == []
    assert sum(1 for name, _ in _sources() if name.startswith("vdot_nodes/core/")) > 20  # the walk saw core


# A flag as typed on a command line (--ram-budget, --model), not a "---" rule or "a--b".
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Where core may spell a flag, each with the reason it may stay.
FLAG_ALLOWED = {
    ("vdot_nodes/core/errors.py", "--help"): "run_subcommand's usage hint, the same for every command",
}


def flags_in_strings(text: str) -> list[tuple[int, str]]:
    """``(line, flag)`` for every flag in the string literals of ``text`` (f-string parts included), docstrings
    excepted: those may say which flag of which command reaches a function."""
    tree = ast.parse(text)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, flag) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            for flag in FLAG.findall(node.value)]


def test_core_messages_and_input_names_spell_no_cli_flag():
    """Core names the semantic input (``ram_budget``, and ``input_ref("precision")`` inside a fix); the CLIs
    print it as their flag (run_subcommand's ``names``), the nodes as their socket (``inputs_named``)."""
    found = [(rel, line, flag) for rel, text in _sources() if rel.startswith("vdot_nodes/core/")
             for line, flag in flags_in_strings(text) if (rel, flag) not in FLAG_ALLOWED]
    assert found == []


def test_the_flag_check_would_catch_a_flag_in_core():
    message = 'def f(x):\n    """Reached by --model."""\n    raise VDOTInputError("vae", "no VAE", f"pass --vae {x}")\n'
    assert flags_in_strings(message) == [(3, "--vae")]
    assert flags_in_strings('def load(path, input_name="--lora"):\n    pass\n') == [(1, "--lora")]
    assert flags_in_strings('x = "a rule ---- and a--b and e-mail"\n') == []


def test_one_core_error_reads_as_each_front_end_spells_it(tmp_path, capsys):
    """The memory cap of core.validate names num_frames; `vdot generate` prints its flags, VDOT Sampler its sockets."""
    from vdot_nodes.cli import main
    from vdot_nodes.core.validate import validate_generate
    from vdot_nodes.nodes.sampler import VDOTSampler

    shape = {"num_frames": 1025, "height": 2048, "width": 2048}
    with pytest.raises(VDOTInputError) as err:
        validate_generate(shape)
    assert err.value.input_name == "num_frames" and err.value.fix == "lower num_frames, width/height or num_videos"
    code = main(["generate", "--frames", "1025", "--height", "2048", "--width", "2048", "--out", str(tmp_path / "x.mp4")])
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2 and line.startswith("vdot: error: --frames: 1 video(s) x 1025 frames x 2048x2048 need")
    assert line.endswith("Fix: lower --frames, --width/--height or --num-videos"), line
    with pytest.raises(VDOTInputError) as err:  # checked before the model, VAE or embeds are touched
        VDOTSampler().sample(model=None, vae=None, embeds=None, vcu=types.SimpleNamespace(**shape), seed=0,
                             preset="vdot", steps=0, shift=0.0, cfg=1.0, denoise=1.0, control_scale=1.0, num_videos=1)
    assert err.value.input_name == "vcu (num_frames)"
    assert err.value.fix == "lower vcu (num_frames), vcu (width)/vcu (height) or num_videos"


def test_a_missing_input_reads_as_how_each_front_end_gives_it():
    """Core says what is missing in its own words; VDOT Fit Video says which output to connect."""
    import torch

    from vdot_nodes.core.source_prep import fit_frame_ids
    from vdot_nodes.nodes.io import VDOTFitVideo

    with pytest.raises(VDOTInputError) as err:
        fit_frame_ids(9, 5, "target_fps", None, 16.0)
    assert err.value.fix == "give the source's frame rate as fps, or set frame_sampling to uniform or first"
    with pytest.raises(VDOTInputError) as err:
        VDOTFitVideo().fit(torch.rand(9, 16, 16, 3), 16, 16, 5, "crop", "target_fps", 16.0, fps=None)
    assert err.value.input_name == "fps" and err.value.fix.startswith("connect VDOT Load Video's fps output to fps")


def test_every_file_is_written_through_the_atomic_writer():
    found, used = [], set()
    for name, text in _sources():
        if name == "vdot_nodes/core/atomic.py":
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            hits = [w for w in WRITERS if w in line]
            if OPEN_FOR_WRITING.search(line):
                hits.append("open(")
            for hit in hits:
                if (name, hit) in WRITER_ALLOWED:
                    used.add((name, hit))
                else:
                    found.append(f"{name}:{lineno}: {line.strip()}")
    assert found == [], "write these through vdot_nodes/core/atomic.py:\n" + "\n".join(found)
    assert used == set(WRITER_ALLOWED), f"allow-list entries no longer needed: {set(WRITER_ALLOWED) - used}"


def test_the_writer_check_would_catch_a_direct_write():
    line = 'with open(path, "w", encoding="utf-8") as f:'
    assert OPEN_FOR_WRITING.search(line) and not OPEN_FOR_WRITING.search('with open(path, "rb") as f:')
    assert any(w in "save_file(tensors, str(path))" for w in WRITERS)


def test_annotator_folders_come_in_as_data(tmp_path, monkeypatch):
    """The node layer passes ComfyUI's folders; the CLI's fallback is $VDOT_COMFY_ROOT; nothing is imported."""
    monkeypatch.delenv(ENV_DIR, raising=False)
    monkeypatch.delenv(COMFY_ROOT_ENV, raising=False)
    given, root = tmp_path / "given", tmp_path / "root"
    (root / "models" / "vdot_annotators").mkdir(parents=True)
    given.mkdir()
    (given / "yolox_l.onnx").write_bytes(b"x")
    (root / "models" / "vdot_annotators" / "yolox_l.onnx").write_bytes(b"y")
    assert find_weights("dwpose_det", search_dirs=[given]) == given / "yolox_l.onnx"
    with pytest.raises(VDOTInputError, match="nowhere"):
        find_weights("dwpose_det")
    monkeypatch.setenv(COMFY_ROOT_ENV, str(root))
    assert find_weights("dwpose_det") == root / "models" / "vdot_annotators" / "yolox_l.onnx"
    with pytest.raises(VDOTInputError, match=str(tmp_path / "empty")):
        find_weights("dwpose_det", search_dirs=[tmp_path / "empty"])  # given folders replace the fallback


def test_pickles_are_opened_only_by_the_one_reader():
    """``torch.load`` runs in models/files.py only (weights-only); elsewhere it appears in docs and user hints."""
    calls = [(name, line.strip()) for name, text in _sources() for line in text.splitlines()
             if re.search(r"(?<![`'\"(])torch\.load\(", line) and not line.lstrip().startswith(("#", '"', "``"))]
    assert {name for name, _ in calls} == {"vdot_nodes/core/models/files.py"}
    assert all("weights_only=True" in line for _, line in calls)
