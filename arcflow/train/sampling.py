"""Which images each process trains on at each step: a pure function of (seed, epoch, step).

Every epoch is one seeded permutation of the dataset, cut into global batches of
``micro_batch × accumulation × world_size`` images (the remainder is dropped: BatchNorm and
the distributed softmax need full batches). Global batch ``s`` is cut into
``world_size × accumulation`` micro-batches; rank ``r`` takes micro-batches
``r·accumulation … r·accumulation + accumulation − 1``. So:

- one process accumulating 2 micro-batches sees exactly what 2 DDP ranks see together;
- resuming at any step needs only that step number: no sampler state to save;
- with ``identities`` (a P×K :class:`IdentityBatchSampler`, for the triplet loss) the epoch
  order is its batches back to back, so each micro-batch is one P×K batch;
- every item is an ``(epoch, index)`` key, and :class:`SeededAugment` seeds the augmentation of
  that key from it, so an item is the same whichever worker process loads it, and when.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset, Sampler

from arcflow.seeding import derive_seed
from arcflow.train.identity_batches import IdentityBatchSampler

Key = tuple[int, int]  # (epoch, dataset index)


@dataclass(frozen=True)
class StepPlan:
    """How a dataset of ``size`` images is split into steps and micro-batches."""

    size: int
    micro_batch: int
    accumulation: int = 1
    world_size: int = 1
    seed: int = 0
    identities: IdentityBatchSampler | None = field(default=None, compare=False)

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accumulation * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's image order: a permutation, or P×K identity batches back to back."""
        if self.identities is not None:
            self.identities.set_epoch(epoch)
            return torch.tensor([i for batch in self.identities for i in batch])
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return torch.randperm(self.size, generator=generator)

    def micro_batches(
        self, step: int, rank: int, order: torch.Tensor | None = None
    ) -> list[list[Key]]:
        """The ``accumulation`` micro-batches of global step ``step`` for ``rank``.

        ``order`` is the step's epoch permutation when the caller has it already.
        """
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self.permutation(epoch) if order is None else order
        start = within * self.global_batch
        out = []
        for j in range(self.accumulation):
            chunk = (rank * self.accumulation + j) * self.micro_batch
            indices = order[start + chunk : start + chunk + self.micro_batch].tolist()
            out.append([(epoch, index) for index in indices])
        return out


class StepSampler(Sampler[list[Key]]):
    """Batch sampler: the micro-batches of ``rank`` for steps ``first_step … total_steps − 1``."""

    def __init__(self, plan: StepPlan, rank: int, first_step: int, total_steps: int) -> None:
        if plan.steps_per_epoch < 1:
            raise ValueError(
                f"{plan.size} images cannot fill one global batch of {plan.global_batch}"
            )
        self.plan, self.rank = plan, rank
        self.first_step, self.total_steps = first_step, total_steps

    def __len__(self) -> int:
        return max(0, self.total_steps - self.first_step) * self.plan.accumulation

    def __iter__(self) -> Iterator[list[Key]]:
        epoch_order: dict[int, torch.Tensor] = {}
        for step in range(self.first_step, self.total_steps):
            epoch = step // self.plan.steps_per_epoch
            if epoch not in epoch_order:  # one permutation per epoch, not per step
                epoch_order.clear()
                epoch_order[epoch] = self.plan.permutation(epoch)
            yield from self.plan.micro_batches(step, self.rank, epoch_order[epoch])


class SeededAugment(Dataset):
    """Items by ``(epoch, index)`` key, the augmentation seeded from ``(seed, epoch, index)``.

    ``dataset`` must have ``augment`` (an albumentations Compose or None) and
    ``__getitem__(index)``; the wrapper re-seeds the Compose before each item.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> object:
        epoch, index = key
        augment = getattr(self.dataset, "augment", None)
        if augment is not None:
            augment.set_random_seed(derive_seed(self.seed, epoch, index) % 2**32)
        return self.dataset[index]
