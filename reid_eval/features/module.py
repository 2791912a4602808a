"""Extraction with any network: a ``torch.nn.Module`` reid-eval has never heard of.

The module maps a batch of normalised images [B, 3, H, W] to a feature map
[B, C, h, w]; optionally it also gives a foreground probability map and a
global feature, by returning a tuple ``(map, foreground, global)`` (entries
may be None) or a dict with keys ``"map"``, ``"foreground"``, ``"global"``:

- ``foreground``: [B, h, w] or [B, 1, h, w] probabilities in [0, 1] at the
  map's resolution. Each pyramid location gets the mean probability over its
  window (the pooling training uses for mask labels). Without one, every
  location weighs 1: FPR then equals DSR, and the cache records that no
  trained foreground generator exists (``match --metric fpr`` refuses it).
- ``global``: [B, D] (any D), the feature of the Baseline rows; without one,
  the map's average.

The pyramid, the cache and everything after it are reid-eval's own; the
cache is keyed by ``identity`` (a string naming the weights and version, in
place of a checkpoint's hash) and the preprocessing, so two identities never
share a cache and one identity always finds its own.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reid_eval.errors import ReidEvalError
from reid_eval.features.extract import FeatureNetwork, extract_network
from reid_eval.features.preprocess import RESIZE_MODES, Preprocessing
from reid_eval.model import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, PyramidOutput, pyramid_pool

#: ``checkpoint_file`` of a cache made from a module: this prefix and the identity.
MODULE_SOURCE_PREFIX = "module:"


class PyramidAdapter(nn.Module):
    """Wraps a user module into reid-eval's network interface: images -> :class:`PyramidOutput`."""

    def __init__(self, module: nn.Module, pyramid_kernels: Sequence[int], pyramid_stride: int):
        super().__init__()
        self.module = module
        self.kernels = tuple(int(k) for k in pyramid_kernels)
        self.stride = int(pyramid_stride)

    def forward(self, images: torch.Tensor) -> PyramidOutput:
        fmap, fg_map, global_features = _unpack(self.module(images))
        if fmap.dim() != 4 or fmap.shape[0] != images.shape[0]:
            raise ReidEvalError(f"the module's feature map must be [B, C, h, w] for B={images.shape[0]} images, got {tuple(fmap.shape)}")
        local, grid = pyramid_pool(fmap.float(), self.kernels, self.stride, "max")
        if fg_map is None:
            foreground = local.new_ones(local.shape[:2])
        else:
            fg_map = fg_map.float().reshape(fmap.shape[0], 1, *fg_map.shape[-2:])
            if tuple(fg_map.shape[-2:]) != tuple(fmap.shape[-2:]):
                raise ReidEvalError(f"the module's foreground map is {tuple(fg_map.shape[-2:])}, its feature map {tuple(fmap.shape[-2:])}")
            foreground = pyramid_pool(fg_map, self.kernels, self.stride, "avg")[0][..., 0]
        if global_features is None:
            global_features = fmap.float().mean(dim=(2, 3))
        elif global_features.dim() != 2 or global_features.shape[0] != fmap.shape[0]:
            raise ReidEvalError(f"the module's global feature must be [B, D], got {tuple(global_features.shape)}")
        return PyramidOutput(local=local, foreground=foreground, foreground_logits=None,
                             global_features=global_features.float(), grid=grid,
                             map_size=(int(fmap.shape[2]), int(fmap.shape[3])))


def _unpack(out: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    if isinstance(out, torch.Tensor):
        return out, None, None
    if isinstance(out, dict):
        unknown = sorted(set(out) - {"map", "foreground", "global"})
        if unknown or "map" not in out:
            raise ReidEvalError(f"the module's dict output needs 'map' (and optionally 'foreground', 'global'), got keys {sorted(out)}")
        return out["map"], out.get("foreground"), out.get("global")
    if isinstance(out, (tuple, list)) and 1 <= len(out) <= 3 and isinstance(out[0], torch.Tensor):
        parts = list(out) + [None] * (3 - len(out))
        return parts[0], parts[1], parts[2]
    raise ReidEvalError(f"the module must return a [B, C, h, w] tensor, a (map, foreground, global) tuple or a dict; got {type(out).__name__}")


@dataclass(frozen=True)
class ModuleSettings:
    """How images reach the module and how its map is pooled.

    input_size: (height, width) in pixels; mean / std: the normalisation (RGB,
    images in [0, 1]); interpolation: ``bilinear`` or ``bicubic``; resize:
    ``fixed`` or ``keep-aspect``; output_stride: pixels per map cell (rounds
    keep-aspect heights); pyramid_kernels / pyramid_stride: the pyramid's max
    pooling; name: the model in words for tables (default: the identity).
    """

    input_size: tuple[int, int] = (256, 128)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    resize: str = "fixed"
    output_stride: int = 16
    pyramid_kernels: tuple[int, ...] = (2, 4, 6, 8)
    pyramid_stride: int = 2
    name: str | None = None


def module_network(module: nn.Module, identity: str, settings: ModuleSettings | None = None) -> FeatureNetwork:
    """A :class:`FeatureNetwork` that runs ``module`` (see the module docstring).

    One trial forward on a blank image of ``settings.input_size`` finds d, the
    global dimension and whether the module gives a foreground map.
    """
    st = settings or ModuleSettings()
    if not identity or not identity.strip():
        raise ReidEvalError("identity must name the network (weights and version): it keys the cache in place of a checkpoint hash")
    if st.resize not in RESIZE_MODES:
        raise ReidEvalError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {st.resize!r}")
    if st.interpolation not in INTERPOLATIONS:
        raise ReidEvalError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {st.interpolation!r}")
    height, width = (int(v) for v in st.input_size)
    kernels = tuple(int(k) for k in st.pyramid_kernels)
    prep = Preprocessing(resize=st.resize, size=(height, width), stride=int(st.output_stride),
                         min_height=int(st.output_stride) * min(kernels), mean=tuple(float(v) for v in st.mean),
                         std=tuple(float(v) for v in st.std), interpolation=st.interpolation)
    adapter = PyramidAdapter(module, kernels, st.pyramid_stride).eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    with torch.inference_mode():
        fmap, fg_map, global_features = _unpack(module.eval()(torch.zeros(1, 3, height, width, device=device)))
    settings_record = {
        "module": {"identity": identity, "pyramid_kernels": list(kernels), "pyramid_stride": int(st.pyramid_stride),
                   "output_stride": int(st.output_stride)},
        "preprocessing": prep.to_dict(),
    }
    return FeatureNetwork(
        model=adapter,
        prep=prep,
        sha256=hashlib.sha256((MODULE_SOURCE_PREFIX + identity).encode()).hexdigest(),
        source=MODULE_SOURCE_PREFIX + identity,
        name=st.name or identity,
        settings=settings_record,
        feature_dim=int(fmap.shape[1]),
        global_dim=int(global_features.shape[1]) if global_features is not None else int(fmap.shape[1]),
        num_levels=len(kernels),
        foreground_trained=fg_map is not None,
    )


def extract_with_module(
    dataset: str,
    root: str | os.PathLike,
    module: nn.Module,
    cache_dir: str | os.PathLike,
    *,
    identity: str,
    settings: ModuleSettings | None = None,
    **options: Any,
) -> Path:
    """Fill ``dataset``'s feature cache with ``module``'s features; returns the cache file.

    ``settings``: :class:`ModuleSettings` (default: 256×128, ImageNet
    normalisation, bilinear, fixed resize, the paper's pyramid). ``options``
    are :func:`~reid_eval.features.extract.extract_network`'s (``splits``,
    ``device``, ``batch_size``, ``skip_bad``, ``allow_mismatch``, ``progress``,
    ``manifest``). `reid-eval match`, `report` and `compare` then work on the
    cache as on any other.
    """
    return extract_network(dataset, root, module_network(module, identity, settings), cache_dir, **options)
