"""The training DataLoader: batches reproducible from the seed whatever the
number of worker processes or ranks, and the augmentations' exact effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
from reid_eval.model import IMAGENET_MEAN, ModelConfig
from reid_eval.training import Augmentation, EpochBatchSampler, PKSampler, TrainingDataset, make_loader, training_images

MODEL = ModelConfig(backbone="resnet18", input_size=(64, 32), pyramid_kernels=(1, 2), pyramid_stride=1)
MEAN_PIXEL = np.round(np.asarray(IMAGENET_MEAN) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loader") / "synthetic_occluded"
    generate_synthetic_dataset(root, SyntheticConfig(seed=2, num_train_ids=8, num_test_ids=1, train_images_per_id=3,
                                                     gallery_images_per_id=1, query_images_per_id=1,
                                                     height=64, width=32))
    return root


def _epochs(loader, sampler: EpochBatchSampler, epochs: int) -> list[list[tuple[torch.Tensor, ...]]]:
    out = []
    for e in range(epochs):
        sampler.set_epoch(e)
        out.append([tuple(t.clone() for t in batch) for batch in loader])
    return out


def test_worker_counts_0_and_2_give_identical_batches_with_augmentation(data_root):
    images = training_images("synthetic_occluded", data_root, None, need_masks=True)
    data = TrainingDataset(images, MODEL, Augmentation(flip=True, pad_crop=6, random_erasing=0.7))
    runs = {}
    for workers in (0, 2):
        sampler = EpochBatchSampler(PKSampler(images.pids, 2, 2, seed=5))
        runs[workers] = _epochs(make_loader(data, sampler, workers), sampler, 2)
    assert len(runs[0][0]) == 4
    for e in range(2):
        for (x0, m0, p0), (x2, m2, p2) in zip(runs[0][e], runs[2][e], strict=True):
            assert x0.shape == (4, 3, 64, 32) and m0.shape == (4, 1, 64, 32) and p0.dtype == torch.int64
            assert torch.equal(x0, x2) and torch.equal(m0, m2) and torch.equal(p0, p2)
    # epochs differ from each other (another permutation and other augmentations)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(runs[0][0], runs[0][1]))


def test_ranks_split_one_epoch_plan_into_distinct_batches():
    pids = np.repeat(np.arange(11), 3)
    pk = PKSampler(pids, 2, 2, seed=3)
    plan = [[(i, None) for i in b] for b in pk.epoch(4)]
    assert len(plan) == 5
    shares = []
    for rank in range(2):
        s = EpochBatchSampler(pk, rank, 2)
        s.set_epoch(4)
        shares.append([[i for i, _ in b] for b in s])
        assert len(shares[-1]) == len(s) == 2
    # rank r takes plan batches r, r+2: all distinct, the odd one out (batch 4) dropped so ranks step together
    assert shares[0] == [[i for i, _ in plan[0]], [i for i, _ in plan[2]]]
    assert shares[1] == [[i for i, _ in plan[1]], [i for i, _ in plan[3]]]
    single = EpochBatchSampler(pk)
    single.set_epoch(4)
    seeds = [[s for _, s in b] for b in single]
    assert len({s for b in seeds for s in b}) == 4 * 5  # each image of the epoch its own augmentation seed
    with pytest.raises(ValueError, match="fewer than the 6 processes"):
        EpochBatchSampler(pk, 0, 6)


def _image(h: int = 20, w: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    image[image == MEAN_PIXEL] = 7  # no pixel equals the erasing colour by chance
    mask = (rng.random((h, w)) < 0.5).astype(np.float32)
    return image, mask


def test_augmentation_off_by_default_and_flip_moves_image_and_mask_together():
    image, mask = _image()
    out, m = Augmentation().apply(image, mask, seed=1)
    assert np.array_equal(out, image) and np.array_equal(m, mask)
    flipped = 0
    for seed in range(20):
        out, m = Augmentation(flip=True).apply(image, mask, seed)
        same = np.array_equal(out, image) and np.array_equal(m, mask)
        mirrored = np.array_equal(out, image[:, ::-1]) and np.array_equal(m, mask[:, ::-1])
        assert same != mirrored
        flipped += mirrored
    assert 0 < flipped < 20


def test_pad_and_crop_takes_one_window_of_the_padded_image_for_image_and_mask():
    image, mask = _image()
    pad = 4
    padded, padded_mask = np.pad(image, ((pad, pad), (pad, pad), (0, 0))), np.pad(mask, pad)
    offsets = set()
    for seed in range(30):
        out, m = Augmentation(pad_crop=pad).apply(image, mask, seed)
        assert out.shape == image.shape and m.shape == mask.shape
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if np.array_equal(out, padded[dy:dy + 20, dx:dx + 12])]
        assert len(hits) == 1
        dy, dx = hits[0]
        assert np.array_equal(m, padded_mask[dy:dy + 20, dx:dx + 12])
        offsets.add(hits[0])
    assert len(offsets) > 10


def test_random_erasing_fills_one_rectangle_with_the_mean_colour_and_clears_the_mask_there():
    image, mask = _image(40, 20)
    erased = 0
    for seed in range(40):
        out, m = Augmentation(random_erasing=0.5).apply(image, mask, seed)
        changed = np.any(out != image, axis=2)
        if not changed.any():
            assert np.array_equal(m, mask)
            continue
        erased += 1
        ys, xs = np.nonzero(changed)
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        assert changed[box].all()  # a full rectangle
        area = changed.sum() / changed.size
        assert 0.02 * 0.5 <= area <= 0.4 * 1.5  # 2-40 % of the image, up to rounding
        assert (out[box] == MEAN_PIXEL).all()
        assert (m[box] == 0).all() and np.array_equal(m[~changed], mask[~changed])
    assert 8 < erased < 32  # probability 0.5
    with pytest.raises(ValueError, match="--random-erasing"):
        Augmentation(random_erasing=1.5)
    with pytest.raises(ValueError, match="--pad-crop"):
        Augmentation(pad_crop=-1)
