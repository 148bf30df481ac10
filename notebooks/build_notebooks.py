"""Regenerate the committed notebooks (without outputs) from their cell sources below.

    python notebooks/build_notebooks.py

The experiment notebook's parameters cell is written from RunConfig, so it always lists
every config field with its default and help text (papermill --help-notebook shows them).
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from studylib.core.config import RunConfig, field_help
from studylib.views.report import HOW_TO_READ

HOW_TO_READ_CD = HOW_TO_READ["cd"]

HERE = Path(__file__).resolve().parent.parent / "studylib" / "templates" / "notebooks"  # notebooks/*.ipynb link here
KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}


# Opened by hand, the experiment notebook shows transfer in about a minute on a laptop CPU: the synthetic
# source checkpoint (written by its next cell when missing), 32 px, 8 epochs. Grids pass every field.
TEACHING_DEFAULTS = {"strategy": "lp_ft", "weights": "../outputs/pretrained/tinycnn-synthetic-source.pt",
                     "image_size": 32, "batch_size": 32, "max_epochs": 8, "patience": 3, "lp_epochs": 3,
                     "gu_epochs_per_stage": 1, "synthetic_size": 640}
MOST_CHANGED = ("dataset", "backbone", "strategy", "weights", "seed")  # first, above the grouped rest


def field_sections() -> dict[str, str]:
    """Field name -> the `# --- section ---` comment above it in the RunConfig source."""
    sections, current = {}, ""
    for line in inspect.getsource(RunConfig).splitlines():
        header = re.match(r"\s+# --- (.*) ---", line)
        field = re.match(r"\s+(\w+): \w+ = ", line)
        if header:
            current = header.group(1)
        elif field:
            sections[field.group(1)] = current
    return sections


def parameters_cell(extra: list[str], overrides: dict | None = None) -> nbformat.NotebookNode:
    defaults = {**RunConfig().to_dict(), **(overrides or {})}
    helps, sections = field_help(), field_sections()

    def line(name: str) -> str:
        return f"{name}: {type(defaults[name]).__name__} = {defaults[name]!r}  # {helps[name]}"

    lines = ["# Parameters (papermill replaces this cell's values; python -m studylib config explains each)",
             "# --- the ones people change most ---"] + [line(n) for n in MOST_CHANGED]
    section = None
    for name in helps:
        if name in MOST_CHANGED:
            continue
        if sections[name] != section:
            section = sections[name]
            lines.append(f"# --- {section} ---")
        lines.append(line(name))
    lines += extra
    cell = new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["parameters"]
    return cell


def write(name: str, cells: list) -> None:
    for index, cell in enumerate(cells):  # stable ids: rebuilding changes only what changed
        cell["id"] = f"{Path(name).stem}-{index:02d}"
    notebook = new_notebook(cells=cells, metadata=KERNEL)
    nbformat.write(notebook, HERE / name)


def experiment() -> None:
    write("experiment.ipynb", [
        new_markdown_cell(
            "# One experiment: a backbone, a strategy, a dataset\n\n"
            "Run it top to bottom in JupyterLab: by default it fine-tunes a tiny CNN, pretrained on the synthetic "
            "source task (written on first use), on the synthetic target task with LP-FT, in about a minute on a "
            "laptop CPU. Change the first five parameters to try another dataset, backbone, strategy, weights "
            "or seed. In batch, `python -m studylib grid params/smoke.yaml` "
            "executes this notebook once per grid cell with papermill and keeps the executed copy in the "
            "run folder. Change any parameter below; all logic lives in the `studylib` package."),
        parameters_cell([
            "# --- this notebook ---",
            'out_dir: str = "../outputs/notebook-run"  # run folder (config.json, metrics.json, history.csv, ...)',
            "overwrite: bool = True  # replace a finished run already in out_dir",
            "resume: bool = False  # keep a finished run of the same config in out_dir instead of training again",
        ], TEACHING_DEFAULTS),
        new_code_cell(
            "from pathlib import Path\n\n"
            "if weights.endswith('tinycnn-synthetic-source.pt') and not Path(weights).is_file():\n"
            "    from studylib.training.pretrain import pretrain, pretrain_config\n\n"
            "    pretrain(weights, pretrain_config(quiet=True))  # the offline stand-in for ImageNet, once (about 40 s)"),
        new_code_cell(
            "from studylib import RunConfig, run\n"
            "from studylib.core.config import FIELDS\n\n"
            "cfg = RunConfig.from_dict({name: globals()[name] for name in FIELDS}, source='notebook parameters')\n"
            "result = run(cfg, out_dir, overwrite=overwrite, resume=resume)\n"
            "result"),
        new_markdown_cell("## Learning curves\nValidation picks the epoch (dotted line); test is scored once, "
                          "with those weights. Grey lines mark stage changes (LP-FT, gradual unfreezing)."),
        new_code_cell("from studylib.views import runfigures\n\nrunfigures.learning_curves(result.path);"),
        new_markdown_cell("## What trained, and how fast\nLearning rate per block and epoch (blank: frozen). "
                          "Auto-RGN gives each tensor its own rate; gradual unfreezing fills the map stage by stage."),
        new_code_cell("runfigures.block_lr_heatmap(result.path, 'lr');\nrunfigures.block_lr_heatmap(result.path, 'rel_dist_init');"),
        new_markdown_cell("## Test confusion matrix"),
        new_code_cell("runfigures.confusion_matrix(result.path);"),
        new_markdown_cell("## Calibration on test\nWhen the network says 80%, is it right 80% of the time? Points on "
                          "the diagonal are calibrated; below it, over-confident. ECE is the size-weighted gap."),
        new_code_cell("from studylib.views import measurefigures\n\nmeasurefigures.reliability_diagram(result.path);"),
        new_markdown_cell("## How much each block's features changed\nLinear CKA between each block's features before "
                          "and after fine-tuning, on a fixed subset of validation images (1 = unchanged), beside how "
                          "far the block's weights moved."),
        new_code_cell("import pandas as pd\n\n"
                      "changes = result.path / 'representations.csv'\n"
                      "pd.read_csv(changes).query('selected').round(4) if changes.is_file() else 'repr_images=0: not measured'"),
        new_markdown_cell("## Validation (selected epoch) and test metrics"),
        new_code_cell("import pandas as pd\n\n"
                      "pd.DataFrame({split: result.metrics[split] for split in ('val', 'test')}).dropna().round(4)"),
    ])


def simple_parameters(lines: list[str]) -> nbformat.NotebookNode:
    cell = new_code_cell("\n".join(["# Parameters (papermill replaces these)"] + lines))
    cell.metadata["tags"] = ["parameters"]
    return cell


def analysis() -> None:
    write("analysis.ipynb", [
        new_markdown_cell(
            "# Which strategy gains over full fine-tuning, where, and why\n\n"
            "Point `results_dir` at a grid's output folder (`python -m studylib grid ... --out DIR`). Each strategy "
            "is compared at its own best **validation** setting per dataset x backbone x seed (test scores never "
            "choose), and only with runs of the same protocol group (same data, budget and recipe). Gains over FT "
            "are paired per seed, with 95% intervals that carry both seed-to-seed and test-image variance, and "
            "verdicts corrected for the number of comparisons. Every figure below is also written to `results_dir/figures/`, "
            "so a headless run keeps them."),
        simple_parameters([
            'results_dir: str = "../outputs/demo"  # a grid output folder holding runs/ (relative to notebooks/)',
            'metric: str = "balanced_accuracy"  # metric for selection, tables and gains',
            "n_boot: int = 300  # test-image resamples per gain (they estimate the test-level variance)",
            'correction: str = "holm"  # multiplicity correction over all gains: holm or fdr_bh',
        ]),
        new_code_cell("from IPython.display import Image, Markdown, display\n\n"
                      "from studylib.study import analysis\nfrom studylib.study.analysis import Study\n"
                      "from studylib.views.report import reading, study_figures\n\n"
                      "study = Study(results_dir, metric, n_boot, correction=correction)\n"
                      "for note in study.notes:\n    print('NOTE:', note)\n"
                      "print(f'{len(study.done)} finished runs in {results_dir}')\n"
                      "if not study.done.empty and study.done.protocol.nunique() > 1:\n"
                      "    print('protocol groups, compared separately:', study.protocols)"),
        new_markdown_cell("## Test accuracy, mean and sd over seeds"),
        new_code_cell("study.accuracy.round(3) if not study.best.empty else 'nothing finished yet'"),
        new_markdown_cell("## Gain over FT\nA case with no FT run shows *no baseline*, never a made-up gain."),
        new_code_cell("gains = study.gains if not study.best.empty else None\n"
                      "if gains is not None:\n    display(Markdown('**How to read it:** ' + reading('gains', study)))\n"
                      "gains.round(3) if gains is not None else 'no gains without finished runs'"),
        new_code_cell("if gains is not None and len(study.bn_split):\n"
                      "    display(Markdown('### BatchNorm or strategy?\\n' + reading('bn', study)))\n"
                      "    display(study.bn_split.round(3))"),
        new_markdown_cell("## Win / tie / loss, ranks and tuning budgets, per protocol group"),
        new_code_cell("if gains is not None and not gains.empty:\n"
                      "    display(Markdown('**How to read it:** ' + reading('wtl', study)))\n"
                      "    for sentence in analysis.win_tie_loss(gains).sentence:\n        print(sentence)\n"
                      "    for protocol, test in study.rank_tests.items():\n"
                      "        print(f'{protocol}: Friedman p = {test.friedman_p:.3g} over {test.blocks}')\n"
                      "        display(test.ranks.round(2).rename('mean rank').to_frame())\n"
                      "    display(Markdown('**Tuning budget.** ' + reading('budget', study)))\n"
                      "    display(study.budgets)"),
        new_markdown_cell("## Beyond accuracy: feature change, calibration, few labels"),
        new_code_cell("from studylib.study import measures\n\n"
                      "if not study.best.empty:\n"
                      "    relation = measures.study_relation(study)\n"
                      "    if len(relation):\n"
                      "        display(Markdown('### Feature change and the gain over FT\\n' + reading('relation', study)))\n"
                      "        display(relation.round(3))\n"
                      "    calibration = measures.study_calibration_gains(study)\n"
                      "    if len(calibration):\n"
                      "        display(Markdown('### Calibration\\n' + reading('calibration', study)))\n"
                      "        display(measures.calibration_table(study.best).round(3))\n"
                      "        display(calibration[['metric', 'protocol', 'dataset', 'backbone', 'strategy', 'seeds', 'gain',\n"
                      "                             'low', 'high', 'verdict']].round(3))\n"
                      "    fraction = measures.study_efficiency(study)\n"
                      "    if len(fraction):\n"
                      "        display(Markdown('### Few labels\\n' + reading('fraction', study)))\n"
                      "        for sentence in measures.ranking_sentences(fraction, study.metric, study.gains):\n"
                      "            print(sentence)"),
        new_markdown_cell("## Figures (static PNGs, also in `figures/`)\n"
                          "The critical-difference diagram: " + HOW_TO_READ_CD),
        new_code_cell("for title, path in study_figures(study).items():\n"
                      "    display(Markdown(f'### {title}'))\n    display(Image(filename=str(path)))"),
        new_markdown_cell("## Explore\nPick a view, a metric and a run; study views (gain heatmap, critical-difference "
                          "diagram, accuracy, cost) ignore the run pickers. Each view is also saved as "
                          "`figures/explorer-<view>.png`."),
        new_code_cell("from studylib.views.explorer import Explorer\n\nexplorer = Explorer(results_dir, n_boot=n_boot, correction=correction)\n"
                      "explorer"),
    ])


def teaching() -> None:
    write("teaching.ipynb", [
        new_markdown_cell(
            "# Fine-tuning strategies, visually\n\n"
            "A network pretrained on one task (ImageNet, or here a synthetic *source* task) is adapted to a new "
            "one (a medical dataset, or a synthetic *target* task). The strategies differ in **which blocks "
            "train, when, and how fast**. A *block* is a group of layers: for ResNet-50 the stem, four stages "
            "and the classifier head. Everything here runs on a laptop CPU in minutes."),
        simple_parameters([
            'backbone: str = "tinycnn"  # any registered backbone; tinycnn is fast on a CPU',
            "plan_epochs: int = 8  # epochs shown in the strategy maps",
            "mini_size: int = 800  # synthetic target images for the mini comparison",
            "mini_epochs: int = 10  # epochs per run in the mini comparison",
            "pretrain_size: int = 4000  # synthetic source images for pretraining",
            'out_dir: str = "../outputs/teaching"  # where the mini comparison writes its runs',
        ]),
        new_markdown_cell("## 1. The block map\nEvery strategy talks about these blocks; so does every log."),
        new_code_cell("from studylib.models.backbones import create_backbone\n\nbb = create_backbone(backbone, num_classes=4)\n"
                      "print(bb)\n{block: len(names) for block, names in bb.blocks.items()}  # parameter tensors per block"),
        new_markdown_cell(
            "## 2. What each strategy trains, epoch by epoch\n"
            "- **FT** trains everything at one rate. **LP** trains only the new head: the pretrained features stay "
            "as they are (BatchNorm statistics too).\n"
            "- **Gradual unfreezing** (G-LF) starts with the head and unfreezes one block per stage towards the input.\n"
            "- **LP-FT** first probes linearly, then fine-tunes everything at a much smaller rate, starting from a "
            "head that already fits, so the features are not wrecked by a random head's large gradients.\n"
            "- **Auto-RGN** gives each tensor a rate proportional to its relative gradient norm: here the head "
            "gets the base rate and early blocks far less.\n"
            "- **Discriminative LR** lowers the rate block by block from the head down."),
        new_code_cell("from studylib.views.teaching import plan_figure\n\n"
                      "plan_figure(['ft', 'lp', 'gu_last_first', 'gu_first_last', 'lp_ft', 'auto_rgn', "
                      "'discriminative_lr'], backbone, plan_epochs, path=f'{out_dir}/figures/strategy_maps.png');"),
        new_markdown_cell("## 3. A mini comparison\nPretrain a tiny CNN on the synthetic source task (once), then "
                          "fine-tune it on the target task with five strategies. Linear probing on pretrained "
                          "features is far above chance (0.25), and the strategies differ."),
        new_code_cell("from studylib import RunConfig, run\nfrom studylib.training.pretrain import pretrain, pretrain_config\n\n"
                      "checkpoint = pretrain(f'{out_dir}/tinycnn-source.pt', pretrain_config(size=pretrain_size, quiet=True))\n"
                      "from studylib.models.backbones import block_names\n\n"
                      "stages = len(block_names('tinycnn'))  # gradual unfreezing must reach its last stage\n"
                      "results = {}\nfor strategy in ['lp', 'ft', 'lp_ft', 'gu_last_first', 'auto_rgn']:\n"
                      "    cfg = RunConfig(strategy=strategy, weights=str(checkpoint), image_size=32, synthetic_size=mini_size,\n"
                      "                    max_epochs=mini_epochs, patience=4, lp_epochs=max(1, mini_epochs // 3), batch_size=32,\n"
                      "                    gu_epochs_per_stage=max(1, (mini_epochs - 1) // (stages - 1)), quiet=True)\n"
                      "    results[strategy] = run(cfg, f'{out_dir}/{strategy}', overwrite=True)\n"
                      "    print(results[strategy])"),
        new_code_cell("import pandas as pd\n\n"
                      "table = pd.DataFrame({s: r.metrics['test'] for s, r in results.items()}).T[['balanced_accuracy', 'macro_f1', 'auroc']]\n"
                      "table.assign(gain_over_ft=table.balanced_accuracy - table.loc['ft', 'balanced_accuracy']).round(3)"),
        new_markdown_cell("## 4. Look inside one run\nHow far did each block move from its pretrained weights?"),
        new_code_cell("from studylib.views import runfigures\n\nrunfigures.block_lr_heatmap(results['auto_rgn'].path, 'lr');\n"
                      "runfigures.block_lr_heatmap(results['gu_last_first'].path, 'rel_dist_init');"),
        new_markdown_cell(
            "## 5. Why strategies differ: what trained, what moved, what changed\n"
            "Every run also compares each block's features on a fixed set of validation images before and after "
            "fine-tuning, with linear CKA (Kornblith et al. 2019): 1 means the block describes the images the same "
            "way as the pretrained network (up to rotation and scale), lower means its features changed.\n\n"
            "**The prediction.** Kumar et al. (ICLR 2022, *Fine-tuning can distort pretrained features and "
            "underperform out-of-distribution*) argue that FT starts with a random head whose large early gradients "
            "flow into the backbone and distort the pretrained features; LP-FT fits the head first (linear probing), "
            "so the second stage starts near a good solution and changes the features less. LP never changes "
            "them. (Their argument is about the features as a whole; which blocks move most is what the plot "
            "lets you look at.) A block's output depends on every block below it, so CKA is cumulative; the "
            "weight distance is per block. Pick strategies below: the top row is the plan as it ran (green: trained), the bottom row how "
            "far each block's weights moved and how much its features changed."),
        new_code_cell("from studylib.views.teaching import InsideExplorer, inside_figure, lpft_check\n\n"
                      "runs = {s: r.path for s, r in results.items()}\n"
                      "inside_figure({s: runs[s] for s in ('lp', 'ft', 'lp_ft') if s in runs}, "
                      "path=f'{out_dir}/figures/inside.png')  # the static copy, for a projected or HTML page\n"
                      "print(lpft_check(runs))\nInsideExplorer(runs)"),
        new_markdown_cell(
            "**Try it.** (1) Predict before you look: which backbone block of G-LF moves most, and why? (G-LF "
            "unfreezes from the head down, so the top backbone block trains longest.) (2) Compare Auto-RGN with FT: where were its per-block rates smallest "
            "(section 4), and did those blocks' features change less than FT's? (3) Does the "
            "strategy whose features moved most also have the best test score in section 3? On a target task close "
            "to the source, keeping the features (high CKA) is usually enough; on a distant one, moving them pays."),
    ])


if __name__ == "__main__":
    experiment()
    analysis()
    teaching()
