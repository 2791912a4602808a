"""The PK sampler of batch-hard triplet training (paper §3.3) and its
DataLoader batch sampler, shared out over distributed ranks."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

#: One item of a batch: (dataset index, seed of that image's random augmentation).
Item = tuple[int, int]


class PKSampler:
    """Batches of ``p`` identities × ``k`` images each, as lists of dataset indices.

    ``pids`` [n] gives the identity of every training image. One epoch visits
    every identity with at least 2 images once, in a random order, in groups of
    ``p`` (a last incomplete group is dropped: every batch has exactly ``p·k``
    images, so every anchor has a positive and ``(p−1)·k`` negatives). An
    identity with fewer than ``k`` images repeats some of them (drawn with
    replacement); otherwise its ``k`` images are distinct. Identities with a
    single image give no positive pair and are left out. The order is a pure
    function of ``(seed, epoch)``, so a resumed run sees the same batches.
    """

    def __init__(self, pids: Sequence[int] | np.ndarray, p: int, k: int, seed: int = 0):
        if p < 2:
            raise ValueError(f"--batch-p must be at least 2 (a batch needs negatives), got {p}")
        if k < 2:
            raise ValueError(f"--batch-k must be at least 2 (a batch needs positives), got {k}")
        pids = np.asarray(pids)
        self.p, self.k, self.seed = int(p), int(k), int(seed)
        uniq, inverse = np.unique(pids, return_inverse=True)
        groups = [np.flatnonzero(inverse == i) for i in range(len(uniq))]
        keep = [i for i, g in enumerate(groups) if len(g) >= 2]
        self.identities = uniq[keep]
        self._groups = [groups[i] for i in keep]
        if len(self._groups) < self.p:
            raise ValueError(
                f"--batch-p {p} is more than the {len(self._groups)} training identities with at least 2 images"
            )

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self._groups) // self.p

    def epoch(self, epoch: int) -> Iterator[list[int]]:
        """The batches of epoch ``epoch`` (0-based), each a list of ``p·k`` indices, identity-major."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self._groups))
        for b in range(len(self)):
            batch: list[int] = []
            for g in order[b * self.p:(b + 1) * self.p]:
                members = self._groups[g]
                pick = rng.choice(members, size=self.k, replace=len(members) < self.k)
                batch.extend(int(i) for i in pick)
            yield batch


class EpochBatchSampler(Sampler[list[Item]]):
    """``DataLoader`` batch sampler: this rank's share of a :class:`PKSampler` epoch.

    The epoch plan (every PK batch of the epoch, in order) is the same on
    every rank; rank ``r`` of ``world_size`` takes batches ``r, r + W, r + 2W, …``
    of the first ``W·⌊len/W⌋`` (so all ranks take the same number of steps, as
    DDP needs). Each item carries a seed for that image's random augmentation,
    a pure function of (seed, epoch, batch number in the plan, position), so
    batches and their augmentations are reproducible from the seed whatever
    the number of loader workers or ranks. Call :meth:`set_epoch` before
    iterating an epoch.
    """

    def __init__(self, pk: PKSampler, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        if len(pk) < world_size:
            raise ValueError(f"an epoch has {len(pk)} PK batches, fewer than the {world_size} processes "
                             "(lower --batch-p or use fewer processes)")
        self.pk, self.rank, self.world_size = pk, int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Steps per epoch on each rank."""
        return len(self.pk) // self.world_size

    def __iter__(self) -> Iterator[list[Item]]:
        steps = len(self)
        for b, batch in enumerate(self.pk.epoch(self.epoch)):
            if b >= steps * self.world_size:
                break
            if b % self.world_size == self.rank:
                seeds = np.random.SeedSequence([self.pk.seed, self.epoch, b]).generate_state(len(batch), np.uint32)
                yield [(i, int(s)) for i, s in zip(batch, seeds)]
