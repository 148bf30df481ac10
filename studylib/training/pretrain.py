"""Pretrain a backbone on a source dataset: the synthetic source task (the offline stand-in for ImageNet weights),
or in-domain pretraining on any registered, folder, CSV or .npz dataset of your own source images."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..core import runfiles
from ..core.config import ConfigError, RunConfig
from ..core.fileio import atomic_write, read_json_dict_or_empty, write_json
from .provenance import HASH_CHARS, RECIPE, pretraining_record, record_path
from .runner import check_config, run

DEFAULT_CHECKPOINT = Path("outputs/pretrained/tinycnn-synthetic-source.pt")


def pretrain_config(backbone: str = "tinycnn", image_size: int = 32, size: int = 4000, epochs: int = 8,
                    seed: int = 0, quiet: bool = False, data: dict[str, Any] | None = None) -> RunConfig:
    """Full fine-tuning from random init on a source task, protocol otherwise default.

    Args:
        backbone: registered backbone to pretrain (timm:NAME too).
        image_size: training crop side, in pixels.
        size: images generated for the synthetic source task (synthetic_size; unused with `data`).
        epochs: training epochs (also the patience, so early stopping never cuts the recipe short).
        seed: run seed (split, head initialisation, batch order).
        quiet: no progress bars or messages.
        data: config fields of the source dataset (dataset, data_root, label_column, augment, ...: see
            `source_fields`); None: the 16-class synthetic source task.
    """
    source = data if data is not None else {"dataset": "synthetic_source", "synthetic_size": size}
    return RunConfig(**{"backbone": backbone, "weights": "none", "strategy": "ft", "image_size": image_size,
                        "max_epochs": epochs, "patience": epochs, "batch_size": 64, "seed": seed,
                        "save_checkpoint": True, "quiet": quiet, "repr_images": 0, **source})


def source_fields(data: str) -> dict[str, str]:
    """Config fields for `--data`: a registered dataset name, or a path (a folder of class folders, a CSV, a .npz)."""
    from ..data.datasets import DATASETS

    if data in DATASETS:
        return {"dataset": data}
    path = Path(data)
    kind = "folder" if path.is_dir() else {".csv": "csv", ".npz": "npz"}.get(path.suffix.lower())
    if kind is None or not path.exists():
        raise ConfigError(f"--data {data!r} is neither a registered dataset ({', '.join(DATASETS.names())}) nor an "
                          "existing folder of class folders, .csv or .npz file")
    return {"dataset": kind, "data_root": str(path)}


def pretrain(out: str | Path = DEFAULT_CHECKPOINT, cfg: RunConfig | None = None, reuse: bool = True) -> Path:
    """Write a source-task checkpoint to `out` (loadable as weights=out); reuse an existing one made by the
    same recipe (its run folder beside it, OUT.run, records it); refuse one of another recipe, or a file
    that is not a checkpoint, unless `reuse` is off (then it is trained again)."""
    out = Path(out)
    cfg = cfg or pretrain_config()
    if reuse and out.exists():
        check_reusable(out, cfg)
        return out
    from ..data.datasets import load_dataset

    data = load_dataset(check_config(cfg), progress=not cfg.quiet)
    result = run(cfg, out.with_suffix(".run"), overwrite=True, data=data)
    weights = (result.path / runfiles.CHECKPOINT).read_bytes()
    digest = hashlib.sha256(weights).hexdigest()
    record = pretraining_record(result.path, digest)
    if data.file_hashes is not None:  # image files: a target's test images can be checked against these
        record["source"]["train_file_sha256"] = [data.file_hashes[i][:HASH_CHARS] for i in data.indices("train")]
    write_json(record_path(out), record)
    atomic_write(out.with_suffix(".sha256"), f"{digest}  {out.name}\n")
    atomic_write(out, weights)  # last: a checkpoint on disk always has its record (a kill before it retrains)
    return out


def _same(field: str, saved, wanted) -> bool:
    """One recipe value: a data_root spelled relative or absolute, or with a trailing slash, is one folder."""
    if field == "data_root" and saved and wanted:
        return Path(saved).resolve() == Path(wanted).resolve()
    return saved == wanted


def check_reusable(out: Path, cfg: RunConfig) -> None:
    """`out` is a checkpoint pretrained by `cfg`'s recipe; else a ConfigError naming what differs and the fix."""
    import torch

    fix = "give another --out, or pass --force to train it again with this recipe"
    try:
        state = torch.load(out, map_location="cpu", weights_only=True)
    except Exception as err:  # a text file, a torn or foreign file: torch says why in many ways
        raise ConfigError(f"{out} is not a checkpoint studylib can load ({type(err).__name__}); {fix}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{out} is not a state dict of weights; {fix}")
    saved = read_json_dict_or_empty(out.with_suffix(".run") / runfiles.CONFIG)
    if not saved:
        return  # made elsewhere or by an older version: nothing records its recipe
    wanted = check_config(cfg)
    differs = [f"{k}={saved.get(k)!r} (asked: {getattr(wanted, k)!r})" for k in RECIPE
               if k in saved and not _same(k, saved[k], getattr(wanted, k))]
    if differs:
        raise ConfigError(f"{out} was pretrained with another recipe: {', '.join(differs)}; {fix}")


