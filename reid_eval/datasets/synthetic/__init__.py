"""A procedural occluded-person dataset: the embedded test bed of reid-eval.

Nobody can download Market-1501 or Occluded-REID on a fresh machine, yet the
paper's claim — foreground-weighted reconstruction (FPR) beats plain
reconstruction (DSR) and global features under occlusion — should be testable
by anyone in minutes. :func:`generate_synthetic_dataset` writes a set in the
Market-1501 layout that the ``synthetic_occluded`` dataset spec reads:

``<root>/bounding_box_train/``, ``<root>/query/``, ``<root>/bounding_box_test/``
with files ``{pid:04d}_c{cam}s1_{index:06d}_00.png``, an exact person mask per
image under ``<root>/masks/<same relative path>`` (PNG, 0 or 255; pixels of
the body hidden by an occluder are *not* person), ``manifest.csv``
(``path,pid,camid,split``), ``annotations.csv`` (``path,kind,hidden``: kind
``whole|occluded|partial`` and the fraction of the body hidden or cropped
away) and ``synthetic.json`` (the configuration).

What is in the pictures:

* identities: skin, hair (short/long), a top (colour pair, solid / stripes /
  checks, short or long sleeves), a bottom (trousers / shorts / skirt, with
  its own colour pair and pattern), shoes, body height and build. Colours
  come from a finite palette so identities share single garments;
* per image: pose (stride, arm swing, lean), scale and position jitter;
* per camera: a textured scene (brick, shop fronts or hedges over paving),
  a colour gain and a brightness, plus sensor noise;
* query = occluded (an object with a clutter texture — foliage, brick,
  painted metal, wood, posters — hides 20–50 % of the body, entering from the
  bottom, left or right) or partial (an upper-body crop of 45–70 % of the body
  height, saved at its own size as in Partial-REID); gallery = whole body;
  query cameras differ from gallery cameras; train = other identities, all
  cameras, a mix of whole, occluded and partial images.

The output is a pure function of the configuration (seed included): the same
configuration gives byte-identical files.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from reid_eval.datasets.synthetic import render
from reid_eval.datasets.synthetic import textures as tx
from reid_eval.errors import ReidEvalError

SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MASK_DIR = "masks"
FORMAT_VERSION = 1
_CHUNK = 128


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and randomness of a synthetic occluded-person set.

    Image sizes are pixels (height × width of the whole-body frames; partial
    crops are smaller). Cameras ``1..num_cameras // 2`` film the gallery,
    the others the query; train images come from every camera.
    """

    seed: int = 0
    num_train_ids: int = 150
    num_test_ids: int = 100
    train_images_per_id: int = 8
    gallery_images_per_id: int = 3
    query_images_per_id: int = 2
    height: int = 128
    width: int = 64
    num_cameras: int = 6
    occlusion: tuple[float, float] = (0.2, 0.5)
    partial_height: tuple[float, float] = (0.45, 0.7)
    query_partial_fraction: float = 0.3
    train_mix: tuple[float, float, float] = (0.5, 0.3, 0.2)  # whole, occluded, partial
    png_compress_level: int = 1

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is out of range."""
        checks = {
            "num_train_ids": self.num_train_ids >= 2,
            "num_test_ids": self.num_test_ids >= 1,
            "train_images_per_id": self.train_images_per_id >= 2,
            "gallery_images_per_id": self.gallery_images_per_id >= 1,
            "query_images_per_id": self.query_images_per_id >= 1,
            "height": self.height >= 32,
            "width": self.width >= 16,
            "num_cameras": self.num_cameras >= 2,
            "occlusion": 0.0 < self.occlusion[0] <= self.occlusion[1] < 1.0,
            "partial_height": 0.2 <= self.partial_height[0] <= self.partial_height[1] < 1.0,
            "query_partial_fraction": 0.0 <= self.query_partial_fraction <= 1.0,
            "train_mix": len(self.train_mix) == 3 and min(self.train_mix) >= 0 and sum(self.train_mix) > 0,
            "png_compress_level": 0 <= self.png_compress_level <= 9,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid synthetic dataset setting {bad[0]}={getattr(self, bad[0])!r}")


@dataclass
class SyntheticSummary:
    """What :func:`generate_synthetic_dataset` wrote (or found already written)."""

    root: Path
    counts: dict[str, int] = field(default_factory=dict)  # images per split
    ids: dict[str, int] = field(default_factory=dict)  # identities per split
    seconds: float = 0.0
    reused: bool = False

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"


@dataclass(frozen=True)
class _Plan:
    """One row per image, in writing order."""

    split: np.ndarray  # str
    pid: np.ndarray  # int64, 1-based identity number
    cam: np.ndarray  # int64, 1-based camera
    kind: np.ndarray  # 0 whole, 1 occluded, 2 partial


WHOLE, OCCLUDED, PARTIAL = 0, 1, 2
KIND_NAMES = ("whole", "occluded", "partial")


def _plan(cfg: SyntheticConfig, rng: np.random.Generator) -> _Plan:
    gallery_cams = np.arange(1, cfg.num_cameras // 2 + 1)
    query_cams = np.arange(cfg.num_cameras // 2 + 1, cfg.num_cameras + 1)
    split, pid, cam, kind = [], [], [], []
    mix = np.asarray(cfg.train_mix, float) / sum(cfg.train_mix)
    for p in range(1, cfg.num_train_ids + 1):
        k = cfg.train_images_per_id
        split += ["train"] * k
        pid += [p] * k
        cam += list(rng.integers(1, cfg.num_cameras + 1, size=k))
        kind += list(rng.choice(3, size=k, p=mix))
    test = range(cfg.num_train_ids + 1, cfg.num_train_ids + cfg.num_test_ids + 1)
    for p in test:
        k = cfg.query_images_per_id
        split += ["query"] * k
        pid += [p] * k
        cam += list(np.roll(query_cams, -int(rng.integers(len(query_cams))))[np.arange(k) % len(query_cams)])
        kind += list(np.where(rng.random(k) < cfg.query_partial_fraction, PARTIAL, OCCLUDED))
    for p in test:
        k = cfg.gallery_images_per_id
        split += ["gallery"] * k
        pid += [p] * k
        cam += list(np.roll(gallery_cams, -int(rng.integers(len(gallery_cams))))[np.arange(k) % len(gallery_cams)])
        kind += [WHOLE] * k
    return _Plan(np.array(split), np.array(pid, np.int64), np.array(cam, np.int64), np.array(kind, np.int64))


def relative_path(split: str, pid: int, cam: int, index: int) -> str:
    """The Market-style relative path of one image, posix."""
    return f"{SPLIT_DIRS[split]}/{pid:04d}_c{cam}s1_{index:06d}_00.png"


def render_chunk(rng: np.random.Generator, cfg: SyntheticConfig, identities: render.Identities,
                 canvases: np.ndarray, cam_gain: np.ndarray, cam_brightness: np.ndarray,
                 pid: np.ndarray, cam: np.ndarray, kind: np.ndarray
                 ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Render a chunk of images.

    ``pid``/``cam`` are 1-based, ``kind`` per image (whole/occluded/partial).
    Returns per image ``(rgb uint8 [h, w, 3], mask uint8 [h, w] in {0, 255},
    hidden)`` where partial crops have a smaller ``h`` and ``hidden`` is the
    fraction of the body hidden by the occluder or cut off by the crop.
    """
    n = len(pid)
    h, w = cfg.height, cfg.width
    ids = identities.take(pid - 1)
    scene = render.Scene(
        camera=cam - 1,
        gain=cam_gain[cam - 1] * rng.uniform(0.95, 1.05, (n, 3)).astype(np.float32),
        brightness=cam_brightness[cam - 1] * rng.uniform(0.9, 1.1, n).astype(np.float32),
        bg_offset=rng.integers(0, canvases.shape[2] - w + 1, size=n),
    )
    images, body, rows = render.render_people(rng, ids, scene, canvases, h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    coverage = rng.uniform(cfg.occlusion[0], cfg.occlusion[1], n)
    occ = kind == OCCLUDED
    hidden = np.zeros(n)
    if occ.any():
        images[occ], region = render.occlude(rng, images[occ], body[occ], coverage[occ], xx[None], yy[None])
        before = body[occ].sum(axis=(1, 2))
        body[occ] &= ~region
        hidden[occ] = 1.0 - body[occ].sum(axis=(1, 2)) / np.maximum(before, 1)
    pixels = render.light(rng, images, scene)
    masks = body.astype(np.uint8) * 255
    crop_frac = rng.uniform(cfg.partial_height[0], cfg.partial_height[1], n)
    margin = rng.uniform(0.0, 0.05, n) * h
    out = []
    for i in range(n):
        img, m = pixels[i], masks[i]
        if kind[i] == PARTIAL:
            top, bottom = rows[i]
            r0 = int(max(0.0, np.floor(top - margin[i])))
            r1 = int(min(h, np.ceil(top + crop_frac[i] * (bottom - top))))
            total = max(int(m.sum()), 1)
            img, m = img[r0:r1], m[r0:r1]
            hidden[i] = 1.0 - m.sum() / total
        out.append((np.ascontiguousarray(img), np.ascontiguousarray(m), float(hidden[i])))
    return out


def _write_png(path: Path, array: np.ndarray, level: int) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=level)


def generate_synthetic_dataset(root: Path, config: SyntheticConfig = SyntheticConfig(), *,
                               overwrite: bool = False,
                               on_progress: Callable[[int, int], None] | None = None) -> SyntheticSummary:
    """Write the synthetic set under ``root`` (see the module docstring for the layout).

    A folder that already holds a set made with the same configuration is
    reused as it is (``reused=True``). A folder holding anything else is
    refused with ReidEvalError unless ``overwrite`` is set, which removes only
    the files this generator writes. ``on_progress(done, total)`` is called
    after each chunk of images.
    """
    config.validate()
    t0 = time.perf_counter()
    root = Path(root)
    meta_path = root / "synthetic.json"
    wanted = {"format": FORMAT_VERSION, "config": asdict(config)}
    wanted = json.loads(json.dumps(wanted))  # tuples -> lists, as read back
    if meta_path.is_file() and (root / "manifest.csv").is_file():
        try:
            found = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            found = None
        if found is not None and {k: found.get(k) for k in wanted} == wanted:
            return _summary_from_manifest(root, time.perf_counter() - t0)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise ReidEvalError(f"{root} is not empty and holds no synthetic set made with these settings; "
                                "choose an empty folder or pass --overwrite")
        for name in [*SPLIT_DIRS.values(), MASK_DIR]:
            shutil.rmtree(root / name, ignore_errors=True)
        for name in ("manifest.csv", "annotations.csv", "synthetic.json"):
            (root / name).unlink(missing_ok=True)
    for d in SPLIT_DIRS.values():
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / MASK_DIR / d).mkdir(parents=True, exist_ok=True)

    # Independent streams: changing the number of images does not change identities or scenes.
    ss = np.random.SeedSequence(config.seed)
    id_seq, cam_seq, plan_seq, img_seq = ss.spawn(4)
    identities = render.sample_identities(np.random.default_rng(id_seq), config.num_train_ids + config.num_test_ids)
    cam_rng = np.random.default_rng(cam_seq)
    canvases = np.stack([tx.background_canvas(cam_rng, config.height, 3 * config.width)
                         for _ in range(config.num_cameras)])
    cam_gain = cam_rng.uniform(0.75, 1.2, (config.num_cameras, 3)).astype(np.float32)
    cam_brightness = cam_rng.uniform(0.8, 1.15, config.num_cameras).astype(np.float32)
    plan = _plan(config, np.random.default_rng(plan_seq))
    img_rng = np.random.default_rng(img_seq)

    total = len(plan.pid)
    manifest_rows, annotation_rows = [], []
    for start in range(0, total, _CHUNK):
        sl = slice(start, min(total, start + _CHUNK))
        rendered = render_chunk(img_rng, config, identities, canvases, cam_gain, cam_brightness,
                                plan.pid[sl], plan.cam[sl], plan.kind[sl])
        for j, (img, mask, hidden) in enumerate(rendered):
            i = start + j
            rel = relative_path(str(plan.split[i]), int(plan.pid[i]), int(plan.cam[i]), i)
            _write_png(root / rel, img, config.png_compress_level)
            _write_png(root / MASK_DIR / rel, mask, config.png_compress_level)
            manifest_rows.append((rel, int(plan.pid[i]), int(plan.cam[i]), str(plan.split[i])))
            annotation_rows.append((rel, KIND_NAMES[plan.kind[i]], f"{hidden:.4f}"))
        if on_progress is not None:
            on_progress(sl.stop, total)

    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "pid", "camid", "split"])
        writer.writerows(manifest_rows)
    with open(root / "annotations.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "kind", "hidden"])
        writer.writerows(annotation_rows)
    # Written last: its presence marks a complete set.
    meta_path.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    return _summary_from_manifest(root, time.perf_counter() - t0, reused=False)


def _summary_from_manifest(root: Path, seconds: float, reused: bool = True) -> SyntheticSummary:
    counts: dict[str, int] = {}
    ids: dict[str, set[int]] = {}
    with open(root / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            counts[row["split"]] = counts.get(row["split"], 0) + 1
            ids.setdefault(row["split"], set()).add(int(row["pid"]))
    return SyntheticSummary(root=root, counts=counts, ids={k: len(v) for k, v in ids.items()},
                            seconds=seconds, reused=reused)


__all__ = ["SyntheticConfig", "SyntheticSummary", "generate_synthetic_dataset", "relative_path",
           "render_chunk", "SPLIT_DIRS", "MASK_DIR", "KIND_NAMES"]
