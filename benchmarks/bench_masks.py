"""Person-mask quality and speed of `reid-eval masks`, and what the masks do on occluded crops.

1. Mask IoU against the synthetic generator's exact masks (a pixel hidden by
   an occluder is not person there), per image kind (whole, occluded,
   partial), for each --models entry: the MediaPipe models (when mediapipe is
   installed) and torchvision's, when their real weights are at hand (torch's
   cache, or --seg-weights FILE; this machine cannot download them). Also
   where each mask came from (pose / pose at a retry margin / selfie / empty)
   and the milliseconds per crop of the whole command (decoding and writing
   included).
2. Real occluded crops (Partial-REID's occluded_body_images, beside the
   repository in ../shared/data) against its whole-body images: share of
   crops where a person is found and the share of each crop marked person;
   the overlay grids go to --preview-dir so that a person can look at what
   is marked (the crops have no true masks).

    python benchmarks/bench_masks.py
    python benchmarks/bench_masks.py --models mediapipe-pose --images-per-id 4 --preview-dir /tmp/mask_previews
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
from reid_eval.errors import ReidEvalError
from reid_eval.training.data import mask_file
from reid_eval.training.mask_preview import spread, write_preview
from reid_eval.training.masks import SEGMENTATION_MODELS, write_person_masks
from reid_eval.training.masks_mediapipe import SOURCE_EMPTY, MediaPipeMasker

SHARED_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _cached_weights(name: str) -> Path | None:
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return path if path.is_file() else None


def _iou(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    return int(np.logical_and(truth, pred).sum()), int(np.logical_or(truth, pred).sum())


def bench_synthetic_iou(model: str, root: Path, out: Path, weights: Path | None) -> None:
    t0 = time.perf_counter()
    try:
        run = write_person_masks("synthetic_occluded", root, out, ("train", "query", "gallery"), model, weights,
                                 "cpu", batch_size=16)
    except ReidEvalError as exc:
        print(f"{model}: not measured: {exc}")
        return
    seconds = time.perf_counter() - t0
    with open(root / "annotations.csv", newline="") as fh:
        kinds = {row["path"]: row["kind"] for row in csv.DictReader(fh)}
    sums: dict[str, list] = {}
    for rel, kind in sorted(kinds.items()):
        truth = np.asarray(Image.open(mask_file(root / "masks", rel))) > 127
        pred = np.asarray(Image.open(mask_file(out, rel))) > 127
        i, u = _iou(truth, pred)
        for key in (kind, "all"):
            s = sums.setdefault(key, [0, 0, []])
            s[0], s[1] = s[0] + i, s[1] + u
            s[2].append(i / u if u else 1.0)
    parts = [f"{key} {len(s[2])}: pooled {s[0] / s[1]:.3f}, mean {np.mean(s[2]):.3f}, median {np.median(s[2]):.3f}"
             for key, s in sorted(sums.items(), key=lambda kv: kv[0] != "all")]
    sources = ", ".join(f"{k} {v}" for k, v in sorted(run.sources.items()))
    print(f"{model}: IoU vs exact masks, {'; '.join(parts)} | from: {sources} | "
          f"{1000 * seconds / max(run.written, 1):.0f} ms/crop ({run.written} crops, {seconds:.0f} s with start-up)")


def bench_occluded(model: str, count: int, preview_dir: Path | None) -> None:
    root = SHARED_DATA_ROOT / "Partial-REID_Dataset"
    if not (root / "occluded_body_images").is_dir():
        print(f"occluded crops: not measured: {root / 'occluded_body_images'} is absent (../shared/data)")
        return
    try:
        masker = MediaPipeMasker(model)
    except ReidEvalError as exc:
        print(f"occluded crops ({model}): not measured: {exc}")
        return
    try:
        for folder in ("occluded_body_images", "whole_body_images"):
            files = spread(sorted(str(p) for p in (root / folder).glob("*.jpg")), count)
            images, masks, sources, shares = [], [], {}, []
            t0 = time.perf_counter()
            for f in files:
                image = np.asarray(Image.open(f).convert("RGB"))
                mask, source = masker(image)
                images.append(image)
                masks.append(mask)
                sources[source] = sources.get(source, 0) + 1
                shares.append(float((mask > 0).mean()))
            ms = 1000 * (time.perf_counter() - t0) / len(files)
            found = 1 - sources.get(SOURCE_EMPTY, 0) / len(files)
            grid = ""
            if preview_dir is not None:
                grid = f" | grid {write_preview(preview_dir / f'partial_reid_{folder}_{model}.png', images, masks)}"
            print(f"Partial-REID {folder} ({model}, {len(files)} crops): someone found in {found:.0%}; "
                  f"share marked person median {np.median(shares):.2f} (p10 {np.percentile(shares, 10):.2f}, "
                  f"p90 {np.percentile(shares, 90):.2f}); from: "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(sources.items()))}; {ms:.0f} ms/crop{grid}")
    finally:
        masker.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mediapipe-pose,mediapipe-selfie,deeplabv3_mobilenet_v3_large",
                    help="comma-separated `masks --model` names")
    ap.add_argument("--seg-weights", type=Path, default=None,
                    help="weights file (state dict) of the one torchvision model in --models")
    ap.add_argument("--ids", type=int, default=12, help="synthetic train identities (test ids: a third)")
    ap.add_argument("--images-per-id", type=int, default=4, help="synthetic train images per identity")
    ap.add_argument("--height", type=int, default=256, help="synthetic whole-body height (width: half)")
    ap.add_argument("--occluded", type=int, default=40, help="Partial-REID crops of each kind")
    ap.add_argument("--preview-dir", type=Path, default=None, help="write the occluded/whole overlay grids here")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (torchvision models)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="bench_masks_") as tmp:
        root = Path(tmp) / "synthetic_occluded"
        cfg = SyntheticConfig(seed=0, num_train_ids=args.ids, num_test_ids=max(1, args.ids // 3),
                              train_images_per_id=args.images_per_id, gallery_images_per_id=1,
                              query_images_per_id=2, height=args.height, width=args.height // 2)
        generate_synthetic_dataset(root, cfg)
        print(f"synthetic set: seed 0, {args.ids} + {cfg.num_test_ids} ids, {cfg.height}x{cfg.width}")
        for model in models:
            weights = None
            if model in SEGMENTATION_MODELS:
                weights = args.seg_weights or _cached_weights(model)
                if weights is None:
                    print(f"{model}: not measured: its weights are not at hand (none in torch's cache "
                          f"{torch.hub.get_dir()}, no --seg-weights FILE; this machine cannot download them)")
                    continue
            bench_synthetic_iou(model, root, Path(tmp) / f"masks_{model}", weights)
    for model in models:
        if model.startswith("mediapipe-"):
            bench_occluded(model, args.occluded, args.preview_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
