"""Extraction speed: `extract` (decode, resize, forward, pyramid, foreground,
HDF5 writes) against a bare torchvision forward of the same network on the same
images, already decoded, same batch size, same device. Prints images/s of both
and their ratio from one run; exits 1 when the ratio is below --min-ratio.

Default: a generated Partial-REID-like tree of 128 PNGs, resnet18 at 384×128
(fast enough for a shared CPU); ``--backbone resnet50`` is the paper's model.

    python benchmarks/bench_extract.py
    python benchmarks/bench_extract.py --backbone resnet50 --images 512 --batch-size 64 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from reid_eval.features import Preprocessing, extract_dataset, load_image_array
from reid_eval.features.extract import resolve_device
from reid_eval.features.preprocess import to_tensor_batch
from reid_eval.model import ModelConfig, build_model, save_checkpoint


def make_tree(root: Path, images: int, seed: int = 0) -> list[Path]:
    """Partial-REID layout, 5 images per identity and side, person-sized PNGs of varied size."""
    rng = np.random.default_rng(seed)
    paths = []
    per_side = images // 2
    for side in ("partial_body_images", "whole_body_images"):
        (root / side).mkdir(parents=True)
        for i in range(per_side):
            pid, k = i // 5 + 1, i % 5 + 1
            h, w = int(rng.integers(160, 320)), int(rng.integers(64, 128))
            img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            path = root / side / f"{pid:03d}_{k:02d}.png"
            Image.fromarray(img).save(path)
            paths.append(path)
    return paths


def bare_forward(net: torch.nn.Module, batches: list[torch.Tensor], device: torch.device) -> float:
    """Seconds for the torchvision module's own forward over pre-decoded batches."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            net(b.to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--input-size", type=int, nargs=2, default=(384, 128), metavar=("H", "W"))
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both sides); 0 keeps torch's default")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each side, interleaved; the best counts")
    ap.add_argument("--min-ratio", type=float, default=0.9)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = ModelConfig(backbone=args.backbone, input_size=tuple(args.input_size))
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        tmp = Path(tmp)
        paths = make_tree(tmp / "Partial-REID", args.images)
        torch.manual_seed(0)
        model = build_model(config)
        ckpt = save_checkpoint(tmp / "model.pt", model, config)

        # The same network as a plain torchvision ResNet: our trunk's weights, last stride 1, fc removed.
        net = getattr(torchvision.models, args.backbone)(weights=None)
        net.fc = torch.nn.Identity()
        for m in net.layer4[0].modules():
            if isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1):
                m.stride = (1, 1)
        net.load_state_dict(model.backbone.state_dict(), strict=False)
        net = net.to(device).eval()
        prep = Preprocessing.for_model(config, "fixed")
        arrays = [load_image_array(p, prep) for p in sorted(paths)]
        batches = [to_tensor_batch(arrays[i : i + args.batch_size], prep) for i in range(0, len(arrays), args.batch_size)]
        bare_forward(net, batches[:1], device)  # warm-up (allocator, cuDNN autotune)

        bare_s, extract_s = [], []
        for r in range(args.repeats):
            bare_s.append(bare_forward(net, batches, device))
            t = time.perf_counter()
            extract_dataset(
                "partial_reid", tmp / "Partial-REID", ckpt, tmp / f"cache{r}", device=str(device),
                batch_size=args.batch_size, allow_mismatch=True,
            )
            if device.type == "cuda":
                torch.cuda.synchronize()
            extract_s.append(time.perf_counter() - t)
        n = len(arrays)
        bare_ips, extract_ips = n / min(bare_s), n / min(extract_s)
        ratio = extract_ips / bare_ips
        dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} thread(s)"
        print(f"device: {dev}; {args.backbone} {config.input_size[0]}x{config.input_size[1]}, {n} images, batch {args.batch_size}")
        print(f"bare torchvision forward (pre-decoded tensors): {bare_ips:8.1f} images/s  runs {', '.join(f'{s:.2f}s' for s in bare_s)}")
        print(f"reid-eval extract (PNG decode + HDF5 writes):   {extract_ips:8.1f} images/s  runs {', '.join(f'{s:.2f}s' for s in extract_s)}")
        print(f"ratio extract / bare: {ratio:.3f} (required >= {args.min_ratio})")
    return 0 if ratio >= args.min_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
