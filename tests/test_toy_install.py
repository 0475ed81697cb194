"""`vdot toy install`: a build's student + toy VAE / text encoder become the embedded default files."""

import torch

from training.export import export_generator
from training.toy.cli import toy_main
from vdot_nodes.core.components import TOY_FILES
from vdot_nodes.core.models import load_transformer, save_text_encoder, save_vae
from vdot_nodes.core.tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_transformer, build_tiny_vae


def _fake_build(root):
    (root / "stage2" / "exports").mkdir(parents=True)
    (root / "components").mkdir()
    student = build_tiny_transformer(seed=5)
    export_generator(student, root / "stage2" / "exports" / "generator_vace_step000010.safetensors", precision="fp32")
    save_vae(build_tiny_vae(seed=1), root / "components" / "vae.safetensors")
    save_text_encoder(build_tiny_text_encoder(seed=2), build_tiny_tokenizer(), root / "components" / "text_encoder.safetensors")
    return student


def test_install_copies_loadable_files_and_never_overwrites_silently(tmp_path, capsys):
    student = _fake_build(tmp_path / "build")
    dest = tmp_path / "assets"
    assert toy_main(["install", "--build", str(tmp_path / "build"), "--dest", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(TOY_FILES.values())
    loaded = load_transformer(dest / TOY_FILES["transformer"], precision="fp32")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in student.state_dict().items())
    assert toy_main(["install", "--build", str(tmp_path / "build"), "--dest", str(dest)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert toy_main(["install", "--build", str(tmp_path / "build"), "--dest", str(dest), "--overwrite"]) == 0


def test_install_without_a_finished_build_is_a_clear_error(tmp_path, capsys):
    assert toy_main(["install", "--build", str(tmp_path), "--dest", str(tmp_path / "assets")]) == 2
    err = capsys.readouterr().err
    assert "--build" in err and "stage2/exports" in err and not (tmp_path / "assets").exists()
