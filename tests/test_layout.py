"""The package's shape: imports flow one way between subpackages, and no module imports itself back.

Layers, lowest first (a module may import from its own subpackage and from lower layers only):
1. the leaves errors, files, secrets, units: nothing from ossft;
2. harmony (the format) and gptoss (facts of the model family, MXFP4);
3. recipe (its defaults come from harmony and gptoss) and checkpoints (verifying a save needs the
   model's parameter names);
4. data;
5. model (tiny and generate render harmony data through data/) and launch;
6. train and convert;
7. cli.
Every import counts, the ones inside functions too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGE = REPO / "ossft"
LAYERS = {
    "errors": 1, "files": 1, "secrets": 1, "units": 1,
    "harmony": 2, "gptoss": 2,
    "recipe": 3, "checkpoints": 3,
    "data": 4,
    "model": 5, "launch": 5,
    "train": 6, "convert": 6,
    "cli": 7,
}  # fmt: skip
TOP_LEVEL = {"__init__", "__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The ossft modules `path` imports, anywhere in it; `from ossft.x import name` counts as
    ossft.x.name when that is a module, else as ossft.x."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ossft")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ossft") and not node.level:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found - {"ossft"}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p): p for p in root.rglob("*.py")}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def room(module: str) -> str:
    """The subpackage or leaf module a module belongs to: ossft.data.rows -> data."""
    return module.split(".")[1] if module != "ossft" else "__init__"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imports in graph.items():
        source = room(module)
        if source in TOP_LEVEL:
            continue
        for target in imports:
            if room(target) != source and LAYERS[room(target)] >= LAYERS[source]:
                wrong.append(f"{module} imports {target} (layer {LAYERS[room(target)]} >= {LAYERS[source]})")
    return sorted(wrong)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), plus self-imports."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_room_has_a_layer():
    rooms = {room(m) for m in import_graph()} - TOP_LEVEL
    assert rooms == set(LAYERS)


def test_imports_flow_one_way():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_few_modules_at_the_top():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top


def test_no_module_over_400_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 420}
    assert long == {}


@pytest.mark.parametrize(
    ("source", "line", "caught"),
    [
        ("data/rows.py", "from ossft.train.run import run_training", "ossft.data.rows imports ossft.train.run"),
        ("harmony/render.py", "from ossft.recipe import load", "ossft.harmony.render imports ossft.recipe.load"),
        ("model/load.py", "import ossft.launch.memory", "ossft.model.load imports ossft.launch.memory"),
    ],
)
def test_an_upward_import_is_caught(tmp_path, source, line, caught):
    # The same check on a copy of the package with one upward import added, inside a function.
    import shutil

    copy = tmp_path / "ossft"
    shutil.copytree(PACKAGE, copy)
    target = copy / source
    target.write_text(target.read_text() + f"\n\ndef _added():\n    {line}\n")
    graph = _graph_of(tmp_path)
    assert any(w.startswith(caught) for w in upward_imports(graph)), upward_imports(graph)


def test_a_cycle_is_caught():
    graph = {"ossft.a.x": {"ossft.a.y"}, "ossft.a.y": {"ossft.a.z"}, "ossft.a.z": {"ossft.a.x"}, "ossft.b": set()}
    assert cycles(graph) == [["ossft.a.x", "ossft.a.y", "ossft.a.z"]]


def _graph_of(root: Path) -> dict[str, set[str]]:
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "ossft").rglob("*.py")}  # fmt: skip
    return {name: imported_modules(path, set(files)) for name, path in files.items()}
