"""Static figures of one run; every function returns the figure and writes a PNG next to the run.

Notebooks executed headless by papermill lose widget state, so every view is a plain
function that also writes its figure to disk.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # headless, matplotlib falls back to Agg by itself
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ..core import runfiles
from ..core.config import metric_name
from ..core.constants import DEFAULT_METRIC
from ..core.fileio import read_json

DPI = 110  # every PNG studylib writes or shows in a widget: the static copies and the widgets look the same
MIN_FONT_KEY = "studylib-min-font-pt"  # PNG text chunk: the smallest font in the figure, in points at DPI


def save(fig: plt.Figure, path: Path | None) -> plt.Figure:
    """Write `fig` as PNG to `path` (atomically; nothing when path is None) and return it."""
    if path is not None:
        write_png(png_bytes(fig), path)
    return fig


def show(fig: plt.Figure | None, path: str | Path | None = None) -> None:
    """Show `fig` in a notebook as the PNG studylib writes (DPI, its smallest font recorded), at its own size: a
    figure wider than the notebook scrolls sideways inside its output instead of shrinking its text below legibility;
    then close it (pyplot would show it a second time when the cell ends). `path`: also write it there."""
    from IPython.display import Image, display

    if fig is None:
        return
    data = png_bytes(fig)
    if path is not None:
        write_png(data, path)
    display(Image(data=data, unconfined=True))
    plt.close(fig)


def display_widget(widget, what: str) -> None:
    """Display an ipywidgets widget whose plain-text stand-in (what an HTML export or a viewer without the widget
    state shows) says what it is, instead of its repr ("VBox(children=...")."""
    from IPython.display import display

    bundle = widget._repr_mimebundle_()
    bundle["text/plain"] = f"[interactive: {what}]"
    display(bundle, raw=True)


def write_png(data: bytes, path: str | Path) -> None:
    """PNG bytes to `path`, atomically (a reader never sees half a figure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    tmp.write_bytes(data)
    tmp.replace(path)


def png_bytes(fig: plt.Figure) -> bytes:
    """The figure as PNG at DPI, carrying its smallest font size (MIN_FONT_KEY), so a page that shows it can tell
    how large its smallest text appears (points x DPI / 96 x the displayed share of its width)."""
    import io
    import struct
    import zlib

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, bbox_inches="tight", format="png")
    data = buffer.getvalue()
    chunk = MIN_FONT_KEY.encode() + b"\0" + f"{min_font(fig):.2f}".encode()
    text = struct.pack(">I", len(chunk)) + b"tEXt" + chunk + struct.pack(">I", zlib.crc32(b"tEXt" + chunk))
    return data[:33] + text + data[33:]  # after the signature (8 bytes) and the IHDR chunk (25)


def min_font(fig: plt.Figure) -> float:
    """The smallest font size (points) of any visible, non-empty text the last draw placed in the figure."""
    from matplotlib.text import Text

    texts = sorted((t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
                    and t.get_figure() is not None), key=lambda t: t.get_fontsize())
    # from the smallest up, the first one drawn on the figure (its extent is costly: ask only as far as needed)
    return next((float(t.get_fontsize()) for t in texts if _inside(t, fig)), float("nan"))


def _inside(text, fig: plt.Figure) -> bool:
    """Tick labels outside an axis's view limits are kept by matplotlib but never drawn."""
    try:
        box = text.get_window_extent()
    except RuntimeError:  # no renderer: the figure was never drawn
        return True
    return box.width > 0 and box.height > 0 and fig.bbox.overlaps(box) if hasattr(fig.bbox, "overlaps") else True


def epoch_step(epochs: int) -> int:
    """Label every epoch up to 10, else every second or more: tick labels never run together."""
    return max(1, -(-epochs // 10))


def _figure_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "figures" / f"{name}.png"


def learning_curves(run_dir: str | Path, metric: str = DEFAULT_METRIC) -> plt.Figure:
    """Training and validation loss, and the validation metric, per epoch; stage changes marked."""
    run_dir = Path(run_dir)
    history = pd.read_csv(run_dir / runfiles.HISTORY)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")  # the suptitle gets its own room
    left.plot(history.epoch, history.train_loss, label="train")
    left.plot(history.epoch, history.val_loss, label="validation")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(history.epoch, history[f"val_{metric}"], marker="o", color="C2")
    best = history.loc[history.best].epoch.max() if history.best.any() else None
    if best is not None:
        right.axvline(best, color="grey", ls=":", label=f"best epoch {best}")
        right.legend()
    right.set(xlabel="epoch", ylabel=metric_name(metric), title=f"validation {metric_name(metric)}")
    for axis in (left, right):
        _mark_stages(axis, history)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    fig.suptitle(_title(run_dir))
    return save(fig, _figure_path(run_dir, "learning_curves"))


def _mark_stages(axis: plt.Axes, history: pd.DataFrame) -> None:
    changes = history.index[history.stage != history.stage.shift()][1:]
    for index in changes:
        axis.axvline(history.epoch[index] - 0.5, color="k", alpha=0.15)


def block_lr_heatmap(run_dir: str | Path, value: str = "lr", path: Path | None = None) -> plt.Figure:
    """Per-block learning rate (or RGN, grad norm, distance) over epochs; frozen blocks blank. Saved to `path`,
    by default the run's figures/blocks_<value>.png."""
    run_dir = Path(run_dir)
    layers = pd.read_csv(run_dir / runfiles.LAYERS)
    return save(layer_heatmap(layers, value, _title(run_dir)), path or _figure_path(run_dir, f"blocks_{value}"))


def tensor_heatmap(run_dir: str | Path, value: str = "lr") -> plt.Figure:
    """Per-tensor `value` over epochs (needs a run with log_tensors=true, which writes tensors.csv)."""
    run_dir = Path(run_dir)
    tensors = pd.read_csv(run_dir / runfiles.TENSORS)
    return save(layer_heatmap(tensors, value, _title(run_dir), row="tensor"), _figure_path(run_dir, f"tensors_{value}"))


def layer_heatmap(layers: pd.DataFrame, value: str = "lr", title: str = "", row: str = "block") -> plt.Figure:
    """Per-`row` `value` over epochs as a heatmap, frozen cells blank; returns the figure unsaved.

    Args:
        layers: layers.csv (or tensors.csv) rows: `row`, epoch, trainable and `value` columns.
        value: column to show (lr, rgn, grad_norm, ...); lr, lr_max, rgn and grad_norm on a log10 scale.
        title: first line of the title (the run).
        row: column naming the rows: "block" (layers.csv) or "tensor" (tensors.csv).
    """
    blocks = list(dict.fromkeys(layers[row]))
    table = layers.pivot(index=row, columns="epoch", values=value).reindex(blocks)
    trainable = layers.pivot(index=row, columns="epoch", values="trainable").reindex(blocks).astype(bool)
    data = table.where(trainable)
    positive = data[data > 0]
    log = value in ("lr", "lr_max", "rgn", "grad_norm") and positive.notna().any().any()
    shown = np.log10(positive) if log else data
    fig, axis = plt.subplots(figsize=(max(5, 0.45 * table.shape[1] + 2), min(0.4 * len(blocks) + 1.5, 40)))
    image = axis.imshow(shown.to_numpy(dtype=float), aspect="auto", cmap="viridis", interpolation="nearest")
    axis.set(yticks=range(len(blocks)), yticklabels=blocks, xlabel="epoch",
             title=f"{title}\n{value} per {row} ({'log10, ' if log else ''}blank = frozen)")
    every = epoch_step(table.shape[1])
    axis.set_xticks(range(0, table.shape[1], every), table.columns[::every])
    fig.colorbar(image, ax=axis, label=f"log10 {value}" if log else value)
    return fig


def confusion_matrix(run_dir: str | Path, normalise: bool = True) -> plt.Figure:
    """Test confusion matrix (rows: true class), from metrics.json."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / runfiles.METRICS)
    matrix = np.array(metrics["test_confusion"], dtype=float)
    shown = matrix / np.maximum(matrix.sum(1, keepdims=True), 1) if normalise else matrix
    classes = metrics["classes"]
    fig, axis = plt.subplots(figsize=(1 + 0.6 * len(classes), 1 + 0.5 * len(classes)))
    axis.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    for (i, j), v in np.ndenumerate(matrix):
        axis.text(j, i, f"{shown[i, j]:.2f}" if normalise else int(v), ha="center", va="center",
                  color="white" if shown[i, j] > 0.6 * shown.max() else "black", fontsize=8)
    axis.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true",
             title=f"{_title(run_dir)}\ntest confusion matrix" + (" (row-normalised)" if normalise else ""))
    axis.set_xticklabels(classes, rotation=45, ha="right")
    axis.set_yticklabels(classes)
    return save(fig, _figure_path(run_dir, "confusion_matrix"))


def _title(run_dir: Path) -> str:
    try:
        cfg = read_json(run_dir / runfiles.CONFIG)
    except FileNotFoundError:
        return run_dir.name
    from ..training.strategies import strategy_label

    return (f"{strategy_label(cfg['strategy'])} | {cfg['backbone']} | {cfg['dataset']} | lr {cfg['lr']:g} | "
            f"seed {cfg['seed']}")
