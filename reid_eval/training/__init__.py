"""training stage: the FPR network trained with the batch-hard triplet loss on
the FPR distance and the foreground probability generator loss (paper §3.3),
with a multi-process DataLoader, mixed precision, distributed data parallel
(``torchrun``), a warmup-and-decay learning rate, model selection on the
dataset's query/gallery, and the person masks its foreground labels come from.

Uses ``reid_eval.model`` (network, pyramid pooling, checkpoints),
``reid_eval.matching.fpr_distance_matrix_torch`` (the one FPR definition, in
torch), ``reid_eval.datasets`` (manifests), and ``reid_eval.features`` /
``reid_eval.experiments`` (extract and match, for ``--eval-every``).
"""

from reid_eval.training.data import Augmentation, TrainingDataset, default_workers, make_loader, training_images
from reid_eval.training.labels import DEFAULT_TAU, foreground_labels, mask_location_means
from reid_eval.training.losses import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    TripletStats,
    batch_fpr_distances,
    batch_hard_triplet_loss,
    foreground_loss,
)
from reid_eval.training.sampler import EpochBatchSampler, PKSampler
from reid_eval.training.schedule import LR_SCHEDULES, LRSchedule
from reid_eval.training.trainer import (
    BEST_NAME,
    CHECKPOINT_NAME,
    FINAL_NAME,
    LOG_NAME,
    TrainConfig,
    TrainResult,
    train,
    training_step,
)

__all__ = [
    "Augmentation",
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "DEFAULT_ALPHA",
    "DEFAULT_MARGIN",
    "DEFAULT_TAU",
    "EpochBatchSampler",
    "FINAL_NAME",
    "LOG_NAME",
    "LRSchedule",
    "LR_SCHEDULES",
    "PKSampler",
    "TrainConfig",
    "TrainResult",
    "TrainingDataset",
    "TripletStats",
    "batch_fpr_distances",
    "batch_hard_triplet_loss",
    "default_workers",
    "foreground_labels",
    "foreground_loss",
    "make_loader",
    "mask_location_means",
    "train",
    "training_images",
    "training_step",
]
