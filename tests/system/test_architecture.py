"""The package's shape: layers import only layers below them, and no module imports itself back.

Layers, bottom to top: core, data, models, training, study, views; `cli`, `demo`, `__init__` and
`__main__` form the application on top. Imports inside functions count too: a lazy import is still a
dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "studylib"
LAYERS = ["core", "data", "models", "training", "study", "views"]
APPLICATION = {"cli", "demo", "__init__", "__main__"}


# Modules that import the user's own modules by name (a grid's `imports:`), never studylib's.
USER_IMPORTS = ("studylib.study.plugins",)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the studylib modules `path` imports (relative imports resolved)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{a.name}" for a in node.names]
            found |= {n for n in names if is_module(n)} or {target}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and module_name(path) not in ("studylib", *USER_IMPORTS):
            found.add("studylib")  # a string import below the application: the walker cannot see where to
    return {name for name in found if name.split(".")[0] == "studylib"}


def is_module(name: str) -> bool:
    """A studylib module or subpackage (`from .. import views` names the views layer)."""
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


MODULES = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    """0 (core) .. 5 (views); the application (cli, demo, the package root) is above them all."""
    parts = module.split(".")
    if module == "studylib" or parts[1] in APPLICATION:
        return len(LAYERS)
    return LAYERS.index(parts[1])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(module):
    upward = [m for m in MODULES[module] if layer(m) > layer(module)]
    assert not upward, f"{module} (layer {layer(module)}) imports {upward} from above"


def test_every_module_sits_in_a_layer():
    stray = [m for m in MODULES if m.count(".") == 1 and m.split(".")[1] not in APPLICATION | set(LAYERS)]
    assert not stray, f"modules outside the layers: {stray}"


def test_no_import_cycle():
    graph = {m: {d for d in deps if d in MODULES and d != m and d != "studylib"} for m, deps in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_the_walker_sees_relative_imports_and_the_package_root():
    assert "studylib.core.config" in MODULES["studylib.training.runner"]
    assert "studylib.training.runner" in MODULES["studylib.study.grid"]
    assert layer("studylib") > layer("studylib.views.report") > layer("studylib.study.grid")
    assert "studylib.study.analysis" in MODULES["studylib.views.report"]  # `from ..study import analysis`
