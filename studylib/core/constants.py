"""Facts several modules share, stated once (timm's data/constants.py is the model)."""
from __future__ import annotations

BASELINE = "ft"  # the strategy every gain is measured against (full fine-tuning)
DEFAULT_METRIC = "balanced_accuracy"  # what tables, figures and verdicts compare unless told otherwise
STUDY_SEEDS = (684, 559, 629)  # the study's three seeds; the demo and the mini comparison use them too
RESIZE_RATIO = 232 / 224  # images are resized to image_size * this once, then centre-cropped (torchvision's recipe)
CALIBRATION_BINS = 15  # bins of the expected calibration error and the reliability diagram

ROPE = 0.01  # region of practical equivalence: gains within +-1 point of the metric (0.01 of balanced accuracy) are
#   treated as no difference in practice: below what a medical-imaging study reports as a change. Whether a study can
#   show equivalence within it depends on its test set: a few hundred test images may be too noisy (the demo's 450
#   are; stats.seeds_needed then says no number of seeds would do)
PRACTICAL = 0.95  # a decision needs this posterior probability (Benavoli et al. 2017)
N_BOOT = 1000  # test-image resamples per gain: one count for the report, the notebook, the explorer and the CLI
ENGINES = ("papermill", "inline")  # how a grid runs each cell: through the experiment notebook, or in-process
# papermill's kernels log at ERROR only: ipykernel's "running over TCP without encryption" warning (a kernel on
# localhost, once per run) buried a grid's output; cells' own warnings still reach the executed notebook
KERNEL_ARGUMENTS = ["--log-level=ERROR"]
