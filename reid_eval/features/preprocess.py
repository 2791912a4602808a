"""Image loading and preprocessing for extraction.

Every image becomes an RGB uint8 array resized with the PIL filter the model
was trained with (``ModelConfig.interpolation``, recorded in the checkpoint and
in the cache key), then a float tensor normalised with the ImageNet mean and
std. The authors' code (both fast-reid repositories) resizes with torchvision's
``T.Resize(..., interpolation=3)``, i.e. PIL bicubic, so a model converted
from fast-reid uses "bicubic"; reid-eval's own checkpoints default to
"bilinear" (torchvision's and torchreid's default), and a checkpoint can say
otherwise (``reid-eval checkpoint init|convert --interpolation``).

Resize modes:
  ``fixed``       – every image to the model's (height, width), 384×128 by default.
  ``keep-aspect`` – width = the model's width, height = the image's aspect ×
                    width, rounded to a multiple of the backbone's output stride
                    (16) and at least the smallest input whose map fits the
                    smallest pyramid kernel. A half-body crop thus gives a shorter
                    map and fewer pyramid locations (the paper's alignment-free
                    setting). Rounding to the stride makes equal-size batches.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from reid_eval.features.images import load_rgb
from reid_eval.model import IMAGENET_MEAN, IMAGENET_STD, ModelConfig

RESIZE_MODES: tuple[str, ...] = ("fixed", "keep-aspect")
_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
#: keep-aspect never makes an image taller than this many model heights (a guard against slivers).
MAX_ASPECT_FACTOR = 4


@dataclass(frozen=True)
class Preprocessing:
    """Preprocessing settings stored in the cache key.

    resize: "fixed" | "keep-aspect"; size: model (height, width) in pixels;
    stride: rounding of keep-aspect heights; min_height: smallest keep-aspect height;
    interpolation: PIL resize filter, "bilinear" or "bicubic" (from the model config);
    orientation: "exif", each image turned upright by its EXIF Orientation tag
    before anything else (:func:`reid_eval.features.images.load_rgb`). Part of
    the key because caches made before it held phone photos sideways.
    """

    resize: str
    size: tuple[int, int]
    stride: int
    min_height: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    orientation: str = "exif"

    @classmethod
    def for_model(cls, config: ModelConfig, resize: str = "fixed") -> "Preprocessing":
        if resize not in RESIZE_MODES:
            raise ValueError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        return cls(
            resize=resize,
            size=tuple(config.input_size),
            stride=config.output_stride,
            min_height=config.min_input_height,
            interpolation=config.interpolation,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) in pixels that an image of ``height``×``width`` is resized to."""
        H, W = self.size
        if self.resize == "fixed":
            return H, W
        h = height * W / max(width, 1)
        h = int(round(h / self.stride)) * self.stride
        return max(self.min_height, min(h, MAX_ASPECT_FACTOR * H)), W


def load_image_array(path: str | os.PathLike, prep: Preprocessing) -> np.ndarray:
    """Read, convert and resize one image: uint8 [H', W', 3] with (H', W') = ``prep.target_size``."""
    img = load_rgb(path)
    h, w = prep.target_size(img.height, img.width)
    if (img.height, img.width) != (h, w):
        img = img.resize((w, h), _PIL_FILTERS[prep.interpolation])
    return np.asarray(img, dtype=np.uint8)


def to_tensor_batch(arrays: list[np.ndarray], prep: Preprocessing, device: torch.device | str = "cpu") -> torch.Tensor:
    """Stack equal-size uint8 [H, W, 3] arrays into a normalised float32 [B, 3, H, W] tensor on ``device``."""
    batch = torch.from_numpy(np.stack(arrays)).to(device, non_blocking=True)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(prep.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=batch.device).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std).contiguous()
