"""Distributed data parallel: a real 2-process ``torchrun`` job on the CPU with
gloo trains (the loss falls), keeps the ranks' weights identical after every
step, resumes, and leaves a checkpoint that loads.

Run by pytest, this file starts ``torchrun`` on itself; run as a script (by
torchrun), it is the worker: it trains 2 epochs, then resumes to 3, writing a
digest of its weights after every step.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

MODEL_KW = dict(backbone="resnet18", input_size=(64, 32), pyramid_kernels=(1, 2), pyramid_stride=1)
TRAIN_KW = dict(dataset="synthetic_occluded", epochs=2, batch_p=2, batch_k=2, lr=1e-3, lr_schedule="constant",
                warmup_epochs=0, workers=0, device="cpu", seed=0)


def _digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _worker(root: Path, out: Path, digests: Path) -> None:
    import torch.distributed as dist

    from reid_eval.model import ModelConfig
    from reid_eval.training import TrainConfig, train

    # One process group for both calls: train() joins an existing group and leaves it open.
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    rows: list[str] = []
    cfg = TrainConfig(root=root, out_dir=out, model=ModelConfig(**MODEL_KW), **TRAIN_KW)
    first = train(cfg, on_step_end=lambda model, epoch, step: rows.append(f"{epoch} {step} {_digest(model)}"))
    cfg.epochs, cfg.resume = 3, True
    second = train(cfg, on_step_end=lambda model, epoch, step: rows.append(f"{epoch} {step} {_digest(model)}"))
    (digests / f"rank{rank}.txt").write_text("\n".join(rows) + "\n")
    (digests / f"result{rank}.json").write_text(json.dumps(
        {"rank": second.rank, "epochs": [first.epochs_completed, second.epochs_completed]}))
    dist.destroy_process_group()


def test_two_process_torchrun_on_cpu_trains_in_step_and_resumes(tmp_path):
    import torch

    from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
    from reid_eval.model import ModelConfig, build_model, load_checkpoint
    from reid_eval.training import CHECKPOINT_NAME, FINAL_NAME, LOG_NAME, TrainConfig, TrainingDataset, training_images
    from reid_eval.training import training_step

    root = tmp_path / "synthetic_occluded"
    generate_synthetic_dataset(root, SyntheticConfig(seed=3, num_train_ids=8, num_test_ids=1, train_images_per_id=3,
                                                     gallery_images_per_id=1, query_images_per_id=1,
                                                     height=64, width=32))
    out, digests = tmp_path / "run", tmp_path / "digests"
    digests.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(root), str(out), str(digests)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)  # generous: a loaded machine
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [(digests / f"rank{r}.txt").read_text().splitlines() for r in range(2)]
    # 8 identities / P=2: 4 PK batches per epoch, 2 per rank; 3 epochs in all
    assert len(ranks[0]) == 6 and ranks[0] == ranks[1]
    assert len({line.split()[2] for line in ranks[0]}) == 6  # the weights move at every step
    assert [json.loads((digests / f"result{r}.json").read_text()) for r in range(2)] == \
        [{"rank": 0, "epochs": [2, 3]}, {"rank": 1, "epochs": [2, 3]}]
    rows = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]  # rank 0's alone
    assert [r["processes"] for r in rows if r["event"] == "start"] == [2, 2]
    assert [(r["epoch"], r["step"]) for r in rows if r["event"] == "step"] == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]

    model, config, meta = load_checkpoint(out / FINAL_NAME)
    assert meta["extra"]["epochs_completed"] == 3 and config == ModelConfig(**MODEL_KW)
    assert load_checkpoint(out / CHECKPOINT_NAME)[2]["extra"]["epochs_completed"] == 3
    final_digest = _digest(model)
    assert final_digest == ranks[0][-1].split()[2]

    # the loss on all training images falls from the shared random start to the trained weights
    cfg = TrainConfig(root=root, out_dir=out, **TRAIN_KW)
    data = TrainingDataset(training_images("synthetic_occluded", root, None, need_masks=True), config)
    x, m, pids = data.collate([data[(i, 0)] for i in range(len(data))])
    torch.manual_seed(0)
    start = build_model(config)

    def loss_of(net) -> float:
        net.train()
        with torch.no_grad():
            return float(training_step(net, x, m, pids, cfg)[0])

    before, after = loss_of(start), loss_of(model)
    assert after < 0.8 * before, (before, after)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
