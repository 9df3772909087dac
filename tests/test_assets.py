"""The course's hand-made figures (``assets/``): every one a lecture shows exists, every one is shown.

A lecture refers to an asset by its path (``../assets/NAME.svg`` in a display call, or
``assets/NAME.svg`` in prose); ``assets/README.md`` lists each file with the lecture that uses it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
REFERENCE = re.compile(r"assets/([\w.-]+\.(?:svg|png))")


def _references() -> dict[str, set[str]]:
    """asset file name -> the lectures that mention it."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "lectures").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for name in REFERENCE.findall(cell.source):
                found.setdefault(name, set()).add(path.stem)
    return found


def _files() -> list[str]:
    return sorted(p.name for p in ASSETS.iterdir() if p.suffix in {".svg", ".png"})


def test_every_asset_a_lecture_refers_to_exists():
    missing = {name: sorted(lectures) for name, lectures in _references().items() if not (ASSETS / name).is_file()}
    assert not missing, f"lectures refer to assets that are not in assets/: {missing}"


def test_every_asset_is_used_by_a_lecture():
    unused = sorted(set(_files()) - set(_references()))
    assert not unused, f"assets no lecture shows (display them or delete them): {unused}"


def test_every_asset_is_listed_in_the_readme_with_its_lecture():
    readme = (ASSETS / "README.md").read_text(encoding="utf-8")
    references = _references()
    for name in _files():
        row = next((line for line in readme.splitlines() if f"`{name}`" in line), None)
        assert row is not None, f"assets/README.md does not list {name}"
        for lecture in references.get(name, ()):
            assert lecture[:2] in row, f"assets/README.md's row for {name} does not name lecture {lecture[:2]}"


@pytest.mark.parametrize("name", [n for n in _files() if n.endswith(".svg")])
def test_svg_is_well_formed_with_a_title(name):
    root = ET.parse(ASSETS / name).getroot()
    assert root.tag.endswith("svg"), f"{name}: the root element is {root.tag}, not svg"
    assert root.get("viewBox"), f"{name} has no viewBox (it would not scale)"
    title = root.find("{http://www.w3.org/2000/svg}title")
    assert title is not None and title.text.strip(), f"{name} has no <title> (screen readers and the book need one)"
