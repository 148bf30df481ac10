"""Your own strategies, backbones and datasets in a grid: the modules that register them, imported everywhere
a run happens (this process, each papermill kernel, each Dask worker), so a name like `strategy: mine`
means the same thing in all of them."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from ..core.config import ConfigError


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
