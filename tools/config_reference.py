"""Print the training config reference (every key, default and docstring) as Markdown.

The keys' documentation lives in ``training/config.py`` (attribute docstrings); this renders it for
``training/README.md`` so the two cannot drift (``tests/test_trainer_docs.py`` checks every key is there).

    python tools/config_reference.py > /tmp/keys.md
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training import config as cfg_module  # noqa: E402


def attribute_docs(cls) -> dict[str, str]:
    """``{field: docstring}`` from the string literal that follows each annotated assignment."""
    tree = ast.parse(Path(cfg_module.__file__).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    docs, last = {}, None
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            last = stmt.target.id
        elif last and isinstance(stmt, ast.Expr) and isinstance(getattr(stmt, "value", None), ast.Constant) \
                and isinstance(stmt.value.value, str):
            docs[last] = " ".join(stmt.value.value.split())
            last = None
        else:
            last = None
    return docs


def config_keys() -> list[tuple[str, str, str]]:
    """``(section.key, default, doc)`` for every key of :class:`training.config.TrainConfig`."""
    rows = []
    root = cfg_module.TrainConfig
    root_docs = attribute_docs(root)
    for f in dataclasses.fields(root):
        section_cls = f.type if isinstance(f.type, type) else getattr(cfg_module, str(f.type), None)
        if section_cls is not None and dataclasses.is_dataclass(section_cls):
            docs = attribute_docs(section_cls)
            for sf in dataclasses.fields(section_cls):
                default = sf.default if sf.default is not dataclasses.MISSING else (
                    sf.default_factory() if sf.default_factory is not dataclasses.MISSING else "")
                rows.append((f"{f.name}.{sf.name}", repr(default), docs.get(sf.name, "")))
        else:
            default = f.default if f.default is not dataclasses.MISSING else ""
            rows.append((f.name, repr(default), root_docs.get(f.name, "")))
    return rows


def main() -> None:
    print("| key | default | meaning |\n|---|---|---|")
    for key, default, doc in config_keys():
        print(f"| `{key}` | `{default}` | {doc.replace('|', '/')} |")


if __name__ == "__main__":
    main()
