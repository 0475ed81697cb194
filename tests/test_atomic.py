"""The one atomic writer: refuses to overwrite, leaves the old file on failure, checks targets early."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vdot_nodes.core.atomic import atomic_path, atomic_save_safetensors, atomic_write_text, check_target
from vdot_nodes.core.errors import VDOTInputError


def test_refuses_existing_file_without_overwrite(tmp_path: Path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    with pytest.raises(VDOTInputError, match="already exists"):
        atomic_write_text(target, "two")
    assert target.read_text() == "one"
    atomic_write_text(target, "two", overwrite=True)
    assert target.read_text() == "two"


def test_failure_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("case", ["missing_parent", "parent_is_file", "target_is_dir"])
def test_bad_targets_are_named_before_any_work(tmp_path: Path, case):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    target = {"missing_parent": tmp_path / "nope" / "a.mp4", "parent_is_file": tmp_path / "file" / "a.mp4",
              "target_is_dir": tmp_path / "dir"}[case]
    with pytest.raises(VDOTInputError) as err:
        check_target(target, input_name="--out")
    assert str(err.value).startswith("--out: ")


def test_safetensors_round_trip_with_shared_storage(tmp_path: Path):
    base = torch.arange(6, dtype=torch.float32)
    out = atomic_save_safetensors({"a": base, "b": base.view(2, 3)[1]}, tmp_path / "t.safetensors", {"k": "v"})
    loaded = load_file(str(out))
    assert torch.equal(loaded["a"], base) and torch.equal(loaded["b"], torch.tensor([3.0, 4.0, 5.0]))
