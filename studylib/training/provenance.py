"""What a pretrained checkpoint was trained on: the record written beside it (source data, recipe), and the check
that a fine-tuning run does not test on images its checkpoint was pretrained on."""
from __future__ import annotations

from pathlib import Path

from ..core import runfiles
from ..core.config import ConfigError
from ..core.fileio import read_json_dict_or_empty

RECORD_SUFFIX = ".json"  # beside the checkpoint OUT.pt: OUT.json
RECIPE = ("dataset", "data_root", "backbone", "image_size", "synthetic_size", "max_epochs", "batch_size", "seed",
          "strategy", "lr", "augment")  # the fields of a pretraining run that make its checkpoint what it is
HASH_CHARS = 16  # of each training image's sha256 in the record: 64 bits, collisions out of reach


def check_not_pretrained_on(weights: str, data) -> None:
    """Refuse a run whose validation or test images were training images of its checkpoint's pretraining (the
    checkpoint's record beside it says which): its scores would measure memory, not transfer."""
    record = read_json_dict_or_empty(record_path(Path(weights))) if weights.lower() != "none" else {}
    seen = set(record.get("source", {}).get("train_file_sha256") or [])
    if not seen or data.file_hashes is None:
        return
    held_out = [i for split in ("val", "test") for i in data.indices(split)]
    shared = [data.ids[i] for i in held_out if data.file_hashes[i][:HASH_CHARS] in seen]
    if shared:
        raise ConfigError(f"{len(shared)} of this run's {len(held_out)} validation and test images were training "
                          f"images when {weights} was pretrained (e.g. {', '.join(map(str, shared[:2]))}): its scores "
                          "would measure memory, not transfer. Pretrain on other images (another dataset, or this "
                          "one's training split: the same seed and split settings), or fine-tune from other weights")


def record_path(out: Path) -> Path:
    return Path(out).with_suffix(RECORD_SUFFIX)


def pretraining_record(run_dir: Path, digest: str) -> dict:
    """What a checkpoint was pretrained on and how: its source data (name, fingerprint of every image, classes,
    training images), the recipe (the run's config) and how well it learned the source task (validation)."""
    config = read_json_dict_or_empty(run_dir / runfiles.CONFIG)
    env = read_json_dict_or_empty(run_dir / runfiles.ENV)
    metrics = read_json_dict_or_empty(run_dir / runfiles.METRICS)
    report = read_json_dict_or_empty(run_dir / runfiles.DATA_REPORT)
    counts = report.get("counts") or {}
    source = {"dataset": config.get("dataset"), "data_root": config.get("data_root"),
              "data_fingerprint": env.get("data_fingerprint"), "classes": list(counts.get("train", {})),
              "counts": counts}
    return {"checkpoint_sha256": digest, "source": source, "recipe": {k: config.get(k) for k in RECIPE},
            "source_validation": metrics.get("val"), "run_folder": run_dir.name,
            "use": f"weights: {run_dir.with_suffix('.pt').name}  (with weights_sha256: {digest})"}




def describe_record(checkpoint: Path) -> str:
    """What `studylib pretrain` prints: the checkpoint, what it learned from, and the config lines that use it."""
    record = read_json_dict_or_empty(record_path(checkpoint))
    source = record.get("source", {})
    val = (record.get("source_validation") or {}).get("balanced_accuracy")
    learned = f", source validation balanced accuracy {val:.3f}" if isinstance(val, float) else ""
    images = sum((source.get("counts") or {}).get("train", {}).values())
    backbone, digest = (record.get("recipe") or {}).get("backbone", "?"), record.get("checkpoint_sha256")
    return (f"checkpoint: {checkpoint}\n  pretrained on {source.get('dataset', '?')} ({images} training images, "
            f"{len(source.get('classes') or [])} classes{learned}); record: {record_path(checkpoint)}\n"
            f"  use: -s backbone={backbone} -s weights={checkpoint} -s weights_sha256={digest}")


def pretraining_summary(weights: str) -> dict:
    """What a run's env.json says of its checkpoint's pretraining (source data, fingerprint, recipe), from the
    record beside it; {} when there is none (a downloaded or foreign checkpoint)."""
    record = read_json_dict_or_empty(record_path(Path(weights))) if weights.lower() != "none" else {}
    if not record:
        return {}
    source = {k: v for k, v in record.get("source", {}).items() if k != "train_file_sha256"}
    return {"source": source, "recipe": record.get("recipe", {}), "record": str(record_path(Path(weights)))}
