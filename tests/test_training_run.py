"""Training runs on a tiny synthetic set: the loss falls, checkpoints resume
exactly, masks are required unless the foreground loss is off, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cli.main import main
from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
from reid_eval.errors import ReidEvalError
from reid_eval.model import ModelConfig, build_model, load_checkpoint
from reid_eval.training import CHECKPOINT_NAME, FINAL_NAME, LOG_NAME, TrainConfig, train, training_step
from reid_eval.training.data import BatchLoader, training_images

MODEL = ModelConfig(backbone="resnet18", input_size=(64, 32), pyramid_kernels=(1, 2), pyramid_stride=1)




@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train") / "synthetic_occluded"
    generate_synthetic_dataset(root, SyntheticConfig(seed=1, num_train_ids=6, num_test_ids=2, train_images_per_id=4,
                                                     gallery_images_per_id=1, query_images_per_id=1,
                                                     height=64, width=32))
    return root


def _cfg(root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(dataset="synthetic_occluded", root=root, out_dir=out, model=MODEL, epochs=1, batch_p=3, batch_k=2,
                device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_short_training_lowers_the_loss_on_a_fixed_batch(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path / "run", epochs=4)
    images = training_images(cfg.dataset, data_root, None, need_masks=True)
    x, m, pids = BatchLoader(images, MODEL).batch(list(range(len(images.paths))))

    def loss_of(model) -> float:
        torch.manual_seed(0)
        model.train()
        with torch.no_grad():
            return float(training_step(model, x, m, pids, cfg)[0])

    torch.manual_seed(cfg.seed)
    before = loss_of(build_model(MODEL))
    result = train(cfg)
    model, _, _ = load_checkpoint(result.model_path)
    after = loss_of(model)
    assert result.epochs_completed == 4 and len(result.epoch_losses) == 4
    assert after < 0.8 * before, (before, after)


def test_resume_continues_exactly_where_the_run_stopped(data_root, tmp_path):
    straight = train(_cfg(data_root, tmp_path / "straight", epochs=2))
    first = train(_cfg(data_root, tmp_path / "resumed", epochs=1))
    assert first.epochs_completed == 1
    with pytest.raises(ReidEvalError, match="--resume"):
        train(_cfg(data_root, tmp_path / "resumed", epochs=2))
    second = train(_cfg(data_root, tmp_path / "resumed", epochs=2, resume=True))
    assert second.epochs_completed == 2 and len(second.epoch_losses) == 1
    a = load_checkpoint(straight.model_path)[0].state_dict()
    b = load_checkpoint(second.model_path)[0].state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    meta = load_checkpoint(tmp_path / "resumed" / CHECKPOINT_NAME)[2]
    assert meta["extra"]["epochs_completed"] == 2 and "state" in meta["extra"]["optimizer"]
    events = [json.loads(line)["event"] for line in (tmp_path / "resumed" / LOG_NAME).read_text().splitlines()]
    assert events.count("start") == 2 and events.count("epoch") == 2 and events[-1] == "end"


def test_missing_masks_are_an_error_unless_the_foreground_loss_is_off(data_root, tmp_path):
    root = tmp_path / "nomask"
    shutil.copytree(data_root, root, ignore=shutil.ignore_patterns("masks"))
    with pytest.raises(ReidEvalError, match="--no-foreground-loss"):
        train(_cfg(root, tmp_path / "a"))
    partial = tmp_path / "somemasks"
    shutil.copytree(data_root / "masks", partial)
    victim = sorted((partial / "bounding_box_train").iterdir())[0]
    victim.unlink()
    with pytest.raises(ReidEvalError, match=f"1 of 24 .*{victim.name}"):
        train(_cfg(root, tmp_path / "b", masks=partial))
    result = train(_cfg(root, tmp_path / "c", foreground_loss=False))
    start = json.loads(result.log_path.read_text().splitlines()[0])
    assert start["foreground_loss"].startswith("off (--no-foreground-loss)")
    steps = [json.loads(line) for line in result.log_path.read_text().splitlines() if '"step"' in line]
    assert steps and all("foreground" not in s for s in steps)


def test_cli_train_and_its_errors(data_root, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--dataset", "synthetic_occluded", "--root", str(data_root), "--out", str(out), "--epochs", "1",
            "--batch-p", "3", "--batch-k", "2", "--backbone", "resnet18", "--input-size", "64x32",
            "--pyramid-kernels", "1,2", "--pyramid-stride", "1", "--device", "cpu"]
    assert main(args) == 0
    assert (out / FINAL_NAME).is_file() and (out / CHECKPOINT_NAME).is_file()
    assert "1 epochs done" in capsys.readouterr().out
    assert main(args) == 1  # the run exists and --resume was not given
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "--resume" in err and "Traceback" not in err
    fresh = [str(tmp_path / "cli2") if a == str(out) else a for a in args]
    assert main(fresh + ["--masks", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "--no-foreground-loss" in err and len(err.strip().splitlines()) == 1


def test_time_limit_stops_mid_epoch_and_resume_redoes_that_epoch(data_root, tmp_path):
    out = tmp_path / "limited"
    first = train(_cfg(data_root, out, epochs=2, max_seconds=1e-9))  # over the limit after the first step
    assert first.stopped_early and first.epochs_completed == 0 and first.epoch_losses == []
    rows = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert [r["completed"] for r in rows if r["event"] == "epoch"] == [False]
    assert sum(r["event"] == "step" for r in rows) == 1
    assert load_checkpoint(out / FINAL_NAME)[2]["extra"]["stopped_early"] is True
    second = train(_cfg(data_root, out, epochs=2, resume=True))
    assert not second.stopped_early and second.epochs_completed == 2 and len(second.epoch_losses) == 2
