"""The docs' generated tables are what scripts/gen-docs makes of the code and of the
benchmark's results, and the links between the pages lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cramfs.config import SETTINGS
from cramfs.control import ATTRIBUTES
from cramfs.lab import docs

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


@pytest.mark.parametrize("name", docs.PAGES)
def test_the_generated_tables_are_current(name):
    page = docs.DOCS / name
    text = page.read_text()
    assert docs.BLOCK.search(text), f"{name} has no generated block"
    assert docs.render(text) == text, f"docs/{name} is stale: run scripts/gen-docs"


def test_every_control_file_and_setting_is_described():
    assert all(a.help for a in ATTRIBUTES.values())
    table = "\n".join(docs.control_files() + docs.settings())
    for name in [*ATTRIBUTES, *SETTINGS]:
        assert f"| `{name}` |" in table, name
    # the options table a user reads first names every setting too
    mounting = (docs.DOCS / "mounting.md").read_text()
    for name in SETTINGS:
        assert re.search(rf"^\| [^|]*`{name}`", mounting, re.MULTILINE), name


def _anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_between_pages_lead_somewhere(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target}: no such file"
        if anchor and dest.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", dest.read_text(), re.MULTILINE)
            assert anchor in {_anchor(h) for h in headings}, f"{page.name}: {target}"
