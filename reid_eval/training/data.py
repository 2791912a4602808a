"""Training images and their person masks.

Images go through the extraction preprocessing
(:mod:`reid_eval.features.preprocess`, ``fixed`` resize to the model's input
size, ImageNet normalisation), so the network is trained on exactly what it
later sees at extraction time. Masks are resized to the same size.

Masks live in a folder that mirrors the dataset: the mask of ``<root>/<path>``
is ``<masks>/<path>``, or the same path with a ``.png`` suffix (a parser's
output for ``0002_c1s1_000451_03.jpg`` is usually ``0002_c1s1_000451_03.png``).
A mask is an 8-bit image whose value / 255 is the person probability (0/255
masks, soft masks); a mask whose maximum is 1 is read as a 0/1 mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reid_eval.datasets import get_spec, load_manifest
from reid_eval.errors import ReidEvalError
from reid_eval.features.preprocess import Preprocessing, load_image_array, to_tensor_batch
from reid_eval.model import ModelConfig


@dataclass(frozen=True)
class TrainingImages:
    """The train split of a dataset: ``paths`` relative (posix) to ``root``, ``pids`` int64 [n],
    ``mask_paths`` absolute mask files (None when training without masks)."""

    root: Path
    paths: list[str]
    pids: np.ndarray
    mask_paths: list[Path] | None


def mask_path_for(masks_dir: Path, rel_path: str) -> Path | None:
    """The mask file of image ``rel_path`` under ``masks_dir``, or None when there is none."""
    exact = masks_dir / rel_path
    if exact.is_file():
        return exact
    png = exact.with_suffix(".png")
    if png.is_file():
        return png
    return None


def training_images(dataset: str, root: Path, masks_dir: Path | None, need_masks: bool) -> TrainingImages:
    """The train split of ``dataset`` at ``root`` (junk pids dropped), with masks when ``need_masks``.

    ``masks_dir`` None means ``<root>/masks``. Raises ReidEvalError naming the
    folder when the split is empty or when masks are needed and any is missing.
    """
    root = Path(root)
    table = load_manifest(dataset, root)
    junk = get_spec(dataset).junk_pids
    train = table[(table["split"] == "train") & ~table["pid"].isin(list(junk))]
    if train.empty:
        raise ReidEvalError(f"{dataset} at {root} has no training images (the train split is empty or missing)")
    paths = [str(p) for p in train["path"]]
    pids = train["pid"].to_numpy(np.int64)
    mask_paths = None
    if need_masks:
        mdir = Path(masks_dir) if masks_dir is not None else root / "masks"
        if not mdir.is_dir():
            raise ReidEvalError(f"mask folder {mdir} does not exist; pass --masks DIR (a folder mirroring the "
                                "dataset's paths) or --no-foreground-loss")
        found = [mask_path_for(mdir, p) for p in paths]
        missing = [p for p, m in zip(paths, found) if m is None]
        if missing:
            raise ReidEvalError(f"{len(missing)} of {len(paths)} training images have no mask under {mdir} "
                                f"(first: {mdir / missing[0]}); pass --masks DIR or --no-foreground-loss")
        mask_paths = [m for m in found if m is not None]
    return TrainingImages(root=root, paths=paths, pids=pids, mask_paths=mask_paths)


def load_mask_array(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A mask resized (bilinear) to ``size`` = (height, width): float32 [H, W] in [0, 1]."""
    try:
        with Image.open(path) as img:
            img = img.convert("L")
            arr = np.asarray(img)
            if arr.max(initial=0) == 1:
                img = Image.fromarray((arr * 255).astype(np.uint8))
            if (img.height, img.width) != tuple(size):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as exc:
        raise ReidEvalError(f"cannot read mask {path}: {' '.join(str(exc).split())}") from exc


class BatchLoader:
    """Loads batches of training images (and masks) as tensors.

    Decoded, resized uint8 images and masks are kept in memory after their
    first use when ``cache`` is set (the synthetic set and small datasets fit
    easily; Market-1501 at 384×128 takes about 2 GB).
    """

    def __init__(self, images: TrainingImages, config: ModelConfig, cache: bool = True):
        self.images = images
        self.prep = Preprocessing.for_model(config, "fixed")
        self.size = tuple(config.input_size)
        self.cache = cache
        self._img: dict[int, np.ndarray] = {}
        self._mask: dict[int, np.ndarray] = {}

    def _image(self, i: int) -> np.ndarray:
        arr = self._img.get(i)
        if arr is None:
            arr = load_image_array(self.images.root / self.images.paths[i], self.prep)
            if self.cache:
                self._img[i] = arr
        return arr

    def _mask_of(self, i: int) -> np.ndarray:
        arr = self._mask.get(i)
        if arr is None:
            assert self.images.mask_paths is not None
            arr = load_mask_array(self.images.mask_paths[i], self.size)
            if self.cache:
                self._mask[i] = arr
        return arr

    def batch(self, indices: list[int], flip: np.ndarray | None = None, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Images float32 [B, 3, H, W] (normalised), masks float32 [B, 1, H, W] or None, pids int64 [B].

        ``flip`` bool [B]: mirror those images (and masks) left-right.
        """
        imgs = [self._image(i) for i in indices]
        masks = [self._mask_of(i) for i in indices] if self.images.mask_paths is not None else None
        if flip is not None:
            imgs = [a[:, ::-1] if f else a for a, f in zip(imgs, flip)]
            if masks is not None:
                masks = [m[:, ::-1] if f else m for m, f in zip(masks, flip)]
        x = to_tensor_batch([np.ascontiguousarray(a) for a in imgs], self.prep, device)
        m = None
        if masks is not None:
            m = torch.from_numpy(np.stack([np.ascontiguousarray(a) for a in masks]))[:, None].to(device)
        pids = torch.from_numpy(self.images.pids[indices]).to(device)
        return x, m, pids
