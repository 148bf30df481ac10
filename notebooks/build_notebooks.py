"""Regenerate the committed notebooks (without outputs) from their cell sources below.

    python notebooks/build_notebooks.py

The experiment notebook's parameters cell is written from RunConfig, so it always lists
every config field with its default and help text (papermill --help-notebook shows them).
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from studylib.config import RunConfig, field_help

HERE = Path(__file__).parent
KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}


def parameters_cell(extra: list[str]) -> nbformat.NotebookNode:
    defaults = RunConfig().to_dict()
    lines = ["# Parameters (papermill replaces this cell's values; python -m studylib config explains each)"]
    for name, text in field_help().items():
        kind = type(defaults[name]).__name__
        lines.append(f"{name}: {kind} = {defaults[name]!r}  # {text}")
    lines += extra
    cell = new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["parameters"]
    return cell


def write(name: str, cells: list) -> None:
    notebook = new_notebook(cells=cells, metadata=KERNEL)
    nbformat.write(notebook, HERE / name)


def experiment() -> None:
    write("experiment.ipynb", [
        new_markdown_cell(
            "# One experiment: a backbone, a strategy, a dataset\n\n"
            "Run it top to bottom in JupyterLab, or in batch: `python -m studylib grid params/smoke.yaml` "
            "executes this notebook once per grid cell with papermill and keeps the executed copy in the "
            "run folder. Change any parameter below; all logic lives in the `studylib` package."),
        parameters_cell([
            'out_dir: str = "outputs/notebook-run"  # run folder (config.json, metrics.json, history.csv, ...)',
            "overwrite: bool = True  # replace a finished run already in out_dir",
        ]),
        new_code_cell(
            "from studylib import RunConfig, run\n"
            "from studylib.config import FIELDS\n\n"
            "cfg = RunConfig.from_dict({name: globals()[name] for name in FIELDS}, source='notebook parameters')\n"
            "result = run(cfg, out_dir, overwrite=overwrite)\n"
            "result"),
        new_markdown_cell("## Learning curves\nValidation picks the epoch (dotted line); test is scored once, "
                          "with those weights. Grey lines mark stage changes (LP-FT, gradual unfreezing)."),
        new_code_cell("from studylib import plots\n\nplots.learning_curves(result.path);"),
        new_markdown_cell("## What trained, and how fast\nLearning rate per block and epoch (blank: frozen). "
                          "Auto-RGN gives each tensor its own rate; gradual unfreezing fills the map stage by stage."),
        new_code_cell("plots.block_lr_heatmap(result.path, 'lr');\nplots.block_lr_heatmap(result.path, 'rel_dist_init');"),
        new_markdown_cell("## Test confusion matrix"),
        new_code_cell("plots.confusion_matrix(result.path);"),
        new_code_cell("import pandas as pd\n\npd.DataFrame(result.metrics)[['val', 'test']].dropna().round(4)"),
    ])


if __name__ == "__main__":
    experiment()
