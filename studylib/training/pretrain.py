"""Pretrain a backbone on the synthetic source task: the offline stand-in for ImageNet weights."""
from __future__ import annotations

from pathlib import Path

from ..core.config import RunConfig
from ..core.fileio import atomic_write, sha256_file
from .runner import run

DEFAULT_CHECKPOINT = Path("outputs/pretrained/tinycnn-synthetic-source.pt")


def pretrain_config(backbone: str = "tinycnn", image_size: int = 32, size: int = 4000, epochs: int = 8,
                    seed: int = 0, quiet: bool = False) -> RunConfig:
    """Full fine-tuning from random init on the 16-class source task, protocol otherwise default."""
    return RunConfig(dataset="synthetic_source", backbone=backbone, weights="none", strategy="ft",
                     image_size=image_size, synthetic_size=size, max_epochs=epochs, patience=epochs,
                     batch_size=64, seed=seed, save_checkpoint=True, quiet=quiet)


def pretrain(out: str | Path = DEFAULT_CHECKPOINT, cfg: RunConfig | None = None, reuse: bool = True) -> Path:
    """Write a source-task checkpoint to `out` (loadable as weights=out); reuse an existing one."""
    out = Path(out)
    if reuse and out.is_file():
        return out
    cfg = cfg or pretrain_config()
    result = run(cfg, out.with_suffix(".run"), overwrite=True)
    atomic_write(out, (result.path / "best.pt").read_bytes())
    atomic_write(out.with_suffix(".sha256"), f"{sha256_file(out)}  {out.name}\n")
    return out
