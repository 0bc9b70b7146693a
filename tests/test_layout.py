"""The layout keeps the architecture (docs/architecture.md): the layers read
one way, faces -> evaluation -> storage -> core, with no module importing
from a layer above its own and no import cycle between the package's
modules; and what llm imports on every command leaves the engine and the
web viewer's packages unloaded. Imports are read from the source (``ast``),
so the check imports nothing."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llm_consortium"
# Each module's layer, by its first folder: a module imports only from its own
# layer and the ones below it. The package's __init__ (llm's hooks) sits above
# the faces, and extras.py (the install hint a face shows) with them;
# llm_adapter.py (llm's unpublished functions, for any layer) below them all.
LAYERS = {"llm_adapter": 0, "core": 0, "storage": 1, "evaluation": 2, "faces": 3, "extras": 3, "": 4}


def module_name(path: Path) -> str:
    """'core.engine' for core/engine.py, 'core.methods' for core/methods/__init__.py, '' for the package's own."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(name: str) -> set[str]:
    """The package's modules that a module imports, at module level or inside a
    function (each is an edge either way), named as in MODULES. ``from X import Y``
    counts as importing X.Y when Y is a module, else X."""
    path = MODULES[name]
    package = [part for part in name.split(".") if part]
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb from the module's package
                target = [*package[: len(package) - node.level + 1], *(node.module or "").split(".")]
            elif (node.module or "").split(".")[0] == "llm_consortium":
                target = node.module.split(".")[1:]
            else:
                continue
            target = [part for part in target if part]
            for alias in node.names:
                submodule = ".".join([*target, alias.name])
                found.add(submodule if submodule in MODULES else ".".join(target))
        elif isinstance(node, ast.Import):
            found |= {".".join(alias.name.split(".")[1:]) for alias in node.names
                      if alias.name.split(".")[0] == "llm_consortium"}
    return found - {name}


def layer(name: str) -> int:
    return LAYERS[name.split(".")[0]]


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each set of modules that import one another round a loop: the strongly
    connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


@pytest.mark.parametrize("folder", [name for name in LAYERS if name and (PACKAGE / name).is_dir()])
def test_inner_folders_do_not_import_outer_ones(folder):
    offenders = {
        name: sorted(target for target in imported_modules(name) if layer(target) > layer(name))
        for name in MODULES if name.split(".")[0] == folder
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_import_cycle():
    assert import_cycles({name: imported_modules(name) for name in MODULES}) == []


def test_only_the_faces_import_click():
    """Commands, options and what they print are the faces'; the layers below raise their own errors."""
    def imports_click(path: Path) -> bool:
        return any(
            (isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "click" for alias in node.names))
            or (isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "click")
            for node in ast.walk(ast.parse(path.read_text()))
        )

    below_faces = [name for name in MODULES if layer(name) < LAYERS["faces"]]
    assert [name for name in below_faces if imports_click(MODULES[name])] == []
    assert imports_click(MODULES["faces.eval_command"])  # the check sees an import of click


def test_the_check_sees_cycles():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_check_reads_relative_and_absolute_imports():
    assert "core.results" in imported_modules("core.engine")  # from .results import ...
    assert "core.prompts" in imported_modules("core.methods.arbiter")  # from .. import prompts
    assert "core.methods" in imported_modules("core.engine")  # from .methods import member_instructions
    assert "faces.cli" in imported_modules("")  # inside register_commands
    assert {"core.config", "storage.store"} <= imported_modules("faces.cli")


# In a fresh interpreter, one step after another: llm with its plugins (as on
# every llm command), then modules that commands import on their own.
IMPORT_STEPS = ["llm", "llm_consortium.faces.cli", "llm_consortium.storage.store",
                "llm_consortium.storage.recorder", "llm_consortium.evaluation.evaluate"]
LAZY = ["llm_consortium.core.engine", "starlette", "uvicorn", "markdown_it"]


def test_imports_stay_lazy():
    code = f"""if True:
        import importlib, json, sys
        loaded = {{}}
        for step in {IMPORT_STEPS!r}:
            module = importlib.import_module(step)
            if step == "llm":
                module.get_plugins()  # loads every plugin, as each llm command does
            loaded[step] = [name for name in {LAZY!r} if name in sys.modules]
        print(json.dumps(loaded))"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {step: [] for step in IMPORT_STEPS}
