"""RunConfig: one flat, typed record describing one training run.

Every field carries a trailing comment; that comment is the field's help text (shown by
`python -m studylib config`, the CLI and the notebook's parameters cell), so it is the
single place where a field is documented. Unknown keys and wrong types fail loudly.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
import math
import re
import reprlib
from pathlib import Path
from typing import Any, Callable

import yaml


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and the fix."""


@dataclasses.dataclass
class RunConfig:
    # --- what to run ---
    dataset: str = "synthetic"  # dataset name (python -m studylib datasets)
    data_root: str = ""  # folder, CSV or .npz for the folder/csv/npz datasets; empty: the registry default
    backbone: str = "tinycnn"  # backbone name (python -m studylib backbones)
    weights: str = "none"  # torchvision weight set (IMAGENET1K_V1, IMAGENET1K_V2), a checkpoint file path, or none
    weights_sha256: str = ""  # expected SHA-256 of a local checkpoint file; empty: not checked
    strategy: str = "ft"  # fine-tuning strategy (python -m studylib strategies)
    seed: int = 684  # seed for splits, initialisation and batch order (study: 684, 559, 629)
    # --- protocol (docs/design.md section 4) ---
    image_size: int = 224  # side of the square crop fed to the network
    resize_size: int = 0  # images are resized to this side once, then centre-cropped; 0: image_size * 232 / 224
    batch_size: int = 96  # training and evaluation batch size
    max_epochs: int = 30  # upper bound on training epochs (all stages together)
    patience: int = 3  # early stopping: epochs without validation improvement in the last stage
    select_metric: str = "balanced_accuracy"  # validation metric for early stopping and checkpoint selection
    optimizer: str = "adam"  # adam, adamw or sgd
    lr: float = 1e-3  # base learning rate
    weight_decay: float = 0.0  # plain weight decay (the SP strategies use their own penalties instead)
    momentum: float = 0.9  # SGD momentum
    schedule: str = "cosine"  # cosine (per stage, per epoch) or constant
    augment: bool = False  # random crop and horizontal flip on the device during training
    bn_policy: str = "auto"  # BatchNorm in trainable blocks: auto (strategy default), train, freeze_stats, freeze
    dropout: str = "auto"  # dropout while training: auto (strategy default: eval for auto_rgn and auto_snr, as their reference code; train otherwise), train or eval
    class_weighted_loss: bool = False  # weight the cross-entropy by inverse class frequency
    # --- strategy parameters (defaults chosen by studylib: the study does not publish them) ---
    lp_epochs: int = 5  # lp_ft: epochs of the linear-probing stage
    lpft_lr_factor: float = 0.1  # lp_ft: the second stage trains at lr times this factor
    gu_epochs_per_stage: int = 2  # gu_*: epochs before the next block unfreezes
    l1sp_alpha: float = 1e-4  # l1_sp: weight of sum |w - w0| over backbone parameters
    l2sp_alpha: float = 0.01  # l2_sp: weight of 1/2 ||w - w0||^2 over backbone parameters
    sp_beta: float = 0.01  # l1_sp, l2_sp: weight of 1/2 ||w||^2 over head parameters
    rgn_probe_batches: int = 5  # auto_rgn, auto_snr: training batches probed at the start of each epoch
    rgn_max_over: str = "all"  # auto_rgn: the largest RGN is taken over all trainable tensors (reference code) or backbone (the new head then trains at lr)
    snr_threshold: float = 0.1  # auto_snr: tensors whose SNR / max SNR is under this are frozen for the epoch
    surgical_block: str = ""  # surgical: the one block (besides the head) that trains; empty: the first block
    dlr_decay: float = 0.5  # discriminative_lr: each block below the head trains at this times the lr above it
    # --- data ---
    val_fraction: float = 0.15  # share of train carved out as validation when the data has no validation split
    test_fraction: float = 0.15  # share held out as test when the data has no test split
    synthetic_size: int = 600  # synthetic: number of images generated
    skip_bad_images: bool = False  # skip unreadable images (listed in the data report) instead of failing
    path_column: str = "path"  # csv: column of image paths (relative to image_root, or absolute; no suffix: found by name)
    image_root: str = ""  # csv: folder that relative image paths start from; empty: the CSV's own folder
    label_column: str = "label"  # csv: column of class labels
    group_column: str = ""  # csv: patient / lesion column; no group ever spans two splits
    split_column: str = ""  # csv: column of official splits (train / val / test)
    group_pattern: str = ""  # folder: regex whose first match in the file name is the group (patient) id, e.g. '^(person\d+)'
    classes: str = ""  # csv, folder: the class names, comma-separated or a YAML list; any other label is refused. Empty: the labels found (checked for case variants and typos)
    min_class_images: int = 5  # csv, folder: a class with fewer images is refused (almost always a typo label)
    allow_missing_classes: bool = False  # accept a validation or test split that lacks a class (its recall and AUROC are then undefined)
    official_split: bool = True  # keep the data's own train/val/test split; false: re-split (by group if any)
    splits_file: str = ""  # reuse a saved split assignment (a run's splits.csv)
    drop_duplicates: bool = False  # drop val/test images that duplicate (exactly or nearly) an image in train
    near_duplicate_bits: int = 2  # average-hash distance up to which two images count as near duplicates; -1: off
    balanced_sampling: bool = False  # draw training batches with class-balanced probabilities
    medmnist_size: int = 28  # MedMNIST+: 28, 64, 128 or 224
    train_fraction: float = 1.0  # few labels: train on this share of the training split (stratified, whole groups, nested: a smaller share is a subset of a larger one for the same seed); validation and test untouched
    train_per_class: int = 0  # few labels, k-shot: train on about this many images per class (whole groups); 0: off (use train_fraction)
    workers: int = 0  # processes that decode images into the cache; 0: up to 8, one per core
    # --- engine ---
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA), bf16 or off
    channels_last: str = "auto"  # auto (per backbone on CUDA), on or off
    feature_cache: bool = True  # lp and LP-FT's first stage train the head on features computed once (no augment)
    max_steps_per_epoch: int = 0  # cap on training batches per epoch (smoke runs); 0: the whole split
    num_threads: int = 0  # CPU threads for torch; 0: torch's default
    memory_gb: float = 0.0  # host memory for images held in memory; a split that does not fit streams from the prepared cache, read a few batches ahead (same batches, same results); 0: half the memory available when the run starts, shared by the STUDYLIB_RUNS_PER_HOST runs on this machine
    log_tensors: bool = False  # also write tensors.csv: the layers.csv columns for every parameter tensor
    save_checkpoint: bool = False  # also write best.pt (the best-validation weights) into the run folder
    resume_every_s: float = 300  # write resume.pt after an epoch when this many seconds passed since the last, after the last epoch, and after every epoch whose save costs under 5% of the time since the last save; -1: never
    quiet: bool = False  # no progress bars
    # --- measurements beyond accuracy ---
    calibration_bins: int = 15  # bins of the expected calibration error and the reliability diagram (equal width and equal mass)
    repr_images: int = 256  # validation images (a fixed, seeded subset) on which each block's features are compared with the starting network (representations.csv); 0: off
    log_representations_every: int = 0  # also compare features every this many epochs (representations.csv rows per epoch); 0: only the selected network

    def __post_init__(self):
        for name in FIELDS:  # RunConfig(lr="fast") fails here, as from_dict does
            setattr(self, name, coerce(name, getattr(self, name), "RunConfig"))
        self.validate()

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "RunConfig":
        """Build a config, refusing unknown keys and values of the wrong type."""
        check_keys(values, source)
        return cls(**{k: coerce(k, v, source) for k, v in values.items()})

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "bn_policy": BN_POLICIES,
                   "dropout": DROPOUT_MODES, "rgn_max_over": RGN_MAX_OVER,
                   "amp": ("auto", "bf16", "off"), "channels_last": ("auto", "on", "off"),
                   "select_metric": SELECT_METRICS}
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ConfigError(f"{key}={shown(getattr(self, key))} is not valid; choose one of {', '.join(valid)}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ConfigError(f"device={self.device!r} is not valid; use auto, cpu, cuda or cuda:N")
        check_ranges(self)
        if self.resize_size and self.resize_size < self.image_size:
            raise ConfigError(f"resize_size ({self.resize_size}) must be 0 or at least image_size ({self.image_size})")
        if self.group_pattern:
            try:
                re.compile(self.group_pattern)
            except re.error as err:
                raise ConfigError(f"group_pattern {self.group_pattern!r} is not a valid regular expression ({err}); "
                                  r"e.g. '^(patient\d+)' takes the group from the start of the file name") from None
        if self.train_per_class and self.train_fraction < 1:
            raise ConfigError(f"train_per_class={self.train_per_class} and train_fraction={self.train_fraction} are both "
                              "set; choose one (train_per_class for k-shot, train_fraction for a share)")
        repeated = sorted({c for c in names_of(self.classes) if names_of(self.classes).count(c) > 1})
        if repeated:
            raise ConfigError(f"classes names {repeated} more than once; list each class once")
        if self.weights_sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", self.weights_sha256):
            raise ConfigError(f"weights_sha256 must be 64 hexadecimal digits (sha256sum prints them), got "
                              f"{self.weights_sha256!r}")

    @property
    def prepared_size(self) -> int:
        """Side of the stored, resized image (the 232 of 'resize 232, crop 224')."""
        return self.resize_size or round(self.image_size * 232 / 224)

    def run_hash(self) -> str:
        """Identity of a run for resuming grids: every field that changes the result."""
        items = {k: v for k, v in self.to_dict().items() if ROLES[k] != "runtime"
                 and not (k in HASHED_WHEN_SET and v == HASHED_WHEN_SET[k])}
        return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
BN_POLICIES = ("auto", "train", "freeze_stats", "freeze")
DROPOUT_MODES = ("auto", "train", "eval")
RGN_MAX_OVER = ("all", "backbone")
METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "auroc", "kappa", "macro_ap", "loss")  # every split's scores
SELECT_METRICS = METRICS
CALIBRATION_METRICS = ("ece", "ece_mass", "brier", "nll")  # test only (metrics.json), not for selection
LOWER_IS_BETTER = ("loss",) + CALIBRATION_METRICS
METRIC_NAMES = {"balanced_accuracy": "balanced accuracy", "accuracy": "accuracy", "macro_f1": "macro F1",
                "auroc": "AUROC", "kappa": "Cohen's kappa", "macro_ap": "macro average precision", "loss": "loss",
                "ece": "expected calibration error", "ece_mass": "expected calibration error (equal mass)",
                "brier": "Brier score", "nll": "negative log-likelihood"}


def metric_name(metric: str) -> str:
    """The words for a metric id, for headings, titles and axes: 'balanced accuracy', 'recall of NORMAL'."""
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def improvement_sign(metric: str) -> int:
    """+1 when a higher value of `metric` is better, -1 when lower is (loss, the calibration errors)."""
    return -1 if metric in LOWER_IS_BETTER else 1
FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}

# The role of every field, stated once; the run hash, the analysis's protocol groups, its
# selection of tuned settings and `python -m studylib config` all read it.
# case: what a study varies between comparisons (dataset, backbone); method: what is compared
#   (the strategy and the variants of it a strategy resolves: BatchNorm policy, dropout mode,
#   Auto-RGN's maximum); seed: the replicate;
# tuned: a strategy's own settings, chosen per run on validation (each strategy's budget is the
#   number of settings tried);
# protocol, data, engine: held fixed within one comparison: runs differing here are grouped apart
#   and never pooled (protocol: the training recipe; data: which images and how they are read;
#   engine: arithmetic and training budget);
# runtime: result-neutral (how fast or how visibly it runs), left out of the run hash.
ROLES: dict[str, str] = {
    **dict.fromkeys(("dataset", "backbone"), "case"), **dict.fromkeys(("strategy", "bn_policy", "dropout",
                                                                       "rgn_max_over"), "method"),
    "seed": "seed",
    **dict.fromkeys(("image_size", "resize_size", "batch_size", "max_epochs", "patience", "select_metric", "optimizer",
                     "schedule", "augment", "weight_decay", "weights", "val_fraction", "test_fraction", "synthetic_size",
                     "class_weighted_loss", "balanced_sampling"), "protocol"),
    **dict.fromkeys(("lr", "momentum", "lp_epochs", "lpft_lr_factor", "gu_epochs_per_stage", "l1sp_alpha", "l2sp_alpha",
                     "sp_beta", "rgn_probe_batches", "snr_threshold", "surgical_block", "dlr_decay"), "tuned"),
    **dict.fromkeys(("data_root", "weights_sha256", "skip_bad_images", "path_column", "image_root", "label_column",
                     "group_column", "classes", "min_class_images", "allow_missing_classes",
                     "split_column", "group_pattern", "official_split", "splits_file", "drop_duplicates",
                     "near_duplicate_bits", "medmnist_size", "train_fraction", "train_per_class"), "data"),
    **dict.fromkeys(("max_steps_per_epoch", "amp", "channels_last"), "engine"),
    **dict.fromkeys(("workers", "device", "feature_cache", "num_threads", "log_tensors", "save_checkpoint",
                     "resume_every_s", "quiet", "repr_images", "log_representations_every", "memory_gb"), "runtime"),
    "calibration_bins": "protocol",
}
# Fields added after run folders existed: left out of the run hash while at their default, so a
# grid re-run with a newer studylib finds its finished runs instead of training them again.
HASHED_WHEN_SET = {"train_fraction": 1.0, "train_per_class": 0, "calibration_bins": 15, "image_root": "",
                   "classes": "", "min_class_images": 5, "allow_missing_classes": False}
HELD_FIXED = ("protocol", "data", "engine")  # roles whose fields define a comparable group of runs


def fields_with_role(*roles: str) -> list[str]:
    return [name for name in FIELDS if ROLES[name] in roles]


def _between(low: float, high: float, low_open: bool = False, high_open: bool = False):
    def inside(v: float) -> bool:
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    return inside


_AT_LEAST_1 = ("at least 1", lambda v: v >= 1)
_AT_LEAST_0 = ("0 or more", lambda v: v >= 0)
_POSITIVE = ("greater than 0", lambda v: v > 0)
# Valid range of every numeric field: (what the message says, the test). Checked on construction.
RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "seed": ("an integer from 0 to 2**32 - 1 (numpy's seed range)", _between(0, 2**32 - 1)),
    "image_size": ("from 8 to 2048 (pixels; larger crops would not fit a batch in memory)", _between(8, 2048)),
    "resize_size": _AT_LEAST_0, "batch_size": _AT_LEAST_1, "max_epochs": _AT_LEAST_1,
    "patience": ("at least 1 (epochs without improvement before stopping)", lambda v: v >= 1),
    "lr": _POSITIVE, "weight_decay": _AT_LEAST_0, "momentum": ("from 0 to below 1", _between(0, 1, high_open=True)),
    "lp_epochs": _AT_LEAST_1, "lpft_lr_factor": _POSITIVE, "gu_epochs_per_stage": _AT_LEAST_1,
    "l1sp_alpha": _AT_LEAST_0, "l2sp_alpha": _AT_LEAST_0, "sp_beta": _AT_LEAST_0,
    "rgn_probe_batches": _AT_LEAST_1, "snr_threshold": ("from 0 to 1", _between(0, 1)),
    "dlr_decay": ("above 0 and at most 1 (1: every block at the head's rate)", _between(0, 1, low_open=True)),
    "val_fraction": ("between 0 and 0.5", _between(0, 0.5, True, True)),
    "test_fraction": ("between 0 and 0.5", _between(0, 0.5, True, True)),
    "synthetic_size": ("at least 40 (fewer cannot fill train, validation and test with every class)",
                       lambda v: v >= 40),
    "near_duplicate_bits": ("from -1 (off) to 64", _between(-1, 64)),
    "medmnist_size": ("28, 64, 128 or 224", lambda v: v in (28, 64, 128, 224)),
    "workers": ("from 0 (automatic) to 64", _between(0, 64)), "max_steps_per_epoch": ("0 (the whole split) or more", lambda v: v >= 0),
    "num_threads": _AT_LEAST_0, "memory_gb": ("0 (automatic) or more gigabytes", lambda v: v >= 0),
    "train_fraction": ("above 0 and at most 1 (1: the whole training split)", _between(0, 1, low_open=True)),
    "train_per_class": ("0 (off) or more images per class", lambda v: v >= 0),
    "min_class_images": ("at least 1 (images per class)", lambda v: v >= 1),
    "calibration_bins": ("from 2 to 1000", _between(2, 1000)), "repr_images": ("0 (off) or at least 16 (images)", lambda v: v == 0 or v >= 16),
    "log_representations_every": ("0 (only the selected network) or more epochs", lambda v: v >= 0),
    "resume_every_s": ("-1 (never) or 0 or more seconds", lambda v: v == -1 or v >= 0),
}


def check_ranges(cfg: RunConfig) -> None:
    """Every numeric field inside its valid range (and finite); the message gives the range."""
    for key, (valid, test) in RANGES.items():
        value = getattr(cfg, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not a number; set {key} to a finite value ({valid})")
        if not test(value):
            raise ConfigError(f"{key}={shown(value)} is out of range; set {key} to {valid}")


def field_help() -> dict[str, str]:
    """Field name -> its trailing comment in the RunConfig source."""
    source = inspect.getsource(RunConfig)
    pattern = re.compile(r"^\s+(\w+): \w+ = .*?  # (.*)$", re.M)
    return {m.group(1): m.group(2).strip() for m in pattern.finditer(source)}


def field_type(name: str) -> type:
    return {"int": int, "float": float, "str": str, "bool": bool}[str(FIELDS[name].type)]


LIST_FIELDS = ("classes",)  # str fields that also take a YAML list of names


def names_of(text: str) -> tuple[str, ...]:
    """'A, B' -> ('A', 'B'): the value of a list field."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def check_keys(values: dict[str, Any], source: str) -> None:
    for key in values:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: unknown config key {key!r}.{hint} "
                              f"Valid keys: {', '.join(FIELDS)} (python -m studylib config explains each)")


def coerce(name: str, value: Any, source: str = "config") -> Any:
    """Check one value against its field type; ints are accepted for floats, nothing else."""
    want = field_type(name)
    if name in LIST_FIELDS and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ",".join(v.strip() for v in value)  # classes: [NORMAL, PNEUMONIA] in YAML
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is float and isinstance(value, str):
        try:  # YAML reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: {name} must be {want.__name__}, got {shown(value)} ({type(value).__name__})")


_SHORT = reprlib.Repr()  # Python 3.11's Repr takes no arguments: its limits are attributes
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 60, 60


def shown(value: Any) -> str:
    """A value for a message, bounded in depth and length: a YAML alias bomb (9 lists of 9 lists of ...,
    shared, cheap to load) would take minutes to spell out in full."""
    return _SHORT.repr(value)


def parse_assignment(text: str) -> tuple[str, Any]:
    """'key=value' from the command line; the value is read as YAML (1e-3, true, none...)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    check_keys({key: None}, "--set")
    if field_type(key) is str:
        return key, raw
    return key, coerce(key, yaml.safe_load(raw), "--set")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is set twice (lines {lines[key]} and {line}); keep one", key_node.start_mark)
            lines[key] = line
        return super().construct_mapping(node, deep)


def parse_yaml(path: str | Path) -> tuple[dict[str, Any], yaml.Node | None]:
    """A YAML mapping and its node tree (for line numbers); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist (studylib init DIR copies examples into DIR/params)")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file; give a YAML file of config fields (studylib init DIR copies examples)") from None
    try:
        node = yaml.compose(text)
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", err)
        kind = "" if isinstance(err, yaml.constructor.ConstructorError) else "malformed YAML: "
        raise ConfigError(f"{path}{where}: {kind}{problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data, node


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of config keys; an empty file is refused (it is almost always a mistake)."""
    data = parse_yaml(path)[0]
    if not data:
        raise ConfigError(f"{path} sets nothing (empty or only comments); give config fields, e.g. strategy: lp_ft "
                          "(python -m studylib config lists them)")
    return data
