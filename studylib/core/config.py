"""RunConfig: one flat, typed record describing one training run.

Every field carries a trailing comment, continued on comment lines right below it when long; that
comment is the field's help text (shown by `python -m studylib config`, the CLI and the notebook's
parameters cell, all through `documentation()`), so it is the single place where a field is
documented. A strategy's own settings are not fields but knobs, declared on the strategy
(core/knobs.py) and config keys like the fields. Unknown keys and wrong types fail loudly.
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

from .constants import CALIBRATION_BINS, DEFAULT_METRIC, RESIZE_RATIO
from .knobs import AT_LEAST_0, AT_LEAST_1, KNOBS, OWNERS, POSITIVE, between, help_line


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and the fix."""


@dataclasses.dataclass(init=False, eq=False, repr=False)
class RunConfig:
    # --- what to run ---
    dataset: str = "synthetic"  # dataset name (python -m studylib datasets)
    data_root: str = ""  # folder, CSV or .npz for the folder/csv/npz datasets; empty: the registry default
    backbone: str = "tinycnn"  # backbone name (python -m studylib backbones)
    weights: str = "none"  # torchvision weight set (IMAGENET1K_V1, IMAGENET1K_V2), a checkpoint file path, or none
    weights_sha256: str = ""  # expected SHA-256 of a local checkpoint file; empty: not checked
    weights_keys: str = ""  # a checkpoint with other key names: rewrite rules, each a regex, an arrow and its
    #   replacement, separated by semicolons, applied in order (an empty replacement drops the key); the syntax and
    #   torchxrayvision's example: docs/backbones.md. (No equals sign here: papermill parses this line.)
    weights_channels: str = ""  # a 1-channel checkpoint on 3-channel images: "repeat" (its first convolution over
    #   R, G and B, divided by 3) or "luminance" (over the image converted to grey); empty: such a checkpoint is
    #   refused
    strategy: str = "ft"  # fine-tuning strategy (python -m studylib strategies)
    seed: int = 684  # seed for splits, initialisation and batch order (study: 684, 559, 629)
    # --- protocol (docs/design.md section 4) ---
    image_size: int = 224  # side of the square crop fed to the network
    resize_size: int = 0  # images are resized to this side once, then centre-cropped; 0: image_size * 232 / 224
    batch_size: int = 96  # training and evaluation batch size
    max_epochs: int = 30  # upper bound on training epochs (all stages together)
    patience: int = 3  # early stopping: epochs without validation improvement in the last stage
    select_metric: str = DEFAULT_METRIC  # validation metric for early stopping and checkpoint selection
    optimizer: str = "adam"  # adam, adamw or sgd
    lr: float = 1e-3  # base learning rate
    weight_decay: float = 0.0  # plain weight decay (the SP strategies use their own penalties instead)
    momentum: float = 0.9  # SGD momentum
    schedule: str = "cosine"  # cosine (per stage, per epoch) or constant
    augment: bool = False  # random crop and horizontal flip on the device during training
    bn_policy: str = "auto"  # BatchNorm in trainable blocks: auto (strategy default), train, freeze_stats, freeze
    dropout: str = "auto"  # dropout while training: auto (strategy default: eval for auto_rgn and auto_snr, as their
    #   reference code; train otherwise), train or eval
    class_weighted_loss: bool = False  # weight the cross-entropy by inverse class frequency
    # --- data ---
    val_fraction: float = 0.15  # share of train carved out as validation when the data has no validation split
    test_fraction: float = 0.15  # share held out as test when the data has no test split
    synthetic_size: int = 600  # synthetic: number of images generated
    skip_bad_images: bool = False  # skip unreadable images (listed in the data report) instead of failing
    path_column: str = "path"  # csv: column of image paths (relative to image_root, or absolute; no suffix: found by
    #   name)
    image_root: str = ""  # csv: folder that relative image paths start from; empty: the CSV's own folder
    label_column: str = "label"  # csv: column of class labels
    group_column: str = ""  # csv: patient / lesion column; no group ever spans two splits
    split_column: str = ""  # csv: column of official splits (train / val / test)
    group_pattern: str = ""  # folder: regex whose first match in the file name is the group (patient) id, e.g.
    #   '^(person\d+)'
    classes: str = ""  # csv, folder: the class names, comma-separated or a YAML list; any other label is refused.
    #   Empty: the labels found (checked for case variants and typos)
    min_class_images: int = 5  # csv, folder: a class with fewer images is refused (almost always a typo label)
    allow_missing_classes: bool = False  # accept a validation or test split that lacks a class (its recall and AUROC
    #   are then undefined)
    official_split: bool = True  # keep the data's own train/val/test split; false: re-split (by group if any)
    splits_file: str = ""  # reuse a saved split assignment (a run's splits.csv)
    drop_duplicates: bool = False  # drop val/test images that duplicate (exactly or nearly) an image in train
    near_duplicate_bits: int = 2  # average-hash distance up to which two images count as near duplicates; -1: off
    balanced_sampling: bool = False  # draw training batches with class-balanced probabilities
    medmnist_size: int = 28  # MedMNIST+: 28, 64, 128 or 224
    train_fraction: float = 1.0  # few labels: train on this share of the training split (stratified, whole groups,
    #   nested: a smaller share is a subset of a larger one for the same seed); validation and test untouched
    train_per_class: int = 0  # few labels, k-shot: train on about this many images per class (whole groups); 0: off
    #   (use train_fraction)
    workers: int = 0  # processes that decode images into the cache; 0: one per core up to 8, none below 256
    #   images per core
    # --- engine ---
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA), bf16 or off
    channels_last: str = "auto"  # auto (per backbone on CUDA), on or off
    feature_cache: bool = True  # lp and LP-FT's first stage train the head on features computed once (no augment)
    max_steps_per_epoch: int = 0  # cap on training batches per epoch (smoke runs); 0: the whole split
    num_threads: int = 0  # CPU threads for torch; 0: torch's default
    memory_gb: float = 0.0  # host memory for images held in memory; a split that does not fit streams from the prepared
    #   cache, read a few batches ahead (same batches, same results); 0: half the memory available when the run starts,
    #   shared by the STUDYLIB_RUNS_PER_HOST runs on this machine
    log_tensors: bool = False  # also write tensors.csv: the layers.csv columns for every parameter tensor
    save_checkpoint: bool = False  # also write best.pt (the best-validation weights) into the run folder
    resume_every_s: float = 300.0  # write resume.pt after an epoch when this many seconds passed since the last, after
    #   the last epoch, and after every epoch whose save costs under 5% of the time since the last save; -1: never
    quiet: bool = False  # no progress bars
    # --- measurements beyond accuracy ---
    calibration_bins: int = CALIBRATION_BINS  # bins of the expected calibration error and the reliability diagram
    #   (equal width and equal mass)
    repr_images: int = 256  # validation images (a fixed, seeded subset) on which each block's features are compared
    #   with the starting network (representations.csv); 0: off
    log_representations_every: int = 0  # also compare features every this many epochs (representations.csv rows per
    #   epoch); 0: only the selected network

    def __init__(self, **values: Any):
        """RunConfig(strategy="lp_ft", lp_epochs=3): the protocol fields and the strategies' knobs, by name;
        RunConfig(lr="fast") or an unknown key fails here, as from_dict does."""
        check_keys(values, "RunConfig")
        for name, spec in FIELDS.items():
            setattr(self, name, coerce(name, values.get(name, spec.default), "RunConfig"))
        self._knobs = {name: coerce(name, values.get(name, knob.default), "RunConfig") for name, knob in KNOBS.items()}
        self.validate()

    def __getattr__(self, name: str) -> Any:
        """A strategy's knob (cfg.lp_epochs); one declared after this config was made has its default."""
        if not name.startswith("_"):
            if name in self.__dict__.get("_knobs", {}):
                return self._knobs[name]
            if name in KNOBS:
                return KNOBS[name].default
        raise AttributeError(f"RunConfig has no field or strategy knob {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.to_dict().items() if v != default_of(k)}
        return f"RunConfig({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "RunConfig":
        """Build a config, refusing unknown keys and values of the wrong type."""
        check_keys(values, source)
        return cls(**{k: coerce(k, v, source) for k, v in values.items()})

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Every field, then every declared knob (config.json, the notebook's parameters, the grid's cells)."""
        return {**{name: getattr(self, name) for name in FIELDS}, **{name: getattr(self, name) for name in KNOBS}}

    def validate(self) -> None:
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "bn_policy": BN_POLICIES,
                   "dropout": DROPOUT_MODES,
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
            raise ConfigError(f"train_per_class={self.train_per_class} and train_fraction={self.train_fraction} are "
                              "both set; choose one (train_per_class for k-shot, train_fraction for a share)")
        repeated = sorted({c for c in names_of(self.classes) if names_of(self.classes).count(c) > 1})
        if repeated:
            raise ConfigError(f"classes names {repeated} more than once; list each class once")
        if self.weights_channels not in ("", "repeat", "luminance"):
            raise ConfigError(f"weights_channels={self.weights_channels!r}; use repeat (a 1-channel checkpoint's first "
                              "convolution over the mean of R, G and B), luminance (over the grey image) or leave it "
                              "empty")
        for rule in filter(None, self.weights_keys.split(";")):
            pattern, arrow, _ = rule.partition("=>")
            try:
                re.compile(pattern)
            except re.error as err:
                raise ConfigError(f"weights_keys rule {rule!r}: {err}; write regex=>replacement") from None
            if not arrow:
                raise ConfigError(f"weights_keys rule {rule!r} has no '=>'; write regex=>replacement, rules "
                                  "separated by ';' (an empty replacement drops the key)")
        if self.weights_sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", self.weights_sha256):
            raise ConfigError(f"weights_sha256 must be 64 hexadecimal digits (sha256sum prints them), got "
                              f"{self.weights_sha256!r}")

    @property
    def prepared_size(self) -> int:
        """Side of the stored, resized image (the 232 of 'resize 232, crop 224')."""
        return self.resize_size or round(self.image_size * RESIZE_RATIO)

    def run_hash(self) -> str:
        """Identity of a run for resuming grids: every field that changes the result, and the knobs of its
        own strategy (an FT run is the same run whatever lp_epochs says)."""
        items = {k: getattr(self, k) for k in identity_fields()
                 if not (k in HASHED_WHEN_SET and getattr(self, k) == HASHED_WHEN_SET[k])}
        items.update({k: getattr(self, k) for k in own_knobs(self.strategy)})
        return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
BN_POLICIES = ("auto", "train", "freeze_stats", "freeze")
DROPOUT_MODES = ("auto", "train", "eval")
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
#   (the strategy and the variants of it a strategy resolves: BatchNorm policy, dropout mode, and
#   knobs of role method such as Auto-RGN's maximum); seed: the replicate;
# tuned: lr, momentum and a strategy's knobs (core/knobs.py), chosen per run on validation (each
#   strategy's budget is the number of settings tried);
# protocol, data, engine: held fixed within one comparison: runs differing here are grouped apart
#   and never pooled (protocol: the training recipe; data: which images and how they are read;
#   engine: arithmetic and training budget);
# runtime: result-neutral (how fast or how visibly it runs), left out of the run hash.
ROLES: dict[str, str] = {
    **dict.fromkeys(("dataset", "backbone"), "case"), **dict.fromkeys(("strategy", "bn_policy", "dropout"), "method"),
    "seed": "seed",
    **dict.fromkeys(("image_size", "resize_size", "batch_size", "max_epochs", "patience", "select_metric", "optimizer",
                     "schedule", "augment", "weight_decay", "weights", "weights_keys", "weights_channels",
                     "val_fraction", "test_fraction",
                     "synthetic_size", "class_weighted_loss", "balanced_sampling"), "protocol"),
    **dict.fromkeys(("lr", "momentum"), "tuned"),
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
HASHED_WHEN_SET = {"train_fraction": 1.0, "train_per_class": 0, "calibration_bins": CALIBRATION_BINS, "image_root": "",
                   "classes": "", "min_class_images": 5, "allow_missing_classes": False, "weights_keys": "",
                   "weights_channels": ""}
HELD_FIXED = ("protocol", "data", "engine")  # roles whose fields define a comparable group of runs


def role(name: str) -> str:
    """The role of a field (ROLES) or of a strategy's knob (its declaration)."""
    return ROLES[name] if name in ROLES else KNOBS[name].role


def fields_with_role(*roles: str) -> list[str]:
    """Fields, then declared knobs, whose role is one of `roles` (read at call time: knobs come with strategies)."""
    return [name for name in (*FIELDS, *KNOBS) if role(name) in roles]


def identity_fields() -> list[str]:
    """The fields that make two runs different runs (all but the runtime ones); with `own_knobs`, a run's identity."""
    return [name for name in FIELDS if ROLES[name] != "runtime"]


def own_knobs(strategy: str) -> list[str]:
    """The knobs `strategy` reads: the only ones in its runs' identity (FT's runs ignore lp_epochs)."""
    return [name for name in KNOBS if strategy in OWNERS[name]]


def default_of(name: str) -> Any:
    return FIELDS[name].default if name in FIELDS else KNOBS[name].default


# Valid range of every numeric field: (what the message says, the test). Checked on construction.
RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "seed": ("an integer from 0 to 2**32 - 1 (numpy's seed range)", between(0, 2**32 - 1)),
    "image_size": ("from 8 to 2048 (pixels; larger crops would not fit a batch in memory)", between(8, 2048)),
    "resize_size": AT_LEAST_0, "batch_size": AT_LEAST_1, "max_epochs": AT_LEAST_1,
    "patience": ("at least 1 (epochs without improvement before stopping)", lambda v: v >= 1),
    "lr": POSITIVE, "weight_decay": AT_LEAST_0, "momentum": ("from 0 to below 1", between(0, 1, high_open=True)),
    "val_fraction": ("between 0 and 0.5", between(0, 0.5, True, True)),
    "test_fraction": ("between 0 and 0.5", between(0, 0.5, True, True)),
    "synthetic_size": ("at least 40 (fewer cannot fill train, validation and test with every class)",
                       lambda v: v >= 40),
    "near_duplicate_bits": ("from -1 (off) to 64", between(-1, 64)),
    "medmnist_size": ("28, 64, 128 or 224", lambda v: v in (28, 64, 128, 224)),
    "workers": ("from 0 (automatic) to 64", between(0, 64)),
    "max_steps_per_epoch": ("0 (the whole split) or more", lambda v: v >= 0),
    "num_threads": AT_LEAST_0, "memory_gb": ("0 (automatic) or more gigabytes", lambda v: v >= 0),
    "train_fraction": ("above 0 and at most 1 (1: the whole training split)", between(0, 1, low_open=True)),
    "train_per_class": ("0 (off) or more images per class", lambda v: v >= 0),
    "min_class_images": ("at least 1 (images per class)", lambda v: v >= 1),
    "calibration_bins": ("from 2 to 1000", between(2, 1000)),
    "repr_images": ("0 (off) or at least 16 (images)", lambda v: v == 0 or v >= 16),
    "log_representations_every": ("0 (only the selected network) or more epochs", lambda v: v >= 0),
    "resume_every_s": ("-1 (never) or 0 or more seconds", lambda v: v == -1 or v >= 0),
}


def check_ranges(cfg: RunConfig) -> None:
    """Every numeric field and knob inside its valid range (and finite); the message gives the range."""
    ranges = {**RANGES, **{name: knob.valid for name, knob in KNOBS.items()}}
    for key, (valid, test) in ranges.items():
        value = getattr(cfg, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not a number; set {key} to a finite value ({valid})")
        problem = KNOBS[key].problem(value) if key in KNOBS else ("" if test(value) else
                                                                    f"is out of range; set {key} to {valid}")
        if problem:
            raise ConfigError(f"{key}={shown(value)} {problem}")


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """What `studylib config` and the notebook's parameters cell say about one key."""

    name: str
    default: Any
    role: str
    section: str  # the `# --- section ---` above a field; "strategy knobs" for a knob
    help: str


def documentation() -> list[KeyDoc]:
    """Every key in order: the fields (help and section from the RunConfig source, read once here), then
    the knobs (from their declarations, prefixed by the strategies that read them)."""
    docs, section, continues = [], "", False
    for line in inspect.getsource(RunConfig).splitlines():
        header = re.match(r"\s+# --- (.*) ---", line)
        field = re.match(r"\s+(\w+): \w+ = .*?  # (.*)$", line)
        more = re.match(r"\s+#\s+(.*)$", line)  # a long help goes on in comment lines right below its field
        if header:
            section = header.group(1)
        elif field and field.group(1) in FIELDS:
            name = field.group(1)
            docs.append(KeyDoc(name, FIELDS[name].default, ROLES[name], section, field.group(2).strip()))
        elif more and continues:
            docs[-1] = dataclasses.replace(docs[-1], help=f"{docs[-1].help} {more.group(1).strip()}")
        continues = bool(field or (more and continues))
    return docs + [KeyDoc(name, knob.default, knob.role, "strategy knobs", help_line(name))
                   for name, knob in KNOBS.items()]


def field_help() -> dict[str, str]:
    """Key -> its help text."""
    return {doc.name: doc.help for doc in documentation()}


def field_type(name: str) -> type:
    """The type of a field or knob."""
    if name in KNOBS:
        return KNOBS[name].type
    return {"int": int, "float": float, "str": str, "bool": bool}[str(FIELDS[name].type)]


def config_keys() -> list[str]:
    """Every config key: the fields, then the declared knobs."""
    return [*FIELDS, *KNOBS]


LIST_FIELDS = ("classes",)  # str fields that also take a YAML list of names


def names_of(text: str) -> tuple[str, ...]:
    """'A, B' -> ('A', 'B'): the value of a list field."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def check_keys(values: dict[str, Any], source: str) -> None:
    for key in values:
        if key not in FIELDS and key not in KNOBS:
            close = difflib.get_close_matches(key, config_keys(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: unknown config key {key!r}.{hint} "
                              f"Valid keys: {', '.join(config_keys())} (python -m studylib config explains each)")


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
        raise ConfigError(f"{path} is not a text file; give a YAML file of config fields "
                          "(studylib init DIR copies examples)") from None
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
