"""Weight-space ensembles of finished runs, no training: WiSE-FT and model soups, each written as a derived run.

WiSE-FT (Wortsman et al., CVPR 2022): theta(alpha) = (1 - alpha) theta_0 + alpha theta_1, where theta_1 is a
fine-tuned run's selected weights and theta_0 its starting point with a linear-probed head: the pretrained
backbone with the head of the `lp` run of the same case, seed and protocol (its best validation setting).
Model soups (Wortsman et al., ICML 2022): the average of runs that share the pretrained weights and the head
initialisation (one strategy, one seed, several tuned settings); uniform (all of them) or greedy (members
added in order of validation score, each kept only when the soup's validation score does not drop).

Every choice (alpha, membership) is made on validation; test is scored once, for the chosen network. Each
result is a run folder under DIR/derived/ (config.json, metrics.json, predictions.csv, derived.json naming its
sources), so the analysis compares it as one more arm, with the same pairing, intervals and correction.
Runs need their weights: grids with `save_checkpoint: true`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core import runfiles
from ..core.config import HELD_FIXED, RunConfig, fields_with_role
from ..core.fileio import atomic_write, read_json_dict, write_json
from ..data.datasets import load_dataset
from ..models.backbones import create_backbone
from ..training.engine import Device, cross_entropy, evaluate, selection_score
from ..training.metrics import classification_metrics
from ..training.rundir import RunDir
from ..training.runner import class_weights, split_batches, test_scores, write_predictions
from .results import collect, run_config

ALPHAS = tuple(round(a / 10, 1) for a in range(11))  # WiSE-FT's grid: 0 (the linear probe) .. 1 (the fine-tuned)
DERIVED = "derived"  # the sub-folder of a grid's folder that holds derived runs


class DerivedError(ValueError):
    """Finished runs that cannot be combined as asked; the message says why and what to run."""


def finished_with_weights(root: str | Path) -> pd.DataFrame:
    """Finished runs below `root` that kept their weights (best.pt), derived runs left out."""
    table = collect(root)
    if table.empty:
        raise DerivedError(f"no run folders below {root}; run a grid first")
    inside = table.path.map(lambda p: DERIVED in Path(p).resolve().relative_to(Path(root).resolve()).parts)
    table = table[(table.status == "finished") & ~inside]
    kept = table[table.path.map(lambda p: (Path(p) / runfiles.CHECKPOINT).is_file())]
    if kept.empty:
        raise DerivedError(f"no finished run below {root} kept its weights ({runfiles.CHECKPOINT}); run the grid with "
                           "save_checkpoint: true")
    return kept


def protocol_key(row) -> tuple:
    """What two runs must share to be combined: the held-fixed protocol fields, the case and the weights."""
    names = [f for f in fields_with_role(*HELD_FIXED)] + ["dataset", "backbone", "weights"]
    return tuple(str(row.get(f)) for f in dict.fromkeys(names))


def blend(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """sum_i weights_i * states_i over floating tensors; integer buffers (BatchNorm's batch count) from the last."""
    out = {}
    for name, last in states[-1].items():
        if last.is_floating_point():
            out[name] = sum(w * s[name].float() for w, s in zip(weights, states)).to(last.dtype)
        else:
            out[name] = last.clone()
    return out


class Scorer:
    """Validation and test scores of a config's network under given weights, the data loaded once."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.data = load_dataset(cfg, progress=False)
        self.backbone = create_backbone(cfg.backbone, self.data.num_classes)
        self.dev = Device.resolve(cfg, self.backbone)
        self.dev.place(self.backbone.model)
        self.batches = {split: split_batches(self.data, split, cfg, self.dev) for split in ("val", "test")}
        self.class_weights = class_weights(cfg, self.data)

    def evaluate(self, state: dict, split: str) -> tuple[float, np.ndarray, np.ndarray]:
        """The loss (the runs' own: class-weighted when they were), probabilities and labels of `split`."""
        self.backbone.model.load_state_dict(state)
        return evaluate(self.backbone.model, self.batches[split], self.dev,
                        lambda logits, labels: cross_entropy(logits, labels, self.class_weights))

    def val_score(self, state: dict) -> tuple[float, dict]:
        loss, probs, labels = self.evaluate(state, "val")
        val = {"loss": loss, **classification_metrics(labels, probs)}
        return selection_score(self.cfg, val), val


def config_of(path: str | Path) -> RunConfig:
    """The RunConfig a run folder ran (read back as the analysis reads it)."""
    values, problem = run_config(read_json_dict(Path(path) / runfiles.CONFIG))
    if problem:
        raise DerivedError(f"{path}: {problem}")
    known = RunConfig().to_dict()
    return RunConfig.from_dict({k: v for k, v in values.items() if k in known})


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    return torch.load(Path(path) / runfiles.CHECKPOINT, map_location="cpu", weights_only=True)


def write_derived(folder: Path, cfg: RunConfig, scorer: Scorer, state: dict, val: dict, record: dict,
                  started: float) -> Path:
    """A derived run folder: scored on test once, with what it came from. The training environment and data
    report are its first source's (the precision it trained in is part of its protocol).

    Args:
        folder: the derived run's folder (created).
        cfg: its config (the strategy renamed, e.g. wise_ft or soup_greedy_ft).
        scorer: loads `state`, scores it on test and holds the data.
        state: the network's weights (a state dict).
        val: validation scores of `state` (metrics.json's val).
        record: derived.json: kind, derived_from (source run folders; the first gives env and data report), choices.
        started: time.perf_counter() when the derivation began (wall_seconds).
    """
    rundir = RunDir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (runfiles.ENV, runfiles.DATA_REPORT):
        source = Path(record["derived_from"][0]) / name
        if source.is_file():
            atomic_write(folder / name, source.read_text())
    test_loss, probs, labels = scorer.evaluate(state, "test")
    write_json(rundir.file(runfiles.CONFIG), cfg.to_dict())
    write_json(folder / "derived.json", {**record, "selected_on": "validation"})
    write_predictions(rundir, scorer.data, probs, labels)
    metrics = {"val": val, **test_scores(cfg, scorer.data, test_loss, probs, labels), "best_epoch": None,
               "epochs_run": 0, "stopped_early": False, "wall_seconds": time.perf_counter() - started,
               "trainable_params": record.get("trainable_params"), "run_hash": cfg.run_hash(),
               "total_params": sum(p.numel() for p in scorer.backbone.model.parameters())}
    write_json(rundir.file(runfiles.METRICS), metrics)
    rundir.mark("finished")
    return folder


def wise(root: str | Path, alphas: tuple[float, ...] = ALPHAS) -> list[Path]:
    """One WiSE-FT run per fine-tuned run below `root` that has an `lp` partner (same case, seed, protocol)."""
    runs = finished_with_weights(root)
    probes = runs[runs.strategy == "lp"]
    if probes.empty:
        raise DerivedError("WiSE-FT interpolates towards the linear probe: the grid needs strategy lp (same data, "
                           "backbone and seeds) with save_checkpoint: true")
    written = []
    for row in runs[runs.strategy != "lp"].to_dict("records"):
        partners = probes[[protocol_key(p) == protocol_key(row) and p["seed"] == row["seed"]
                           for p in probes.to_dict("records")]]
        if partners.empty:
            continue
        probe = partners.sort_values(f"val_{_select(row)}", ascending=_select(row) == "loss").iloc[0]
        written.append(_wise_one(Path(root), row, probe, alphas))
    if not written:
        raise DerivedError("no fine-tuned run has an lp run of the same dataset, backbone, seed and protocol")
    return written


def _select(row) -> str:
    return row.get("select_metric") or "balanced_accuracy"


def _wise_one(root: Path, row: dict, probe: pd.Series, alphas: tuple[float, ...]) -> Path:
    started = time.perf_counter()
    cfg = config_of(row["path"])
    scorer = Scorer(cfg)
    start, tuned = load_weights(probe.path), load_weights(row["path"])
    scores = {}
    for alpha in alphas:
        scores[alpha] = scorer.val_score(blend([start, tuned], [1 - alpha, alpha]))
    chosen = max(alphas, key=lambda a: (np.nan_to_num(scores[a][0], nan=-np.inf), a))  # ties: towards the tuned
    derived = cfg.replace(strategy=f"wise_{cfg.strategy}")
    record = {"kind": "wise_ft", "derived_from": [row["path"], probe.path], "alpha": chosen,
              "val_by_alpha": {str(a): s[0] for a, s in scores.items()},
              "trainable_params": row.get("trainable_params")}
    folder = root / DERIVED / f"wise-{Path(row['path']).name}"
    return write_derived(folder, derived, scorer, blend([start, tuned], [1 - chosen, chosen]), scores[chosen][1],
                         record, started)


def soup(root: str | Path, strategy: str | None = None) -> list[Path]:
    """Uniform and greedy soups of the runs below `root` that differ only in tuned settings: per strategy, case,
    seed and protocol, two or more runs. `strategy` limits it to one strategy."""
    runs = finished_with_weights(root)
    if strategy:
        runs = runs[runs.strategy == strategy]
    groups = {}
    method = [f for f in fields_with_role("method") if f != "strategy"]  # ft and ft [bn_policy=freeze] never mix
    for row in runs.to_dict("records"):
        key = (row["strategy"], row["seed"], protocol_key(row), tuple(str(row.get(f)) for f in method))
        groups.setdefault(key, []).append(row)
    pots = [members for members in groups.values() if len(members) >= 2]
    if not pots:
        raise DerivedError("a soup needs two or more runs of one strategy, seed, case and protocol that differ in "
                           "tuned settings (e.g. lr: [1e-3, 3e-4]), all with save_checkpoint: true; none found")
    written = []
    for members in pots:
        written += _soups(Path(root), members)
    return written


def _soups(root: Path, members: list[dict]) -> list[Path]:
    started = time.perf_counter()
    members = sorted(members, key=lambda r: r[f"val_{_select(r)}"], reverse=_select(members[0]) != "loss")
    best = members[0]
    cfg = config_of(best["path"])
    scorer = Scorer(cfg)
    states = [load_weights(m["path"]) for m in members]
    uniform = blend(states, [1 / len(states)] * len(states))
    kept, soup_state = [0], states[0]
    score, val = scorer.val_score(soup_state)
    for i in range(1, len(states)):  # greedy: in order of validation score, kept only if the soup does not drop
        candidate = blend([states[j] for j in kept + [i]], [1 / (len(kept) + 1)] * (len(kept) + 1))
        candidate_score, candidate_val = scorer.val_score(candidate)
        if np.nan_to_num(candidate_score, nan=-np.inf) >= score:
            kept, soup_state, score, val = kept + [i], candidate, candidate_score, candidate_val
    name = Path(best["path"]).name
    paths = [m["path"] for m in members]
    uniform_val = scorer.val_score(uniform)[1]
    return [
        write_derived(root / DERIVED / f"soup-uniform-{name}", cfg.replace(strategy=f"soup_uniform_{cfg.strategy}"),
                      scorer, uniform, uniform_val, {"kind": "uniform_soup", "derived_from": paths,
                                                     "trainable_params": best.get("trainable_params")}, started),
        write_derived(root / DERIVED / f"soup-greedy-{name}", cfg.replace(strategy=f"soup_greedy_{cfg.strategy}"),
                      scorer, soup_state, val, {"kind": "greedy_soup", "derived_from": paths,
                                                "members": [paths[i] for i in kept], "val_score": score,
                                                "trainable_params": best.get("trainable_params")}, started),
    ]

