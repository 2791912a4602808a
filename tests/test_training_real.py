"""A short training run on real people: CUHK03 pair 1 crops (../shared/data), starting from the
shared Market-1501 OSNet (../shared/weights), lowers the FPR triplet loss on a fixed batch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from reid_eval.model import load_checkpoint, save_checkpoint
from reid_eval.model.convert import convert_checkpoint
from reid_eval.training import TrainConfig, TrainingDataset, train, training_images, training_step

SHARED = Path(__file__).resolve().parents[2] / "shared"
CUHK03 = SHARED / "data" / "CUHK03_pair1" / "detected"
WEIGHTS = SHARED / "weights" / "osnet_x0_25_market1501.pth"
pytestmark = pytest.mark.skipif(not (CUHK03.is_dir() and WEIGHTS.exists()),
                                reason=f"the shared CUHK03 pair 1 crops or OSNet are absent ({SHARED})")
PEOPLE = range(6)  # six identities, two shots from each camera


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    """CUHK03 pair 1's layout with a few of its real crops (train) and of its held-out people (val)."""
    root = tmp_path_factory.mktemp("cuhk03") / "CUHK03_pair1"
    for split, shots in (("train", ("00", "01", "05", "06")), ("val", ("00", "05"))):
        (root / "detected" / split).mkdir(parents=True)
        for pid in PEOPLE:
            for shot in shots:
                src = CUHK03 / split / f"{pid:04d}_{shot}.jpg"
                if src.exists():
                    shutil.copy(src, root / "detected" / split / src.name)
    return root


def test_fine_tuning_the_market_osnet_on_cuhk03_crops_lowers_the_loss(subset, tmp_path):
    model, config, extra = convert_checkpoint("torchreid", WEIGHTS, input_size=(128, 64))
    start = save_checkpoint(tmp_path / "osnet.pt", model, config, extra=extra)
    cfg = TrainConfig(dataset="cuhk03_pair1", root=subset, out_dir=tmp_path / "run", init_checkpoint=start,
                      foreground_loss=False, epochs=4, batch_p=3, batch_k=2, lr=1e-3, lr_schedule="constant",
                      warmup_epochs=0, device="cpu", workers=0, seed=0)
    images = training_images(cfg.dataset, subset, None, need_masks=False)
    assert len(set(images.pids.tolist())) == len(PEOPLE)
    data = TrainingDataset(images, config)
    x, _, pids = data.collate([data[(i, 0)] for i in range(len(images.paths))])

    def loss_of(net) -> float:
        net.eval()  # a fixed batch through the running statistics: the comparison sees the weights only
        with torch.no_grad():
            return float(training_step(net, x, None, pids, cfg)[0])

    before = loss_of(load_checkpoint(start)[0])
    result = train(cfg)
    after = loss_of(load_checkpoint(result.model_path)[0])
    assert result.epochs_completed == 4
    assert after < 0.8 * before, (before, after)
