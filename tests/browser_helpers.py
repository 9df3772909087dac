"""Drive a real JupyterLab in Debian's headless Chromium (through Playwright) for the browser tests.

- :class:`LabServer` starts JupyterLab the way ``metaedu lab`` does (same command,
  same ``python3`` kernel spec), on a free localhost port with a token, with
  throw-away settings and workspaces; :meth:`LabServer.stop` ends it (and its
  kernels) and is safe to call twice.
- :func:`launch_browser` starts Chromium from the system (Playwright's own
  browser download does not work here) with a fresh profile folder.
- :func:`run_all` opens a notebook, clicks Run > Run All Cells like a person
  would, waits for the kernel to finish and returns a :class:`LabReport`: the
  errors the cells show, the cells that never ran, and the widgets that did or
  did not render.
- :func:`move_slider` drags the first slider of an ``interactive_figure`` and
  returns the figure's screenshots before and after.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from metaedu import lab

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: a cell's own output children (an ipywidgets Output widget nests more of them)
OWN_OUTPUTS = ".jp-Cell-outputArea > .jp-OutputArea-child"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--disable-quic",
]

# Settings the test server starts with (a throw-away user-settings folder).
LAB_SETTINGS = {
    # draw every cell, not only the ones in view, so every output is in the page
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # no autosave of the (copied) notebooks while they run
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    # no "fetch Jupyter news?" pop-up over the notebook (the server is offline anyway)
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def find_chromium() -> str | None:
    """The system Chromium: ``$METAEDU_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH."""
    env = os.environ.get("METAEDU_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def needs_browser() -> str:
    """Chromium's path; skip (fail in CI) with the reason when Playwright or Chromium is missing."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[browser]')")
    chromium = find_chromium()
    if chromium is None:
        missing.append("Chromium (apt-get install chromium, or set METAEDU_CHROMIUM)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + ", and CI must run them", pytrace=False)
        pytest.skip(message + "; not installed on this machine")
    return chromium


def free_port() -> int:
    """A localhost TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """JupyterLab serving ``root`` on 127.0.0.1, started with ``metaedu lab``'s command and kernel."""

    def __init__(self, root: Path, work: Path, env: dict | None = None):
        self.root = Path(root)
        self.work = Path(work)
        self.port = free_port()
        self.token = os.urandom(16).hex()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.work / "jupyterlab.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> "LabServer":
        settings_dir = self.work / "lab-settings"
        for plugin, values in LAB_SETTINGS.items():
            package, name = plugin.rsplit("/", 1)
            path = settings_dir / package / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        jupyter_dir = self.work / "jupyter"
        lab.write_kernel_spec(jupyter_dir)
        argv = lab.server_command(
            self.root,
            port=self.port,
            token=self.token,
            open_browser=False,
            extra=[
                "--ServerApp.ip=127.0.0.1",
                "--ServerApp.port_retries=0",
                f"--LabApp.user_settings_dir={settings_dir}",
                f"--LabApp.workspaces_dir={self.work / 'workspaces'}",
                "--ServerApp.terminals_enabled=False",
                "--LabApp.expose_app_in_browser=True",
            ],
        )
        env = lab.server_env(jupyter_dir)
        env["JUPYTER_RUNTIME_DIR"] = str(self.work / "runtime")  # connection files stay in the test's folder
        env.update(self.extra_env)
        self._log = open(self.log_path, "wb")
        # its own process group: stop() can end the server together with anything it spawned
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer on port {self.port} within {timeout:.0f} s:\n{self.log_tail()}")

    def api(self, method: str, path: str, timeout: float = 10.0):
        """Call the server's REST API with the token; return the decoded JSON (or None)."""
        request = urllib.request.Request(self.base_url + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every running kernel (between notebooks, so they do not compete for the CPU)."""
        for kernel in self.api("GET", "/api/kernels"):
            try:
                self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)
            except OSError:
                pass

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Shut kernels down, then the server (SIGTERM, then SIGKILL to its process group)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            try:
                self.shutdown_kernels()
            except OSError:
                pass
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()


def launch_browser(playwright, profile: Path, executable: str):
    """Headless Chromium from ``executable`` with a fresh profile; returns a browser context."""
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=executable,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000},
        device_scale_factor=1,
    )


@dataclass
class LabReport:
    """What a notebook shows after Run All in JupyterLab."""

    code_cells: int = 0
    #: (cell index, "Name: message") for every error output
    errors: list = field(default_factory=list)
    #: indices of code cells with no execution count after Run All finished
    not_run: list = field(default_factory=list)
    #: widget outputs in the notebook's model, and those drawn as widgets in the page
    widget_outputs: int = 0
    widgets_rendered: int = 0
    #: widget outputs whose widget the kernel closed (not expected to show anything)
    widgets_closed: int = 0
    #: text of widget outputs that show an error or never finished loading
    widget_problems: list = field(default_factory=list)
    kernel_name: str = ""
    #: text/plain and stream text of each code cell, by index
    texts: dict = field(default_factory=dict)
    seconds: float = 0.0


# JavaScript run in the page (JupyterLab exposes its app as window.jupyterapp
# when started with --LabApp.expose_app_in_browser).
_JS_PANEL = "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;" \
            " return !!(w && w.content && w.sessionContext && w.sessionContext.session" \
            " && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle'); }"

_JS_BUSY = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  if (!kernel) return 'no kernel';
  if (kernel.status !== 'idle') return 'kernel ' + kernel.status;
  const waiting = w.content.widgets.filter(c => c.model.type === 'code' && c.promptNode
                                           && c.promptNode.textContent.includes('*'));
  return waiting.length ? waiting.length + ' cells waiting' : '';
}"""

_JS_REPORT = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const out = {cells: [], kernel: w.sessionContext.kernelDisplayName};
  w.content.widgets.forEach((cell, index) => {
    if (cell.model.type !== 'code') return;
    const outputs = cell.model.outputs.toJSON();
    // the cell's own outputs (not those nested inside an Output widget)
    const views = [...cell.outputArea.node.children]
      .filter(c => c.classList.contains('jp-OutputArea-child'))
      .map(c => c.querySelector(':scope > .jp-OutputArea-output'));
    const widgetViews = [];
    outputs.forEach((o, k) => {
      if (!o.data || !o.data['%(mime)s']) return;
      const node = views[k];
      // ipywidgets draws a view that failed to load as an error widget
      const error = node && node.querySelector('.jupyter-widgets-error-widget');
      widgetViews.push({
        // a widget the kernel closed on purpose (e.g. a finished tqdm bar with leave=False):
        // ipywidgets hides its output and blanks the model id
        closed: o.data['%(mime)s'].model_id === '' || !!(node && node.classList.contains('lm-mod-hidden')),
        drawn: !!(node && node.querySelector('.jupyter-widgets') && !error),
        text: !node ? '(no output node)'
              : error ? 'widget error: ' + error.textContent.replace(/\\s+/g, ' ').trim().slice(0, 300)
              : node.innerText.slice(0, 200),
      });
    });
    out.cells.push({index, count: cell.model.executionCount, outputs, widgetViews});
  });
  return out;
}""" % {"mime": WIDGET_MIME}


def open_notebook(page, server: LabServer, path: str, timeout: float = 120.0) -> None:
    """Open ``path`` (relative to the server's root) in a fresh workspace; wait for an idle kernel."""
    workspace = "t" + os.urandom(4).hex()
    page.goto(f"{server.base_url}/lab/workspaces/{workspace}/tree/{path}?reset&token={server.token}")
    try:
        page.wait_for_function(_JS_PANEL, timeout=timeout * 1000, polling=500)
    except Exception as err:
        dialog = page.locator(".jp-Dialog")
        extra = f" (a dialog is open: {dialog.first.inner_text()!r})" if dialog.count() else ""
        raise RuntimeError(f"{path}: notebook or its kernel did not become ready in {timeout:.0f} s{extra}") from err


def run_all(page, server: LabServer, path: str, timeout: float = 900.0) -> LabReport:
    """Open ``path``, click Run > Run All Cells, wait until nothing runs; return what the notebook shows."""
    start = time.monotonic()
    open_notebook(page, server, path)
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
    deadline = start + timeout
    quiet = 0
    while quiet < 3:  # idle kernel and no queued cell, three polls in a row
        if time.monotonic() > deadline:
            state = page.evaluate(_JS_BUSY)
            raise TimeoutError(f"{path}: still running after {timeout:.0f} s ({state})")
        page.wait_for_timeout(700)
        quiet = quiet + 1 if page.evaluate(_JS_BUSY) == "" else 0
    # let widget views finish drawing (they render asynchronously after the output arrives)
    page.wait_for_timeout(1500)
    raw = page.evaluate(_JS_REPORT)
    report = LabReport(kernel_name=raw["kernel"], seconds=time.monotonic() - start)
    for cell in raw["cells"]:
        report.code_cells += 1
        if cell["count"] is None:
            report.not_run.append(cell["index"])
        texts = []
        for output in cell["outputs"]:
            kind = output.get("output_type")
            if kind == "error":
                report.errors.append((cell["index"], f"{output.get('ename')}: {output.get('evalue')}"))
            elif kind == "stream":
                texts.append(output.get("text", ""))
            elif "data" in output and "text/plain" in output["data"]:
                texts.append(output["data"]["text/plain"])
        report.texts[cell["index"]] = "".join(t if isinstance(t, str) else "".join(t) for t in texts)
        for view in cell["widgetViews"]:
            report.widget_outputs += 1
            if view["closed"]:
                report.widgets_closed += 1
            elif view["drawn"]:
                report.widgets_rendered += 1
            text = view["text"]
            failed = "Error displaying widget" in text or "Loading widget" in text
            if (not view["closed"] and not view["drawn"]) or failed:
                report.widget_problems.append((cell["index"], text.strip() or "(empty)"))
    return report


@dataclass
class SliderMove:
    """One slider moved in the page, with the figure's screenshots around it."""

    cell: int
    value_before: str
    value_after: str
    before_png: bytes
    after_png: bytes
    changed_pixels: float  # fraction of pixels that differ between the two screenshots


def pixel_change(a: bytes, b: bytes) -> float:
    """Fraction of pixels that differ between two PNG screenshots (1.0 when the sizes differ)."""
    from PIL import Image, ImageChops

    ia = Image.open(io.BytesIO(a)).convert("RGB")
    ib = Image.open(io.BytesIO(b)).convert("RGB")
    if ia.size != ib.size:
        return 1.0
    diff = ImageChops.difference(ia, ib).convert("L").point(lambda v: 255 if v > 8 else 0)
    return diff.histogram()[255] / (ia.size[0] * ia.size[1])


_JS_MARK_SLIDER = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  for (const [index, cell] of w.content.widgets.entries()) {
    const controls = cell.node.querySelector('.metaedu-controls');
    if (!controls || !controls.querySelector('.widget-slider .noUi-handle')) continue;
    const children = [...cell.outputArea.node.children].filter(c => c.classList.contains('jp-OutputArea-child'));
    const at = children.findIndex(c => c.contains(controls));
    const figure = children.findIndex((c, k) => k > at && c.querySelector('img'));
    if (figure < 0) continue;
    cell.node.setAttribute('data-slider-test', '1');
    return {index, figure};
  }
  return null;
}"""


def move_slider(page, timeout: float = 180.0, wait_for_change: bool = True) -> SliderMove | None:
    """Drag the first ``interactive_figure`` slider by about a third of its track.

    Returns ``None`` when no notebook cell has such a slider. With
    ``wait_for_change`` it waits (up to ``timeout``) for the figure's image to be
    replaced; otherwise it just waits a few seconds.
    """
    where = page.evaluate(_JS_MARK_SLIDER)
    if where is None:
        return None
    cell = page.locator("[data-slider-test]")
    figure = cell.locator(OWN_OUTPUTS).nth(where["figure"]).locator("img").first
    slider = cell.locator(".metaedu-controls .widget-slider").first
    figure.scroll_into_view_if_needed()
    readout = slider.locator(".widget-readout")
    value_before = readout.inner_text() if readout.count() else ""
    src_before = figure.get_attribute("src")
    before_png = figure.screenshot()

    # The screenshot scrolled the figure into view, which can leave the controls just above it
    # hidden under the notebook's toolbar: a drag there would press toolbar buttons (it once
    # interrupted the kernel). Centre the slider, then make sure the handle is what the mouse hits.
    slider.evaluate("node => node.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(300)
    track = slider.locator(".noUi-target").bounding_box()
    handle = slider.locator(".noUi-handle").first.bounding_box()
    x0, y0 = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    on_top = page.evaluate(
        "([x, y]) => { const e = document.elementFromPoint(x, y);"
        " return !!(e && e.closest('[data-slider-test] .noUi-handle')); }", [x0, y0])
    if not on_top:
        raise RuntimeError(f"the slider's handle at ({x0:.0f}, {y0:.0f}) is covered by another element; "
                           "dragging there would not move it")
    step = track["width"] / 3
    x1 = x0 + step if x0 + step < track["x"] + track["width"] else x0 - step
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y0, steps=8)
    page.mouse.up()
    page.wait_for_timeout(300)
    if readout.count() and readout.inner_text() == value_before:
        raise RuntimeError(f"dragging the slider left its value at {value_before!r}")

    if wait_for_change:
        page.wait_for_function(
            """([src]) => { const img = document.querySelectorAll('[data-slider-test] %s')[%d]
                 ?.querySelector('img'); return img && img.src !== src; }""" % (OWN_OUTPUTS, where["figure"]),
            arg=[src_before], timeout=timeout * 1000, polling=300)
    # a dragged slider sends several values, each redrawn in turn: wait until the kernel is idle
    # and the image has stayed the same for a few polls, so "after" shows the final value
    img_src = "() => document.querySelectorAll('[data-slider-test] %s')[%d]?.querySelector('img')?.src" % (
        OWN_OUTPUTS, where["figure"])
    deadline, quiet, last = time.monotonic() + timeout, 0, None
    while quiet < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(750)
        src = page.evaluate(img_src)
        quiet = quiet + 1 if (src == last and page.evaluate(_JS_BUSY) == "") else 0
        last = src
    figure = cell.locator(OWN_OUTPUTS).nth(where["figure"]).locator("img").first
    value_after = readout.inner_text() if readout.count() else ""
    after_png = figure.screenshot()
    # leave the controls at the top of the view, for the page screenshot
    slider.evaluate("node => node.scrollIntoView({block: 'start'})")
    return SliderMove(where["index"], value_before, value_after, before_png, after_png,
                      pixel_change(before_png, after_png))
