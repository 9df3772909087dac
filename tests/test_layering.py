"""The package's layers: every module imports, no import cycle, no import against the data flow.

Data flows one way: ``data`` gives images, ``tasks`` cuts them into episodes, ``nn`` holds the
networks, an algorithm turns an episode into a loss, ``viz`` draws; grading and the command
line sit on top. ``training`` (the loop) and ``evaluation`` (scores with intervals) know no
method: an algorithm hands them a step or a predict function, so they sit below the
algorithms in the import graph (an algorithm's ``train_x`` calls ``training.train``).

Imports inside functions count as much as those at the top of a module: a cycle hidden in a
function body is still a cycle.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import metaedu

#: Layers from the bottom up; a module may import its own layer and the layers below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("metaedu", "metaedu.runtime", "metaedu.paper_results", "metaedu.distributed")),
    ("data", ("metaedu.data",)),
    ("tasks", ("metaedu.tasks",)),
    ("nn", ("metaedu.nn",)),
    ("training and evaluation", ("metaedu.training", "metaedu.checkpoints", "metaedu.evaluation", "metaedu.verdicts")),
    ("algorithms", ("metaedu.algorithms", "metaedu.rl")),
    ("viz", ("metaedu.viz",)),
    (
        "grading and commands",
        (
            "metaedu.grading",
            "metaedu.cli",
            "metaedu.commands",
            "metaedu.notebooks",
            "metaedu.lab",
            "metaedu.bench",
            "metaedu.book",
            "metaedu.train_command",
            "metaedu.reference",
            "metaedu.__main__",
        ),
    ),
]

ROOT = Path(metaedu.__file__).parent


def all_modules() -> list[str]:
    names = ["metaedu"]
    for info in pkgutil.walk_packages([str(ROOT)], prefix="metaedu."):
        names.append(info.name)
    return sorted(names)


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest prefix that names ``module`` or a package above it."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer; add it to LAYERS in {__file__}")
    return best


def source_of(module: str) -> Path:
    parts = module.split(".")[1:]
    package = ROOT.joinpath(*parts) / "__init__.py"
    return package if package.exists() else ROOT.joinpath(*parts[:-1], parts[-1] + ".py")


def imports_of(module: str, known: set[str]) -> set[str]:
    """The metaedu modules that ``module`` imports anywhere in its source (functions included)."""
    tree = ast.parse(source_of(module).read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "metaedu")
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "metaedu"
        ):
            for alias in node.names:  # ``from metaedu.grading import notebook`` imports a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{module} uses a relative import; metaedu imports by absolute names")
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {m: imports_of(m, known) for m in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules that import one another in a circle, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


@pytest.mark.parametrize("module", all_modules())
def test_every_module_imports(module):
    importlib.import_module(module)


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_against_the_data_flow():
    wrong = []
    for module, deps in import_graph().items():
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(module):
                wrong.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


def test_the_checks_catch_a_cycle_and_an_upward_import():
    """The checks above can fail: a made-up graph with a cycle and an upward import is caught."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("metaedu.nn.distances") < layer_of("metaedu.evaluation") < layer_of("metaedu.algorithms.maml")
    assert layer_of("metaedu.tasks.sequences") < layer_of("metaedu.nn.distances")  # tasks may not import nn
