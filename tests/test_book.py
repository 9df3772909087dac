"""``metaedu book``: the course website, built from executed notebooks and read in a browser.

Fast tests check the pieces (what counts as a current executed notebook, the page preparation,
the landing page, the command's errors). The browser test (markers ``browser`` and ``book``; it
runs after the notebook tests, whose executed notebooks it reuses) builds the whole site, serves
it on localhost and reads it in headless Chromium: the landing page and two lectures, equations
typeset (no raw ``$$``), every image loaded, the search finding a method's name; screenshots go to
``test-artifacts/book/``.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import nbformat
import pytest

from metaedu import book
from metaedu.cli import main as metaedu_main
from metaedu.notebooks import lectures_dir
from metaedu.runtime import cache_dir

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "book"


def _executed_copy(lecture: Path, target: Path, error: bool = False) -> Path:
    """A fake executed copy of ``lecture``: its cells, papermill's injected cell, one output each."""
    nb = nbformat.read(lecture, as_version=4)
    injected = nbformat.v4.new_code_cell('MODE = "quick"', metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(1, injected)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    if error:
        nb.cells[-1 if nb.cells[-1].cell_type == "code" else 2].outputs = [
            nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(target))
    return target


def test_an_executed_copy_is_current_only_for_the_same_sources_and_without_errors(tmp_path):
    lecture = sorted(lectures_dir().glob("[0-9][0-9]_*.ipynb"))[0]
    copy = _executed_copy(lecture, tmp_path / lecture.name)
    assert book.is_current(lecture, copy)
    edited = nbformat.read(copy, as_version=4)
    edited.cells[-1].source += "\n# edited"
    nbformat.write(edited, str(copy))
    assert not book.is_current(lecture, copy)
    assert not book.is_current(lecture, _executed_copy(lecture, tmp_path / "e" / lecture.name, error=True))
    assert not book.is_current(lecture, tmp_path / "missing.ipynb")


def test_pages_get_a_source_link_and_lose_widget_views(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 99 · A lecture\n\ntext"), nbformat.v4.new_code_cell("show()")]
    nb.cells[1].outputs = [
        nbformat.v4.new_output("display_data", data={book.WIDGET_MIME: {"model_id": "x"}, "text/plain": "HBox()"}),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="}),
    ]
    source, target = tmp_path / "99_x.ipynb", tmp_path / "page.ipynb"
    nbformat.write(nb, str(source))
    title = book.prepare_page(source, target, "../notebooks/99_x.ipynb")
    page = nbformat.read(target, as_version=4)
    assert title == "99 · A lecture"
    assert "{download}" in page.cells[1].source and "99_x.ipynb" in page.cells[1].source
    outputs = page.cells[2].outputs
    assert book.WIDGET_MIME not in outputs[0]["data"] and "JupyterLab" in outputs[0]["data"]["text/markdown"]
    assert "image/png" in outputs[1]["data"]


def test_landing_page_links_every_lecture_and_lists_the_homework():
    readme = (REPO / "README.md").read_text()
    stems = [p.stem for p in sorted(lectures_dir().glob("[0-9][0-9]_*.ipynb"))]
    page = book.landing_page(readme, [(s, s) for s in stems], book.homework())
    for stem in stems:
        assert f"[{stem}](lectures/{stem}.ipynb)" in page, f"{stem} is not linked from the lecture map"
        assert f"lectures/{stem}\n" in page  # in the table of contents
    assert "pip install" in page and "## Homework" in page
    assert len(book.homework()) >= 3 and all(text for _, text in book.homework())


def test_readme_map_links_every_lecture_notebook_and_its_page():
    readme = (REPO / "README.md").read_text()
    for path in sorted(lectures_dir().glob("[0-9][0-9]_*.ipynb")):
        row = next((line for line in readme.splitlines() if line.startswith(f"| {path.stem[:2]} |")), None)
        assert row is not None, f"the README's lecture map has no row for {path.name}"
        expected = f"[`lectures/{path.name}`](lectures/{path.name}) · [page]({book.page_link(path.stem)})"
        assert expected in row, f"the README's row for {path.stem[:2]} should link the notebook and its page: {expected}"


def test_book_without_execution_names_what_is_missing(tmp_path, capsys):
    code = metaedu_main(["book", "00", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "b"), "--no-execute"])
    assert code == 2
    err = capsys.readouterr().err
    assert "00_one_shot.ipynb" in err and ("not executed or out of date" in err or "book' extra" in err)


# --- the site in a browser -------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request in the test output
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The whole course built into a site (executed notebooks reused from the notebook tests), served on localhost."""
    from browser_helpers import needs_browser

    needs_browser()
    out = tmp_path_factory.mktemp("book")
    index = book.build(out, runs=cache_dir() / "executed")
    handler = functools.partial(_QuietHandler, directory=str(index.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.book
def test_the_book_reads_well_in_a_browser(site, tmp_path):
    from playwright.sync_api import sync_playwright

    from browser_helpers import launch_browser, needs_browser

    chromium = needs_browser()
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    lectures = sorted(lectures_dir().glob("[0-9][0-9]_*.ipynb"))
    pages = ["index.html", f"lectures/{lectures[0].stem}.html", f"lectures/{lectures[-1].stem}.html"]
    with sync_playwright() as playwright:
        context = launch_browser(playwright, tmp_path / "profile", chromium)
        try:
            page = context.new_page()
            for path in pages:
                page.goto(f"{site}/{path}", wait_until="networkidle")
                page.wait_for_timeout(1500)  # MathJax typesets after the load event
                name = path.replace("/", "_").replace(".html", "")
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)
                text = page.inner_text("main")
                assert "$$" not in text, f"{path}: raw $$ (equations not typeset)"
                broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
                assert not broken, f"{path}: images that did not load: {broken[:3]}"
                if path != "index.html":
                    assert page.locator("mjx-container").count() > 0, f"{path}: no typeset equation"
                    assert page.locator("main img").count() >= 3, f"{path}: the lecture's figures are missing"
                else:
                    for lecture in lectures:
                        assert page.locator(f"a[href*='{lecture.stem}']").count() > 0, f"the landing page does not link {lecture.stem}"
            page.goto(f"{site}/search.html?q=prototypical", wait_until="networkidle")
            page.wait_for_selector("#search-results li, .search li", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "search.png"))
            hits = page.locator("#search-results li, .search li").count()
            assert hits > 0, "the search finds no page for 'prototypical'"
        finally:
            context.close()
