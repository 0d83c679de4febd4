"""One fold's training: build the pieces, run epochs with validation, keep the best checkpoint, resume."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from hep2edge.contract import ModelContract
from hep2edge.labels import PATTERNS
from hep2edge.normalization import NormalizationSpec, normalize_tiles
from hep2edge.train.augment import Augmenter
from hep2edge.train.checkpoint import make_checkpoint, save_checkpoint
from hep2edge.train.config import TrainConfig
from hep2edge.train.display import Display, epoch_line
from hep2edge.train.distributed import (
    DistContext,
    average_gradients,
    broadcast_floats,
    mean_across,
    wrap_model,
)
from hep2edge.train.evaluate import Evaluation, batch_losses, evaluate, is_better
from hep2edge.train.losses import MultiTaskLoss, inverse_frequency_weights
from hep2edge.train.model import MultiTaskUnet, build_model
from hep2edge.train.resume import (
    LAST,
    FoldProgress,
    check_same_run,
    epoch_seed,
    read_state,
    restore_rng_states,
    rng_states,
    save_state,
    seed_everything,
)
from hep2edge.train.tiles_dataset import TileSet
from hep2edge.train.weighting import (
    TaskWeighting,
    build_weighting,
    load_weighting_state,
    task_gradient_norms,
    weighting_state,
)

BEST = "best.pt"


@dataclass
class FoldParts:
    """Everything that learns or carries state during one fold."""

    model: MultiTaskUnet
    wrapped: nn.Module
    weighting: TaskWeighting
    loss_fn: MultiTaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    augmenter: Augmenter


@dataclass
class FoldResult:
    fold: int
    checkpoint: Path
    progress: FoldProgress


def build_parts(config: TrainConfig, ctx: DistContext, train: TileSet, fold: int) -> FoldParts:
    seed_everything(epoch_seed(config.seed, fold, -1))
    model = build_model(config.model_config, config.encoder_weights).to(ctx.device)
    weights = inverse_frequency_weights(train.pattern, len(PATTERNS)) if config.class_weights else None
    loss_fn = MultiTaskLoss(config.seg_loss, weights, config.label_smoothing, distance=config.instances,
                            pattern_map=config.pattern_map, distance_kind=config.distance_loss,
                            pattern_map_dice=config.pattern_map_dice).to(ctx.device)
    weighting = build_weighting(config.weighting, config.weights, config.alpha, config.weighting_lr)
    params = list(model.parameters()) + weighting.optimizer_parameters()
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return FoldParts(
        model=model,
        wrapped=wrap_model(model, ctx),
        weighting=weighting,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=make_scheduler(config, optimizer),
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp(config, ctx)),
        augmenter=Augmenter(config.seed),
    )


def use_amp(config: TrainConfig, ctx: DistContext) -> bool:
    """Mixed precision on CUDA only; CPU runs stay in fp32."""
    return config.amp and ctx.device.type == "cuda"


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr * 0.01)
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min" if config.monitor == "val_loss" else "max", factor=0.5, patience=2
        )
    return None


def train_step(parts: FoldParts, ctx: DistContext, x: torch.Tensor, batch: TileSet, amp: bool) -> torch.Tensor:
    """One optimisation step; returns the (T,) unweighted task losses (T = len(config.tasks))."""
    with torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext():
        out = parts.wrapped(x)
    losses = batch_losses(parts.loss_fn, out, batch, ctx.device)
    norms = None
    if parts.weighting.needs_task_gradients:
        scale = float(parts.scaler.get_scale()) if parts.scaler.is_enabled() else 1.0
        norms = task_gradient_norms(losses * scale, parts.model.last_shared_layer(), scale)
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(parts.weighting.total(losses)).backward()
    average_gradients(ctx, parts.weighting.optimizer_parameters())
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.weighting.update(losses.detach(), norms, reduce=lambda t: mean_across(ctx, t))
    return losses.detach().float().cpu()


def train_epoch(
    parts: FoldParts, config: TrainConfig, ctx: DistContext, tiles: TileSet, order: list[int], display: Display,
    label: str,
) -> dict[str, float]:
    """One pass over this process's share of the training tiles; mean losses and weights."""
    parts.wrapped.train()
    spec = NormalizationSpec(config.normalization)
    amp = use_amp(config, ctx)
    tasks = config.tasks
    loss_sum, weight_sum, steps = torch.zeros(len(tasks)), torch.zeros(len(tasks)), 0
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    with display.bar(label, len(batches)) as advance:
        for index in batches:
            batch = tiles.subset(np.asarray(index))
            images = batch.images
            if config.augment:
                images = augment_geometry(parts.augmenter, batch)
            x = normalize_tiles(images, spec)
            if config.augment:
                x = parts.augmenter.photometric(x)
            losses = train_step(parts, ctx, torch.from_numpy(x).to(ctx.device), batch, amp)
            loss_sum += losses
            weight_sum += parts.weighting.current()
            steps += 1
            advance(1)
    mean_loss = mean_across(ctx, loss_sum / max(steps, 1))
    mean_weight = weight_sum / max(steps, 1)
    row = {f"train_loss_{t}": float(v) for t, v in zip(tasks, mean_loss)}
    row |= {f"weight_{t}": float(v) for t, v in zip(tasks, mean_weight)}
    row["train_loss"] = float(mean_loss.sum())
    return row


def augment_geometry(augmenter: Augmenter, batch: TileSet) -> np.ndarray:
    """Flip/rotate the batch's images and, in place on `batch`, its mask and per-pixel targets alike."""
    names = [n for n in ("masks", "instances", "distance", "classes") if getattr(batch, n) is not None]
    images, *maps = augmenter.geometric(batch.images, *(getattr(batch, n) for n in names))
    for name, value in zip(names, maps):
        setattr(batch, name, value)
    return images


def evaluation_row(evaluation: Evaluation, tasks: tuple[str, ...]) -> dict[str, float]:
    row = {f"val_loss_{t}": v for t, v in zip(tasks, evaluation.losses)}
    row |= {"val_loss": evaluation.loss, "score": evaluation.score}
    for level, values in evaluation.levels.items():
        row |= {f"{level}_{k}": float(v) for k, v in values.items() if k != "n"}
    return row


def state_dict(parts: FoldParts, progress: FoldProgress, config: TrainConfig) -> dict[str, Any]:
    return {
        "config": config.resume_key(),
        "model": {k: v.detach().cpu().clone() for k, v in parts.model.state_dict().items()},
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else {},
        "scaler": parts.scaler.state_dict(),
        "weighting": weighting_state(parts.weighting),
        "augmenter": parts.augmenter.state_dict(),
        "rng": rng_states(),
        "progress": progress.to_dict(),
    }


def load_state(parts: FoldParts, state: dict[str, Any]) -> FoldProgress:
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    if parts.scheduler is not None:
        parts.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:
        parts.scaler.load_state_dict(state["scaler"])
    load_weighting_state(parts.weighting, state["weighting"])
    parts.augmenter.load_state_dict(state["augmenter"])
    restore_rng_states(state["rng"])
    return FoldProgress(**state["progress"])


def contract_for(config: TrainConfig) -> ModelContract:
    return ModelContract(
        tile=config.tile,
        channels=config.in_channels,
        channel_policy=config.channel_policy,
        normalization=NormalizationSpec(config.normalization),
        encoder=config.encoder,
    )


class FoldTrainer:
    """Trains one fold into `fold_dir` (best.pt, last.pt); rank 0 evaluates and writes."""

    def __init__(self, config: TrainConfig, ctx: DistContext, fold: int, train: TileSet, val: TileSet,
                 data_info: dict[str, Any], display: Display) -> None:
        self.config, self.ctx, self.fold = config, ctx, fold
        self.train, self.val, self.data_info, self.display = train, val, data_info, display
        self.fold_dir = config.run_dir / f"fold_{fold}"
        indices: Any = range(len(train))  # the sampler only needs len()
        self.sampler: DistributedSampler[int] = DistributedSampler(
            indices, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed + fold
        )

    def run(self) -> FoldResult:
        parts = build_parts(self.config, self.ctx, self.train, self.fold)
        progress = FoldProgress()
        last = self.fold_dir / LAST
        if self.config.resume and last.is_file():
            state = read_state(last)
            check_same_run(last, {**self.config.key_defaults(), **state["config"]}, self.config.resume_key())
            progress = load_state(parts, state)
            self.display.say(f"fold {self.fold}: resuming after epoch {progress.next_epoch}"
                             + (" (already finished)" if progress.finished else ""))
        while not progress.finished and progress.next_epoch < self.config.epochs:
            self.run_epoch(parts, progress)
        return FoldResult(self.fold, self.fold_dir / BEST, progress)

    def run_epoch(self, parts: FoldParts, progress: FoldProgress) -> None:
        config, epoch, started = self.config, progress.next_epoch, time.perf_counter()
        seed = epoch_seed(config.seed, self.fold, epoch, self.ctx.rank)
        seed_everything(seed)
        parts.augmenter.rng = np.random.default_rng(seed)
        self.sampler.set_epoch(epoch)
        label = f"fold {self.fold} epoch {epoch + 1}/{config.epochs}"
        row: dict[str, Any] = {"fold": self.fold, "epoch": epoch + 1, "lr": parts.optimizer.param_groups[0]["lr"]}
        row |= train_epoch(parts, config, self.ctx, self.train, list(self.sampler), self.display, label)
        monitored, improved = float("nan"), False
        if self.ctx.is_main:
            with self.display.bar(f"{label} validation", len(self.val)) as advance:
                evaluation = evaluate(parts.model, self.val, NormalizationSpec(config.normalization),
                                      parts.loss_fn, config.batch_size, self.ctx.device,
                                      use_amp(config, self.ctx), advance)
            row |= evaluation_row(evaluation, config.tasks)
            monitored = evaluation.monitored(config.monitor)
            improved = is_better(monitored, progress.best, config.monitor)
            if improved:
                self.save_best(parts, progress, evaluation, epoch, monitored)
        monitored, improved_flag = broadcast_floats(self.ctx, [monitored, float(improved)])
        self.step_scheduler(parts, monitored)
        progress.bad_epochs = 0 if improved_flag else progress.bad_epochs + 1
        progress.next_epoch = epoch + 1
        stop = config.patience > 0 and progress.bad_epochs >= config.patience
        progress.finished = stop or progress.next_epoch >= config.epochs
        row |= {"best": int(bool(improved_flag)), "seconds": time.perf_counter() - started}
        progress.history.append(row)
        if self.ctx.is_main:
            save_state(self.fold_dir / LAST, state_dict(parts, progress, config))
            self.display.say(epoch_line(row, config.epochs, bool(improved_flag)))
            if stop:
                self.display.say(f"fold {self.fold}: early stop, no {config.monitor} improvement "
                                 f"for {config.patience} epochs (best epoch {progress.best_epoch + 1})")

    def step_scheduler(self, parts: FoldParts, monitored: float) -> None:
        if isinstance(parts.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            parts.scheduler.step(monitored)
        elif parts.scheduler is not None:
            parts.scheduler.step()

    def save_best(self, parts: FoldParts, progress: FoldProgress, evaluation: Evaluation, epoch: int,
                  monitored: float) -> None:
        progress.best, progress.best_epoch = monitored, epoch
        progress.best_metrics, progress.best_confusion = evaluation.metrics(), evaluation.confusion
        checkpoint = make_checkpoint(
            parts.model, contract_for(self.config),
            fold=self.fold, epoch=epoch + 1, monitor=self.config.monitor, monitor_value=monitored,
            metrics=evaluation.metrics(), confusion=evaluation.confusion, data=self.data_info,
            train_config=self.config.resume_key(),
        )
        save_checkpoint(self.fold_dir / BEST, checkpoint)
