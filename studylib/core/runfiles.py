"""The files of a run folder, named once: the runner writes them, `RunDir` clears them, results and views read them.

A file the runner writes and `RUN_FILES` omits would survive `--overwrite` and report the earlier run's
measurement (a test checks that every written file is listed).
"""
from __future__ import annotations

CONFIG = "config.json"  # the resolved RunConfig (every `auto` replaced by what ran)
STATUS = "status.json"  # running / failed (why) / interrupted / finished, and which process ran it
ENV = "env.json"  # versions, device, data fingerprint
HISTORY = "history.csv"  # one row per epoch: losses, validation scores, times
LAYERS = "layers.csv"  # per epoch and block: trainable, learning rates, weight change
TENSORS = "tensors.csv"  # layers.csv per parameter tensor (log_tensors=true)
PREDICTIONS = "predictions.csv"  # test probabilities per image
SPLITS = "splits.csv"  # which image went to which split (reusable as splits_file)
DATA_REPORT = "data_report.json"  # counts, groups, duplicates and skipped images
RELIABILITY = "reliability.csv"  # the reliability diagram's bins on test
REPRESENTATIONS = "representations.csv"  # per block, CKA of features with the starting network
CHECKPOINT = "best.pt"  # the best-validation weights (save_checkpoint=true)
METRICS = "metrics.json"  # written last, only by a finished run
RESUME = "resume.pt"  # the state after the last saved epoch of an unfinished run
LOCK = ".lock"  # held by the process that runs the folder, for as long as it runs

# Everything a run writes; a fresh or overwritten run starts without any of them.
RUN_FILES = (CONFIG, STATUS, ENV, HISTORY, LAYERS, TENSORS, PREDICTIONS, SPLITS, DATA_REPORT, RELIABILITY,
             REPRESENTATIONS, CHECKPOINT, METRICS)
