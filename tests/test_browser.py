"""The course as a person sees it: ``metaedu lab``, and every lecture run in JupyterLab in headless Chromium.

Unmarked tests (fast) check ``metaedu lab``'s kernel and command, the static
fallback of widgets under papermill, and that lectures use the shared style.
Tests marked ``browser`` start one JupyterLab (the command of ``metaedu lab``)
on a free localhost port with a token, drive Debian's Chromium through
Playwright, click Run > Run All Cells, and check: no cell shows an error, every
cell ran, every widget is drawn, and dragging the widget's slider changes its
figure (screenshots before and after, compared pixel by pixel). Two fixture
notebooks under ``tests/browser_fixtures`` check the checks: one that must
pass, one whose error, undrawable widget and frozen figure must be caught.

Screenshots and a report per notebook go to ``test-artifacts/browser/``.
Without Chromium or Playwright the browser tests skip, except in CI
(``CI=true``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from browser_helpers import LabServer, launch_browser, move_slider, needs_browser, pixel_change, run_all
from metaedu import lab
from metaedu.cli import main as metaedu_main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "browser_fixtures"
LECTURES = sorted((REPO / "lectures").glob("*.ipynb"))
#: Lectures run cell by cell in the browser: "all", or numbers such as "00,06". Every lecture also runs
#: headless (tests/test_notebooks.py); CI drives a sample in the browser to keep its run under 45 minutes.
BROWSER_LECTURES = os.environ.get("METAEDU_BROWSER_LECTURES", "all")
IN_BROWSER = [p for p in LECTURES if BROWSER_LECTURES == "all" or p.name[:2] in BROWSER_LECTURES.split(",")]
ARTIFACTS = REPO / "test-artifacts" / "browser"
#: seconds one notebook may take to run all its cells in the browser (quick mode)
NOTEBOOK_TIMEOUT = float(os.environ.get("METAEDU_BROWSER_TIMEOUT", "1200"))


# --- metaedu lab: kernel and command (no browser) ---------------------------------------------


def test_kernel_spec_is_found_first_by_jupyter(tmp_path):
    # Jupyter's own resolution is the reference: with the server's environment,
    # ``python3`` must be our spec, starting this very interpreter.
    spec = lab.write_kernel_spec(tmp_path / "jupyter")
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
        env=lab.server_env(tmp_path / "jupyter"), capture_output=True, text=True, check=True,
    ).stdout
    found = json.loads(out)["kernelspecs"][lab.KERNEL_NAME]
    assert Path(found["resource_dir"]) == spec.parent
    assert found["spec"]["argv"][0] == sys.executable
    assert found["spec"]["display_name"] == lab.KERNEL_DISPLAY_NAME


def test_kernel_spec_is_rewritten_only_when_it_changes(tmp_path):
    first = lab.write_kernel_spec(tmp_path, python="/opt/a/bin/python")
    stamp = first.stat().st_mtime_ns
    time.sleep(0.01)
    assert lab.write_kernel_spec(tmp_path, python="/opt/a/bin/python").stat().st_mtime_ns == stamp
    lab.write_kernel_spec(tmp_path, python="/opt/b/bin/python")
    assert json.loads(first.read_text())["argv"][0] == "/opt/b/bin/python"
    with pytest.raises(ValueError, match="absolute path"):
        lab.kernel_spec("python")


def test_server_env_puts_private_dir_first():
    env = lab.server_env("/x/jupyter", base={"JUPYTER_PATH": "/y", "HOME": "/h"})
    assert env["JUPYTER_PATH"] == "/x/jupyter" + os.pathsep + "/y"
    assert env["HOME"] == "/h"
    assert lab.server_env("/x", base={})["JUPYTER_PATH"] == "/x"


def test_server_command(tmp_path):
    argv = lab.server_command(tmp_path, port=8899, token="abc", open_browser=False, extra=["--x=1"])
    assert argv[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in argv
    assert "--ServerApp.port=8899" in argv and "--IdentityProvider.token=abc" in argv
    assert "--ServerApp.open_browser=False" in argv and argv[-1] == "--x=1"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        lab.server_command(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="port"):
        lab.server_command(tmp_path, port=70000)


def test_find_lectures(tmp_path, monkeypatch):
    (tmp_path / "lectures").mkdir()
    monkeypatch.chdir(tmp_path)
    assert lab.find_lectures() == (tmp_path / "lectures").resolve()
    assert lab.find_lectures(tmp_path) == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="missing"):
        lab.find_lectures(tmp_path / "missing")


def test_metaedu_lab_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAEDU_CACHE", str(tmp_path / "cache"))
    assert metaedu_main(["lab", "--print-command", "--dir", str(tmp_path), "--port", "8123"]) == 0
    printed = capsys.readouterr().out
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in printed and "--ServerApp.port=8123" in printed
    spec = json.loads((tmp_path / "cache" / "jupyter" / "kernels" / "python3" / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    assert metaedu_main(["lab", "--print-command", "--dir", str(tmp_path / "nope")]) == 2
    assert "no lectures folder" in capsys.readouterr().err


# --- headless: widgets leave their static figure (papermill) ----------------------------------


def test_widget_static_fallback_under_papermill(tmp_path):
    import papermill

    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(FIXTURES / "widget_demo.ipynb"), str(out), parameters={"MODE": "quick"},
                               progress_bar=False, cwd=str(tmp_path))
    cells = [c for c in nbformat.read(out, as_version=4).cells if "interactive_figure(" in c.source]
    assert len(cells) == 1
    kinds = [set(o.get("data", {})) for o in cells[0].outputs]
    # the controls (a widget with a text fallback), then the figure as a PNG
    assert "application/vnd.jupyter.widget-view+json" in kinds[0] and "text/plain" in kinds[0]
    assert any("image/png" in k for k in kinds[1:])


# --- the shared style ----------------------------------------------------------------------------


@pytest.mark.parametrize("notebook", LECTURES, ids=lambda p: p.stem)
def test_lecture_uses_course_style(notebook):
    code = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code")
    assert "use_style()" in code and "metaedu.viz.style" in code, (
        f"{notebook.name} should call metaedu.viz.style.use_style() in its setup cell (projector-readable figures)")


# --- in the browser ------------------------------------------------------------------------------


def test_missing_browser_skips_here_but_fails_in_ci(monkeypatch):
    import browser_helpers

    real_find_chromium = browser_helpers.find_chromium
    monkeypatch.setattr(browser_helpers, "find_chromium", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium"):
        needs_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run them"):
        needs_browser()
    # and where it is installed, the helper finds it
    monkeypatch.setenv("METAEDU_CHROMIUM", sys.executable)
    assert real_find_chromium() == sys.executable


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """One JupyterLab and one Chromium for the module; both stopped at the end, also after a failure."""
    chromium = needs_browser()
    from playwright.sync_api import sync_playwright

    work = tmp_path_factory.mktemp("jupyterlab")
    root = work / "root"
    # copies: running cells in the page must never write into the repository's notebooks
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    shutil.copytree(FIXTURES, root / "fixtures", ignore=ignore)
    if LECTURES:
        shutil.copytree(REPO / "lectures", root / "lectures", ignore=ignore)
        # the lectures display the course's diagrams from ../assets (assets/README.md), as in the repository
        shutil.copytree(REPO / "assets", root / "assets", ignore=ignore)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {"METAEDU_THREADS": os.environ.get("METAEDU_THREADS", "1"), "METAEDU_STRICT_CHECKS": "1"}
    server = LabServer(root, work, env=env)
    playwright = context = None
    try:
        server.start()
        playwright = sync_playwright().start()
        context = launch_browser(playwright, work / "chromium-profile", chromium)
        yield server, context
    finally:
        if context is not None:
            context.close()
        if playwright is not None:
            playwright.stop()
        server.stop()
        shutil.copy(server.log_path, ARTIFACTS / "jupyterlab.log")


@pytest.fixture
def lab_page(jupyterlab):
    """A fresh browser tab; its kernels are shut down afterwards."""
    server, context = jupyterlab
    page = context.new_page()
    try:
        yield server, page
    finally:
        page.close()
        server.shutdown_kernels()


def _record(page, name: str, report, move=None) -> None:
    """Screenshots and a JSON report under test-artifacts/browser/."""
    page.screenshot(path=str(ARTIFACTS / f"{name}-page.png"))
    data = {k: v for k, v in vars(report).items()}
    if move is not None:
        (ARTIFACTS / f"{name}-figure-before.png").write_bytes(move.before_png)
        (ARTIFACTS / f"{name}-figure-after.png").write_bytes(move.after_png)
        data["slider"] = {"cell": move.cell, "before": move.value_before, "after": move.value_after,
                          "changed_pixels": move.changed_pixels}
    (ARTIFACTS / f"{name}-report.json").write_text(json.dumps(data, indent=1, default=str))
    with open(ARTIFACTS / "timings.txt", "a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {name}: run all {report.seconds:.1f} s wall\n")


def _screenshot_on_failure(page, name: str) -> None:
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}-FAILED.png"))
    except Exception:  # the page may be gone; the original error matters more
        pass


@pytest.mark.browser
@pytest.mark.slow
def test_fixture_notebook_in_jupyterlab(lab_page):
    server, page = lab_page
    try:
        report = run_all(page, server, "fixtures/widget_demo.ipynb", timeout=NOTEBOOK_TIMEOUT)
        assert report.errors == [] and report.not_run == []
        assert report.kernel_name == lab.KERNEL_DISPLAY_NAME
        assert report.texts[2].strip() == sys.executable  # the kernel runs the test's Python
        # controls + label drawn; the training loop's progress bar closed itself when done
        assert (report.widget_outputs, report.widgets_rendered, report.widgets_closed) == (3, 2, 1)
        assert report.widget_problems == []
        assert report.texts[6].strip().endswith("30 steps")
        move = move_slider(page, timeout=120)
        _record(page, "fixture-widget_demo", report, move)
    except BaseException:
        _screenshot_on_failure(page, "fixture-widget_demo")
        raise
    assert move is not None and move.cell == 4
    assert move.value_before == "2" and move.value_after != "2"
    assert move.changed_pixels > 0.01, "the figure did not change when the slider moved"


@pytest.mark.browser
@pytest.mark.slow
def test_checks_catch_a_broken_notebook(lab_page):
    server, page = lab_page
    try:
        report = run_all(page, server, "fixtures/broken.ipynb", timeout=NOTEBOOK_TIMEOUT)
        move = move_slider(page, wait_for_change=False)
        _record(page, "fixture-broken", report, move)
    except BaseException:
        _screenshot_on_failure(page, "fixture-broken")
        raise
    assert report.errors == [(5, "ZeroDivisionError: division by zero")]
    assert report.not_run == [6]  # Run All stops at the error
    assert (report.widget_outputs, report.widgets_rendered, report.widgets_closed) == (2, 1, 0)
    assert [cell for cell, _ in report.widget_problems] == [4]
    # the slider did move, but this figure ignores it: the comparison must see no change
    assert move is not None and move.value_after != move.value_before
    assert move.changed_pixels == 0.0


def test_pixel_change_counts_differing_pixels():
    import io

    from PIL import Image

    def png(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    white = Image.new("RGB", (10, 10), "white")
    marked = white.copy()
    for x in range(5):
        marked.putpixel((x, 0), (0, 0, 0))
    assert pixel_change(png(white), png(white)) == 0.0
    assert pixel_change(png(white), png(marked)) == pytest.approx(5 / 100)
    assert pixel_change(png(white), png(Image.new("RGB", (10, 11), "white"))) == 1.0


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("notebook", IN_BROWSER, ids=lambda p: p.stem)
def test_lecture_in_jupyterlab(lab_page, notebook):
    server, page = lab_page
    name = notebook.stem
    try:
        report = run_all(page, server, f"lectures/{notebook.name}", timeout=NOTEBOOK_TIMEOUT)
        move = move_slider(page, timeout=180) if not report.errors else None
        _record(page, name, report, move)
    except BaseException:
        _screenshot_on_failure(page, name)
        raise
    assert report.errors == [], f"{notebook.name}: cells show errors {report.errors}"
    assert report.not_run == [], f"{notebook.name}: code cells {report.not_run} never ran"
    assert report.widget_outputs >= 1, f"{notebook.name}: no widget (each lecture has an interactive_figure)"
    assert report.widget_problems == [], f"{notebook.name}: widgets not drawn {report.widget_problems}"
    assert report.widgets_rendered >= 1 and report.widgets_rendered + report.widgets_closed == report.widget_outputs
    if move is not None:  # lectures whose widget has a slider
        assert move.value_after != move.value_before, f"{notebook.name}: the slider did not move"
        assert move.changed_pixels > 0.001, f"{notebook.name}: the figure did not change with the slider"
