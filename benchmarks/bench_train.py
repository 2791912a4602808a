"""Training speed and the FPR triplet loss's cost (person-mask quality: bench_masks.py).

1. Training images/s — the DataLoader with worker processes (decode, resize,
   normalise off the loop), the FPR network's forward, the FPR batch-hard
   triplet + foreground loss, backward and Adam step, as `reid-eval train`
   runs them — against a bare forward+backward+Adam step of the same
   backbone (its feature map's mean as the loss) on one in-memory batch of
   the same size and input size. Also shown, to place the difference: the
   training step on an in-memory batch (the loss's own cost) and the loader
   without workers. Modes are interleaved round by round; the best round of
   each counts. The ratio's target with workers is >= 0.8 (exit 1 below
   --min-ratio).
2. Seconds per forward+backward of the FPR triplet loss alone at 64 images x
   110 locations x 2048 channels (the paper's batch and pyramid).

Defaults fit a shared 2-core CPU (resnet50 at 256x128, 4x4 batches);
the paper's geometry on a GPU:

    python benchmarks/bench_train.py
    python benchmarks/bench_train.py --input-size 384x128 --batch-p 16 --batch-k 4 --device cuda --amp
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
from reid_eval.features import resolve_device
from reid_eval.model import ModelConfig, build_model
from reid_eval.training import (
    EpochBatchSampler,
    PKSampler,
    TrainConfig,
    TrainingDataset,
    batch_fpr_distances,
    batch_hard_triplet_loss,
    default_workers,
    make_loader,
    training_images,
    training_step,
)
from reid_eval.training.trainer import amp_dtype_for


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Modes:
    """The timed modes, sharing one model and optimizer (their speed does not depend on the weights)."""

    def __init__(self, root: Path, config: ModelConfig, p: int, k: int, workers: int, device: torch.device, amp: bool):
        self.device, self.config = device, config
        torch.manual_seed(0)
        self.model = build_model(config).to(device).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-5)
        self.cfg = TrainConfig(dataset="synthetic_occluded", root=root, out_dir=root, model=config)
        self.amp = amp_dtype_for(device) if amp else None
        images = training_images("synthetic_occluded", root, None, need_masks=True)
        self.data = TrainingDataset(images, config)
        self.loaders = {}
        for w in sorted({workers, 0}):
            sampler = EpochBatchSampler(PKSampler(images.pids, p, k, seed=0))
            self.loaders[w] = (make_loader(self.data, sampler, w, pin_memory=device.type == "cuda"), sampler)
        x, m, pids = next(iter(self.loaders[0][0]))
        self.batch = (x.to(device), m.to(device), pids.to(device))
        self.epoch = 0

    def _step(self, x: torch.Tensor, m: torch.Tensor, pids: torch.Tensor) -> None:
        loss, _ = training_step(self.model, x, m, pids, self.cfg, self.config, self.amp)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def bare(self, steps: int) -> float:
        x = self.batch[0]
        t = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                loss = self.model.feature_map(x).float().mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        _sync(self.device)
        return time.perf_counter() - t

    def in_memory(self, steps: int) -> float:
        t = time.perf_counter()
        for _ in range(steps):
            self._step(*self.batch)
        _sync(self.device)
        return time.perf_counter() - t

    def loader(self, workers: int, steps: int) -> float:
        loader, sampler = self.loaders[workers]
        sampler.set_epoch(self.epoch)
        self.epoch += 1
        it = iter(loader)
        t = time.perf_counter()  # the workers' start is once per run, not per step: persistent workers
        for _ in range(steps):
            x, m, pids = next(it)
            d = self.device
            self._step(x.to(d, non_blocking=True), m.to(d, non_blocking=True), pids.to(d, non_blocking=True))
        _sync(self.device)
        seconds = time.perf_counter() - t
        del it
        return seconds


def bench_throughput(args: argparse.Namespace, root: Path, device: torch.device) -> float:
    h, w = (int(v) for v in args.input_size.split("x"))
    config = ModelConfig(backbone=args.backbone, input_size=(h, w))
    workers = args.workers if args.workers is not None else default_workers()
    modes = Modes(root, config, args.batch_p, args.batch_k, workers, device, args.amp)
    b = args.batch_p * args.batch_k
    runs = {"bare forward+backward": lambda: modes.bare(args.steps),
            "train step, in-memory batch": lambda: modes.in_memory(args.steps),
            f"train, DataLoader {workers} workers": lambda: modes.loader(workers, args.steps)}
    if workers != 0:
        runs["train, DataLoader 0 workers"] = lambda: modes.loader(0, args.steps)
    modes.bare(1)
    modes.in_memory(1)  # warm-up: allocator, autotuning, first-touch
    for w_ in modes.loaders:
        modes.loader(w_, 1)
    best = {name: float("inf") for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    print(f"training throughput: {args.backbone} {h}x{w}, batch {args.batch_p}x{args.batch_k} = {b} images, "
          f"{args.steps} steps per round, best of {args.rounds} interleaved rounds, device {device}"
          + (f", autocast {str(modes.amp).replace('torch.', '')}" if modes.amp else ""))
    base = b * args.steps / best["bare forward+backward"]
    for name, seconds in best.items():
        ips = b * args.steps / seconds
        print(f"  {name:<34} {ips:8.2f} images/s  {seconds / args.steps:7.3f} s/step  ratio {ips / base:.3f}")
    return b * args.steps / best[f"train, DataLoader {workers} workers"] / base


def bench_fpr_loss(args: argparse.Namespace, device: torch.device) -> None:
    n, locs, d = args.fpr_images, 110, 2048
    g = torch.Generator(device="cpu").manual_seed(0)
    local = torch.randn(n, locs, d, generator=g).to(device).requires_grad_(True)
    fg = (torch.rand(n, locs, generator=g) + 0.05).to(device).requires_grad_(True)
    pids = torch.arange(n, device=device) // 4
    times = []
    for _ in range(args.fpr_repeats):
        _sync(device)
        t = time.perf_counter()
        loss, _ = batch_hard_triplet_loss(batch_fpr_distances(local, fg), pids, 0.1)
        loss.backward()
        _sync(device)
        times.append(time.perf_counter() - t)
        local.grad = fg.grad = None
    print(f"FPR triplet loss, forward+backward, {n} images x {locs} locations x {d}, float32, device {device}: "
          f"{min(times):.3f} s per step (best of {len(times)}; all: {', '.join(f'{t:.2f}' for t in times)})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--input-size", default="256x128", help="HEIGHTxWIDTH")
    ap.add_argument("--batch-p", type=int, default=4)
    ap.add_argument("--batch-k", type=int, default=4)
    ap.add_argument("--workers", type=int, default=None, help="[default: reid_eval.training.default_workers()]")
    ap.add_argument("--steps", type=int, default=3, help="steps per mode and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="autocast on CUDA, as train --amp")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the training process")
    ap.add_argument("--fpr-images", type=int, default=64)
    ap.add_argument("--fpr-repeats", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: throughput,fpr")
    ap.add_argument("--min-ratio", type=float, default=0.8)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    status = 0
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp) / "synthetic_occluded"
        generate_synthetic_dataset(root, SyntheticConfig(seed=0, num_train_ids=32, num_test_ids=8, train_images_per_id=6,
                                                         gallery_images_per_id=2, query_images_per_id=1))
        if "throughput" not in skip:
            ratio = bench_throughput(args, root, device)
            ok = ratio >= args.min_ratio
            print(f"  ratio with workers {ratio:.3f} (target >= {args.min_ratio}): {'ok' if ok else 'BELOW TARGET'}")
            status = 0 if ok else 1
        if "fpr" not in skip:
            bench_fpr_loss(args, device)
    return status


if __name__ == "__main__":
    sys.exit(main())
