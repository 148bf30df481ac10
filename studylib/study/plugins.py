"""Your own strategies, backbones and datasets in a grid: the modules that register them, imported everywhere
a run happens (this process, each papermill kernel, each Dask worker), so a name like `strategy: mine`
means the same thing in all of them."""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

from ..core.config import ConfigError
from ..core.fileio import atomic_write

RECORD = "imports.json"  # in a grid folder: the imports its runs used, so a report reads their knobs too


def resolve(specs: list[str], base: Path) -> list[str]:
    """Module names stay; a `.py` file becomes its absolute path (relative to `base`, the grid's folder)."""
    return [str((base / spec).resolve()) if spec.endswith(".py") else spec for spec in specs]


def import_all(specs: list[str]) -> None:
    """Import every module name or `.py` file in `specs` once (a second import would register twice)."""
    for spec in specs:
        if spec.endswith(".py"):
            _import_file(Path(spec))
        else:
            try:
                importlib.import_module(spec)
            except ImportError as err:
                raise ConfigError(f"imports: cannot import {spec!r} ({err}); give a module on the Python path "
                                  "or a .py file (relative to the grid file)") from None


def record(folder: Path, specs: list[str]) -> None:
    """Remember a grid's imports in its folder (absolute paths), for the report and the notebooks."""
    if specs:
        atomic_write(Path(folder) / RECORD, json.dumps(specs))


def import_recorded(folder: str | Path) -> list[str]:
    """Import what a grid folder's runs imported (nothing when it records none); returns the specs."""
    path = Path(folder) / RECORD
    try:
        specs = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError):
        raise ConfigError(f"{path} is not readable JSON; delete it or run the grid again") from None
    if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
        raise ConfigError(f"{path} should list module names or .py paths; delete it or run the grid again")
    import_all(specs)
    return specs


def _import_file(path: Path) -> None:
    name = f"studylib_imports.{path.stem}_{abs(hash(str(path)))}"  # one module per file, whatever its stem
    if name in sys.modules:
        return
    if not path.is_file():
        raise ConfigError(f"imports: {path} does not exist; give a .py file relative to the grid file, "
                          "or a module name")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]  # a fixed file can be imported again
        raise
