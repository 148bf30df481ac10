"""Pretrain a backbone on the synthetic source task: the offline stand-in for ImageNet weights."""
from __future__ import annotations

from pathlib import Path

from ..core import runfiles
from ..core.config import ConfigError, RunConfig
from ..core.fileio import atomic_write, read_json_dict_or_empty, sha256_file
from .runner import check_config, run

DEFAULT_CHECKPOINT = Path("outputs/pretrained/tinycnn-synthetic-source.pt")


def pretrain_config(backbone: str = "tinycnn", image_size: int = 32, size: int = 4000, epochs: int = 8,
                    seed: int = 0, quiet: bool = False) -> RunConfig:
    """Full fine-tuning from random init on the 16-class source task, protocol otherwise default.

    Args:
        backbone: registered backbone to pretrain.
        image_size: training crop side, in pixels.
        size: images generated for the synthetic source task (synthetic_size).
        epochs: training epochs (also the patience, so early stopping never cuts the recipe short).
        seed: run seed (split, head initialisation, batch order).
        quiet: no progress bars or messages.
    """
    return RunConfig(dataset="synthetic_source", backbone=backbone, weights="none", strategy="ft",
                     image_size=image_size, synthetic_size=size, max_epochs=epochs, patience=epochs,
                     batch_size=64, seed=seed, save_checkpoint=True, quiet=quiet)


def pretrain(out: str | Path = DEFAULT_CHECKPOINT, cfg: RunConfig | None = None, reuse: bool = True) -> Path:
    """Write a source-task checkpoint to `out` (loadable as weights=out); reuse an existing one made by the
    same recipe (its run folder beside it, OUT.run, records it); refuse one of another recipe, or a file
    that is not a checkpoint, unless `reuse` is off (then it is trained again)."""
    out = Path(out)
    cfg = cfg or pretrain_config()
    if reuse and out.exists():
        check_reusable(out, cfg)
        return out
    result = run(cfg, out.with_suffix(".run"), overwrite=True)
    atomic_write(out, (result.path / runfiles.CHECKPOINT).read_bytes())
    atomic_write(out.with_suffix(".sha256"), f"{sha256_file(out)}  {out.name}\n")
    return out


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
               if saved.get(k) != getattr(wanted, k)]
    if differs:
        raise ConfigError(f"{out} was pretrained with another recipe: {', '.join(differs)}; {fix}")


RECIPE = ("dataset", "backbone", "image_size", "synthetic_size", "max_epochs", "batch_size", "seed", "strategy", "lr")
