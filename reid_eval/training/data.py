"""Training images and their person masks, loaded by a ``torch.utils.data.DataLoader``.

Images go through the extraction preprocessing
(:mod:`reid_eval.features.preprocess`, ``fixed`` resize to the model's input
size, ImageNet normalisation), so the network is trained on exactly what it
later sees at extraction time. Masks are resized to the same size. Decoding,
resizing, augmentation and normalisation run in the loader's worker
processes (``workers`` > 0), off the training loop.

Augmentation is off by default (the paper uses none). On request, in this
order: a horizontal flip (probability 0.5); pad-and-crop (pad ``pad_crop``
pixels of black on every side, crop a random window of the input size back,
as in Luo et al., "Bag of Tricks and A Strong Baseline for Deep Person
Re-identification", CVPRW 2019); random erasing (Zhong et al., "Random Erasing
Data Augmentation", AAAI 2020: with probability ``random_erasing`` a rectangle
of 2–40 % of the image area and aspect ratio 0.3–3.3 is filled with the
ImageNet mean colour). The mask follows the image; an erased rectangle
becomes background in the mask, since it no longer shows the person. Each
image's augmentation is drawn from its own seed (see
:class:`reid_eval.training.sampler.EpochBatchSampler`), so it does not depend
on which worker loads it.

Masks live in a folder that mirrors the dataset: the mask of ``<root>/<path>``
is ``<masks>/<path>``, or the same path with a ``.png`` suffix (a parser's
output for ``0002_c1s1_000451_03.jpg`` is usually ``0002_c1s1_000451_03.png``).
A mask is an 8-bit image whose value / 255 is the person probability (0/255
masks, soft masks); a mask whose maximum is 1 is read as a 0/1 mask.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reid_eval.datasets import get_spec, load_manifest
from reid_eval.errors import ReidEvalError
from reid_eval.features.preprocess import Preprocessing, load_image_array, to_tensor_batch
from reid_eval.model import IMAGENET_MEAN, ModelConfig
from reid_eval.training.sampler import EpochBatchSampler, Item


@dataclass(frozen=True)
class TrainingImages:
    """The train split of a dataset: ``paths`` relative (posix) to ``root``, ``pids`` int64 [n],
    ``mask_paths`` absolute mask files (None when training without masks)."""

    root: Path
    paths: list[str]
    pids: np.ndarray
    mask_paths: list[Path] | None


def mask_file(masks_dir: Path, rel_path: str) -> Path:
    """Where `reid-eval masks` writes the mask of image ``rel_path``: same relative path, ``.png`` suffix."""
    return (Path(masks_dir) / rel_path).with_suffix(".png")


def mask_path_for(masks_dir: Path, rel_path: str) -> Path | None:
    """The mask file of image ``rel_path`` under ``masks_dir`` (its own name, or the ``.png`` one), or None."""
    exact = masks_dir / rel_path
    if exact.is_file():
        return exact
    png = mask_file(masks_dir, rel_path)
    return png if png.is_file() else None


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


@dataclass(frozen=True)
class Augmentation:
    """Random augmentation of training images (all off by default; see the module docstring).

    ``flip``: mirror half of the images; ``pad_crop``: padding in pixels
    before the random crop (0 = off); ``random_erasing``: probability of
    erasing a rectangle (0 = off).
    """

    flip: bool = False
    pad_crop: int = 0
    random_erasing: float = 0.0

    def __post_init__(self) -> None:
        if self.pad_crop < 0:
            raise ValueError(f"--pad-crop must be a non-negative number of pixels, got {self.pad_crop}")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"--random-erasing must be a probability in [0, 1], got {self.random_erasing}")

    def apply(self, image: np.ndarray, mask: np.ndarray | None, seed: int
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Augment uint8 ``image`` [H, W, 3] and float32 ``mask`` [H, W] (or None) with the draws of ``seed``."""
        rng = np.random.default_rng(seed)
        h, w = image.shape[:2]
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        if self.pad_crop > 0:
            p = self.pad_crop
            dy, dx = (int(v) for v in rng.integers(0, 2 * p + 1, size=2))
            image = np.pad(image, ((p, p), (p, p), (0, 0)))[dy:dy + h, dx:dx + w]
            mask = None if mask is None else np.pad(mask, p)[dy:dy + h, dx:dx + w]
        if self.random_erasing > 0 and rng.random() < self.random_erasing:
            image = np.array(image)
            mask = None if mask is None else np.array(mask)
            for _ in range(10):  # torchvision's number of attempts at a rectangle that fits
                area = rng.uniform(0.02, 0.4) * h * w
                aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
                eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if 0 < eh < h and 0 < ew < w:
                    y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                    image[y0:y0 + eh, x0:x0 + ew] = np.round(np.asarray(IMAGENET_MEAN) * 255).astype(np.uint8)
                    if mask is not None:
                        mask[y0:y0 + eh, x0:x0 + ew] = 0.0
                    break
        return np.ascontiguousarray(image), None if mask is None else np.ascontiguousarray(mask)


class TrainingDataset(torch.utils.data.Dataset):
    """Map-style dataset over :class:`TrainingImages`; an item is ``(index, augmentation seed)``.

    ``dataset[(i, seed)]`` is (uint8 image [H, W, 3] at the model's input
    size, float32 mask [H, W] in [0, 1] or None, pid), augmented with
    ``seed``; :meth:`collate` turns a list of them into a batch.
    """

    def __init__(self, images: TrainingImages, config: ModelConfig, augmentation: Augmentation | None = None):
        self.images = images
        self.prep = Preprocessing.for_model(config, "fixed")
        self.size = tuple(config.input_size)
        self.augmentation = augmentation or Augmentation()

    def __len__(self) -> int:
        return len(self.images.paths)

    def __getitem__(self, item: Item) -> tuple[np.ndarray, np.ndarray | None, int]:
        index, seed = item
        image = load_image_array(self.images.root / self.images.paths[index], self.prep)
        mask = None
        if self.images.mask_paths is not None:
            mask = load_mask_array(self.images.mask_paths[index], self.size)
        image, mask = self.augmentation.apply(image, mask, seed)
        return image, mask, int(self.images.pids[index])

    def collate(self, samples: list[tuple[np.ndarray, np.ndarray | None, int]]
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Images float32 [B, 3, H, W] (normalised), masks float32 [B, 1, H, W] or None, pids int64 [B]."""
        images = to_tensor_batch([s[0] for s in samples], self.prep, "cpu")
        masks = None
        if samples[0][1] is not None:
            masks = torch.from_numpy(np.stack([s[1] for s in samples]))[:, None]
        pids = torch.tensor([s[2] for s in samples], dtype=torch.int64)
        return images, masks, pids


def default_workers(processes_per_machine: int = 1) -> int:
    """Loader worker processes per training process: the CPUs this process may use,
    shared by the training processes of the machine, less one for the training loop; at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus // max(1, processes_per_machine) - 1))


def make_loader(dataset: TrainingDataset, batch_sampler: EpochBatchSampler, workers: int,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader yielding ``dataset.collate`` batches in ``batch_sampler``'s order.

    ``workers`` 0 loads in the calling process; more start that many worker
    processes, kept alive across epochs (call ``batch_sampler.set_epoch``
    before each epoch). The batches do not depend on ``workers``.
    """
    if workers < 0:
        raise ValueError(f"--workers must be non-negative, got {workers}")
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=dataset.collate,
        pin_memory=pin_memory, persistent_workers=workers > 0, prefetch_factor=2 if workers > 0 else None)
