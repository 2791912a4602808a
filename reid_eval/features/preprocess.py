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
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from reid_eval.errors import ReidEvalError
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
    interpolation: PIL resize filter, "bilinear" or "bicubic" (from the model config).
    """

    resize: str
    size: tuple[int, int]
    stride: int
    min_height: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

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


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image fully decoded as 8-bit RGB.

    Grayscale, palette (transparency included), RGBA/LA (alpha dropped), CMYK
    and 16-bit / 32-bit integer or float images are converted; 16-bit data is
    scaled by its full range (v / 65535 · 255). Raises ReidEvalError naming the
    file when it cannot be read or decoded (truncated, not an image, missing).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's palette-transparency note
            with Image.open(path) as img:
                img.load()
                return _to_rgb(img)
    except ReidEvalError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ReidEvalError(f"cannot read image {path}: {reason}") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            scale = 65535.0
        elif mode == "I":
            scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
        else:  # float images: assume [0, 1] when they look like it, else [0, 255]
            scale = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(np.rint(arr / scale * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


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
