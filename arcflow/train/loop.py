"""The training loop: backbone + margin head, SGD with warmup and a decaying schedule.

Readable top to bottom: build model and head, build the loader, then epochs of steps.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from arcflow.config import TrainParams
from arcflow.devices import resolve_device
from arcflow.errors import TrainingError
from arcflow.heads import build_head
from arcflow.models import get_backbone
from arcflow.progress import progress
from arcflow.train.schedules import lr_factor

LogFn = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """The trained backbone, its constructor kwargs and the logged history."""

    backbone: nn.Module
    backbone_kwargs: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    images_per_second: float = 0.0


def backbone_kwargs(cfg: TrainParams) -> dict[str, Any]:
    """Constructor arguments of the backbone, saved with the weights."""
    return {"embedding_size": cfg.embedding_size, "dropout": cfg.dropout, "width": cfg.width}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, cfg: TrainParams, device: torch.device) -> DataLoader:
    """Shuffled, seeded loader dropping the last partial batch (BN needs full batches)."""
    if len(dataset) < cfg.batch_size:  # type: ignore[arg-type]
        raise TrainingError(
            f"train.batch_size={cfg.batch_size} exceeds the dataset size {len(dataset)}"  # type: ignore[arg-type]
        )
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=device.type == "cuda",
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def train_model(
    cfg: TrainParams,
    dataset: Dataset,
    num_classes: int,
    *,
    log: LogFn | None = None,
    log_every: int = 10,
) -> TrainResult:
    """Train ``cfg.backbone`` with ``cfg.head`` on ``dataset`` of (image tensor, label)."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    kwargs = backbone_kwargs(cfg)
    backbone = get_backbone(cfg.backbone, **kwargs).to(device)
    head = build_head(
        cfg.head, cfg.embedding_size, num_classes, s=cfg.s, m=cfg.m, m1=cfg.m1, m2=cfg.m2, m3=cfg.m3
    ).to(device)
    backbone = backbone.to(memory_format=torch.channels_last)  # faster on CUDA and CPU alike

    loader = make_loader(dataset, cfg, device)
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(
        [*backbone.parameters(), *head.parameters()],
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    schedule = lr_factor(
        cfg.schedule,
        total_steps,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        milestones=[round(e * steps_per_epoch) for e in cfg.step_milestones],
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    result = TrainResult(backbone=backbone, backbone_kwargs=kwargs)
    step, seen, started = 0, 0, time.perf_counter()
    bar = progress(range(total_steps), desc="train", unit="step")
    for epoch in range(cfg.epochs):
        backbone.train()
        head.train()
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                embeddings = backbone(images)
            logits = head(embeddings.float(), labels)
            loss = F.cross_entropy(logits, labels)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at step {step} (epoch {epoch})",
                    hint="lower train.lr or add warmup (train.warmup_epochs)",
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = (
                nn.utils.clip_grad_norm_(backbone.parameters(), cfg.grad_clip)
                if cfg.grad_clip > 0
                else torch.tensor(float("nan"))
            )
            optimizer.step()
            scheduler.step()
            step += 1
            seen += labels.numel()
            bar.update(1)
            if step % log_every == 0 or step == total_steps:
                rate = seen / (time.perf_counter() - started)
                row = {
                    "step": float(step),
                    "epoch": step / steps_per_epoch,
                    "loss": loss.item(),
                    "lr": optimizer.param_groups[0]["lr"],
                    "grad_norm": float(grad_norm),
                    "images_per_second": rate,
                }
                result.history.append(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{rate:.0f}")
                if log:
                    log(step, row)
    bar.close()
    result.images_per_second = seen / max(time.perf_counter() - started, 1e-9)
    backbone.eval()
    return result
