"""Foreground labels of pyramid locations from person masks (paper Eq. 7–8)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from reid_eval.model import pyramid_pool

#: Label threshold τ of Eq. 8 (paper §4.1).
DEFAULT_TAU = 0.35


def mask_location_means(masks: torch.Tensor, map_size: Sequence[int], kernels: Sequence[int],
                        stride: int) -> torch.Tensor:
    """Mean mask value over each pyramid location's patch (Eq. 7), float32 ``[B, N]``.

    ``masks`` float ``[B, 1, H, W]`` (or ``[B, H, W]``) in [0, 1], at the
    network's input resolution; ``map_size`` (h, w) of the feature map. The
    mask is first averaged over the image region of each feature-map cell
    (area interpolation, exact when H and W are multiples of h and w, as with
    an input that is a multiple of the output stride), then pooled with the
    same kernels and stride as the features, in ``mode="avg"``: a level's
    location then holds the mean mask over the union of its cells, in the same
    order as :func:`reid_eval.model.pyramid_pool` lays out the features.
    """
    if masks.dim() == 3:
        masks = masks[:, None]
    cells = F.adaptive_avg_pool2d(masks.float(), tuple(int(v) for v in map_size))
    means, _ = pyramid_pool(cells, kernels, stride, mode="avg")
    return means[..., 0]


def foreground_labels(masks: torch.Tensor, map_size: Sequence[int], kernels: Sequence[int], stride: int,
                      tau: float = DEFAULT_TAU) -> torch.Tensor:
    """Eq. 8: label 1 (foreground) where a location's mean mask exceeds ``tau``, else 0; int64 ``[B, N]``."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"--tau must be in [0, 1], got {tau}")
    return (mask_location_means(masks, map_size, kernels, stride) > tau).long()
