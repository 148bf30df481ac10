"""studylib: compare fine-tuning strategies of pretrained CNNs on medical image classification."""
from .core.config import ConfigError, RunConfig
from .data.datasets import list_datasets, load_dataset, register_dataset
from .models.backbones import create_backbone, list_backbones, register_backbone
from .study.analysis import Study
from .study.grid import run_grid
from .training.runner import RunResult, check_config, run
from .training.strategies import STUDY_STRATEGIES, list_strategies, register_strategy

__version__ = "0.1.0"
__all__ = ["RunConfig", "ConfigError", "run", "RunResult", "check_config", "run_grid", "Study", "create_backbone",
           "list_backbones", "register_backbone", "list_datasets", "load_dataset", "register_dataset",
           "list_strategies", "register_strategy", "STUDY_STRATEGIES"]
