"""The training README documents every config key (rendered from config.py by tools/config_reference.py)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_training_readme_lists_every_config_key_with_its_doc():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "tools" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "training" / "README.md").read_text(encoding="utf-8")
    rows = module.config_keys()
    assert len(rows) > 40
    for key, _default, doc in rows:
        assert doc, f"config key {key} has no docstring in training/config.py"
        assert f"| `{key}` |" in readme, f"training/README.md does not document {key}: run tools/config_reference.py"
