"""Training losses, labels and sampler against brute-force computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_eval.matching import fpr_distance_reference
from reid_eval.model import ModelConfig, build_model
from reid_eval.training import (
    PKSampler,
    TrainConfig,
    batch_fpr_distances,
    batch_hard_triplet_loss,
    foreground_labels,
    foreground_loss,
    mask_location_means,
    training_step,
)




def _pk_pids(p: int, k: int) -> torch.Tensor:
    return torch.arange(p).repeat_interleave(k) * 7 + 3  # arbitrary pid values


def test_batch_hard_triplet_matches_a_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    pids = _pk_pids(4, 3)
    dist = torch.rand(12, 12, generator=g, dtype=torch.float64)  # not symmetric, like FPR
    margin = 0.15
    loss, stats = batch_hard_triplet_loss(dist, pids, margin)
    terms, pos, neg = [], [], []
    for a in range(12):
        hp = max(float(dist[a, j]) for j in range(12) if j != a and pids[j] == pids[a])
        hn = min(float(dist[a, j]) for j in range(12) if pids[j] != pids[a])
        terms.append(max(0.0, margin + hp - hn))
        pos.append(hp)
        neg.append(hn)
    assert float(loss) == pytest.approx(np.mean(terms), abs=1e-12)
    assert stats.hardest_positive == pytest.approx(np.mean(pos), abs=1e-12)
    assert stats.hardest_negative == pytest.approx(np.mean(neg), abs=1e-12)
    assert stats.active == pytest.approx(np.mean([t > 0 for t in terms]))


def test_triplet_skips_anchors_without_positive():
    pids = torch.tensor([1, 1, 2, 3])
    dist = torch.tensor([[0.0, 0.2, 0.5, 0.9], [0.3, 0.0, 0.25, 0.8], [0.4, 0.4, 0.0, 0.1], [0.1, 0.1, 0.1, 0.0]])
    loss, _ = batch_hard_triplet_loss(dist, pids, margin=0.1)
    # anchors 0 and 1 only: max(0, .1+.2-.5)=0 and max(0, .1+.3-.25)=.15
    assert float(loss) == pytest.approx(0.075)
    with pytest.raises(ValueError, match="positive"):
        batch_hard_triplet_loss(dist[:1, :1], pids[:1])


def test_batch_fpr_distances_equal_the_float64_reference_per_pair():
    g = torch.Generator().manual_seed(1)
    local = torch.randn(5, 7, 16, generator=g)
    fg = torch.rand(5, 7, generator=g) + 0.05
    d_fpr = batch_fpr_distances(local, fg, weighted=True).double()
    d_dsr = batch_fpr_distances(local, fg, weighted=False).double()
    for i in range(5):
        for j in range(5):
            X, Y = local[i].double().numpy(), local[j].double().numpy()  # [N, d], [M, d] rows
            ref_fpr = fpr_distance_reference(X, Y, h=fg[i].double().numpy(), beta=0.01)
            ref_dsr = fpr_distance_reference(X, Y, h=None, beta=0.01)
            assert float(d_fpr[i, j]) == pytest.approx(ref_fpr, abs=2e-5)
            assert float(d_dsr[i, j]) == pytest.approx(ref_dsr, abs=2e-5)


def test_foreground_loss_is_eq9_summed_over_locations():
    logits = torch.tensor([[[0.0, 2.0], [1.0, -1.0], [0.5, 0.5]], [[3.0, 0.0], [0.0, 0.0], [-2.0, 1.0]]])
    labels = torch.tensor([[1, 0, 1], [0, 1, 1]])
    p = torch.softmax(logits.double(), -1)
    per_image = [-sum(np.log(float(p[b, n, labels[b, n]])) for n in range(3)) for b in range(2)]
    assert float(foreground_loss(logits, labels)) == pytest.approx(np.mean(per_image), rel=1e-6)
    valid = torch.tensor([[True, True, False], [True, True, True]])
    per_image[0] += np.log(float(p[0, 2, 1]))
    assert float(foreground_loss(logits, labels, valid)) == pytest.approx(np.mean(per_image), rel=1e-6)


def test_labels_from_a_hand_made_mask():
    # 64×32 input -> 4×2 map (16 px per cell). Rows of cells: full, 3/8 (96 of 256 px), 1/4, empty.
    mask = torch.zeros(1, 1, 64, 32)
    mask[:, :, 0:16] = 1.0
    mask[:, :, 16:22] = 1.0  # 6 of 16 pixel rows -> 0.375
    mask[:, :, 32:36] = 1.0  # 4 of 16 rows -> 0.25
    means = mask_location_means(mask, (4, 2), kernels=(1, 2), stride=1)
    cells = [1.0, 1.0, 0.375, 0.375, 0.25, 0.25, 0.0, 0.0]  # kernel 1, row-major
    pairs = [(1.0 + 0.375) / 2, (0.375 + 0.25) / 2, 0.125]  # kernel 2: 3×1 windows
    np.testing.assert_allclose(means[0].numpy(), cells + pairs, atol=1e-6)
    labels = foreground_labels(mask, (4, 2), kernels=(1, 2), stride=1, tau=0.35)
    assert labels[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0]
    # Eq. 8 is strict: a mean equal to τ is background
    assert foreground_labels(mask, (4, 2), (1,), 1, tau=0.375)[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("kernels,stride", [((2, 4, 6, 8), 2), ((1, 2, 4), 1), ((3,), 2)])
def test_label_means_equal_pixel_patch_means_in_pyramid_order(kernels, stride):
    rng = np.random.default_rng(5)
    h, w, s = 12, 8, 16  # map cells; 16 pixels per cell
    mask = (rng.random((2, 1, h * s, w * s)) < rng.random((2, 1, 1, 1))).astype(np.float32)
    got = mask_location_means(torch.from_numpy(mask), (h, w), kernels, stride).numpy()
    want = []
    for k in kernels:
        if k > h or k > w:
            continue
        for i in range(0, h - k + 1, stride):
            for j in range(0, w - k + 1, stride):
                want.append(mask[:, 0, i * s:(i + k) * s, j * s:(j + k) * s].mean(axis=(1, 2)))
    np.testing.assert_allclose(got, np.stack(want, axis=1), atol=1e-5)


def test_pk_sampler_batches():
    pids = np.array([5] * 6 + [6] * 2 + [7] * 3 + [8] * 1 + [9] * 4 + [10] * 5)
    sampler = PKSampler(pids, p=2, k=3, seed=1)
    assert 8 not in sampler.identities and len(sampler) == 2  # 5 usable ids // 2
    batches = list(sampler.epoch(0))
    assert batches == list(sampler.epoch(0)) and batches != list(sampler.epoch(1))
    seen = []
    for batch in batches:
        assert len(batch) == 6
        ids = pids[batch].reshape(2, 3)
        assert (ids == ids[:, :1]).all() and ids[0, 0] != ids[1, 0]
        for row, idx in zip(ids, np.array(batch).reshape(2, 3)):
            if row[0] != 6:  # enough images: distinct
                assert len(set(idx)) == 3
        seen += list(ids[:, 0])
    assert len(set(seen)) == 4
    with pytest.raises(ValueError, match="batch-p"):
        PKSampler(pids, p=9, k=2)
    with pytest.raises(ValueError, match="batch-k"):
        PKSampler(pids, p=2, k=1)


def test_gradients_reach_backbone_and_foreground_head():
    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet18", input_size=(64, 32), pyramid_kernels=(1, 2), pyramid_stride=1)
    model = build_model(config).train()
    images = torch.randn(6, 3, 64, 32)
    masks = torch.zeros(6, 1, 64, 32)
    masks[:, :, 8:56, 8:24] = 1.0
    pids = _pk_pids(3, 2)
    cfg = TrainConfig(dataset="x", root=".", out_dir=".", margin=0.5)  # margin large: every triplet active
    for with_masks in (True, False):
        model.zero_grad()
        loss, stats = training_step(model, images, masks if with_masks else None, pids, cfg)
        loss.backward()
        assert stats["active"] > 0
        for name in ("backbone.conv1.weight", "backbone.layer4.1.conv2.weight", "foreground.weight"):
            grad = dict(model.named_parameters())[name].grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, (name, with_masks)
