"""`vdot train` under bad input and faults: nothing lost, nothing silent, errors before any model loads.

The run folder rule (a finished run is never started over; --overwrite moves it aside), resume from the newest
whole checkpoint past each kind of damage, config values type-checked with the dotted key, unreadable data rows
skipped reproducibly within a budget, divergence as one line. Tiny stage-1 runs (5 frames of 16×16, 2 blocks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

import training.trainer as trainer_module
from training.batches import build_loader
from training.cli import train_main
from training.config import config_from_dict, load_config
from training.trainer import Trainer
from vdot_nodes.core.errors import VDOTInputError

ROOT = Path(__file__).resolve().parent.parent

from tests.helpers import TRAIN_SHAPE as SHAPE
from tests.helpers import write_train_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(folder: Path, out: str = "run", **data) -> dict:
    """Stage 1, DMD every iteration, no CFG: the cheapest real run. Checkpoints at steps 1 and 2 (the end)."""
    return {
        "stage": 1, "seed": 3, "out": out, "max_steps": 2, "guidance": {"cfg_scale": 1.0},
        "loss": {"dm": "dmd"}, "schedule": {"ttur": 1, "generator_objectives": ["dm"]},
        "optim": {"lr": 1e-3, "critic_lr": 1e-3}, "models": {"teacher_precision": "fp32"},
        "runtime": {"device": "cpu", "mixed_precision": "fp32", "gradient_checkpointing": False},
        "data": {"captions": "caps.txt", "batch_size": 1, **SHAPE, **data},
        "logging": {"checkpoint_every": 1, "keep_last": 3, "export_precision": "fp32"},
    }


def _write(folder: Path, cfg: dict, name: str = "cfg.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "caps.txt").write_text("a red ball\na blue cat\na green box\n")
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _no_models(monkeypatch):
    """Make loading any network fail: a check that passes must have happened before the models load."""
    def refuse(*args, **kwargs):
        raise AssertionError("the models were loaded before the check")

    monkeypatch.setattr(trainer_module, "build_networks", refuse)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-step run through the CLI: checkpoints step_000001 and step_000002, an export, metrics."""
    folder = tmp_path_factory.mktemp("finished")
    assert train_main([str(_write(folder, _config(folder))), "--no-progress"]) == 0
    return folder


def _copy_run(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "f")
    return tmp_path / "f"


# ---------------------------------------------------------------------------------------------- run folder


def test_rerun_into_finished_folder_is_refused_before_models_load_and_old_files_stay(finished, tmp_path, monkeypatch,
                                                                                    capsys):
    folder = _copy_run(finished, tmp_path)
    before = _snapshot(folder / "run")
    assert any(k.startswith("exports/") for k in before) and "checkpoints/step_000002/meta.json" in before
    _no_models(monkeypatch)
    assert train_main([str(folder / "cfg.yaml"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and str(folder / "run") in err and "--resume" in err and "--overwrite" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _snapshot(folder / "run") == before
    assert train_main([str(folder / "cfg.yaml"), "--resume", "--overwrite"]) == 2  # contradictory flags
    assert "cannot be combined" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    assert train_main([str(folder / "cfg.yaml"), "--out", str(tmp_path / "a_file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_left_overs_of_a_crash_before_any_checkpoint_are_not_a_run(tmp_path):
    from training.run_dir import run_contents

    (tmp_path / "checkpoints" / "step_000001.tmp").mkdir(parents=True)  # a save cut short
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / ".generator.123.partial.safetensors").write_bytes(b"x")  # a writer's temporary file
    (tmp_path / "metrics.jsonl").write_text("")
    assert run_contents(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n')
    assert run_contents(tmp_path) == ["metrics.jsonl"]


def test_overwrite_moves_the_old_run_aside_and_starts_afresh(finished, tmp_path):
    folder = _copy_run(finished, tmp_path)
    before = _snapshot(folder / "run")
    old_id = json.loads((folder / "run" / "checkpoints" / "step_000002" / "meta.json").read_text())["extra"]["run_id"]
    assert train_main([str(folder / "cfg.yaml"), "--overwrite", "--no-progress"]) == 0
    (aside,) = folder.glob("run.old-*")
    assert _snapshot(aside) == before  # moved, byte for byte, nothing deleted
    lines = [json.loads(x) for x in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1]  # the new run's metrics only
    (export,) = (folder / "run" / "exports").iterdir()
    with safe_open(str(export), framework="pt") as f:
        new_id = f.metadata()["vdot_run_id"]
    assert new_id != old_id


def test_export_never_reports_another_runs_file(finished, tmp_path):
    """A foreign file under this run's export name is neither kept as the result nor replaced."""
    folder = _copy_run(finished, tmp_path)
    foreign = folder / "run" / "exports" / "generator_t2v_step000002.safetensors"
    shutil.rmtree(folder / "run" / "checkpoints")  # --resume finds no checkpoint: a new run from step 0
    (folder / "run" / "metrics.jsonl").unlink()
    before = foreign.read_bytes()
    trainer = Trainer(load_config(folder / "cfg.yaml"), resume=True)
    result = trainer.train(progress=False)
    exported = Path(result["export"])
    assert exported != foreign and exported.name == f"generator_t2v_step000002-{trainer.run_id}.safetensors"
    assert foreign.read_bytes() == before
    with safe_open(str(exported), framework="pt") as f:
        assert f.metadata()["vdot_run_id"] == trainer.run_id
    assert trainer.export() == exported  # this run's own file at the same step: kept, reported again


# ---------------------------------------------------------------------------------------------- resume


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE = {
    "truncated weights": (lambda c: _truncate(c / "model_generator.safetensors"), "model_generator.safetensors is"),
    "truncated meta.json": (lambda c: _truncate(c / "meta.json"), "meta.json does not parse"),
    "missing optimiser file": (lambda c: (c / "optim_critic.safetensors").unlink(), "optim_critic.safetensors is missing"),
    "truncated RNG state": (lambda c: _truncate(c / "rng_rank0.safetensors", 0.9), "RNG state of rank 0"),
    "truncated optimiser skeleton": (lambda c: _truncate(c / "optim_generator.json"), "optim_generator.json does not parse"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_skips_a_damaged_newest_checkpoint_saying_why(finished, tmp_path, caplog, monkeypatch, damage):
    folder = _copy_run(finished, tmp_path)
    ckpts = folder / "run" / "checkpoints"
    spoil, reason = DAMAGE[damage]
    spoil(ckpts / "step_000002")
    _no_models(monkeypatch)  # the choice is made before any model loads: with loading refused, it is logged already
    with caplog.at_level(logging.INFO), pytest.raises(AssertionError, match="models were loaded"):
        Trainer(load_config(folder / "cfg.yaml"), resume=True)
    monkeypatch.undo()
    skipped = [r.getMessage() for r in caplog.records if "resume: skipped" in r.getMessage()]
    assert len(skipped) == 1 and "step_000002" in skipped[0] and reason in skipped[0], skipped
    assert "resuming from step_000001" in skipped[0]
    trainer = Trainer(load_config(folder / "cfg.yaml"), resume=True)
    assert trainer.step == 1
    saved = load_file(ckpts / "step_000001" / "model_generator.safetensors")
    for name, p in trainer.generator.state_dict().items():
        assert torch.equal(p, saved[name]), name


def test_load_checkpoint_of_a_run_folder_takes_the_newest_whole_one(finished, tmp_path):
    from training.checkpoint import load_checkpoint

    folder = _copy_run(finished, tmp_path)
    _truncate(folder / "run" / "checkpoints" / "step_000002" / "model_critic.safetensors")
    with pytest.warns(UserWarning, match=r"skipped step_000002 \(model_critic.safetensors is .*; loading step_000001"):
        step, _, _ = load_checkpoint(folder / "run" / "checkpoints", models={}, rng=False)
    assert step == 1


def test_resume_past_a_dangling_latest_and_metrics_hold_each_step_once(finished, tmp_path, caplog):
    folder = _copy_run(finished, tmp_path)
    ckpts = folder / "run" / "checkpoints"
    (ckpts / "latest").write_text("step_000009\n")  # names a folder that is not there
    shutil.rmtree(ckpts / "step_000002")  # and the newest left is step 1: steps 1.. are redone
    with caplog.at_level(logging.INFO):
        trainer = Trainer(load_config(folder / "cfg.yaml"), resume=True)
    text = caplog.text
    assert "latest (it names step_000009, which is missing)" in text and "resuming from step_000001" in text
    assert trainer.step == 1 and "1 line(s) from after step 1" in text
    (side,) = (folder / "run").glob("metrics.after-step000001-*.jsonl")
    assert [json.loads(x)["step"] for x in side.read_text().splitlines()] == [1]  # kept aside, not deleted
    trainer.train(progress=False)
    steps = [json.loads(x)["step"] for x in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1]


def test_resume_with_no_whole_checkpoint_is_one_clear_error(finished, tmp_path, monkeypatch, capsys):
    folder = _copy_run(finished, tmp_path)
    ckpts = folder / "run" / "checkpoints"
    _truncate(ckpts / "step_000002" / "ema_generator.safetensors")
    (ckpts / "step_000001" / "rng_rank0.json").unlink()
    _no_models(monkeypatch)
    assert train_main([str(folder / "cfg.yaml"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no whole checkpoint" in err and "ema_generator.safetensors" in err and "rng_rank0.json is missing" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("change, named, says", [
    ("captions", "data:", "covers 3 rows, the data now has 4"),
    ("seed", "seed:", "drawn with seed 3, this run has 4"),
])
def test_resume_over_other_data_or_seed_is_one_line_before_models_load(finished, tmp_path, monkeypatch, capsys,
                                                                       change, named, says):
    """The checkpoint's position means something only in the same order over the same rows."""
    folder = _copy_run(finished, tmp_path)
    if change == "captions":
        (folder / "caps.txt").write_text("a red ball\na blue cat\na green box\na grey dog\n")
    else:
        cfg = yaml.safe_load((folder / "cfg.yaml").read_text())
        (folder / "cfg.yaml").write_text(yaml.safe_dump({**cfg, "seed": 4}, sort_keys=False))
    before = _snapshot(folder / "run")
    _no_models(monkeypatch)
    assert train_main([str(folder / "cfg.yaml"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert named in err and says in err and "Fix:" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert _snapshot(folder / "run") == before  # nothing in the run changed


# ---------------------------------------------------------------------------------------------- config values


def _set(cfg: dict, dotted: str, value) -> dict:
    *path, key = dotted.split(".")
    node = cfg
    for part in path:
        node = node[part]
    node[key] = value
    return cfg


BAD_VALUES = [
    ("optim.lr", "fast", "expected a number"),
    ("optim.betas", 0.9, "expected a list"),
    ("optim.betas", [0.9], "pair"),
    ("optim.lr", float("nan"), "not a finite number"),
    ("optim.grad_clip", float("inf"), "not a finite number"),
    ("optim.lr", 0.0, "must be > 0"),
    ("data.batch_size", 0, "must be >= 1"),
    ("data.batch_size", 1.5, "expected a whole number"),
    ("logging.keep_last", 0, "must be >= 1"),
    ("data.num_frames", 8, "4k+1"),  # the caption path: the manifest's check used to be the only one
    ("data.width", 20, "multiple of 16"),
    ("runtime.gradient_checkpointing", "yes", "true or false"),
    ("data.max_skipped_rows", -1, "must be >= 0"),
    ("loss.lossy", 1, "unknown config key"),
    ("models", "tiny", "expected a mapping"),
    ("data.task_weights", {"t2v": "many"}, "expected a number"),
    ("data.task_weights", {"t2v": 2.0}, "stage 1 has one task"),
]


@pytest.mark.parametrize("key,value,problem", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_bad_config_values_name_the_key_before_models_load(tmp_path, monkeypatch, capsys, key, value, problem):
    _no_models(monkeypatch)
    path = _write(tmp_path, _set(_config(tmp_path), key, value))
    assert train_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {key}" in err and problem in err and "Fix:" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content,problem", [(b"- stage: 1\n- seed: 2\n", "not a mapping"),
                                             (b"seed: 1\ncaption: caf\xe9\n", "not UTF-8"),
                                             (b"just words", "not a mapping")])
def test_config_file_that_is_not_a_mapping_or_not_utf8(tmp_path, monkeypatch, capsys, content, problem):
    _no_models(monkeypatch)
    (tmp_path / "cfg.yaml").write_bytes(content)
    assert train_main([str(tmp_path / "cfg.yaml")]) == 2
    err = capsys.readouterr().err
    assert "error: config" in err and problem in err and "Traceback" not in err


def test_yaml_exponent_without_dot_is_a_number():
    # PyYAML (YAML 1.1) reads `lr: 1e-3` as the string '1e-3'; a float key takes it as the number it spells.
    cfg = config_from_dict(_set(_config(Path(".")), "optim.lr", "1e-3"))
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)


def test_damaged_teacher_config_json_is_one_line(tmp_path, monkeypatch, capsys):
    from vdot_nodes.core.models import load_transformer

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text('{"_class_name": "WanTransformer3DModel", "num_la')
    (teacher / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    path = _write(tmp_path, _set(_config(tmp_path), "models.teacher", str(teacher)))
    assert train_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "error: models.teacher" in err and "config.json is not valid JSON" in err and "Traceback" not in err
    with pytest.raises(VDOTInputError, match="config.json is not valid JSON"):
        load_transformer(teacher)


# ---------------------------------------------------------------------------------------------- data rows


def _corrupt_manifest(folder: Path, n: int = 4, bad: tuple[int, ...] = (1,)) -> Path:
    path = write_train_manifest(folder, n)
    for i in bad:
        (folder / f"clip{i}.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))  # a header, then nothing
    return path


def test_unreadable_row_is_skipped_logged_and_resumes_exactly(tmp_path, caplog):
    _corrupt_manifest(tmp_path, n=4, bad=(1,))
    # A budget of 1: the bad row is met in every epoch but counts once.
    cfg = config_from_dict(_config(tmp_path, captions=None, manifest="train.jsonl", max_skipped_rows=1),
                           config_dir=str(tmp_path))

    def lines(loader, n):
        it = iter(loader)
        return [[s["line"] for s in next(it)] for _ in range(n)]

    with caplog.at_level(logging.WARNING):
        full = lines(build_loader(cfg), 7)  # 3 readable rows per epoch: each epoch skips line 2 once
    assert all(b != [2] for b in full) and sorted(sum(full[:3], [])) == [1, 3, 4]
    skips = [r.getMessage() for r in caplog.records if "data: skipped" in r.getMessage()]
    assert len(skips) == 1 and "line 2 of train.jsonl" in skips[0] and "clip1.mp4" in skips[0]  # logged once
    loader = build_loader(cfg)
    head = lines(loader, 3)
    state = loader.state_dict()
    resumed = build_loader(cfg)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # as it travels through the checkpoint's JSON
    assert head + lines(resumed, 4) == full
    assert resumed.state_dict()["skipped_rows"] == [(1, "line 2 of train.jsonl")]  # through the checkpoint's JSON


def test_task_weights_draw_rows_by_task_and_resume_exactly(tmp_path):
    """Stage 2's ``data.task_weights``: rows of a weight-0 task are never drawn, heavier tasks more often, and the
    weighted order resumes exactly; other weights on resume are refused naming the key."""
    write_train_manifest(tmp_path, 6)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    tasks = ["t2v", "t2v", "inpaint", "inpaint", "outpaint", "outpaint"]  # lines 1-2 t2v, 3-4 inpaint, 5-6 outpaint
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({**r, "task": t}) + "\n" for r, t in zip(rows, tasks)))

    def loader(weights):
        cfg = _config(tmp_path, captions=None, manifest="train.jsonl", task_weights=weights)
        return build_loader(config_from_dict({**cfg, "stage": 2}, config_dir=str(tmp_path)))

    def lines(it, n):
        return [s["line"] for _ in range(n) for s in next(it)]

    drawn = lines(iter(loader({"inpaint": 0, "t2v": 4})), 60)  # 10 epochs of 6 draws
    assert not {3, 4} & set(drawn)  # weight 0: never
    t2v = sum(line in (1, 2) for line in drawn)
    assert 36 < t2v < 60, t2v  # expected 4/5 of 60 = 48 (outpaint's two rows weigh 1 each)
    first = loader({"inpaint": 0, "t2v": 4})
    head = lines(iter(first), 9)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = loader({"inpaint": 0, "t2v": 4})
    resumed.load_state_dict(state)
    assert head + lines(iter(resumed), 51) == drawn
    for other in ({"inpaint": 0, "t2v": 3}, None):
        with pytest.raises(VDOTInputError) as e:
            loader(other).load_state_dict(state)
        assert e.value.input_name == "data.task_weights"
    with pytest.raises(VDOTInputError) as e:
        loader({"t2v": 0, "inpaint": 0, "outpaint": 0})
    assert e.value.input_name == "data.task_weights" and "summing to 0" in str(e.value)


def _train_in_fresh_process(config: Path) -> subprocess.CompletedProcess:
    """``vdot train`` as a user runs it: a fresh process, so "no traceback on stderr" is judged on what
    the run prints, not on logging handlers other in-process tests left bound to closed streams."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "training.cli", str(config), "--no-progress"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_more_unreadable_rows_than_the_budget_stop_the_run_clearly(tmp_path):
    _corrupt_manifest(tmp_path, n=3, bad=(0, 2))
    cfg = _config(tmp_path, captions=None, manifest="train.jsonl", max_skipped_rows=1)
    proc = _train_in_fresh_process(_write(tmp_path, cfg))
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "error: data.max_skipped_rows: 2 data rows could not be read (line 1 of train.jsonl, line 3 of train.jsonl;" in err
    assert "more than the 1 allowed" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- divergence


def test_divergence_is_one_line_naming_step_and_term_and_no_bad_checkpoint(tmp_path):
    cfg = _set(_set(_config(tmp_path), "optim.lr", 1.0e30), "optim.critic_lr", 1.0e30)
    cfg["max_steps"] = 4
    proc = _train_in_fresh_process(_write(tmp_path, cfg))
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "error: training: diverged at step" in err and "lower optim.lr / optim.critic_lr" in err, err
    assert "Traceback" not in err and "FloatingPointError" not in err
    term = err.split("diverged at step ", 1)[1].split(":")[1].split(" is ")[0].strip()
    assert term.startswith(("loss_", "grad_norm_")), term
    step = int(err.split("diverged at step ", 1)[1].split(":")[0])
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))
    assert all(int(c.name[5:]) <= step for c in ckpts)  # nothing saved at or after the bad step
    for c in ckpts:  # and what was saved holds numbers
        assert all(torch.isfinite(t).all() for t in load_file(c / "model_generator.safetensors").values())
    assert not (tmp_path / "run" / "exports").exists()


def test_unreadable_rows_under_two_ranks_keep_one_position_and_resume_exactly(tmp_path, torchrun):
    """torchrun, 2 CPU ranks: ranks meet bad rows at different steps, yet agree on the position and the skips."""
    torchrun([ROOT / "tests" / "_skip_worker.py", tmp_path], timeout=240)
    ranks = json.loads((tmp_path / "results.json").read_text())
    for r in ranks:
        assert r["full"] == r["resumed"]  # resuming from the state after 2 batches continues exactly
        assert not {2, 5, 6} & set(sum(r["full"], []))  # bad rows never reach a batch
    assert ranks[0]["state"] == ranks[1]["state"] and ranks[0]["full_state"] == ranks[1]["full_state"]
    assert ranks[0]["full_state"] == ranks[0]["resumed_state"]
    assert [i for i, _ in ranks[0]["full_state"]["skipped_rows"]] == [2, 5, 6]  # each rank's skips, counted once
    for a, b in zip(ranks[0]["full"], ranks[1]["full"]):  # one step reads one epoch's disjoint shards
        assert not set(a) & set(b)
