"""Training runs on a tiny synthetic set: the loss falls, checkpoints resume
exactly (learning-rate schedule included), masks are required unless the
foreground loss is off, model selection with --eval-every, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from reid_eval_cli.main import main
from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
from reid_eval.errors import ReidEvalError
from reid_eval.model import ModelConfig, build_model, load_checkpoint
from reid_eval.training import (
    BEST_NAME,
    CHECKPOINT_NAME,
    FINAL_NAME,
    LOG_NAME,
    TrainConfig,
    TrainingDataset,
    train,
    training_images,
    training_step,
)

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
                device="cpu", seed=0, lr_schedule="constant", warmup_epochs=0, workers=0)
    base.update(kw)
    return TrainConfig(**base)


def test_short_training_lowers_the_loss_on_a_fixed_batch(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path / "run", epochs=4)
    images = training_images(cfg.dataset, data_root, None, need_masks=True)
    data = TrainingDataset(images, MODEL)
    x, m, pids = data.collate([data[(i, 0)] for i in range(len(images.paths))])

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
    # warmup over the first epoch, cosine over the second, with augmentation: all must resume on the same curve
    kw = dict(epochs=2, lr_schedule="cosine", warmup_epochs=1, flip=True, pad_crop=3, random_erasing=0.5)
    straight = train(_cfg(data_root, tmp_path / "straight", **kw))

    class Crash(Exception):
        pass

    def crash_in_epoch_2(epoch: int, step: int, steps: int, stats: dict) -> None:
        if epoch == 1:  # after epoch 1's checkpoint and one unsaved step of epoch 2
            raise Crash

    with pytest.raises(Crash):
        train(_cfg(data_root, tmp_path / "resumed", **kw), on_progress=crash_in_epoch_2)
    with pytest.raises(ReidEvalError, match="--resume"):
        train(_cfg(data_root, tmp_path / "resumed", **kw))
    second = train(_cfg(data_root, tmp_path / "resumed", **kw, resume=True))
    assert second.epochs_completed == 2 and len(second.epoch_losses) == 1
    a = load_checkpoint(straight.model_path)[0].state_dict()
    b = load_checkpoint(second.model_path)[0].state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    meta = load_checkpoint(tmp_path / "resumed" / CHECKPOINT_NAME)[2]
    assert meta["extra"]["epochs_completed"] == 2 and "state" in meta["extra"]["optimizer"]
    events = [json.loads(line)["event"] for line in (tmp_path / "resumed" / LOG_NAME).read_text().splitlines()]
    assert events.count("start") == 2 and events.count("epoch") == 2 and events[-1] == "end"
    rows = [json.loads(line) for line in (tmp_path / "straight" / LOG_NAME).read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["event"] == "step"]  # 4 steps: warmup 0.1→, then the half cosine
    assert lrs == pytest.approx([3.5e-5, 3.5e-5 + 0.9 * 3.5e-4 / 2, 3.5e-4, 3.5e-4 * 0.5])


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


def test_cli_train_with_workers_eval_every_and_init_and_its_errors(data_root, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--dataset", "synthetic_occluded", "--root", str(data_root), "--out", str(out), "--epochs", "2",
            "--batch-p", "3", "--batch-k", "2", "--backbone", "resnet18", "--input-size", "64x32",
            "--pyramid-kernels", "1,2", "--pyramid-stride", "1", "--device", "cpu", "--warmup-epochs", "1"]
    assert main(args + ["--workers", "2", "--eval-every", "1"]) == 0
    assert (out / FINAL_NAME).is_file() and (out / CHECKPOINT_NAME).is_file() and (out / BEST_NAME).is_file()
    outs = capsys.readouterr()
    assert "2 epochs done" in outs.out and f"best -> {out / BEST_NAME}" in outs.out
    rows = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert rows[0]["workers"] == 2 and rows[0]["init"].startswith("random")
    evals = [r for r in rows if r["event"] == "eval"]
    assert [e["epoch"] for e in evals] == [1, 2]
    for e in evals:
        assert 0.0 <= e["rank1"] <= 1.0 and 0.0 < e["mAP"] <= 1.0 and Path(e["results_file"]).is_file()
    top = max(evals, key=lambda e: (e["mAP"], e["rank1"]))
    assert [e["best"] for e in evals] == [True, top["epoch"] == 2]
    best_meta = load_checkpoint(out / BEST_NAME)[2]["extra"]["evaluation"]
    assert best_meta == {k: top[k] for k in ("epoch", "rank1", "mAP", "mINP")}
    assert not any((out / "eval").rglob("*.h5"))  # the evaluation caches are deleted once scored
    # --init: any of our checkpoints is a start; its architecture wins
    started = tmp_path / "from_best"
    init_args = [started if a == str(out) else a for a in args]
    assert main([str(a) for a in init_args] + ["--init", str(out / BEST_NAME), "--epochs", "1", "--warmup-epochs", "0",
                                                  "--workers", "0", "--lr", "1e-10"]) == 0
    first = json.loads((started / LOG_NAME).read_text().splitlines()[0])
    assert first["init"] == f"from {out / BEST_NAME}"
    # with a negligible rate the trained weights are still the init checkpoint's (a random start is far away)
    init_model, trained = load_checkpoint(out / BEST_NAME)[0], load_checkpoint(started / FINAL_NAME)[0]
    for (name, a), b in zip(init_model.named_parameters(), trained.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    capsys.readouterr()

    assert main(args) == 1  # the run exists and --resume was not given
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "--resume" in err and "Traceback" not in err
    fresh = [str(tmp_path / "cli2") if a == str(out) else a for a in args]
    for extra, words in ((["--masks", str(tmp_path / "nowhere")], ("nowhere", "--no-foreground-loss")),
                         (["--init", str(tmp_path / "none.pt")], ("none.pt", "--init")),
                         (["--warmup-epochs", "2"], ("--warmup-epochs", "--epochs")),
                         (["--lr-schedule", "step"], ("--lr-milestones",)),
                         (["--amp"], ("--amp", "CUDA"))):
        assert main(fresh + extra) != 0, extra
        err = capsys.readouterr().err
        assert all(w in err for w in words) and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_time_limit_stops_mid_epoch_and_resume_redoes_that_epoch(data_root, tmp_path):
    out = tmp_path / "limited"
    first = train(_cfg(data_root, out, epochs=2, max_seconds=1e-9))  # over the limit after the first step
    assert first.stopped_early and first.epochs_completed == 0 and first.epoch_losses == []
    rows = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert [r["completed"] for r in rows if r["event"] == "epoch"] == [False]
    assert sum(r["event"] == "step" for r in rows) == 1
    assert load_checkpoint(out / FINAL_NAME)[2]["extra"]["stopped_early"] is True
    # the interrupted step is undone: the files hold the starting weights (no epoch completed)
    torch.manual_seed(0)
    start = build_model(load_checkpoint(out / FINAL_NAME)[1]).state_dict()
    for name in (FINAL_NAME, CHECKPOINT_NAME):
        saved = load_checkpoint(out / name)[0].state_dict()
        assert all(torch.equal(saved[k], start[k]) for k in start), name
    second = train(_cfg(data_root, out, epochs=2, resume=True))
    assert not second.stopped_early and second.epochs_completed == 2 and len(second.epoch_losses) == 2
    # ... so the resumed run ends where an uninterrupted one does, bit for bit (same process, same threads)
    whole = train(_cfg(data_root, tmp_path / "whole", epochs=2))
    a, b = load_checkpoint(second.model_path)[0].state_dict(), load_checkpoint(whole.model_path)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and second.epoch_losses == whole.epoch_losses
