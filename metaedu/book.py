"""``metaedu book``: the course as a static website for self-study readers.

The site is built with Sphinx, MyST-NB and the Sphinx book theme (the ``book`` extra) from the
lecture notebooks **as executed in quick mode**: an executed copy under ``--runs`` (what
``metaedu run`` writes) is reused when its sources are the lecture's current ones, and the
missing or stale ones are executed first (with a progress bar). Nothing is executed by Sphinx.

Steps (:func:`build`):

1. executed notebooks: reuse or run (:func:`executed_notebooks`);
2. a Sphinx source folder under ``<out>/src``: the landing page (what the course is, the
   lecture map, install and run, the homework), one page per lecture (a link to the notebook's
   source at the top; widget controls, which need a live kernel, replaced by a note; the
   static figure stays), the ``assets/`` figures, and MathJax served locally (no network);
3. ``sphinx-build -b html`` into ``<out>/html``; the landing page is ``<out>/html/index.html``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from metaedu.notebooks import find_notebooks, lectures_dir, run_notebook

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "*Interactive controls appear here when the notebook runs in JupyterLab; the figure below shows their default setting.*"
PACKAGES = ("sphinx", "myst_nb", "sphinx_book_theme", "mathjax")


class BookError(RuntimeError):
    """The book cannot be built; the message says why and what to do."""


def _require_extra() -> None:
    import importlib.util

    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise BookError(f"the book needs the 'book' extra (missing: {', '.join(missing)}): pip install -e \".[book]\"")


# ----------------------------------------------------------------------- executed notebooks


def _sources(nb) -> list[tuple[str, str]]:
    """Cell types and sources, without papermill's injected-parameters cell."""
    return [(c.cell_type, c.source) for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


def is_current(lecture: Path, executed: Path) -> bool:
    """Whether ``executed`` is an error-free run of ``lecture``'s present sources."""
    import nbformat

    if not executed.is_file():
        return False
    try:
        ran = nbformat.read(executed, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable copy is simply not current
        return False
    errors = any(o.get("output_type") == "error" for c in ran.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return not errors and _sources(ran) == _sources(nbformat.read(lecture, as_version=4))


def executed_notebooks(lectures: list[Path], runs: Path, execute: bool = True) -> list[Path]:
    """The executed copy of each lecture: reused when current, else run in quick mode (progress shown)."""
    from tqdm import tqdm

    stale = [p for p in lectures if not is_current(p, runs / p.name)]
    if stale and not execute:
        raise BookError(f"not executed or out of date in {runs}: {', '.join(p.name for p in stale)} "
                        "(run `metaedu run` first, or build without --no-execute)")
    for path in tqdm(stale, desc="executing lectures for the book", unit="nb", file=sys.stderr, disable=not stale):
        result = run_notebook(path, runs, mode="quick", device="cpu")
        if result.status != "ok":
            raise BookError(f"{path.name} failed while executing for the book: {result.error}")
    return [runs / p.name for p in lectures]


# ----------------------------------------------------------------------- the Sphinx source


def _title(nb) -> str:
    first = nb.cells[0].source.splitlines()[0] if nb.cells and nb.cells[0].cell_type == "markdown" else ""
    return first.lstrip("# ").strip() or "lecture"


def prepare_page(executed: Path, target: Path, source: str) -> str:
    """Copy an executed lecture for the site: source link on top, widget views replaced by a note.

    Papermill's injected-parameters cell is left out (the lecture's own parameters cell stays).

    ``source`` is the path of the lecture's source notebook relative to ``target``'s folder
    (offered as a download on the page).
    """
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            if WIDGET_MIME in output.get("data", {}):
                output = nbformat.v4.new_output("display_data", data={"text/markdown": WIDGET_NOTE})
            outputs.append(output)
        cell.outputs = outputs
    note = nbformat.v4.new_markdown_cell(f"*Source notebook:* {{download}}`{Path(source).name} <{source}>` "
                                         f"(`lectures/{Path(source).name}` in the course's repository) — run it "
                                         "in JupyterLab (`metaedu lab`) to use the widgets and do the exercises.")
    nb.cells.insert(1, note)
    nbformat.write(nb, str(target))
    return _title(nb)


def _readme_section(readme: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    return match.group(1).strip() if match else ""


def page_link(stem: str) -> str:
    """Where ``metaedu book`` (default output folder) puts a lecture's page, relative to the checkout."""
    return f"_build/book/html/lectures/{stem}.html"


def landing_page(readme: str, pages: list[tuple[str, str]], homework: list[tuple[str, str]]) -> str:
    """The landing page: the README's opening, the lecture map linked to the pages, install, homework."""
    opening = readme.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    lecture_map = _readme_section(readme, "Lecture map")
    for stem, _title_text in pages:
        # the README links the notebook and its page in a built book; inside the book, the page itself
        readme_links = f"[`lectures/{stem}.ipynb`](lectures/{stem}.ipynb) · [page]({page_link(stem)})"
        lecture_map = lecture_map.replace(readme_links, f"`lectures/{stem}.ipynb`")
        lecture_map = lecture_map.replace(f"`lectures/{stem}.ipynb`", f"[{stem}](lectures/{stem}.ipynb)")
    lines = ["# metaedu: meta-learning, lecture by lecture", "", opening, "",
             "## The lectures", "", lecture_map, "",
             "## Install and run", "", _readme_section(readme, "Install"), "",
             _readme_section(readme, "Use"), "", "## Homework", "",
             "Each assignment is a notebook with graded exercises; `metaedu assign` makes the student "
             "version and `metaedu grade` scores submissions in isolation.", ""]
    lines += [f"- **{name}**: {text}" for name, text in homework] + ["", "```{toctree}", ":maxdepth: 1", ":hidden:", ""]
    lines += [f"lectures/{stem}" for stem, _ in pages] + ["```", ""]
    return "\n".join(lines)


def homework() -> list[tuple[str, str]]:
    """(assignment name, the first line of its notebook's title) for every shipped assignment."""
    import nbformat

    folder = Path(__file__).resolve().parent / "grading" / "assignments"
    found = []
    for solution in sorted(folder.glob("*/solution.ipynb")):
        found.append((solution.parent.name, _title(nbformat.read(solution, as_version=4))))
    return found


CONF = '''# Generated by `metaedu book`; edit metaedu/book.py instead.
project = "metaedu"
author = "the metaedu authors"
extensions = ["myst_nb"]
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
html_theme = "sphinx_book_theme"
html_title = "metaedu: meta-learning, lecture by lecture"
html_static_path = ["_static"]
mathjax_path = "mathjax/tex-mml-chtml.js"
html_theme_options = {{"show_toc_level": 2, "use_download_button": True}}
exclude_patterns = ["_build", "notebooks", "assets/README.md"]
suppress_warnings = ["mystnb.unknown_mime_type"]
'''


def write_source(src: Path, executed: list[Path], repo_root: Path) -> list[tuple[str, str]]:
    """Fill ``src`` with conf.py, the landing page, the lecture pages, assets and MathJax."""
    import mathjax

    if src.exists():
        shutil.rmtree(src)
    (src / "lectures").mkdir(parents=True)
    (src / "notebooks").mkdir()
    pages = []
    for path in executed:
        shutil.copyfile(repo_root / "lectures" / path.name, src / "notebooks" / path.name)
        pages.append((path.stem, prepare_page(path, src / "lectures" / path.name, f"../notebooks/{path.name}")))
    assets = repo_root / "assets"
    if assets.is_dir():
        shutil.copytree(assets, src / "assets")
    mathjax_es5 = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    shutil.copytree(mathjax_es5, src / "_static" / "mathjax")
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    (src / "index.md").write_text(landing_page(readme, pages, homework()), encoding="utf-8")
    (src / "conf.py").write_text(CONF.format(), encoding="utf-8")
    return pages


def build(out: Path = Path("_build/book"), runs: Path = Path("runs"), names: list[str] | None = None,
          execute: bool = True) -> Path:
    """Build the site; return the landing page's path."""
    _require_extra()
    from sphinx.cmd.build import build_main

    lectures = find_notebooks(names)
    executed = executed_notebooks(lectures, Path(runs), execute)
    repo_root = lectures_dir().parent
    src, html = Path(out) / "src", Path(out) / "html"
    write_source(src, executed, repo_root)
    code = build_main(["-b", "html", "-q", "-j", "1", str(src), str(html)])
    if code != 0:
        raise BookError(f"sphinx-build failed with status {code} (its messages are above)")
    return html / "index.html"


def _book(args: argparse.Namespace) -> int:
    try:
        index = build(Path(args.out), Path(args.runs), args.lectures, execute=not args.no_execute)
    except (BookError, FileNotFoundError) as err:
        print(f"metaedu book: {err}", file=sys.stderr)
        return 2
    print(f"the book is at {index}  (open it, or serve it: python -m http.server -d {index.parent})")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("book", help="build the course as a static website from the executed notebooks")
    p.add_argument("lectures", nargs="*", help="lecture numbers or names (default: all)")
    p.add_argument("--out", default="_build/book", help="output folder (default: _build/book; the site is in html/)")
    p.add_argument("--runs", default="runs", help="executed notebooks to reuse, as `metaedu run` writes them (default: runs/)")
    p.add_argument("--no-execute", action="store_true", help="fail instead of executing missing or stale notebooks")
    p.set_defaults(func=_book)
