#!/usr/bin/env python3
"""Build the full PETS09-S2L1 crop set (795 frames, 19 people) from the video and the MOT ground truth.

    python scripts/build_pets09_full.py --video vtest.avi --out DATA_ROOT/pets09_s2l1_full

``vtest.avi`` is the PETS 2009 S2.L1 view-1 sequence as shipped in Debian's
``opencv-doc`` package (``/usr/share/doc/opencv-doc/examples/data/vtest.avi``;
``apt-get download opencv-doc`` and ``dpkg-deb -x`` give it without
installing). ``--gt`` defaults to the MOTChallenge 2015 ground truth beside the
shared 300-frame set (``../shared/data/pets09_s2l1/gt.txt``). Decoding uses
PyAV (``pip install -e ".[pets]"``); nothing is downloaded. Not part of the
test suite: it is for benchmark runs on the larger set (dataset
``pets09_s2l1_full``, same protocol as ``pets09_s2l1``).

The output has the layout of the shared set: ``crops/PPPP_fFFF.jpg`` (pid,
frame) cut at the ground-truth boxes (``frame[int(y):int(y)+int(h),
int(x):int(x)+int(w)]``, clipped to the frame; on the shared frames this is
how its crops were cut), and ``annotations.csv`` with file, pid, frame, box and
``occluded_fraction``: the share of the box's pixels covered by the boxes of
other people whose bottom edge is lower in the frame (nearer the camera). On
frames 1-300 this reproduces the shared annotations to 0.001 for 1,806 of
1,874 crops and to 0.06 for all (their exact rasterisation is not documented).
The folder is written as ``<out>.partial`` and renamed when complete, so an
interrupted run leaves nothing half-built under ``--out``; a run takes about a
minute, so a rerun simply starts over.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

GT_COLUMNS = ("frame", "pid", "x", "y", "w", "h", "conf", "world_x", "world_y", "world_z")
DEFAULT_GT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pets09_s2l1" / "gt.txt"


class BuildError(Exception):
    """A bad input, reported as one line."""


def pixel_boxes(boxes: np.ndarray) -> np.ndarray:
    """[n, 4] float (x, y, w, h) in frame pixels -> [n, 4] int (x0, y0, x1, y1), the crop's pixel rectangle."""
    x, y = np.floor(boxes[:, 0]).astype(np.int64), np.floor(boxes[:, 1]).astype(np.int64)
    w, h = np.floor(boxes[:, 2]).astype(np.int64), np.floor(boxes[:, 3]).astype(np.int64)
    return np.stack([x, y, x + w, y + h], axis=1)


def occluded_fractions(boxes: np.ndarray) -> np.ndarray:
    """[n] share of each box's pixels covered by the boxes of one frame whose bottom edge is lower.

    boxes: [n, 4] float (x, y, w, h) of the people in one frame, frame pixels.
    A box with no area is 0.
    """
    rects = pixel_boxes(boxes)
    bottoms = boxes[:, 1] + boxes[:, 3]
    out = np.zeros(len(boxes), dtype=np.float64)
    for i, (x0, y0, x1, y1) in enumerate(rects):
        if x1 <= x0 or y1 <= y0:
            continue
        covered = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for j in np.flatnonzero(bottoms > bottoms[i]):
            a0, b0, a1, b1 = rects[j]
            covered[max(b0 - y0, 0):max(b1 - y0, 0), max(a0 - x0, 0):max(a1 - x0, 0)] = True
        out[i] = covered.mean()
    return out


def read_ground_truth(path: Path) -> pd.DataFrame:
    """The MOTChallenge ``gt.txt`` (frame, id, x, y, w, h, conf, world x, y, z) as a DataFrame."""
    if not path.is_file():
        raise BuildError(f"ground truth {path} not found (--gt)")
    try:
        gt = pd.read_csv(path, header=None, names=list(GT_COLUMNS))
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise BuildError(f"cannot read ground truth {path}: {exc} (--gt)") from None
    numeric = gt[list(GT_COLUMNS[:6])]
    if gt.empty or numeric.isna().any().any() or not all(pd.api.types.is_numeric_dtype(t) for t in numeric.dtypes):
        raise BuildError(f"ground truth {path}: expected rows of numbers frame,id,x,y,w,h,... (--gt)")
    return gt


def build(video: Path, gt_path: Path, out: Path, quality: int = 95, overwrite: bool = False) -> pd.DataFrame:
    """Write crops and annotations.csv under ``out`` (see the module docstring); returns the annotations."""
    import av  # PyAV: the `pets` extra

    gt = read_ground_truth(gt_path)
    if out.exists() and not overwrite:
        raise BuildError(f"{out} exists (--overwrite replaces it)")
    if not video.is_file():
        raise BuildError(f"video {video} not found (--video)")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "crops").mkdir(parents=True)
    by_frame = {int(f): rows for f, rows in gt.groupby("frame")}
    last = max(by_frame)
    rows: list[dict] = []
    t0 = time.perf_counter()
    shown = -1
    try:
        container = av.open(str(video))
    except av.error.FFmpegError as exc:
        raise BuildError(f"cannot open video {video}: {exc} (--video)") from None
    from PIL import Image

    number = 0
    with container:
        for number, frame in enumerate(container.decode(video=0), start=1):
            if number > last:
                break
            people = by_frame.get(number)
            if people is None:
                continue
            image = frame.to_ndarray(format="rgb24")
            height, width = image.shape[:2]
            boxes = people[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
            occluded = occluded_fractions(boxes)
            for (x0, y0, x1, y1), box, pid, occ in zip(pixel_boxes(boxes), boxes, people["pid"], occluded):
                x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
                if x1 - x0 < 4 or y1 - y0 < 4:  # a box (almost) outside the frame shows nobody
                    continue
                name = f"{int(pid):04d}_f{number:03d}.jpg"
                Image.fromarray(image[y0:y1, x0:x1]).save(partial / "crops" / name, quality=quality)
                rows.append({"file": name, "pid": int(pid), "frame": number, "x": round(box[0], 1),
                             "y": round(box[1], 1), "w": round(box[2], 1), "h": round(box[3], 1),
                             "occluded_fraction": round(float(occ), 3)})
            tenth = 10 * number // last
            if tenth > shown:
                shown = tenth
                elapsed = time.perf_counter() - t0
                eta = elapsed * (last - number) / number
                print(f"frame {number}/{last}, {len(rows)} crops, ETA {eta:.0f} s", file=sys.stderr)
    if number < last:
        shutil.rmtree(partial, ignore_errors=True)
        raise BuildError(f"video {video} has {number} frames, the ground truth goes to frame {last} (--video / --gt)")
    table = pd.DataFrame(rows)
    table.to_csv(partial / "annotations.csv", index=False)
    shutil.copyfile(gt_path, partial / "gt.txt")
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True, help="vtest.avi (Debian opencv-doc)")
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT, help=f"MOT gt.txt [default: {DEFAULT_GT}]")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write, e.g. DATA_ROOT/pets09_s2l1_full")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality [default: 95]")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        table = build(args.video, args.gt, args.out, args.quality, args.overwrite)
    except BuildError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"Error: {exc.name} is needed to decode the video: pip install -e \".[pets]\"", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(table)} crops of {table['pid'].nunique()} people from frames "
          f"{table['frame'].min()}-{table['frame'].max()}; {(table['occluded_fraction'] >= 0.2).sum()} "
          f"with occluded_fraction >= 0.2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
