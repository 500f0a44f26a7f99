"""The run's schedule in optimiser steps: how many images one step takes on each process
(:func:`batch_layout`), how many steps the run has, where warmup ends and the lr drops
(:func:`run_schedule`), and the lr factor of each step (:func:`lr_factor`).

A step is one optimiser update (an *iteration* in the paper). ``train`` gives the run either
in steps (``total_steps``, ``warmup_steps``, ``milestone_steps``: exact, whatever the dataset
and device count) or in epochs (``epochs``, ``warmup_epochs``, ``step_milestones``: converted
at the dataset's steps per epoch, rounded). The batch is either fixed for the whole step
(``global_batch_size``: split over the processes, accumulated where one process would take
more than ``max_device_batch``) or given per process (``batch_size × grad_accumulation``, so
the global batch grows with the device count).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from arcflow.errors import ConfigError

if TYPE_CHECKING:
    from arcflow.config import TrainParams


def lr_factor(
    kind: str,
    total_steps: int,
    warmup_steps: int = 0,
    milestones: Sequence[int] = (),
) -> Callable[[int], float]:
    """The factor of the base lr at optimiser step ``step`` (0-based: the factor of update
    ``step + 1``): linear warmup from 0 over ``warmup_steps``, then ``poly`` (power 1, to 0
    at ``total_steps``), ``cosine`` (to 0) or ``step`` (÷10 from each milestone on: with
    milestone 100000 updates 1…100000 use the lr, update 100001 on a tenth of it)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if kind not in ("poly", "cosine", "step"):
        raise ValueError(f"unknown schedule '{kind}': use poly, cosine or step")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup of {warmup_steps} steps does not fit a run of {total_steps}")
    ordered = tuple(milestones)
    if any(b <= a for a, b in pairwise(ordered)):
        raise ValueError(f"milestones must be increasing, got steps {list(ordered)}")
    if ordered and not 0 < ordered[0] <= ordered[-1] < total_steps:
        raise ValueError(
            f"milestones must lie inside the run (0 < step < {total_steps}), got {list(ordered)}"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "step":
            return 0.1 ** sum(step >= m for m in ordered)
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        if kind == "poly":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


@dataclass(frozen=True)
class BatchLayout:
    """One optimiser step's images: each of ``world_size`` processes runs ``accumulation``
    micro-batches of ``micro_batch`` images."""

    micro_batch: int
    accumulation: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accumulation * self.world_size


def batch_layout(cfg: TrainParams, world_size: int) -> BatchLayout:
    """How ``cfg`` splits a step over ``world_size`` processes.

    With ``global_batch_size`` each process takes ``global_batch_size / world_size`` images
    per step, in the fewest micro-batches of at most ``max_device_batch`` images (each a
    multiple of ``images_per_identity`` when that is set); the lr is never rescaled. Without
    it: ``batch_size × grad_accumulation`` per process, as given.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be positive, got {world_size}")
    if cfg.global_batch_size is None:
        assert cfg.batch_size is not None and cfg.grad_accumulation is not None  # validated
        return BatchLayout(cfg.batch_size, cfg.grad_accumulation, world_size)
    total = cfg.global_batch_size
    if total % world_size:
        raise ConfigError(
            f"train.global_batch_size {total} cannot be split evenly over {world_size} "
            f"processes (train.devices)",
            hint=f"use a global_batch_size divisible by {world_size}, or other devices; lr is "
            "set for the global batch: scale it by the same factor (docs/training.md)",
        )
    per_process = total // world_size
    limit = min(cfg.max_device_batch or per_process, per_process)
    group = cfg.images_per_identity or 1
    for accumulation in range(-(-per_process // limit), per_process + 1):
        micro, rest = divmod(per_process, accumulation)
        if not rest and micro % group == 0:
            return BatchLayout(micro, accumulation, world_size)
    at_most = f" of at most {cfg.max_device_batch} (train.max_device_batch)"
    raise ConfigError(
        f"train.global_batch_size {total} over {world_size} processes is {per_process} images "
        f"each, which splits into no micro-batches{at_most if cfg.max_device_batch else ''} "
        f"of whole identity groups (train.images_per_identity {group})",
        hint="use a global_batch_size that is a multiple of images_per_identity x devices",
    )


@dataclass(frozen=True)
class StepSchedule:
    """The run in optimiser steps: its length, warmup and lr-drop milestones."""

    kind: str
    total_steps: int
    warmup_steps: int = 0
    milestones: tuple[int, ...] = ()

    def factor(self) -> Callable[[int], float]:
        """``step -> lr factor`` (for ``torch.optim.lr_scheduler.LambdaLR``)."""
        return lr_factor(self.kind, self.total_steps, self.warmup_steps, self.milestones)


def run_schedule(cfg: TrainParams, steps_per_epoch: int) -> StepSchedule:
    """The schedule ``cfg`` asks for: ``total_steps``/``warmup_steps``/``milestone_steps``
    as given, or ``epochs``/``warmup_epochs``/``step_milestones`` converted at
    ``steps_per_epoch`` (rounded to whole steps)."""
    if cfg.total_steps is not None:
        schedule = StepSchedule(
            cfg.schedule, cfg.total_steps, cfg.warmup_steps, tuple(cfg.milestone_steps)
        )
        keys = "total_steps, warmup_steps, milestone_steps"
    else:
        assert cfg.epochs is not None  # validated: one of epochs and total_steps
        schedule = StepSchedule(
            cfg.schedule,
            cfg.epochs * steps_per_epoch,
            round(cfg.warmup_epochs * steps_per_epoch),
            tuple(round(e * steps_per_epoch) for e in cfg.step_milestones),
        )
        keys = f"epochs, warmup_epochs, step_milestones at {steps_per_epoch} steps per epoch"
    try:
        schedule.factor()  # checks the steps
    except ValueError as exc:
        raise ConfigError(
            f"train: the schedule ({keys}) does not fit in steps: {exc}",
            hint="give the run in steps (total_steps, warmup_steps, milestone_steps)",
        ) from None
    return schedule


def sphereface_lambda(step: int, base: float, gamma: float, power: float, minimum: float) -> float:
    """SphereFace's softmax blend at ``step``: ``max(minimum, base·(1 + gamma·step)^(−power))``."""
    return max(minimum, base * (1.0 + gamma * step) ** (-power))
