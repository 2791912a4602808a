"""Verification metrics: TPR at fixed FPR over all valid query–gallery pairs.

Pairs. Every (query, gallery image) pair that the retrieval protocol keeps:
the Market-1501 junk rules remove the pairs with the same pid and the same
camera and every gallery image with pid -1 (see
:mod:`reid_eval.evaluation.ranking`; the same grouping code decides). A kept
pair is *positive* when the pids are equal (a correct match), *negative*
otherwise (distractors with pid 0 included). Queries without any correct
match still contribute their negative pairs: they are real impostor pairs.

Operating point. A pair is accepted when its distance is *strictly below* a
threshold ``t``. For a target FPR ``f`` with ``n_neg`` negative pairs, ``t``
is the ``(floor(f * n_neg) + 1)``-th smallest negative distance, the largest
threshold that accepts at most ``floor(f * n_neg)`` negatives; TPR is the
share of positive pairs below it. This is exact (no interpolation between
ROC points, unlike fast-reid's ``np.interp`` on ``sklearn``'s ROC curve, which
can differ by one operating point's worth) and conservative on ties. With
``floor(f * n_neg) >= n_neg`` every pair is accepted.

Memory. Rows are processed in blocks; only the ``floor(f_max * n_neg) + 1``
smallest negatives seen so far and the positive distances are kept (Market-1501
at FPR 1e-2: about 0.5 M negatives of 53 M, 2 MB).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reid_eval.evaluation.ranking import _as_distmat, _as_ids, _check_finite, _Gallery

DEFAULT_FPRS: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
_BLOCK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class VerificationResult:
    """TPR (fraction) at each target FPR, the thresholds used, and the pair counts."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    threshold: tuple[float, ...]
    num_positive: int
    num_negative: int

    def as_record(self) -> dict[str, object]:
        """Results-JSON form: ``{"tpr_at_fpr": {"0.0001": tpr, ...}, ...}``."""
        return {
            "tpr_at_fpr": {f"{f:g}": float(t) for f, t in zip(self.fpr, self.tpr)},
            "thresholds": {f"{f:g}": float(t) for f, t in zip(self.fpr, self.threshold)},
            "num_positive_pairs": self.num_positive,
            "num_negative_pairs": self.num_negative,
        }


def _pair_counts(q_pids: np.ndarray, q_camids: np.ndarray, gallery: _Gallery) -> tuple[int, int]:
    n_pos = n_neg = 0
    kept = gallery.pids.size
    for p, c in zip(q_pids.tolist(), q_camids.tolist()):
        good, junk, _ = gallery.split(p, c)
        n_pos += good.size
        n_neg += kept - good.size - junk.size
    return n_pos, n_neg


def tpr_at_fpr(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    fprs: Sequence[float] = DEFAULT_FPRS,
    block_rows: int | None = None,
) -> VerificationResult:
    """TPR at each FPR in ``fprs`` (module docstring) for a [num_query, num_gallery] distance matrix."""
    fprs = tuple(float(f) for f in fprs)
    if not fprs or any(not 0.0 < f < 1.0 for f in fprs):
        raise ValueError(f"fprs must be values in (0, 1), got {fprs}")
    d = _as_distmat(distmat)
    nq, ng = d.shape
    qp, qc = _as_ids(q_pids, "q_pids", nq), _as_ids(q_camids, "q_camids", nq)
    gallery = _Gallery(_as_ids(g_pids, "g_pids", ng), _as_ids(g_camids, "g_camids", ng))
    n_pos, n_neg = _pair_counts(qp, qc, gallery)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"verification needs positive and negative pairs; got {n_pos} positive, {n_neg} negative")
    keep_neg = min(n_neg, int(np.floor(max(fprs) * n_neg)) + 1)
    if block_rows is None:
        block_rows = max(1, _BLOCK_BYTES // max(1, ng * 8))
    positives: list[np.ndarray] = []
    smallest = np.empty(0, dtype=np.float64)
    for s in range(0, nq, block_rows):
        block = d[s : s + block_rows]
        _check_finite(block, s)
        block = np.asarray(block, dtype=np.float64)
        if gallery.keep is not None:
            block = block[:, gallery.keep]
        else:
            block = block.copy()
        for i in range(block.shape[0]):
            good, junk, _ = gallery.split(int(qp[s + i]), int(qc[s + i]))
            positives.append(block[i, good])
            block[i, good] = np.inf  # only negatives stay finite
            block[i, junk] = np.inf
        flat = block.ravel()
        flat = flat[np.isfinite(flat)]
        pool = np.concatenate([smallest, flat])
        if pool.size > keep_neg:
            pool = np.partition(pool, keep_neg - 1)[:keep_neg]
        smallest = pool
    smallest.sort()
    pos = np.sort(np.concatenate(positives))
    tprs, thresholds = [], []
    for f in fprs:
        m = int(np.floor(f * n_neg))
        t = float(smallest[m]) if m < n_neg else np.inf
        thresholds.append(t)
        tprs.append(np.searchsorted(pos, t, side="left") / n_pos)
    return VerificationResult(fprs, tuple(float(t) for t in tprs), tuple(thresholds), n_pos, n_neg)
