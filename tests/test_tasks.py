"""The task registry (``vdot_nodes.core.tasks``) is the one list of tasks: every consumer sees the same names,
and each front end names inputs in its own terms while core names them semantically."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import torch

from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.tasks import INPUTS, TASKS, build_vcu, tasks_of_node

ROOT = Path(__file__).resolve().parent.parent
F, H, W = 5, 32, 48


def _video(f=F, h=H, w=W):
    return torch.rand(f, h, w, 3, generator=torch.Generator().manual_seed(0))


def test_cli_task_choices_are_the_registry():
    from vdot_nodes.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    task = next(a for a in sub.choices["generate"]._actions if a.dest == "task")
    assert list(task.choices) == list(TASKS)


def test_nodes_build_exactly_the_registry_tasks():
    """Each VCU node, run with every option of its kind combo, builds the tasks the registry gives it."""
    from vdot_nodes.nodes import vcu as nodes

    video, refs = _video(), torch.rand(2, 20, 30, 3)
    mask = torch.zeros(F, H, W)
    mask[:, 8:24, 8:24] = 1
    values = {"control": video, "source": video, "references": refs, "first_frame": video[:1], "mask": mask,
              "width": W, "height": H, "num_frames": F, "keep_frames": 1, "box": ""}
    built: dict[str, str] = {}
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        if name == "VDOTVCUCustom":  # frames and masks by hand: no task of its own
            continue
        declared = cls.INPUT_TYPES()
        sockets = {**declared["required"], **declared.get("optional", {})}
        kinds = sockets["kind"][0] if "kind" in sockets else [None]
        for kind in kinds:
            kwargs = {k: values.get(k, spec[1].get("default") if len(spec) > 1 else None)
                      for k, spec in sockets.items() if k != "kind"}
            if kind is not None:
                kwargs["kind"] = kind
            (vcu,) = getattr(cls(), cls.FUNCTION)(**kwargs)
            assert TASKS[vcu.task].node == name and vcu.task not in built, (name, vcu.task)
            built[vcu.task] = name
    assert sorted(built) == sorted(TASKS)


def test_workflows_are_one_per_registry_task_on_its_node():
    """The workflow builder writes one workflow per registry task in each set (toy and VDOT-14B; plus its named extras),
    each on the task's node."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_workflows", ROOT / "tools" / "build_workflows.py")
    builder = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = builder  # dataclasses look their module up while the file executes
    spec.loader.exec_module(builder)
    api = ROOT / "workflows" / "api"
    assert {p.stem for p in api.glob("*.json")} == set(builder.all_graphs())
    for setup in builder.SETUPS:  # the toy set and the VDOT-14B set: one workflow per task each
        stems = {stem.removeprefix(setup.stem) for stem in builder.all_graphs() if stem.startswith(setup.stem)}
        assert set(TASKS) <= stems, setup.stem
        for task, task_spec in TASKS.items():
            graph = json.loads((api / f"{setup.stem}{task}.json").read_text())
            (vcu_node,) = [n for n in graph.values() if n["class_type"].startswith("VDOTVCU")]
            assert vcu_node["class_type"] == task_spec.node, (setup.stem, task)
            assert vcu_node["inputs"].get("kind") == task_spec.control_kind, (setup.stem, task)


def test_workflow_builder_takes_each_vcu_node_from_the_registry():
    """tools/build_workflows.py names no VCU node class itself: each comes from ``TaskSpec.node``."""
    tree = ast.parse((ROOT / "tools" / "build_workflows.py").read_text())
    named = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.startswith("VDOTVCU")]
    assert named == []


def test_manifest_reader_accepts_every_registry_task_and_only_those(tmp_path):
    from training.data.manifest import CSV_TASK_NAMES, TASK_FIELDS, read_manifest

    assert list(TASK_FIELDS) == list(TASKS)
    assert set(CSV_TASK_NAMES.values()) <= set(TASKS) and CSV_TASK_NAMES == {"reference": "r2v"}
    lines = []
    for task, fields in TASK_FIELDS.items():
        row = {"caption": "a ball", "task": task}
        row.update({f: (["r.png"] if f == "references" else f"{f}.mp4") for f in fields})
        lines.append(json.dumps(row))
    (tmp_path / "m.jsonl").write_text("\n".join(lines + ['{"caption": "x", "task": "layout"}']) + "\n")
    with pytest.raises(VDOTInputError) as err:
        read_manifest(tmp_path / "m.jsonl", check_files=False)
    assert [e[:2] for e in err.value.errors] == [(len(TASKS) + 1, "task")]  # only the made-up task
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    assert [s.task for s in read_manifest(tmp_path / "m.jsonl", check_files=False)] == list(TASKS)


def test_toy_report_spatial_tasks_come_from_the_registry():
    from training.toy.cli import SPATIAL_TASKS

    assert set(SPATIAL_TASKS) <= set(TASKS) and "layout" not in SPATIAL_TASKS
    assert {"firstframe_grey", "reference_pose", "inpaint", "outpaint", "depth"} <= set(SPATIAL_TASKS)
    assert not {"t2v", "r2v", "extension"} & set(SPATIAL_TASKS)


def test_every_task_is_one_complete_entry():
    for name, spec in TASKS.items():
        assert spec.name == name and spec.build is not None and tasks_of_node(spec.node)
        assert all(i.name in INPUTS for i in spec.inputs)
        assert spec.driving_video in (None, "control", "source")
        assert (spec.draw is not None) == spec.needs_source  # training draws each MV2V task's source


def test_core_task_messages_name_no_front_end():
    """core/vcu.py and core/tasks.py never spell a CLI flag or a node socket: the front ends do."""
    for module in ("vcu", "tasks"):
        tree = ast.parse((ROOT / "vdot_nodes" / "core" / f"{module}.py").read_text())
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and id(n) not in docstrings]
        assert not [t for t in texts if "--" in t or "node input" in t or "CLI" in t], module


def test_missing_input_is_named_by_each_front_end(tmp_path, capsys):
    from vdot_nodes.cli import main
    from vdot_nodes.core.video_io import write_video
    from vdot_nodes.nodes.vcu import VDOTVCUInpaint

    with pytest.raises(VDOTInputError) as err:  # core: the semantic input
        build_vcu("inpaint", source=_video())
    assert err.value.input_name == "mask" and "--" not in str(err.value)
    with pytest.raises(VDOTInputError) as err:  # the node: its sockets
        VDOTVCUInpaint().build(_video(), 0.5, mask=None, box="")
    assert err.value.fix == "connect a MASK to 'mask' or type x0,y0,x1,y1 (pixels) in 'box'"
    write_video(_video(9), tmp_path / "src.mp4", fps=8)  # the CLI: its flags
    code = main(["generate", "--task", "inpaint", "--source", str(tmp_path / "src.mp4"), "--frames", "5",
                 "--out", str(tmp_path / "x.mp4")])
    err_text = capsys.readouterr().err
    assert code == 2 and ("vdot: error: --mask: task 'inpaint' needs exactly one of mask / box, got none. "
                          "Fix: pass --mask <image|video> or pass --box X0,Y0,X1,Y1") in err_text, err_text


def test_manifest_errors_name_the_field_and_line():
    from training.data.manifest import sample_to_vcu

    sample = {"task": "depth", "caption": "x", "line": 7, "control": _video(f=4), "meta": {}}
    with pytest.raises(VDOTInputError) as err:
        sample_to_vcu(sample)
    assert err.value.input_name == "line 7 control" and "4k+1" in str(err.value)
    sample = {"task": "extension", "caption": "x", "line": 3, "video": _video(), "meta": {"keep_frames": 99}}
    with pytest.raises(VDOTInputError) as err:
        sample_to_vcu(sample)
    assert err.value.input_name == "line 3 meta.keep_frames" and "1..4" in str(err.value)
