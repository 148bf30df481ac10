"""studylib: compare fine-tuning strategies of pretrained CNNs on medical image classification."""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from .core.config import ConfigError, RunConfig
from .data.datasets import list_datasets, load_dataset, register_dataset
from .models.backbones import create_backbone, list_backbones, register_backbone
from .study.analysis import Study
from .study.grid import run_grid
from .training.runner import RunResult, check_config, run
from .training.strategies import STUDY_STRATEGIES, list_strategies, register_strategy

__version__ = "0.1.0"
__all__ = ["RunConfig", "ConfigError", "run", "RunResult", "check_config", "run_grid", "Study", "create_backbone", "list_backbones",
           "register_backbone", "list_datasets", "load_dataset", "register_dataset", "list_strategies",
           "register_strategy", "STUDY_STRATEGIES"]

# Module paths from before the package was layered (studylib.config, studylib.plots, ...): still
# importable, as the new module itself, with a DeprecationWarning naming the new path.
MOVED = {
    "config": "core.config", "registry": "core.registry", "fileio": "core.fileio",
    "images": "data.images", "cache": "data.cache", "loaders": "data.loaders", "datasets": "data.datasets",
    "splits": "data.splits", "leakage": "data.leakage", "synthetic": "data.synthetic", "download": "data.download",
    "data": "data.bundle", "backbones": "models.backbones", "strategies": "training.strategies",
    "engine": "training.engine", "layerlog": "training.layerlog", "features": "training.features",
    "metrics": "training.metrics", "runner": "training.runner", "rundir": "training.rundir",
    "pretrain": "training.pretrain", "grid": "study.grid", "results": "study.results", "analysis": "study.analysis",
    "plots": "views.runfigures", "studyplots": "views.studyfigures", "widgets": "views.explorer",
    "teaching": "views.teaching", "report": "views.report",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(__name__ + ".")
        if fullname.startswith(__name__ + ".") and MOVED.get(old) and "." not in old:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = f"{__name__}.{MOVED[spec.name.removeprefix(__name__ + '.')]}"
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the new module is already executed


sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    """`from studylib import plots` and the like, for the moved modules."""
    if name in MOVED and name != "data":  # studylib.data is the data layer now
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
