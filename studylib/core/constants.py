"""Facts several modules share, stated once (timm's data/constants.py is the model)."""
from __future__ import annotations

N_BOOT = 1000  # test-image resamples per gain: one count for the report, the notebook, the explorer and the CLI
ENGINES = ("papermill", "inline")  # how a grid runs each cell: through the experiment notebook, or in-process
# papermill's kernels log at ERROR only: ipykernel's "running over TCP without encryption" warning (a kernel on
# localhost, once per run) buried a grid's output; cells' own warnings still reach the executed notebook
KERNEL_ARGUMENTS = ["--log-level=ERROR"]
