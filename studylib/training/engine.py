"""Training engine: apply a strategy's plan, train, select on validation, test once.

`fit` never touches the test split; `run` (runner.py) calls `evaluate` on test exactly
once, with the best-validation weights restored.
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.config import ConfigError, RunConfig
from ..data.bundle import IMAGENET_MEAN, IMAGENET_STD, DeviceBatches
from ..models.backbones import Backbone
from .features import FrozenFeatures
from .layerlog import LayerLog
from .metrics import classification_metrics
from .strategies import EpochPlan, Strategy, cosine_factor


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stops and is marked failed."""


@dataclass
class Device:
    """Where and how the model runs: device, autocast dtype, memory format."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    mean: tuple = IMAGENET_MEAN  # input statistics: the backbone's weights' (backbone.spec.mean / std)
    std: tuple = IMAGENET_STD

    @classmethod
    def resolve(cls, cfg: RunConfig, backbone: Backbone) -> "Device":
        name = cfg.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={cfg.device} but CUDA is not available here; use device=cpu or auto")
        device = torch.device(name)
        on_cuda = device.type == "cuda"
        amp = torch.bfloat16 if (cfg.amp == "bf16" or (cfg.amp == "auto" and on_cuda)) else None
        cl = {"on": True, "off": False}.get(cfg.channels_last, on_cuda and backbone.spec.channels_last)
        if on_cuda:
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        return cls(device, amp, cl, backbone.spec.mean, backbone.spec.std)

    def place(self, model: nn.Module) -> nn.Module:
        """Move a model to the device, in channels_last memory format when that is on."""
        return model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val: dict = field(default_factory=dict)
    stopped_early: bool = False
    max_trainable: int = 0
    resumed_from_epoch: int | None = None


@dataclass
class LoopState:
    """Where `fit` stands between epochs: all it needs to go on (see Trainer.checkpoint)."""

    next_epoch: int = 0
    best_score: float = -np.inf
    stale: int = 0  # epochs of the last stage without improvement
    done: bool = False  # early stopping fired
    best_state: dict | None = None  # best-validation weights


class TrainingProbe:
    """What a strategy may measure before it plans an epoch (strategies.Probe): gradients of a few training
    batches, or the batches themselves. Normalisation layers run in eval mode so a probe never moves running
    statistics, and a generator of its own keeps the training batch order untouched."""

    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer

    def batches(self, n_batches: int, seed: int | None = None):
        trainer = self.trainer
        seed = trainer.cfg.seed + 7919 * len(trainer.layers.rows) if seed is None else seed
        generator = torch.Generator().manual_seed(seed)
        return trainer.train_data.batches(True, generator, trainer.cfg.augment, n_batches)

    def __call__(self, names: list[str], n_batches: int, on_grads) -> None:
        """Forward/backward `n_batches` training batches without stepping (Auto-RGN, Auto-SNR)."""
        trainer, wanted = self.trainer, set(names)
        params = dict(trainer.model.named_parameters())
        for name, param in params.items():
            param.requires_grad_(name in wanted)
        trainer.set_modes(set())
        for x, y in self.batches(n_batches):
            trainer.model.zero_grad(set_to_none=True)
            with trainer.dev.autocast():
                loss = trainer.loss(trainer.model(x), y)
            loss.backward()
            on_grads({n: params[n].grad for n in names if params[n].grad is not None})
        trainer.model.zero_grad(set_to_none=True)


class Trainer:
    """Holds the moving parts of one fit: model, strategy, optimizer, data, logs."""

    def __init__(self, cfg: RunConfig, backbone: Backbone, strategy: Strategy, train: DeviceBatches,
                 val: DeviceBatches, dev: Device, class_weights: torch.Tensor | None = None):
        self.cfg, self.backbone, self.strategy, self.dev = cfg, backbone, strategy, dev
        self.model = backbone.model
        self.train_data, self.val_data = train, val
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self.class_weights = class_weights
        self.layers = LayerLog(backbone, per_tensor=cfg.log_tensors)
        self.show = not cfg.quiet
        self.head = backbone.model.get_submodule(backbone.spec.head)
        self.frozen: tuple[FrozenFeatures, FrozenFeatures] | None = None  # (train, val) features
        self.track_grads = True  # per-step gradient norms for layers.csv (off only to measure its cost)
        self.loop, self.result = LoopState(), FitResult()
        self.carried_state: dict = {}  # optimizer state restored from a checkpoint, by parameter
        self.probe = TrainingProbe(self)

    # --- plan ---------------------------------------------------------------------------
    def apply(self, plan: EpochPlan) -> None:
        """Set requires_grad, BatchNorm modes and the optimizer for this epoch."""
        trainable = set(plan.trainable)
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in trainable)
        self.set_modes(trainable)
        self.optimizer = self.build_optimizer(plan)
        factor = cosine_factor(*plan.span) if self.cfg.schedule == "cosine" else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def set_modes(self, trainable: set[str]) -> None:
        """Train mode, except normalisation layers of frozen blocks or under a frozen policy, and
        dropout under `dropout: eval` (Auto-RGN's reference keeps the whole model in eval mode).

        A head-only epoch (LP, LP-FT's first stage, gradual unfreezing's first) runs the frozen
        backbone wholly in eval mode, dropout included (VGG-19's classifier block): it is a fixed
        feature extractor, which is also what makes cached features give the same training.
        """
        if self.only_head(trainable):
            self.model.eval()
            self.head.train()
            return
        self.model.train()
        for block, names in self.backbone.blocks.items():
            block_trains = any(n in trainable for n in names)
            if not block_trains or self.strategy.bn_policy in ("freeze_stats", "freeze"):
                for module in self.backbone.norm_modules(block):
                    module.eval()
        if self.strategy.dropout == "eval":
            for module in self.model.modules():
                if isinstance(module, nn.modules.dropout._DropoutNd):
                    module.eval()

    def only_head(self, trainable) -> bool:
        """True when some parameters train and all of them belong to the new head."""
        return bool(trainable) and set(trainable) <= set(self.backbone.head_params)

    def build_optimizer(self, plan: EpochPlan) -> torch.optim.Optimizer:
        """One group per learning rate, built only from parameters that require grad."""
        params = dict(self.model.named_parameters())
        by_lr: dict[float, list] = {}
        for name in plan.trainable:
            by_lr.setdefault(plan.lrs[name], []).append(params[name])
        groups = [{"params": ps, "lr": lr, "initial_lr": lr, "weight_decay": plan.weight_decay}
                  for lr, ps in by_lr.items()]
        if not groups:
            raise RuntimeError(f"strategy {self.cfg.strategy} left no parameter trainable this epoch")
        new = make_optimizer(self.cfg, groups)
        previous = self.optimizer.state if self.optimizer is not None else self.carried_state
        if not plan.reset_optimizer:
            for p in (p for g in groups for p in g["params"]):  # keep Adam moments of parameters that stay
                if p in previous:
                    new.state[p] = previous[p]
        self.carried_state = {}
        return new

    # --- one epoch ----------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, labels, self.class_weights)

    def uses_cached_features(self, plan: EpochPlan) -> bool:
        """True when the epoch can train the head on cached features (same result, far less work)."""
        return (self.cfg.feature_cache and not self.cfg.augment and not self.strategy.has_penalty
                and self.only_head(plan.trainable))

    def inputs(self, plan: EpochPlan):
        """(module to call, training batches, validation batches) for this epoch."""
        if not self.uses_cached_features(plan):
            self.frozen = None  # the backbone may move from now on: cached features would go stale
            return self.model, self.train_data, self.val_data
        if self.frozen is None:
            self.frozen = (FrozenFeatures(self.backbone, self.train_data, self.dev.autocast),
                           FrozenFeatures(self.backbone, self.val_data, self.dev.autocast))
        return self.head, *self.frozen

    def train_epoch(self, epoch: int, plan: EpochPlan, forward: nn.Module, data) -> dict:
        """One training pass over `data` under `plan`; returns the epoch's training statistics (history.csv).

        Args:
            epoch: epoch index, from 0 (progress bar and error messages).
            plan: this epoch's plan, already applied (trainable parameters, optimizer); its stage labels the bar.
            forward: module called on each batch: the model, or its head on cached features.
            data: training batches: DeviceBatches, or FrozenFeatures when features are cached.
        """
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        grad_sq = torch.zeros(len(trainable), device=self.dev.device)
        sums = torch.zeros(2, device=self.dev.device)  # loss, penalty
        steps = images = 0
        started = time.perf_counter()
        batches = data.batches(True, self.generator, self.cfg.augment, self.cfg.max_steps_per_epoch)
        total = min(len(data), self.cfg.max_steps_per_epoch or len(data))
        for x, y in tqdm(batches, total=total, desc=f"epoch {epoch} {plan.stage}", leave=False, disable=not self.show):
            with self.dev.autocast():
                loss = self.loss(forward(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            penalty = self.strategy.backward(loss)  # loss + the strategy's penalty, if it has one
            if self.track_grads:
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trainable]
                grad_sq += torch.stack(torch._foreach_norm(grads)).float() ** 2
            self.optimizer.step()
            sums += torch.stack([loss.detach().float(),
                                 (penalty if penalty is not None else loss * 0).detach().float()])
            steps += 1
            images += len(y)
            if steps % 25 == 0:
                check_finite(sums, epoch, steps)
        check_finite(sums, epoch, steps)  # also waits for the device, so the time below is real
        seconds = time.perf_counter() - started
        self.layers.grads = dict(zip(names, (grad_sq / max(1, steps)).sqrt().tolist()))
        loss_mean, pen_mean = (sums / max(1, steps)).tolist()
        return {"train_loss": loss_mean, "train_penalty": pen_mean, "steps": steps, "train_images": images,
                "train_seconds": seconds}

    # --- the loop -----------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train from `loop.next_epoch` (0, or where a restored checkpoint stopped) to the end."""
        loop, result = self.loop, self.result
        epochs = range(loop.next_epoch, self.cfg.max_epochs if not loop.done else loop.next_epoch)
        bar = tqdm(initial=loop.next_epoch, total=self.cfg.max_epochs, unit="epoch",
                   desc=f"{self.cfg.strategy} {self.cfg.backbone}", disable=not self.show)
        for epoch in epochs:
            started = time.perf_counter()
            plan = self.strategy.plan(epoch, self.probe)
            self.apply(plan)
            forward, train_data, val_data = self.inputs(plan)
            train_stats = self.train_epoch(epoch, plan, forward, train_data)
            val_started = time.perf_counter()
            val_loss, probs, labels = evaluate(forward, val_data, self.dev, self.loss)
            train_stats.update(val_images=len(labels), val_seconds=time.perf_counter() - val_started)
            val = {"loss": val_loss, **classification_metrics(labels, probs)}
            score = selection_score(self.cfg, val)
            improved = bool(np.nan_to_num(score, nan=-np.inf) > loop.best_score)
            if improved:
                loop.best_score, loop.stale, result.best_epoch, result.best_val = score, 0, epoch, val
                loop.best_state = copy.deepcopy(self.model.state_dict())
            elif plan.final_stage:
                loop.stale += 1
            n_trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            result.max_trainable = max(result.max_trainable, n_trainable)
            result.history.append(self.history_row(epoch, plan, train_stats, val, n_trainable, improved, started))
            self.layers.record(epoch, plan, self.optimizer)
            bar.set_postfix(val=f"{val[self.cfg.select_metric] if self.cfg.select_metric != 'loss' else val_loss:.3f}")
            loop.next_epoch = epoch + 1
            loop.done = plan.final_stage and loop.stale >= self.cfg.patience
            result.stopped_early = loop.done and epoch < self.cfg.max_epochs - 1
            self.on_epoch_end(result)
            bar.update(1)  # counted after the epoch, so the bar ends at the epochs history.csv holds
            if loop.done:
                if result.stopped_early:
                    bar.set_postfix_str(f"stopped early: no improvement for {self.cfg.patience} epochs")
                bar.total = bar.n  # a finished bar, not an interrupted (red) one
                break
        bar.close()
        if loop.best_state is not None:
            self.model.load_state_dict(loop.best_state)  # the best-validation weights, before any test
        return result

    # --- stop and go on -----------------------------------------------------------------
    def checkpoint(self) -> dict:
        """Everything `fit` needs to go on after this epoch as if it had never stopped.

        Plain tensors and a JSON string only, so it loads with torch.load(weights_only=True).
        """
        names = {id(p): n for n, p in self.model.named_parameters()}
        loop = {k: v for k, v in vars(self.loop).items() if k != "best_state"}
        logs = {"loop": loop, "result": vars(self.result), "layers": self.layers.rows,
                "tensors": self.layers.tensor_rows}
        best_is_now = self.result.best_epoch == self.loop.next_epoch - 1  # then the best weights are the model's
        return {"model": self.model.state_dict(), "best_state": {} if best_is_now else self.loop.best_state or {},
                "best_is_now": best_is_now,
                "optimizer": {names[id(p)]: state for p, state in self.optimizer.state.items()},
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.dev.device.type == "cuda" else [],
                "logs": json.dumps(logs, default=lambda v: v.item())}  # numpy scalars; NaN and inf survive

    def restore(self, state: dict) -> None:
        """Load a `checkpoint()` (tensors on the CPU) into a freshly built trainer of the same run."""
        logs = json.loads(state["logs"])
        self.model.load_state_dict(state["model"])
        best = copy.deepcopy(self.model.state_dict()) if state["best_is_now"] else state["best_state"] or None
        self.loop = LoopState(**logs["loop"], best_state=best)
        self.result = FitResult(**{**logs["result"], "resumed_from_epoch": self.loop.next_epoch})
        self.layers.rows, self.layers.tensor_rows = logs["layers"], logs["tensors"]
        params = dict(self.model.named_parameters())
        # Adam's step stays on the CPU
        self.carried_state = {params[n]: {k: v if k == "step" else v.to(params[n].device) for k, v in s.items()}
                              for n, s in state["optimizer"].items()}
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.dev.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def on_epoch_end(self, result: FitResult) -> None:
        """Hook for the runner to write logs after every epoch."""

    def history_row(self, epoch, plan, train_stats, val, n_trainable, improved, started) -> dict:
        """One row of history.csv: the epoch's plan, training statistics and validation scores.

        Args:
            epoch: epoch index, from 0.
            plan: the epoch's plan (its stage and max_tensor are recorded).
            train_stats: train_epoch's statistics, plus the validation images and seconds.
            val: validation scores (loss and classification metrics), written as val_<name>.
            n_trainable: parameters that required grad this epoch.
            improved: whether this epoch set a new best validation score.
            started: time.perf_counter() at the epoch's start (the row's seconds).
        """
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        return {"epoch": epoch, "stage": plan.stage, "lr_max": max(lrs), "trainable_params": n_trainable,
                "max_tensor": plan.max_tensor,
                "cached_features": self.frozen is not None,
                **train_stats, **{f"val_{k}": v for k, v in val.items()}, "best": improved,
                "seconds": time.perf_counter() - started}


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                  class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The run's loss, in fp32, weighted per class when the config asks (class_weighted_loss)."""
    weight = None if class_weights is None else class_weights.to(logits.device)
    return F.cross_entropy(logits.float(), labels, weight=weight)


def selection_score(cfg: RunConfig, val: dict) -> float:
    """What picks the best epoch (and a derived run's alpha or soup), higher is better: the validation
    select_metric, or minus the validation loss."""
    return -val["loss"] if cfg.select_metric == "loss" else val[cfg.select_metric]


def make_optimizer(cfg: RunConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    adam = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return adam(groups, lr=cfg.lr)  # torch's default (foreach) kernel


def check_finite(sums: torch.Tensor, epoch: int, step: int) -> None:
    if not bool(torch.isfinite(sums).all()):
        raise NonFiniteLossError(
            f"the training loss became {sums.tolist()[0]} (penalty {sums.tolist()[1]}) by epoch {epoch}, step {step}. "
            "Lower lr (or the SP alpha/beta), or try amp=off; the history up to the previous epoch is kept.")


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceBatches, dev: Device, loss_fn=None) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss, class probabilities (n, k) and labels of one split, in order.

    Args:
        model: module to run: the network, or its head alone on cached features.
        data: the split's batches (DeviceBatches or FrozenFeatures), taken in order.
        dev: device and autocast settings.
        loss_fn: (logits, labels) -> mean loss; None: the returned loss is 0.
    """
    model.eval()
    probs, labels, total = [], [], torch.zeros((), dtype=torch.float64, device=dev.device)
    for x, y in data.batches():  # everything stays on the device until the end: no sync per batch
        with dev.autocast():
            logits = model(x).float()
        if loss_fn is not None:
            total += loss_fn(logits, y).double() * len(y)
        probs.append(torch.softmax(logits, 1))
        labels.append(y)
    labels_np = torch.cat(labels).cpu().numpy()
    return float(total) / max(1, len(labels_np)), torch.cat(probs).cpu().double().numpy(), labels_np
