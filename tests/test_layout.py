"""The layout keeps the architecture: the core imports nothing from the
folders around it (storage, the faces, evaluation), and storage nothing
from the faces or evaluation (docs/architecture.md); and what llm imports
on every command leaves the engine and the web viewer's packages unloaded."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llm_consortium"
OUTSIDE = {"core": {"storage", "faces", "evaluation"}, "storage": {"faces", "evaluation"}}


def imported_folders(path: Path) -> set[str]:
    """The package's top-level folders that a module imports, at any depth in the file."""
    depth = len(path.relative_to(PACKAGE).parts) - 1  # folders between the package and the file
    folders = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb to the package, then read the first part
                climbed = path.relative_to(PACKAGE).parts[:-1][: max(depth - node.level + 1, 0)]
                parts = [*climbed, *(node.module or "").split(".")]
            elif (node.module or "").startswith("llm_consortium."):
                parts = node.module.split(".")[1:]
            else:
                continue
            folders.add(parts[0])
        elif isinstance(node, ast.Import):
            folders |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("llm_consortium.")}
    return folders


@pytest.mark.parametrize("folder", sorted(OUTSIDE))
def test_inner_folders_do_not_import_outer_ones(folder):
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(imported_folders(path) & OUTSIDE[folder])
        for path in (PACKAGE / folder).rglob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_check_reads_relative_and_absolute_imports():
    module = PACKAGE / "core" / "engine.py"
    assert "core" in imported_folders(module)  # engine imports its neighbours in core
    assert imported_folders(PACKAGE / "faces" / "cli.py") & {"core", "storage"}


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
