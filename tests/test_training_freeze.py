"""--freeze-trunk: only the foreground generator learns; the trunk's weights and BatchNorm statistics stay."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
from reid_eval.model import ModelConfig, build_model, load_checkpoint, save_checkpoint
from reid_eval.model.checkpoint import foreground_trained
from reid_eval.training import TrainConfig, train

MODEL = ModelConfig(backbone="osnet_x0_25", input_size=(64, 32), pyramid_kernels=(1, 2), pyramid_stride=1)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("freeze") / "synthetic_occluded"
    generate_synthetic_dataset(root, SyntheticConfig(seed=2, num_train_ids=6, num_test_ids=2, train_images_per_id=4,
                                                     gallery_images_per_id=1, query_images_per_id=1,
                                                     height=64, width=32))
    return root


def test_frozen_trunk_training_changes_only_the_foreground_generator(data_root, tmp_path):
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "start.pt", build_model(MODEL), MODEL)
    assert not foreground_trained(load_checkpoint(start)[2]["extra"])
    cfg = TrainConfig(dataset="synthetic_occluded", root=data_root, out_dir=tmp_path / "run", init_checkpoint=start,
                      freeze_trunk=True, epochs=2, batch_p=3, batch_k=2, device="cpu", seed=0, lr=1e-2,
                      lr_schedule="constant", warmup_epochs=0, workers=0)
    result = train(cfg)
    before, _, _ = load_checkpoint(start)
    after, _, meta = load_checkpoint(result.model_path)
    trunk_before, trunk_after = before.backbone.state_dict(), after.backbone.state_dict()
    assert trunk_before.keys() == trunk_after.keys()
    changed = [k for k in trunk_before if not torch.equal(trunk_before[k], trunk_after[k])]
    assert changed == []  # weights and running statistics alike
    assert not torch.equal(before.foreground.weight, after.foreground.weight)
    assert foreground_trained(meta["extra"]) and meta["extra"]["train"]["freeze_trunk"] is True
    assert meta["extra"]["name"] == "osnet_x0_25; foreground trained on synthetic_occluded"  # for the report's rows


def test_freeze_trunk_without_a_foreground_head_is_refused(data_root, tmp_path):
    no_head = ModelConfig(backbone="resnet18", input_size=(64, 32), pyramid_kernels=(1, 2), pyramid_stride=1,
                          foreground_head=False)
    with pytest.raises(ValueError, match="--freeze-trunk"):
        train(TrainConfig(dataset="synthetic_occluded", root=data_root, out_dir=tmp_path / "run", model=no_head,
                          freeze_trunk=True, foreground_loss=False, epochs=1, device="cpu", workers=0))
