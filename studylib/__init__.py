"""studylib: compare fine-tuning strategies of pretrained CNNs on medical image classification."""
from .backbones import create_backbone, list_backbones, register_backbone
from .config import ConfigError, RunConfig
from .datasets import list_datasets, load_dataset, register_dataset
from .runner import RunResult, run
from .strategies import STUDY_STRATEGIES, list_strategies, register_strategy

__version__ = "0.1.0"
__all__ = ["RunConfig", "ConfigError", "run", "RunResult", "create_backbone", "list_backbones",
           "register_backbone", "list_datasets", "load_dataset", "register_dataset", "list_strategies",
           "register_strategy", "STUDY_STRATEGIES"]
