"""House rules checked on the source text: core never imports ComfyUI or the node layer, and every file
this project writes goes through vdot_nodes/core/atomic.py."""

import re
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
