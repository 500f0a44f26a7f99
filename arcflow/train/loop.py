"""The training loop: backbone + margin head, SGD with warmup and a decaying schedule.

Readable top to bottom: :func:`train_model` builds the model, optimiser and data plan, resumes
from the last checkpoint of the same run if there is one, then runs steps. A step is
the micro-batches of :func:`~arcflow.train.schedules.batch_layout` on each process (DDP across
``train.devices``), one optimiser update, a checkpoint every ``train.checkpoint_every`` steps.
Which images a step uses depends only on the step number (:mod:`arcflow.train.sampling`), so a
resumed run is the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from arcflow.config import TrainParams
from arcflow.devices import channels_last_is_safe, cpu_has_native_bf16, resolve_device
from arcflow.errors import TrainingError
from arcflow.heads import MarginHead, build_head, head_margins
from arcflow.heads.partial_fc import PartialFC
from arcflow.heads.terms import extra_loss
from arcflow.models import get_backbone, set_trunk_precision
from arcflow.progress import progress
from arcflow.seeding import derive_seed
from arcflow.train import checkpoint
from arcflow.train.amp import optimizer_step
from arcflow.train.distributed import DistContext
from arcflow.train.identity_batches import IdentityBatchSampler
from arcflow.train.sampling import SeededAugment, StepPlan, StepSampler
from arcflow.train.schedules import batch_layout, run_schedule, sphereface_lambda

LogFn = Callable[[int, dict[str, float]], None]
#: Verification during training: ``validate(backbone) -> {set name: accuracy}``.
ValidateFn = Callable[[nn.Module], dict[str, float]]


@dataclass
class TrainResult:
    """The trained backbone, its constructor kwargs and the logged history."""

    backbone: nn.Module
    backbone_kwargs: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)  # {"step", <set>: acc}
    images_per_second: float = 0.0
    resumed_from: int = 0


def backbone_kwargs(cfg: TrainParams) -> dict[str, Any]:
    """Constructor arguments of the backbone, saved with the weights."""
    return {"embedding_size": cfg.embedding_size, "dropout": cfg.dropout, "width": cfg.width}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic_kernels() -> None:
    """Deterministic algorithms everywhere (slower; for exact reruns and tests)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def autocast_dtype(cfg: TrainParams, device: torch.device) -> torch.dtype | None:
    """None for fp32; ``auto`` is bf16 on CUDA and on CPUs with native bf16, else fp32."""
    precision = cfg.precision
    if precision == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        precision = "bf16" if native else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_name(cfg: TrainParams, device: torch.device) -> str:
    """What ``train.precision`` resolves to on ``device``: fp32, bf16 or fp16."""
    dtype = autocast_dtype(cfg, device)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


class FaceModel(nn.Module):
    """Backbone, head and extra loss terms as one module; forward returns the loss.

    ``head`` is a margin/softmax head (cross-entropy on its logits), a
    :class:`~arcflow.heads.partial_fc.PartialFC` (which returns its loss) or None (the
    extra terms alone, e.g. the paper's Triplet row).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module | None,
        terms: Sequence[str] = (),
        triplet_margin: float = 0.35,
    ) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.terms, self.triplet_margin = tuple(terms), triplet_margin

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # the trunk autocasts itself (set_trunk_precision); FC + BN1d stay fp32, as insightface
        embeddings = self.backbone(images).float()
        head = _unwrapped(self.head)
        if head is None:
            loss = embeddings.new_zeros(())
        elif isinstance(head, PartialFC):
            loss = self.head(embeddings, labels)  # type: ignore[misc]
        else:
            loss = F.cross_entropy(self.head(embeddings, labels), labels)  # type: ignore[misc]
        if self.terms:
            loss = loss + extra_loss(self.terms, embeddings, labels, head, self.triplet_margin)
        return loss


def _unwrapped(module: nn.Module | None) -> nn.Module | None:
    return module.module if isinstance(module, DistributedDataParallel) else module


def make_head(cfg: TrainParams, num_classes: int) -> nn.Module | None:
    """The head ``train.head`` names (a Partial FC one with ``train.partial_fc``)."""
    if cfg.head == "none":
        return None
    if not cfg.partial_fc:
        return build_head(
            cfg.head,
            cfg.embedding_size,
            num_classes,
            s=cfg.s,
            m=cfg.m,
            m1=cfg.m1,
            m2=cfg.m2,
            m3=cfg.m3,
            sphereface_psi=cfg.sphereface_psi,
            straight_through=cfg.straight_through,
        )
    m1, m2, m3 = head_margins(cfg.head, m=cfg.m, m1=cfg.m1, m2=cfg.m2, m3=cfg.m3)
    return PartialFC(
        cfg.embedding_size,
        num_classes,
        s=cfg.s,
        m1=m1,
        m2=m2,
        m3=m3,
        sample_rate=cfg.sample_rate,
        straight_through=cfg.straight_through,
        seed=cfg.seed,
    )


def data_parallel(module: nn.Module | None, device: torch.device) -> nn.Module | None:
    """DDP around a module with parameters (a Partial FC head has none: it is sharded)."""
    if module is None or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def parameter_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool) -> list[dict]:
    """One group, or two: without weight decay for 1-D parameters (BN, PReLU, biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_bn_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    rest = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _loader(dataset: Dataset, cfg: TrainParams, sampler: StepSampler, device: torch.device):
    return DataLoader(
        SeededAugment(dataset, cfg.seed),
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if cfg.num_workers else None,
        # its own generator: creating an iterator draws a base seed, which from the global one
        # would shift dropout's random stream by a draw on every resume
        generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "loader") % 2**63),
    )


def _mean_over_ranks(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= ctx.world_size
    return value


def step_plan(cfg: TrainParams, dataset: Dataset, world_size: int) -> StepPlan:
    """Which images every step of the run uses (micro-batches x accumulation x processes)."""
    layout = batch_layout(cfg, world_size)
    identities = None
    if cfg.images_per_identity:
        labels = getattr(dataset, "labels", None)
        if labels is None:
            raise TrainingError("train.images_per_identity needs a dataset that lists its labels")
        k = cfg.images_per_identity
        identities = IdentityBatchSampler(labels, layout.micro_batch // k, k, seed=cfg.seed)
    plan = StepPlan(
        len(dataset),  # type: ignore[arg-type]
        layout.micro_batch,
        layout.accumulation,
        world_size,
        cfg.seed,
        identities,
    )
    if plan.steps_per_epoch < 1:
        raise TrainingError(
            f"a global batch of {plan.global_batch} images (train.global_batch_size, or "
            f"batch_size x grad_accumulation x devices) exceeds the dataset size {len(dataset)}"  # type: ignore[arg-type]
        )
    return plan


@dataclass
class _Run:
    """What a run steps and checkpoints: the model, its optimiser, schedule and scaler."""

    model: FaceModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    channels_last: bool
    step: int = 0

    def restore(self, state: dict[str, Any], result: TrainResult) -> None:
        """Continue from a checkpoint of the same run (RNG states included)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        self.step = result.resumed_from = int(state["step"])
        result.history = list(state["history"])
        result.validation = list(state.get("validation", []))

    def state(self, fingerprint: str, result: TrainResult) -> dict[str, Any]:
        """Everything :meth:`restore` needs (RNG states are added by checkpoint.save)."""
        return {
            "fingerprint": fingerprint,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": result.history,
            "validation": result.validation,
        }


def _build(
    cfg: TrainParams, model: FaceModel, plan: StepPlan, device: torch.device
) -> tuple[_Run, int]:
    """The optimiser, lr schedule and scaler for ``model``; returns the run and its steps."""
    channels_last = cfg.channels_last and channels_last_is_safe(model, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        parameter_groups(model, cfg.weight_decay, cfg.no_decay_bn_bias),
        lr=cfg.lr,
        momentum=cfg.momentum,
    )
    schedule = run_schedule(cfg, plan.steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor())
    fp16 = autocast_dtype(cfg, device) == torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    return _Run(model, optimizer, scheduler, scaler, channels_last), schedule.total_steps


def _wrapped(model: FaceModel, cfg: TrainParams, ctx: DistContext) -> FaceModel:
    """The model the steps call: compiled and/or DDP-wrapped, the same modules underneath."""
    compiled = torch.compile(model.backbone) if cfg.compile else model.backbone
    if ctx.distributed:  # gradients are averaged over processes
        return FaceModel(
            data_parallel(compiled, ctx.device),  # type: ignore[arg-type]
            data_parallel(model.head, ctx.device),
            cfg.extra_losses,
            cfg.triplet_margin,
        )
    if cfg.compile:
        return FaceModel(compiled, model.head, cfg.extra_losses, cfg.triplet_margin)  # type: ignore[arg-type]
    return model


def _accumulate(
    run: _Run, trained: FaceModel, batches: Iterator[Any], plan: StepPlan, ctx: DistContext
) -> tuple[torch.Tensor, int]:
    """Forward and backward over one step's micro-batches; ``(summed loss, images seen)``."""
    synced = [m for m in (trained.backbone, trained.head) if isinstance(m, DistributedDataParallel)]
    loss_sum, seen = torch.zeros((), device=ctx.device), 0
    for j in range(plan.accumulation):
        images, labels = next(batches)
        images = images.to(ctx.device, non_blocking=True)
        labels = labels.to(ctx.device, non_blocking=True)
        if run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with contextlib.ExitStack() as sync:
            if j < plan.accumulation - 1:  # gradients are averaged over processes once per step
                for module in synced:
                    sync.enter_context(module.no_sync())
            loss = trained(images, labels) / plan.accumulation
            if j == 0:
                # freed here, between forward and backward, last step's gradients hand their
                # memory straight to this backward's (same sizes): ~20% faster on CPU than
                # freeing them before the forward or after the step (fresh pages each time)
                run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
        loss_sum += loss.detach()
        seen += labels.numel() * ctx.world_size
    return loss_sum, seen


def train_model(
    cfg: TrainParams,
    dataset: Dataset,
    num_classes: int,
    *,
    ctx: DistContext | None = None,
    checkpoints: Path | None = None,
    fingerprint: str = "",
    log: LogFn | None = None,
    log_every: int = 10,
    validate: ValidateFn | None = None,
) -> TrainResult:
    """Train ``cfg.backbone`` with ``cfg.head`` on ``dataset`` of (image tensor, label).

    ``checkpoints``: folder of this run's checkpoints (resumed from when their
    ``fingerprint`` matches). ``log(step, row)`` and, every ``train.val_every`` steps and at
    the end, ``validate`` (on a copy of the backbone) run on the main process only.
    """
    ctx = ctx or DistContext(device=resolve_device(cfg.device))
    device = ctx.device
    seed_everything(cfg.seed)
    if cfg.deterministic:
        use_deterministic_kernels()
    kwargs = backbone_kwargs(cfg)
    backbone = get_backbone(cfg.backbone, **kwargs)
    head = make_head(cfg, num_classes)
    set_trunk_precision(backbone, autocast_dtype(cfg, device))
    model = FaceModel(backbone, head, cfg.extra_losses, cfg.triplet_margin).to(device)
    plan = step_plan(cfg, dataset, ctx.world_size)
    run, total_steps = _build(cfg, model, plan, device)
    model = run.model
    result = TrainResult(backbone=backbone, backbone_kwargs=kwargs)
    state = checkpoint.load(checkpoints, ctx.rank, fingerprint) if checkpoints else None
    if state is not None:
        run.restore(state, result)
    trained = _wrapped(model, cfg, ctx)
    every = cfg.checkpoint_every or plan.steps_per_epoch

    sampler = StepSampler(plan, ctx.rank, run.step, total_steps)
    batches: Iterator[Any] = iter(_loader(dataset, cfg, sampler, device))
    seen, started = 0, time.perf_counter()
    bar = progress(
        total=total_steps, initial=run.step, desc="train", unit="step", hide=not ctx.is_main
    )
    model.train()
    while run.step < total_steps:
        if isinstance(head, MarginHead) and cfg.head == "sphereface":
            head.blend = sphereface_lambda(run.step, **cfg.sphereface_lambda.model_dump())
        loss_sum, images = _accumulate(run, trained, batches, plan, ctx)
        seen += images
        loss_value = _mean_over_ranks(loss_sum, ctx)
        if not torch.isfinite(loss_value):
            raise TrainingError(
                f"loss became {loss_value.item()} at step {run.step}; the last good checkpoint "
                "is kept",
                hint="lower train.lr, add warmup (train.warmup_epochs) or use precision bf16",
            )
        grad_norm, _ = optimizer_step(  # Partial FC's centres step (or skip) with the backbone
            run.optimizer,
            run.scaler,
            model.backbone,
            head,
            grad_clip=cfg.grad_clip,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            distributed=ctx.distributed,
        )
        run.scheduler.step()
        run.step += 1
        step = run.step
        bar.update(1)
        due = cfg.val_every and (step % cfg.val_every == 0 or step == total_steps)
        if validate is not None and ctx.is_main and due:
            paused = time.perf_counter()
            accuracy = validate(copy.deepcopy(backbone))  # evaluation must not touch training
            started += time.perf_counter() - paused  # throughput counts training time only
            result.validation.append({"step": float(step), **accuracy})
            if log:
                log(step, {f"val.{name}": value for name, value in accuracy.items()})
            backbone.train()
        if step % every == 0 and step < total_steps and checkpoints is not None:
            checkpoint.save(checkpoints, ctx.rank, run.state(fingerprint, result))
        if ctx.is_main and (step % log_every == 0 or step == total_steps):
            rate = seen / (time.perf_counter() - started)
            row = {
                "step": float(step),
                "epoch": step / plan.steps_per_epoch,
                "loss": loss_value.item(),
                "lr": run.optimizer.param_groups[0]["lr"],
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
