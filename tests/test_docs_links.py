"""Every relative link in the project's Markdown documents points at a file that is in the repository
(the toy world's history moved out of the README; its links were rewritten to the new folder)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "training/README.md", "workflows/README.md", "training/toy/HISTORY.md",
             *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "training/toy/report").rglob("REPORT.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(text: str) -> list[str]:
    """Targets of ``[text](target)`` links that are paths in the repository (no URL, no in-page anchor)."""
    return [t.split("#")[0] for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]


def test_relative_links_are_found_in_link_syntax():
    text = "see [a](docs/a.md), [b](https://x.org/b), [c](#anchor), ![d](img/d.png) and [e](f.md#part)"
    assert relative_links(text) == ["docs/a.md", "img/d.png", "f.md"]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_relative_link_resolves(document):
    path = ROOT / document
    targets = relative_links(path.read_text(encoding="utf-8"))
    missing = [t for t in targets if not (path.parent / t).resolve().exists()]
    assert not missing, f"{document} links to missing files: {missing}"
