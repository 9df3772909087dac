"""Running the lecture notebooks headless: ``metaedu run``.

Each notebook is executed with papermill (its ``parameters`` cell receives
``MODE`` and ``DEVICE``), written to the output folder with its outputs, and
rendered to HTML beside it. A summary table gives each notebook's status and
time; a failure names the cell and the error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import metaedu

#: Per-cell time limit in seconds for quick mode (full mode has none).
QUICK_CELL_TIMEOUT = 600


def lectures_dir() -> Path:
    """The course's ``lectures/`` folder (beside the package in a checkout, else under the working folder)."""
    beside = Path(metaedu.__file__).resolve().parent.parent / "lectures"
    return beside if beside.is_dir() else Path.cwd() / "lectures"


def find_notebooks(names: list[str] | None = None) -> list[Path]:
    """Lecture notebooks by path, file name or number prefix ("03"); all of them when ``names`` is empty."""
    folder = lectures_dir()
    every = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        if not every:
            raise FileNotFoundError(f"no lecture notebooks (NN_topic.ipynb) in {folder}")
        return every
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.exists():
            found.append(path)
            continue
        matches = [p for p in every if p.name == name or p.stem == name or p.name.startswith(f"{name}_")]
        if len(matches) != 1:
            known = ", ".join(p.stem for p in every) or "none"
            raise FileNotFoundError(f"no single lecture notebook matches {name!r} (lectures: {known})")
        found.append(matches[0])
    return found


@dataclass
class RunResult:
    notebook: str
    status: str  # "ok" or "failed"
    seconds: float
    output: Path | None = None
    html: Path | None = None
    error: str = ""


def parameters_cell_index(nb) -> int | None:
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    return None


def run_notebook(path: Path, out_dir: Path, mode: str = "quick", device: str = "auto", cell_timeout: int | None = None,
                 cwd: Path | None = None) -> RunResult:
    """Execute one notebook with papermill and render it; never raises for a failing cell.

    The kernel runs in ``cwd`` (default: the notebook's folder), so a copy of a lecture written
    elsewhere (a student version) can still find the course's relative paths.
    """
    import nbformat
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / path.name
    nb = nbformat.read(path, as_version=4)
    if parameters_cell_index(nb) is None:
        return RunResult(path.name, "failed", 0.0, error="no cell tagged 'parameters'")
    if cell_timeout is None and mode == "quick":
        cell_timeout = QUICK_CELL_TIMEOUT
    start = time.perf_counter()
    error = ""
    # the kernel inherits this environment: no progress bars in saved outputs (see runtime.progress_bars)
    saved_progress = os.environ.get("METAEDU_PROGRESS")
    os.environ["METAEDU_PROGRESS"] = "0"
    try:
        pm.execute_notebook(
            str(path),
            str(output),
            parameters={"MODE": mode, "DEVICE": device},
            cwd=str(cwd or path.parent),
            execution_timeout=cell_timeout,
            progress_bar=False,
            log_output=False,
            # the kernel's own start-up chatter (e.g. "running over TCP without encryption": it is a local,
            # per-run kernel) is not the lecture's output; errors still show
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except pm.PapermillExecutionError as err:
        # papermill counts its injected-parameters cell; name the cell as it is in the lecture's file
        index = err.cell_index - 1 if err.cell_index > parameters_cell_index(nb) else err.cell_index
        first_line = (err.source or "").strip().splitlines()[0][:60] if (err.source or "").strip() else ""
        error = f"cell {index} ({first_line!r}): {err.ename}: {err.evalue}"
    except Exception as err:  # kernel died, timeout, unreadable notebook ...
        error = f"{err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    finally:
        if saved_progress is None:
            os.environ.pop("METAEDU_PROGRESS", None)
        else:
            os.environ["METAEDU_PROGRESS"] = saved_progress
    seconds = time.perf_counter() - start
    html = None
    if output.exists():
        html = render_html(output)
    return RunResult(path.name, "failed" if error else "ok", seconds, output if output.exists() else None, html, error)


def render_html(notebook: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def summary_table(results: list[RunResult]) -> str:
    width = max([len(r.notebook) for r in results] + [8])
    lines = [f"{'notebook':<{width}}  {'status':<6}  {'seconds':>8}", "-" * (width + 18)]
    for r in results:
        lines.append(f"{r.notebook:<{width}}  {r.status:<6}  {r.seconds:>8.1f}")
    failed = [r for r in results if r.status != "ok"]
    for r in failed:
        lines.append(f"FAILED {r.notebook}: {r.error}")
    lines.append(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    notebooks = find_notebooks(args.notebooks)  # a name matching no lecture: one line and exit 2 (metaedu.cli)
    out = Path(args.out)
    results = []
    bar = tqdm(notebooks, desc="notebooks", unit="nb", file=sys.stderr)
    for path in bar:
        bar.set_postfix_str(path.name)
        results.append(run_notebook(path, out, args.mode, args.device, args.cell_timeout))
    bar.close()
    (out / "summary.json").write_text(
        json.dumps([{**r.__dict__, "output": str(r.output), "html": str(r.html)} for r in results], indent=2)
    )
    print(summary_table(results))
    print(f"executed notebooks and HTML in {out}/")
    return 0 if all(r.status == "ok" for r in results) else 1


def add_commands(sub) -> None:
    p = sub.add_parser("run", help="execute lecture notebooks headless (papermill) and render them to HTML")
    p.add_argument("notebooks", nargs="*", help="notebook paths, names or numbers (default: all lectures)")
    p.add_argument("--mode", choices=["quick", "full"], default="quick")
    p.add_argument("--device", default=os.environ.get("METAEDU_DEVICE", "auto"), help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--out", default="runs", help="folder for executed notebooks and HTML (default: runs/)")
    p.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: 600 in quick mode, none in full)")
    p.set_defaults(func=_run)
