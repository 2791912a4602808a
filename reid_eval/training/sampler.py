"""The PK sampler of batch-hard triplet training (paper §3.3)."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


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
