"""training stage: the FPR network trained with the batch-hard triplet loss on
the FPR distance and the foreground probability generator loss (paper §3.3).

Uses ``reid_eval.model`` (network, pyramid pooling, checkpoints),
``reid_eval.matching.fpr_distance_matrix_torch`` (the one FPR definition, in
torch) and ``reid_eval.datasets`` (manifests).
"""

from reid_eval.training.labels import DEFAULT_TAU, foreground_labels, mask_location_means
from reid_eval.training.losses import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    TripletStats,
    batch_fpr_distances,
    batch_hard_triplet_loss,
    foreground_loss,
)
from reid_eval.training.sampler import PKSampler
from reid_eval.training.trainer import (
    CHECKPOINT_NAME,
    FINAL_NAME,
    LOG_NAME,
    TrainConfig,
    TrainResult,
    train,
    training_step,
)

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_ALPHA",
    "DEFAULT_MARGIN",
    "DEFAULT_TAU",
    "FINAL_NAME",
    "LOG_NAME",
    "PKSampler",
    "TrainConfig",
    "TrainResult",
    "TripletStats",
    "batch_fpr_distances",
    "batch_hard_triplet_loss",
    "foreground_labels",
    "foreground_loss",
    "mask_location_means",
    "train",
    "training_step",
]
