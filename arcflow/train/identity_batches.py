"""P×K identity batch sampler for triplet training.

Every batch holds ``P`` distinct identities with ``K`` images each (``P·K`` dataset indices,
grouped by identity: the ``K`` images of the first identity, then the second, ...), so every
sample has ``K − 1`` positives and ``(P − 1)·K`` negatives for batch-hard mining
(:func:`arcflow.heads.terms.triplet_loss`).

Per epoch, identities are drawn from successive random permutations of all identities, each
permutation cut into ``⌊#identities / P⌋`` groups of ``P``; the incomplete last group of each
permutation is dropped, so within a pass every identity appears at most once, and over passes all
identities appear equally often. Within a batch, an identity's ``K`` images are drawn without
replacement, or with replacement when it has fewer than ``K`` images.

The order is a pure function of ``(seed, epoch)`` (a ``torch.Generator`` seeded from both): call
:meth:`IdentityBatchSampler.set_epoch` before each epoch, as with ``DistributedSampler``.
Use as ``DataLoader(dataset, batch_sampler=IdentityBatchSampler(labels, p, k))``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class IdentityBatchSampler(Sampler[list[int]]):
    """Yields lists of ``p·k`` dataset indices: ``p`` identities × ``k`` images each.

    ``labels[i]`` is the identity of dataset index ``i``. ``batches_per_epoch`` defaults to
    ``len(labels) // (p·k)`` (an epoch sees about as many images as the dataset holds).
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        p: int,
        k: int,
        *,
        seed: int = 0,
        batches_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be positive, got p={p}, k={k}")
        labels_t = torch.as_tensor(labels, dtype=torch.long).view(-1)
        identities, inverse = torch.unique(labels_t, sorted=True, return_inverse=True)
        if len(identities) < p:
            raise ValueError(f"need at least p={p} identities, got {len(identities)}")
        order = torch.argsort(inverse, stable=True)
        counts = torch.bincount(inverse, minlength=len(identities))
        #: Dataset indices of each identity (in ``identities`` order).
        self.groups: list[torch.Tensor] = list(torch.split(order, counts.tolist()))
        self.identities = identities
        self.p = p
        self.k = k
        self.seed = int(seed)
        self.epoch = 0
        default = len(labels_t) // (p * k)
        self.batches_per_epoch = int(default if batches_per_epoch is None else batches_per_epoch)
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"no complete batch per epoch: {len(labels_t)} samples, p·k = {p * k} "
                f"(batches_per_epoch={batches_per_epoch})"
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) order the next ``iter`` yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _generator(self) -> torch.Generator:
        # Distinct (seed, epoch) pairs give distinct streams; 2**63 - 1 keeps it in range.
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % (2**63 - 1))

    def __iter__(self) -> Iterator[list[int]]:
        g = self._generator()
        num_ids = len(self.groups)
        per_pass = num_ids // self.p
        made = 0
        while made < self.batches_per_epoch:
            perm = torch.randperm(num_ids, generator=g)
            for b in range(min(per_pass, self.batches_per_epoch - made)):
                batch: list[int] = []
                for ident in perm[b * self.p : (b + 1) * self.p].tolist():
                    members = self.groups[ident]
                    if len(members) >= self.k:
                        pick = torch.randperm(len(members), generator=g)[: self.k]
                    else:
                        pick = torch.randint(len(members), (self.k,), generator=g)
                    batch.extend(members[pick].tolist())
                yield batch
                made += 1
