"""model stage: the FPR network (fully convolutional ResNet, pyramid pooling,
foreground probability generator) and reid-eval checkpoints."""

from reid_eval.model.checkpoint import (
    CONVERT_SOURCES,
    convert_checkpoint,
    file_sha256,
    infer_backbone,
    load_checkpoint,
    save_checkpoint,
)
from reid_eval.model.network import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESNET_NAMES,
    FPRNet,
    ModelConfig,
    PyramidOutput,
    build_model,
    pyramid_grid,
    pyramid_pool,
)

__all__ = [
    "CONVERT_SOURCES",
    "FPRNet",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelConfig",
    "PyramidOutput",
    "RESNET_NAMES",
    "build_model",
    "convert_checkpoint",
    "file_sha256",
    "infer_backbone",
    "load_checkpoint",
    "pyramid_grid",
    "pyramid_pool",
    "save_checkpoint",
]
