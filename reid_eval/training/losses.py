"""Training losses: batch-hard triplet on the FPR distance (Eq. 6) and the
foreground probability generator loss (Eq. 9); total = triplet + α·foreground (Eq. 10).

The FPR distance itself is not written here: it comes from
:func:`reid_eval.matching.fpr_distance_matrix_torch`, the same definition the
matching engine evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reid_eval.matching import DEFAULT_BETA, fpr_distance_matrix_torch

#: α of Eq. 10 (paper §4.1).
DEFAULT_ALPHA = 0.02
#: Triplet margin. FPR distances lie in [0, 1] (a weighted mean of residual
#: norms of unit vectors), and in practice in a narrow band: on the synthetic
#: set an untrained ResNet-18 gives about 0.6 for every pair and a few epochs
#: of training bring positives to about 0.45 with negatives only a few
#: hundredths further. The usual 0.3 of Euclidean triplet losses would ask for
#: half the whole observed range; 0.1 is a demanding but reachable gap.
DEFAULT_MARGIN = 0.1


def batch_fpr_distances(local: torch.Tensor, foreground: torch.Tensor, valid: torch.Tensor | None = None,
                        weighted: bool = True, beta: float = DEFAULT_BETA) -> torch.Tensor:
    """All-pairs FPR (or DSR) distances inside a batch, ``[B, B]``.

    ``local`` [B, N, d] pyramid features, ``foreground`` [B, N] foreground
    probabilities, ``valid`` bool [B, N] (False at padding; default all True).
    Row i is probe i reconstructed from gallery j. With ``weighted=False`` the
    probe weights are ones (DSR, Eq. 4).
    """
    if valid is None:
        valid = torch.ones(local.shape[:2], dtype=torch.bool, device=local.device)
    weight = foreground if weighted else torch.ones_like(foreground)
    weight = weight * valid.to(weight.dtype)
    return fpr_distance_matrix_torch(local, weight, local, valid, beta=beta, normalize=True)


@dataclass
class TripletStats:
    """Per-batch diagnostics (python floats): mean hardest-positive / hardest-negative
    distance and the fraction of anchors whose hardest triplet violates the margin."""

    hardest_positive: float
    hardest_negative: float
    active: float


def batch_hard_triplet_loss(dist: torch.Tensor, pids: torch.Tensor, margin: float = DEFAULT_MARGIN
                            ) -> tuple[torch.Tensor, TripletStats]:
    """Batch-hard triplet loss (Eq. 6), averaged over anchors.

    ``dist`` [B, B] with ``dist[a, j]`` the distance of anchor a to image j;
    ``pids`` [B]. For each anchor: the largest distance to another image of
    its identity and the smallest to an image of another identity give
    ``max(0, margin + d_ap − d_an)``. Anchors without a positive or without a
    negative in the batch are left out of the mean. Returns the loss (scalar
    tensor) and :class:`TripletStats`.
    """
    b = dist.shape[0]
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(b, dtype=torch.bool, device=dist.device)
    pos_mask = same & ~eye
    neg_mask = ~same
    ok = pos_mask.any(1) & neg_mask.any(1)
    if not bool(ok.any()):
        raise ValueError("the batch has no anchor with both a positive and a negative (need ≥2 identities × ≥2 images)")
    hardest_pos = torch.where(pos_mask, dist, dist.new_tensor(float("-inf"))).amax(1)
    hardest_neg = torch.where(neg_mask, dist, dist.new_tensor(float("inf"))).amin(1)
    losses = F.relu(margin + hardest_pos[ok] - hardest_neg[ok])
    stats = TripletStats(
        hardest_positive=float(hardest_pos[ok].mean().detach()),
        hardest_negative=float(hardest_neg[ok].mean().detach()),
        active=float((losses > 0).float().mean().detach()),
    )
    return losses.mean(), stats


def foreground_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 9: cross-entropy of the foreground generator, summed over an image's
    locations and averaged over the images of the batch.

    ``logits`` [B, N, 2] (channel 1 = foreground), ``labels`` int64 [B, N] in
    {0, 1}, ``valid`` bool [B, N] (padding excluded). Summing over locations
    follows Eq. 9; with α = 0.02 this weighs each location about like a
    per-location mean would with α ≈ 0.02·N.
    """
    ce = F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1), reduction="none").reshape(labels.shape)
    if valid is not None:
        ce = ce * valid.to(ce.dtype)
    return ce.sum(1).mean()
