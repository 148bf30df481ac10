"""Regenerate the committed notebooks (without outputs) from their cell sources below.

    python notebooks/build_notebooks.py

The experiment notebook's parameters cell is written from RunConfig, so it always lists
every config field with its default and help text (papermill --help-notebook shows them).
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from studylib.core.config import documentation
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


def parameters_cell(extra: list[str], overrides: dict | None = None) -> nbformat.NotebookNode:
    """Every field and strategy knob with its default and help (core.config.documentation), the most
    changed first; `overrides` are this notebook's teaching values, marked as such."""
    docs = {doc.name: doc for doc in documentation()}
    values = {name: (overrides or {}).get(name, doc.default) for name, doc in docs.items()}

    def line(name: str) -> str:
        library = docs[name].default
        mark = f"[NOTEBOOK: the library's default is {library!r}] " if values[name] != library else ""
        return f"{name}: {type(values[name]).__name__} = {values[name]!r}  # {mark}{docs[name].help}"

    lines = ["# Parameters (papermill replaces this cell's values; python -m studylib config explains each)"]
    if overrides:
        lines.append("# Lines marked [NOTEBOOK] are this notebook's quick teaching values; a grid passes every field, "
                     "and a field a grid leaves out gets the library's default")
    lines += ["# --- the ones people change most ---"] + [line(n) for n in MOST_CHANGED]
    section = None
    for name, doc in docs.items():
        if name in MOST_CHANGED:
            continue
        if doc.section != section:
            section = doc.section
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
            "imports: list = []  # modules or .py files registering your own strategies, backbones, datasets "
            "(a grid's imports:)",
        ], TEACHING_DEFAULTS),
        new_code_cell(
            "from pathlib import Path\n\n"
            "if weights.endswith('tinycnn-synthetic-source.pt') and not Path(weights).is_file():\n"
            "    from studylib.training.pretrain import pretrain, pretrain_config\n\n"
            "    pretrain(weights, pretrain_config(quiet=True))  # the offline stand-in for ImageNet, "
            "once (about 40 s)"),
        new_code_cell(
            "from studylib import RunConfig, run\n"
            "from studylib.core.config import config_keys\n"
            "from studylib.study import plugins\n\n"
            "plugins.import_all(imports)  # before the config: they declare strategies and their knobs\n"
            "# every field and strategy knob the parameters cell (or papermill) set\n"
            "cfg = RunConfig.from_dict({k: globals()[k] for k in config_keys() if k in globals()}, "
            "source='notebook parameters')\n"
            "result = run(cfg, out_dir, overwrite=overwrite, resume=resume)\n"
            "result"),
        new_markdown_cell("## Learning curves\nValidation picks the epoch (dotted line); test is scored once, "
                          "with those weights. Grey lines mark stage changes (LP-FT, gradual unfreezing)."),
        new_code_cell("from studylib.views import runfigures\n\nrunfigures.learning_curves(result.path);"),
        new_markdown_cell("## What trained, and how fast\nLearning rate per block and epoch (blank: frozen). "
                          "Auto-RGN gives each tensor its own rate; gradual unfreezing fills the map stage by stage."),
        new_code_cell("runfigures.block_lr_heatmap(result.path, 'lr');\n"
                      "runfigures.block_lr_heatmap(result.path, 'rel_dist_init');"),
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
                      "pd.read_csv(changes).query('selected').round(4) if changes.is_file() "
                      "else 'repr_images=0: not measured'"),
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
            "verdicts corrected for the number of comparisons. "
            "Every figure below is also written to `results_dir/figures/`, "
            "so a headless run keeps them."),
        simple_parameters([
            'results_dir: str = "../outputs/demo"  # a grid output folder holding runs/ (relative to notebooks/)',
            'metric: str = "balanced_accuracy"  # metric for selection, tables and gains',
            "n_boot: int = 1000  # test-image resamples per gain (they estimate the test-level variance)",
            'correction: str = "holm"  # multiplicity correction over all gains: holm or fdr_bh',
        ]),
        new_code_cell("from IPython.display import Image, Markdown, display\n\n"
                      "from studylib.core.config import metric_name\n"
                      "from studylib.study import analysis\nfrom studylib.study.analysis import Study\n"
                      "from studylib.views.report import GAIN_COLUMNS_SHORT, WHICH_COLUMNS_SHORT, labelled, reading, "
                      "study_figures\n\n"
                      "study = Study(results_dir, metric, n_boot, correction=correction)\n"
                      "for note in study.notes:\n    print('NOTE:', note)\n"
                      "print(f'{len(study.done)} finished runs in {results_dir}')\n"
                      "if not study.done.empty and study.done.protocol.nunique() > 1:\n"
                      "    print('protocol groups, compared separately:', study.protocols)"),
        new_markdown_cell("## Which strategy for my data\n"
                          "The cheapest strategy practically equivalent to the best, per modality x backbone, or how "
                          "many seeds it would take to say."),
        new_code_cell("from studylib.study import decisions\n\n"
                      "which = decisions.study_which(study) if not study.best.empty else None\n"
                      "if which is not None and len(which):\n"
                      "    display(Markdown('**How to read it:** ' + reading('which', study)))\n"
                      "    for _, group in which.groupby(['protocol', 'modality', 'backbone']):\n"
                      "        display(Markdown(decisions.recommendation(group, metric_name(metric), study.rope)))\n"
                      "    display(labelled(which[WHICH_COLUMNS_SHORT], study).round(3))"),
        new_markdown_cell("## Test score in the chosen `metric`, mean and sd over seeds"),
        new_code_cell("labelled(study.accuracy, study).round(3) if not study.best.empty else 'nothing finished yet'"),
        new_markdown_cell("## Gain in the chosen `metric` over FT\n"
                          "A case with no FT run shows *no baseline*, never a made-up gain."),
        new_code_cell("gains = study.gains if not study.best.empty else None\n"
                      "if gains is not None:\n    display(Markdown('**How to read it:** ' + reading('gains', study)))\n"
                      "(labelled(gains[GAIN_COLUMNS_SHORT], study).round(3) if gains is not None\n"
                      " else 'no gains without finished runs')"),
        new_code_cell("if gains is not None and len(study.bn_split):\n"
                      "    display(Markdown('### BatchNorm or strategy?\\n' + reading('bn', study)))\n"
                      "    display(labelled(study.bn_split, study).round(3))"),
        new_markdown_cell("## Win / tie / loss, ranks and tuning budgets, per protocol group"),
        new_code_cell("if gains is not None and not gains.empty:\n"
                      "    display(Markdown('**How to read it:** ' + reading('wtl', study)))\n"
                      "    for sentence in analysis.win_tie_loss(gains).sentence:\n        print(sentence)\n"
                      "    for protocol, test in study.rank_tests.items():\n"
                      "        print(f'{protocol}: Friedman p = {test.friedman_p:.3g} over {test.blocks}')\n"
                      "        display(labelled(test.ranks.round(2).rename('mean rank').reset_index(), study))\n"
                      "    display(Markdown('**Tuning budget.** ' + reading('budget', study)))\n"
                      "    display(labelled(study.budgets, study))"),
        new_markdown_cell("## Beyond accuracy: feature change, calibration, few labels"),
        new_code_cell("from studylib.study import measures\n\n"
                      "if not study.best.empty:\n"
                      "    relation = measures.study_relation(study)\n"
                      "    if len(relation):\n"
                      "        display(Markdown('### Feature change and the gain over FT\\n' "
                      "+ reading('relation', study)))\n"
                      "        display(labelled(relation, study).round(3))\n"
                      "    calibration = measures.study_calibration_gains(study)\n"
                      "    if len(calibration):\n"
                      "        display(Markdown('### Calibration\\n' + reading('calibration', study)))\n"
                      "        display(labelled(measures.calibration_table(study.best), study).round(3))\n"
                      "        display(labelled(calibration[['metric', 'protocol', 'dataset', 'backbone', "
                      "'arm', 'seeds', 'gain',\n"
                      "                                       'low', 'high', 'verdict']], study).round(3))\n"
                      "    fraction = measures.study_efficiency(study)\n"
                      "    if len(fraction):\n"
                      "        display(Markdown('### Few labels\\n' + reading('fraction', study)))\n"
                      "        for sentence in measures.ranking_sentences(fraction, study.metric, study.gains):\n"
                      "            print(sentence)"),
        new_markdown_cell("## Figures (static PNGs, also in `figures/`)\n"
                          "The critical-difference diagram: " + HOW_TO_READ_CD),
        new_code_cell("for title, path in study_figures(study).items():\n"
                      "    display(Markdown(f'### {title}'))\n"
                      "    display(Image(filename=str(path), unconfined=True))  # its own size: legible text"),
        new_markdown_cell("## Explore\nPick a view, a metric and a run; study views (gain heatmap, critical-difference "
                          "diagram, accuracy, cost) ignore the run pickers. Each view is also saved as "
                          "`figures/explorer-<view>.png`."),
        new_code_cell("from studylib.views.explorer import Explorer\n\n"
                      "explorer = Explorer(results_dir, n_boot=n_boot, correction=correction)\n"
                      "explorer"),
    ])


def answer(question: str, reply: str) -> nbformat.NotebookNode:
    """An exercise whose answer stays folded (HTML <details>: JupyterLab and a static HTML page both fold it)."""
    return new_markdown_cell(f"{question}\n\n<details><summary><b>Answer</b> (predict first, then open)</summary>"
                             f"\n\n{reply}\n\n</details>")


STRATEGY_TEXT = (
    "## 2. The eight strategies, in two sentences each\n"
    "Write $w$ for the weights, $w_0$ for their pretrained values, $\\eta$ for the base learning rate and "
    "$\\mathcal{L}$ for the training loss. The new head always starts random.\n\n"
    "- **FT** (full fine-tuning): every block trains at $\\eta$ from the first step. It is the baseline every "
    "gain is measured against; its risk is that the random head's large early gradients flow into the "
    "pretrained blocks.\n"
    "- **LP** (linear probing): only the head trains; the backbone, BatchNorm statistics included, stays as "
    "pretrained. It is cheap (the features can be computed once) and safe, but it cannot adapt features to an "
    "image type the backbone never saw.\n"
    "- **G-LF** (gradual unfreezing, last to first; Howard and Ruder 2018): the head trains alone first, then "
    "every `gu_epochs_per_stage` epochs the next block *down* joins. The top blocks, the most task-specific, "
    "adapt longest; the stem least.\n"
    "- **G-FL** (first to last): the head trains from the start, and the blocks join from the *input* "
    "upwards. It bets the other way: that low-level features (edges, textures) are what differs between "
    "ImageNet and medical images.\n"
    "- **L2-SP** (Li, Grandvalet, Davoine 2018): FT with a penalty that pulls each backbone weight back "
    "towards its start, $\\mathcal{L} + \\frac{\\alpha}{2}\\lVert w - w_0 \\rVert^2 + "
    "\\frac{\\beta}{2}\\lVert w_{head} \\rVert^2$. Every block trains, but a weight moves only as far "
    "as the data pays for it.\n"
    "- **L1-SP**: the same with $\\alpha \\sum |w - w_0|$: the pull does not weaken near $w_0$, so a small "
    "move is pulled back as hard as a large one and the change concentrates on the weights the data pays for "
    "most. With plain gradient steps (as here, and in the study) weights hover around $w_0$ rather than landing "
    "exactly on it: exact returns would need a proximal step.\n"
    "- **LP-FT** (Kumar et al. 2022): LP for `lp_epochs`, then FT of everything at $\\eta \\times$ "
    "`lpft_lr_factor` from the probed head. The head already fits when the backbone starts to move, so the "
    "first gradients are small and the features are not distorted (section 6 checks this).\n"
    "- **Auto-RGN** (Lee et al. 2023): at the start of each epoch every tensor $t$ gets its own rate "
    "$\\eta_t = \\eta \\cdot \\mathrm{RGN}_t / \\max_u \\mathrm{RGN}_u$, with the relative gradient "
    "norm $\\mathrm{RGN}_t = \\lVert \\nabla_t \\mathcal{L} \\rVert / \\lVert w_t \\rVert$ "
    "averaged over a few batches. Tensors whose gradient is large relative to their size learn fastest; with a "
    "random head, the head usually has the largest RGN, so every backbone tensor trains far below $\\eta$.\n\n"
    "studylib has more (discriminative learning rates, surgical fine-tuning, Auto-SNR): "
    "`python -m studylib strategies` lists them.")


# Measured: Run All of the teaching notebook with its default parameters, headless (papermill), nothing else running.
RUN_ALL_TIME = "about a minute on a 2-core CPU: 63 s measured headless, 128 s with a test run beside it"


def teaching() -> None:
    write("teaching.ipynb", [
        new_markdown_cell(
            "# Fine-tuning strategies, visually\n\n"
            "A network pretrained on one task (ImageNet, or here a synthetic *source* task) is adapted to a new "
            "one (a medical dataset, or a synthetic *target* task). The strategies differ in **which blocks "
            "train, when, and how fast**. A *block* is a group of layers: for ResNet-50 the stem, four stages "
            "and the classifier head.\n\n"
            f"**How to use it.** Run all cells ({RUN_ALL_TIME}, most of it section 4's short training runs, with a "
            "progress bar). Each section ends with exercises: predict, then open the folded "
            "answer. Exported as a static page (File > Save and Export Notebook As > HTML), every figure stays, "
            "for projecting."),
        simple_parameters([
            'backbone: str = "tinycnn"  # any registered backbone; tinycnn is fast on a CPU',
            "plan_epochs: int = 8  # epochs shown in the strategy plans",
            "mini_size: int = 1000  # synthetic target images for the mini comparison "
            "(the demo's: 467 train, 83 val, 450 test)",
            "mini_epochs: int = 8  # epochs per run in the mini comparison (the demo's)",
            "mini_seeds: int = 3  # seeds per strategy: 3 is the least that shows seed-to-seed noise",
            "workers: int = 0  # runs at a time, one thread each (as the demo); 0: one per core, up to 4",
            "pretrain_size: int = 4000  # synthetic source images for pretraining",
            'out_dir: str = "../outputs/teaching"  # where the mini comparison writes its runs',
        ]),
        new_markdown_cell("## 1. The block map\nEvery strategy talks about these blocks; so does every log."),
        new_code_cell("from IPython.display import Markdown, display\n\n"
                      "from studylib.models.backbones import create_backbone\n\n"
                      "bb = create_backbone(backbone, num_classes=4)\n"
                      "print(bb)\n"
                      "{block: len(names) for block, names in bb.blocks.items()}  # parameter tensors per block"),
        new_markdown_cell(STRATEGY_TEXT),
        new_markdown_cell(
            "## 3. The plans: what each strategy trains, epoch by epoch\n"
            "Each panel is one strategy: rows are blocks, columns epochs, colour the learning rate (log scale; "
            "blank = frozen). Pick strategies and move their settings; the plans redraw (nothing trains: each "
            "strategy is asked for its plan). L1-SP and L2-SP train everything like FT: their difference is the "
            "penalty, not the plan; pick one and its α slider redraws the figure of the penalty's pull, how hard it "
            "draws a backbone weight back to its pretrained value. "
            "Auto-RGN's panel is an **illustration** from the initial weights; its rates "
            "as they ran in a real run are in section 5."),
        new_code_cell("from studylib import STUDY_STRATEGIES\n"
                      "from studylib.views.runfigures import show\n"
                      "from studylib.views.teaching import PlanExplorer, plan_figure, sp_pull_figure\n\n"
                      "show(plan_figure(list(STUDY_STRATEGIES), backbone, plan_epochs), "
                      "f'{out_dir}/figures/strategy_maps.png')  # static copies, for a projected or HTML page\n"
                      "show(sp_pull_figure(), f'{out_dir}/figures/sp_pull.png')\n"
                      "PlanExplorer(backbone, plan_epochs)"),
        answer("**Exercise 3.1.** Set LP-FT's *LP epochs* to 5 of 8. In how many epochs does the stem train, and "
               "at which rate compared with FT?",
               "Three epochs: 5, 6 and 7 on the plan's axis, which counts epochs from 0 (LP has 0-4). At "
               "$\\eta \\times$ `lpft_lr_factor` (0.1 by default: one decade darker on the fixed colour scale "
               "than FT's 1e-3)."),
        answer("**Exercise 3.2.** With 8 epochs, what happens to G-LF when *epochs per stage* goes to 2, and why?",
               "tinycnn has 5 blocks, so G-LF needs 4 stages of 2 epochs plus one epoch for the last stage: 9 "
               "epochs. studylib refuses the plan and says so, rather than silently never training the stem; raise "
               "the epochs to 9 or more."),
        answer("**Exercise 3.3.** Pick L1-SP and L2-SP with their default α (1e-4 and 0.01). Which penalty pulls "
               "harder on a weight that moved 0.001 from its pretrained value, and on one that moved 0.1? Predict, "
               "then read the pull figure.",
               "At 0.001 L1-SP (1e-4 against L2-SP's 0.01 x 0.001 = 1e-5); at 0.1 L2-SP (1e-3 against 1e-4). They "
               "pull equally at α₁/α₂ = 0.01. L1's pull does not shrink as a weight comes back, so small moves are "
               "resisted as hard as large ones; L2's fades near w0, so every weight may move a little. Raise "
               "L2-SP's α tenfold and the crossing moves ten times closer to w0."),
        new_markdown_cell(
            "## 4. A mini comparison over three seeds\n"
            "Pretrain a tiny CNN on the synthetic source task (once), then fine-tune it on the target task with "
            "five strategies, each with three seeds: the demo's protocol (`params/demo.yaml`), one thread per run. "
            "Seeds matter: the same strategy on another seed (another split, initialisation and batch order) "
            "scores differently, so a gain smaller than that spread is not a result."),
        answer("**Exercise 4.1 (before running).** Will LP be above chance (0.25 for four classes)? Which "
               "strategy will win?",
               "Compare LP's mean in the table below with chance (0.25) and with the others: the pretrained features "
               "may already separate the target classes, or not. Which strategy wins can change with the seed: read "
               "the intervals in the table before naming a winner."),
        new_code_cell("from studylib.core.constants import STUDY_SEEDS\n"
                      "from studylib.study.mini import MINI_STRATEGIES, mini_comparison\n"
                      "from studylib.training.pretrain import pretrain, pretrain_config\n"
                      "from studylib.views.teaching import spread_sentence\n\n"
                      "checkpoint = pretrain(f'{out_dir}/tinycnn-source-{pretrain_size}.pt', "
                      "pretrain_config(size=pretrain_size, quiet=True))\n"
                      "seeds = (list(STUDY_SEEDS) + [1, 2, 3, 4, 5])[:mini_seeds]\n"
                      "study = mini_comparison(out_dir, checkpoint, MINI_STRATEGIES, seeds, "
                      "mini_size, mini_epochs, workers)"),
        new_code_cell("from studylib.views.measurefigures import label\n\n"
                      "table = study.accuracy.set_index('arm')[['mean', 'std', 'count']]"
                      ".rename(columns={'count': 'seeds'})\n"
                      "gains = study.gains.set_index('arm')[['gain', 'low', 'high', 'verdict']]\n"
                      "display(Markdown(spread_sentence(study)))\n"
                      "(table.join(gains).sort_values('mean', ascending=False).rename(index=label).round(3)\n"
                      " .astype({'gain': object, 'low': object, 'high': object})\n"
                      " .fillna({'verdict': '(baseline)', 'gain': '-', 'low': '-', 'high': '-'}))"),
        answer("**Exercise 4.2.** Rerun the two cells above with `mini_seeds = 1` (in the parameters cell): what "
               "can you still conclude?",
               "Only the ranking of one draw: with one seed the seed-to-seed spread is unknown, so every gain reads "
               "*seed variance unknown*. The study ran three seeds per setting for this reason."),
        new_markdown_cell(
            "## 5. Auto-RGN's rates as they ran, and how far G-LF's blocks moved\n"
            "First: Auto-RGN's per-block learning rate in each epoch of one real run of section 4 (its seed is in "
            "the title), recomputed from the gradients every epoch, unlike the illustration in section 3. Then: "
            "how far each G-LF block's weights moved from the pretrained ones (relative distance), epoch by "
            "epoch. The sentence under them is computed from the Auto-RGN run shown."),
        new_code_cell("from studylib.views import runfigures\nfrom studylib.views.teaching import rgn_sentence\n\n"
                      "rgn_run = study.example_run('auto_rgn', 'layers.csv')\n"
                      "runfigures.show(runfigures.block_lr_heatmap(rgn_run, 'lr'))\n"
                      "runfigures.show(runfigures.block_lr_heatmap(study.example_run('gu_last_first', 'layers.csv'), "
                      "'rel_dist_init'))\n"
                      "display(Markdown(rgn_sentence(rgn_run)))"),
        answer("**Exercise 5.1.** Which Auto-RGN block got the highest rate, and does it stay the same every epoch?",
               "Read the sentence under the figures: it is computed from the run shown. The head usually starts "
               "ahead (it is random, so its gradient is large relative to its weights); by how much depends on "
               "the run. The backbone blocks' rates change from epoch to epoch as their gradients change, and a low "
               "block such as the stem can catch up with the head or pass it."),
        new_markdown_cell(
            "## 6. Why strategies differ: what trained, what moved, what changed\n"
            "Every run also compares each block's features on a fixed set of validation images before and after "
            "fine-tuning, with linear CKA (Kornblith et al. 2019): 1 means the block describes the images the same "
            "way as the pretrained network (up to rotation and scale), lower means its features changed.\n\n"
            "**The prediction.** Kumar et al. (ICLR 2022, *Fine-tuning can distort pretrained features and "
            "underperform out-of-distribution*) argue that FT starts with a random head whose large early gradients "
            "flow into the backbone and distort the pretrained features; LP-FT fits the head first (linear probing), "
            "so the second stage starts near a good solution and changes the features less. LP never changes "
            "them. A block's output depends on every block below it, so CKA is cumulative; the weight distance is "
            "per block. Pick strategies below: the top row is the plan as it ran (green: trained), the bottom row "
            "how far each block's weights moved and how much its features changed (one run per strategy; the "
            "seed is in the figure's title)."),
        new_code_cell("from studylib.views.teaching import InsideExplorer, inside_figure, lpft_check, moved_most\n\n"
                      "runs = {s: study.example_run(s) for s in MINI_STRATEGIES if study.example_run(s)}\n"
                      "runfigures.show(inside_figure({s: runs[s] for s in ('lp', 'ft', 'lp_ft') if s in runs}), "
                      "f'{out_dir}/figures/inside.png')  # the static copy, for a projected or HTML page\n"
                      "display(Markdown(lpft_check(runs)))\n"
                      "if 'gu_last_first' in runs:\n    display(Markdown(moved_most(runs['gu_last_first'])))\n"
                      "InsideExplorer(runs)"),
        answer("**Exercise 6.1.** Which backbone block of G-LF moved most, and why?",
               "Read the sentence under the figure: it is computed from the G-LF run of section 4. G-LF unfreezes "
               "from the head down, so its top backbone block trains longest; whether that block also moves most "
               "depends on the run (a block that trains briefly at the start of training, when gradients are "
               "largest, can move far too)."),
        answer("**Exercise 6.2.** Does the strategy whose features changed most also have the best test score "
               "in section 4?",
               "Not necessarily. On a target task close to the source, keeping the features (high CKA) is often "
               "enough; on a distant one, moving them pays. The report's *feature change vs gain* figure asks this "
               "across a whole grid."),
    ])


if __name__ == "__main__":
    experiment()
    analysis()
    teaching()
