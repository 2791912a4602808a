"""Benchmark of the all-pairs FPR engine against a bare matmul and the per-pair algorithm.

Part 1, generated features: d = 2048, 110 locations per image, 60 probes x
60 gallery images (the paper's 384x128 input). Prints, from one run, the time of:

* ``fpr_distances`` (this package),
* the bare matrix product of the same stacked shape (6600x2048 @ 2048x6600,
  float32) -- the floor any exact all-pairs method has to pay,
* the authors' per-pair algorithm: per gallery image P = (YᵀY+βI)⁻¹Yᵀ, then per
  pair W = P X, E = X − Y W, column norms, weighted sum,

and the ratios. Targets: (a) fpr <= 1.3x matmul, (b) fpr >= 4x faster than
per-pair. Each time is the best of ``--repeats`` runs (the machine may be
shared); the per-pair algorithm runs once with NumPy's default BLAS threads
(the target) and once with one BLAS thread (reported: its small GEMMs gain
from that on a loaded machine).

Part 2, CNN features (``--sources``): pyramid features that the project's own
network (reid_eval.model) extracts from generated occluded-person images
(reid_eval.datasets.synthetic; query images as probes, gallery images as
gallery, so same-identity pairs are close): a randomly initialised ResNet-18
(d = 512) and ResNet-50 (d = 2048) at 384x128 (110 locations), and, with
``--checkpoint FILE``, a trained model at its own input size (for example the
demo's: ``reid-eval demo --workdir W`` writes ``W/train/model.pt``).
Features are cached under ``--feature-cache`` so a rerun skips extraction.
For each source, side by side in one run (``--repeats``, default 7,
interleaved): ``fpr_distances`` in float32, the engine's own float64 path
(``precision="float64"``) and the bare float32 GEMM of the same stacked
shape (the floor), the refined share (``RefinementStats``), the maximum
difference to the float64 path and, on ``--check-pairs`` pairs, to the
float64 one-pair definition. The floor is the fastest of three ways of
doing the GEMM's multiply-adds, chosen first by the median of
``FLOOR_TRIALS`` interleaved runs of each: one product; cut into the
engine's tiles (each tile its own rows of both operands, into one output
buffer that the run allocates and its tiles reuse, like the engine's
workspace); and those tiles with the probe operand laid out as the engine
lays it (rows ``[N, d]``, multiplied transposed). Then each repeat runs the
floor, float32, the floor again and float64, and the float32 time is
divided by the mean of the nearest floor runs before and after it (a drift of
the machine's speed cancels to first order). Targets: float32 <= 1.2x the
GEMM and <= the float64 path, every distance within 1e-5; the time ratios
are judged by their median over the repeats (on a shared VM the speed
drifts by 10-20% between runs, and a ratio of separate minima moves far
more), and the ratio of the best times is printed beside it.
The fixed cost of preparing each gallery image (its
float64 Gram matrix and basis) is paid once per gallery image and amortised
over all probes; ``--probe-repeat`` stacks the probe images that many times
to reach a realistic number of probe locations per gallery image without
extracting more images (repeats change no distance). By default the 40
probe images are stacked to about 70,000 probe locations (16 times at
384x128, 32 times at 128x64) against as many gallery images as fill one
gallery block of the default budget (``--cnn-gallery``; 158 at 110
locations and d = 512, 130 at d = 2048, 292 at 58 locations): several full
tiles, as nearly every tile of a run at full scale is (a gallery block half
full would weigh each probe block's preparation, paid once per tile, twice
as much), and enough probes per gallery image that the gallery's
preparation weighs 1-2% (in a Market-1501 run, where every gallery block
meets 3,368 probes, a fifth of that). At much smaller shapes (e.g.
``--cnn-gallery 30 --probe-repeat 4``) the fixed preparation of each block
weighs more. Every timed run starts on memory just freed
(:func:`memory_warmer`): on this project's VM the first touch of memory
unused for a few seconds costs more than the arithmetic of a short run.

``--calibrate`` instead measures the float32 and tf32x3 (emulated) errors of S
against the error model of reid_eval.matching.kernel.accuracy over d = 1..2048,
M = 1..110 and prints the largest ratio of each (it must stay below 1 with a margin).

Exit status 1 when a target is missed.

    python benchmarks/bench_matching.py [--backend numpy|cupy] [--repeats 7]
        [--sources synthetic,resnet18,resnet50] [--checkpoint demo/train/model.pt]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# reid_eval first, as in `reid-eval match`: importing it before NumPy applies
# its OpenBLAS thread setting (see reid_eval/__init__.py).
import reid_eval  # noqa: F401  isort: skip

import numpy as np

from reid_eval.features import SpatialFeatures
from reid_eval.matching import fpr_distance_reference, fpr_distances
from reid_eval.matching.definition import DEFAULT_BETA
from reid_eval.matching.kernel.backend import large_empty
from reid_eval.matching.kernel.threads import blas_threads
from reid_eval.matching.memory import DEFAULT_MEMORY_BUDGET
from reid_eval.matching.plan import block_rows_for, plan_tiles


def best_time(fn, repeats: int, sync=lambda: None, before=lambda: None) -> tuple[float, object]:
    """(fastest of ``repeats`` timed calls of ``fn``, its last result); ``before()`` runs untimed ahead of each."""
    best, result = float("inf"), None
    for _ in range(repeats):
        before()
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best, result


def memory_warmer(nbytes: int):
    """A callable that touches and frees ``nbytes`` of large buffers, to run just before a timed call.

    On a virtual machine that returns freed memory to its host (Linux page
    reporting, as on this project's VM), the first touch of memory the
    process has not used for a few seconds is slow: measured, 1.6 s for a
    fresh 440 MB buffer against 0.07 s for one just freed. Timed back to back,
    whichever run allocates more than the run before it freed pays that, a
    cost of the VM and of a run too short to reuse its buffers, not of the
    arithmetic (a run at full scale reuses one workspace over hundreds of
    tiles). Touching as much as any timed run uses, right before it, gives
    every run memory just freed.
    """
    def warm() -> None:
        buffer = large_empty(np, (nbytes,), np.uint8)
        buffer.fill(1)
        del buffer

    return warm


def make_features(rng: np.random.Generator, n: int, m: int, d: int) -> SpatialFeatures:
    # Non-negative, correlated like post-ReLU CNN features.
    local = np.maximum(rng.standard_normal((n * m, d)) + 0.5, 0).astype(np.float32)
    offsets = np.arange(n + 1, dtype=np.int64) * m
    fg = rng.uniform(0.05, 1.0, n * m).astype(np.float32)
    return SpatialFeatures(local, offsets, fg)


def per_pair_numpy(probe: SpatialFeatures, gallery: SpatialFeatures, beta: float) -> np.ndarray:
    """The authors' algorithm in NumPy float32 (normalised rows, [N, d] layout)."""
    def norm(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    xs = [norm(probe.image(i)) for i in range(len(probe))]
    hs = [probe.image_foreground(i) / probe.image_foreground(i).sum() for i in range(len(probe))]
    out = np.empty((len(probe), len(gallery)), dtype=np.float32)
    for j in range(len(gallery)):
        y = norm(gallery.image(j))  # [M, d]
        proj = np.linalg.solve(y @ y.T + beta * np.eye(y.shape[0], dtype=np.float32), y)  # (YᵀY+βI)⁻¹Yᵀ as [M, d]
        for i, (x, h) in enumerate(zip(xs, hs)):
            w = proj @ x.T  # [M, N]
            e = x - w.T @ y
            out[i, j] = h @ np.sqrt((e * e).sum(axis=1))
    return out


def per_pair_torch(probe: SpatialFeatures, gallery: SpatialFeatures, beta: float):
    import torch

    dev = "cuda"
    def norm(a):
        return torch.nn.functional.normalize(torch.as_tensor(a, device=dev), dim=1)

    xs = [norm(probe.image(i)) for i in range(len(probe))]
    hs = [torch.as_tensor(probe.image_foreground(i) / probe.image_foreground(i).sum(), device=dev) for i in range(len(probe))]
    out = torch.empty((len(probe), len(gallery)), device=dev)
    for j in range(len(gallery)):
        y = norm(gallery.image(j))
        proj = torch.linalg.solve(y @ y.T + beta * torch.eye(y.shape[0], device=dev), y)
        for i, (x, h) in enumerate(zip(xs, hs)):
            e = x - (proj @ x.T).T @ y
            out[i, j] = h @ torch.sqrt((e * e).sum(dim=1))
    return out.cpu().numpy()


def breakdown(probe: SpatialFeatures, gallery: SpatialFeatures, beta: float, backend: str) -> None:
    """Time the steps of the engine on one tile holding everything."""
    from reid_eval.matching import fpr_tile, get_array_module, prepare_gallery, prepare_probes

    xp = get_array_module(backend)
    sync = xp.cuda.Device().synchronize if xp is not np else (lambda: None)
    t_probe, probes = best_time(lambda: prepare_probes(probe, backend=xp), 3, sync)
    t_gallery, basis = best_time(lambda: prepare_gallery(gallery, beta=beta, backend=xp), 3, sync)
    t_tile, _ = best_time(lambda: fpr_tile(probes, basis), 3, sync)
    t_gemm, _ = best_time(lambda: basis.bt @ probes.x.T, 3, sync)
    print(f"breakdown: prepare probes {t_probe:.4f} s, prepare gallery {t_gallery:.4f} s, "
          f"tile {t_tile:.4f} s of which GEMM {t_gemm:.4f} s")


def bench_synthetic(args: argparse.Namespace) -> bool:
    """Part 1: generated features, the engine against the bare matmul and the per-pair algorithm."""
    rng = np.random.default_rng(0)
    probe = make_features(rng, args.probes, args.locations, args.dim)
    gallery = make_features(rng, args.gallery, args.locations, args.dim)
    beta = DEFAULT_BETA
    a = rng.standard_normal((args.gallery * args.locations, args.dim)).astype(np.float32)
    b = rng.standard_normal((args.dim, args.probes * args.locations)).astype(np.float32)

    if args.backend == "cupy":
        import cupy

        sync = cupy.cuda.Device().synchronize
        a_dev, b_dev = cupy.asarray(a), cupy.asarray(b)
        t_mm, _ = best_time(lambda: cupy.matmul(a_dev, b_dev), args.repeats + 2, sync)
        t_fpr, dist = best_time(lambda: fpr_distances(probe, gallery, beta=beta, backend="cupy", precision="float32"), args.repeats + 2, sync)
        t_pair, pair = best_time(lambda: per_pair_torch(probe, gallery, beta), 1, sync)
        t_pair_single = None
        pair_name = "per-pair (torch, GPU)"
    else:
        # Interleaved, so both see the same load on a shared machine.
        t_mm, t_fpr = float("inf"), float("inf")
        warm = memory_warmer(max(a.shape[0] * b.shape[1] * 4, DEFAULT_MEMORY_BUDGET) + (256 << 20))
        for _ in range(args.repeats):
            t_mm = min(t_mm, best_time(lambda: np.matmul(a, b), 1, before=warm)[0])
            t, dist = best_time(lambda: fpr_distances(probe, gallery, beta=beta, backend="numpy", precision="float32"), 1, before=warm)
            t_fpr = min(t_fpr, t)
        # The per-pair algorithm as written runs with NumPy's default BLAS
        # threads; its many small GEMMs run much faster on one thread on a
        # loaded machine, so that variant is timed and reported too.
        t_pair, pair = best_time(lambda: per_pair_numpy(probe, gallery, beta), 1)
        with blas_threads(1):
            t_pair_single, _ = best_time(lambda: per_pair_numpy(probe, gallery, beta), 1)
        pair_name = "per-pair (NumPy)"
    ref = fpr_distance_reference(probe.image(0), gallery.image(0), probe.image_foreground(0), beta)
    shape = f"{a.shape[0]}x{a.shape[1]} @ {b.shape[0]}x{b.shape[1]}"
    print(f"backend={args.backend} d={args.dim} locations={args.locations} probes={args.probes} gallery={args.gallery}")
    print(f"fpr_distances          {t_fpr:8.3f} s")
    print(f"bare matmul {shape:<14}{t_mm:8.3f} s")
    print(f"{pair_name:<23}{t_pair:8.3f} s")
    ratio_mm = t_fpr / t_mm
    speedup = t_pair / t_fpr
    print(f"(a) fpr / matmul       {ratio_mm:8.2f}x   (target <= 1.3)")
    print(f"(b) per-pair / fpr     {speedup:8.2f}x   (target >= 4)")
    if t_pair_single is not None:
        print(f"    per-pair with one BLAS thread {t_pair_single:.3f} s: {t_pair_single / t_fpr:.2f}x fpr (not a target)")
    print(f"max |fpr - per-pair| = {np.abs(dist - pair).max():.2e}, |fpr[0,0] - reference| = {abs(dist[0, 0] - ref):.2e}")
    if args.breakdown:
        breakdown(probe, gallery, beta, args.backend)
    ok = ratio_mm <= 1.3 and speedup >= 4.0
    print("targets met" if ok else "TARGET MISSED")
    return ok



# ---------------------------------------------------------------- CNN features

CNN_SOURCES = ("resnet18", "resnet50")


def _synthetic_images(root: Path, n_probe: int, n_gallery: int) -> tuple[list[Path], list[Path]]:
    """Query and gallery image paths of a generated occluded-person set large enough for the counts."""
    import csv

    from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset

    ids = max(2, -(-n_probe // 2), -(-n_gallery // 3))
    config = SyntheticConfig(seed=0, num_train_ids=2, num_test_ids=ids, train_images_per_id=2)
    generate_synthetic_dataset(root, config)
    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    query = [root / r["path"] for r in rows if r["split"] == "query"][:n_probe]
    gallery = [root / r["path"] for r in rows if r["split"] == "gallery"][:n_gallery]
    return query, gallery


def _extract(model, config, paths: list[Path]) -> SpatialFeatures:
    """Pyramid features and foreground of ``paths`` resized to the model's input size."""
    import torch

    from reid_eval.features.preprocess import Preprocessing, load_image_array, to_tensor_batch

    prep = Preprocessing.for_model(config)
    local, fg = [], []
    with torch.no_grad():
        for i in range(0, len(paths), 16):
            out = model(to_tensor_batch([load_image_array(p, prep) for p in paths[i : i + 16]], prep))
            local.append(out.local.reshape(-1, out.local.shape[-1]).numpy())
            fg.append(out.foreground.reshape(-1).numpy())
    n = out.local.shape[1]
    return SpatialFeatures(np.concatenate(local), np.arange(len(paths) + 1, dtype=np.int64) * n, np.concatenate(fg))


def cnn_features(source: str, n_probe: int, n_gallery: int, cache_dir: Path, checkpoint: Path | None = None):
    """(probe, gallery, description) features of ``source``, extracted once and cached as .npz."""
    import hashlib

    tag = source if checkpoint is None else f"{source}-{hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]}"
    path = cache_dir / f"{tag}-{n_probe}x{n_gallery}.npz"
    if not path.is_file():
        import tempfile

        import torch

        from reid_eval.model import ModelConfig, build_model
        from reid_eval.model.checkpoint import load_checkpoint

        t0 = time.perf_counter()
        torch.manual_seed(0)
        if checkpoint is not None:
            model, config, _ = load_checkpoint(checkpoint)
        else:
            config = ModelConfig(backbone=source)
            model = build_model(config).eval()
        with tempfile.TemporaryDirectory() as tmp:
            query, gallery = _synthetic_images(Path(tmp), n_probe, n_gallery)
            probe, gal = _extract(model, config, query), _extract(model, config, gallery)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(path, probe_local=probe.local, probe_offsets=probe.offsets, probe_fg=probe.foreground,
                 gallery_local=gal.local, gallery_offsets=gal.offsets, gallery_fg=gal.foreground,
                 input_size=np.array(config.input_size), backbone=np.array(config.backbone))
        print(f"  extracted {source} features of {n_probe + n_gallery} images in {time.perf_counter() - t0:.0f} s -> {path}")
    z = np.load(path)
    probe = SpatialFeatures(z["probe_local"], z["probe_offsets"], z["probe_fg"])
    gallery = SpatialFeatures(z["gallery_local"], z["gallery_offsets"], z["gallery_fg"])
    h, w = z["input_size"].tolist()
    init = "trained" if checkpoint is not None else "random init"
    return probe, gallery, f"{z['backbone']} ({init}), {h}x{w}"


def _repeat(features: SpatialFeatures, k: int) -> SpatialFeatures:
    if k == 1:
        return features
    counts = np.tile(features.counts, k)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SpatialFeatures(np.tile(features.local, (k, 1)), offsets, np.tile(features.foreground, k))


#: Interleaved runs of each bare GEMM variant that choose the floor of part 2.
FLOOR_TRIALS = 2

#: Default probe locations of part 2. Each gallery image's preparation (its float64 Gram matrix and
#: basis) is paid once and shared by every probe: in a Market-1501 run by 3,368 probes (370,000
#: locations); at about 70,000 it weighs 1-2% of the time, at 370,000 a fifth of that.
PROBE_LOCATIONS = 70_000


#: Gallery images extracted per CNN source at first; by default the benchmark then takes as many
#: as fill one gallery block (:func:`whole_block_gallery`), extracting more if needed.
CNN_GALLERY = 100


def whole_block_gallery(gallery: SpatialFeatures) -> int:
    """Gallery images (of ``gallery``'s location count) that fill one gallery block of the default budget.

    In a run at full scale (15,913 gallery images) all tiles but the last of
    each row are full; a benchmark gallery that fills half a block would
    weigh each probe block's preparation (paid once per tile) twice as much.
    """
    m = int(gallery.counts.max())
    return max(1, block_rows_for(gallery.dim, m, m, DEFAULT_MEMORY_BUDGET, 1) // m)


def bench_source(name: str, probe: SpatialFeatures, gallery: SpatialFeatures, args: argparse.Namespace) -> bool:
    """Part 2 for one feature source; prints one block, returns whether the targets are met."""
    from reid_eval.matching import RefinementStats

    repeat = args.probe_repeat or max(1, round(PROBE_LOCATIONS / probe.local.shape[0]))
    probe = _repeat(probe, repeat)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((gallery.local.shape[0], gallery.dim)).astype(np.float32)
    b = rng.standard_normal((gallery.dim, probe.local.shape[0])).astype(np.float32)
    # The engine's own tiles (default budget): the same GEMMs cut as it cuts them.
    plan = plan_tiles(probe.offsets, gallery.offsets, gallery.dim, memory_budget_bytes=DEFAULT_MEMORY_BUDGET,
                      concurrent_tiles=1, strict=False)
    g_rows = [(int(gallery.offsets[i]), int(gallery.offsets[j])) for i, j in plan.gallery_blocks]
    p_rows = [(int(probe.offsets[i]), int(probe.offsets[j])) for i, j in plan.probe_blocks]
    run32 = lambda: fpr_distances(probe, gallery, backend=args.backend, precision="float32")  # noqa: E731
    run64 = lambda: fpr_distances(probe, gallery, backend=args.backend, precision="float64")  # noqa: E731
    if args.backend == "cupy":
        import cupy

        xp = cupy
        sync = cupy.cuda.Device().synchronize
    else:
        xp = np
        sync = lambda: None  # noqa: E731
    a_dev, b_dev = xp.asarray(a), xp.asarray(b)
    # Each tile multiplies its own rows of both operands (as the engine's tiles do: the same rows
    # for every tile would stay in cache) into one output buffer reused by the tiles of a run and
    # allocated by the run, as the engine's workspace is (large_empty: the same kind of memory).
    out_size = max(gb - ga for ga, gb in g_rows) * max(pb - pa for pa, pb in p_rows)
    tiles = [(a_dev[ga:gb], b_dev[:, pa:pb]) for ga, gb in g_rows for pa, pb in p_rows]
    # the engine's own operand layout: probe rows [N, d] multiplied transposed (another BLAS packing path)
    b_rows = xp.ascontiguousarray(b_dev.T)
    row_tiles = [(a_dev[ga:gb], b_rows[pa:pb].T) for ga, gb in g_rows for pa, pb in p_rows]

    def run_tiles(operands) -> None:
        buffer = large_empty(xp, (out_size,), xp.float32)
        for ta, tb in operands:
            xp.matmul(ta, tb, out=buffer[: ta.shape[0] * tb.shape[1]].reshape(ta.shape[0], tb.shape[1]))

    def gemm_stacked():
        return xp.matmul(a_dev, b_dev)

    def gemm_tiled():
        run_tiles(tiles)

    def gemm_row_tiles():
        run_tiles(row_tiles)

    # Every timed run starts on memory just freed (memory_warmer): as much as the largest of them uses.
    warm = (memory_warmer(max(a.shape[0] * b.shape[1] * 4, DEFAULT_MEMORY_BUDGET) + (256 << 20))
            if xp is np else (lambda: None))
    gemms = (gemm_stacked, gemm_tiled, gemm_row_tiles)
    # The floor: the way of doing the same multiply-adds that is fastest, chosen first from
    # FLOOR_TRIALS interleaved runs of each by their median (taking the fastest of the three within
    # each repeat instead would pick whichever happened to run during a lull: a floor biased low by
    # the noise, not by the arithmetic).
    trials = np.array([[best_time(g, 1, sync, warm)[0] for g in gemms] for _ in range(FLOOR_TRIALS)])
    floor = int(np.argmin(np.median(trials, axis=0)))
    # Each repeat: floor, float32, floor, float64. The float32 run is compared with the mean of
    # the nearest floor runs before and after it (a drift of the machine's speed cancels to first
    # order), and the float64 run with the float32 one; the judged ratio is the median over the
    # repeats: on a machine whose speed drifts by 10-20% between runs, it moves far less than a
    # ratio of two separate minima.
    floors, t32s, t64s = [best_time(gemms[floor], 1, sync, warm)[0]], [], []
    for _ in range(args.repeats):
        t, d32 = best_time(run32, 1, sync, warm)
        floors.append(best_time(gemms[floor], 1, sync, warm)[0])
        t_64, d64 = best_time(run64, 1, sync, warm)
        t32s.append(t)
        t64s.append(t_64)
    floors_a, t32a, t64a = np.array(floors), np.array(t32s), np.array(t64s)
    t_stack, t_tiled, t_rows = trials.min(axis=0)
    t_mm, t32, t64 = float(floors_a.min()), float(t32a.min()), float(t64a.min())
    ratios_mm = t32a / ((floors_a[:-1] + floors_a[1:]) / 2)
    paired_mm = float(np.median(ratios_mm))
    paired_64 = float(np.median(t32a / t64a))
    stats = RefinementStats()
    fpr_distances(probe, gallery, backend=args.backend, precision="float32", stats=stats)
    n_check = min(args.check_pairs, len(probe))
    ref = np.array([[fpr_distance_reference(probe.image(i), gallery.image(j), probe.image_foreground(i))
                     for j in range(len(gallery))] for i in range(n_check)])
    err64 = float(np.abs(d32 - d64).max())
    err_ref = float(np.abs(d32[:n_check] - ref).max())
    err_64ref = float(np.abs(d64[:n_check] - ref).max())
    r_mm, r_64 = t32 / t_mm, t32 / t64
    ok = paired_mm <= 1.2 and paired_64 <= 1.0 and max(err64, err_ref) <= 1e-5
    m_g = np.diff(gallery.offsets)
    print(f"{name}: d={gallery.dim}, {len(probe)} probes x {len(gallery)} gallery images, "
          f"{int(np.median(m_g))} locations; GEMM {a.shape[0]}x{a.shape[1]} @ {b.shape[0]}x{b.shape[1]}")
    variants = ("one stacked product", f"the engine's {len(tiles)} tile(s)", "the same tiles in the engine's operand layout")
    n = args.repeats
    print(f"  fpr float32 {t32:7.3f} s | float64 path {t64:7.3f} s | bare GEMM {t_mm:7.3f} s "
          f"({variants[floor]}, the fastest by median of {FLOOR_TRIALS} trials; best of those: one stacked product "
          f"{t_stack:.3f} s, the engine's tiles {t_tiled:.3f} s, in its operand layout {t_rows:.3f} s)")
    print(f"  float32 / GEMM {r_mm:5.2f}x best of {n}, {paired_mm:5.2f}x median of the {n} ratios to the GEMM runs "
          f"around each ({', '.join(f'{r:.2f}' for r in ratios_mm)}) (target <= 1.2)")
    print(f"  float32 / float64 path {r_64:5.2f}x best of {n}, {paired_64:5.2f}x median (target <= 1)")
    print(f"  refined share {stats.refined_share:.2e} ({stats.refined} of {stats.entries} entries)")
    print(f"  max |float32 - float64 path| {err64:.2e}; max |float32 - definition| {err_ref:.2e}, "
          f"|float64 path - definition| {err_64ref:.2e} over {n_check} probes x {len(gallery)} (contract 1e-5)")
    print("  " + ("targets met" if ok else "TARGET MISSED"))
    return ok


# ---------------------------------------------------------------- calibration

def calibrate(seed: int = 0, precision: str = "float32") -> float:
    """Largest |S − float64 S| / δs of the engine's error model for ``precision`` (float32 or tf32x3) over hard cases."""
    from reid_eval.matching.kernel import accuracy, prepare_gallery, prepare_probes, tile

    rng = np.random.default_rng(seed)
    worst = 0.0
    for d in (1, 4, 16, 64, 256, 512, 1024, 2048):
        row = []
        for m in (1, 8, 40, 110):
            r_dm = 0.0
            for kind in ("gauss", "relu", "coherent"):
                n = 3 * m
                if kind == "gauss":
                    y = rng.standard_normal((n, d))
                elif kind == "relu":
                    y = np.maximum(rng.standard_normal((n, d)) + rng.uniform(0, 1) * rng.standard_normal(d), 0) + 1e-3
                else:  # one strong shared positive direction, like random-init CNN features
                    y = np.abs(rng.standard_normal(d))[None] + 0.2 * np.abs(rng.standard_normal((n, d)))
                y = y.astype(np.float32)
                y64 = y.astype(np.float64)
                span = rng.uniform(0, 1, (60, n)) ** 8 @ y64  # non-negative mixtures in the span
                dup = y64[:1] * (1 + 1e-7 * rng.standard_normal((5, 1)))  # near-duplicates of a location
                x = np.concatenate([span, y64, dup]).astype(np.float32)
                probe = SpatialFeatures(x, np.array([0, 60, 60 + n, 65 + n]), np.ones(len(x), np.float32))
                gal = SpatialFeatures(y, np.arange(4) * m)
                pb = prepare_probes(probe, backend="numpy", precision=precision)
                gb = prepare_gallery(gal, backend="numpy", precision=precision)
                p64 = prepare_probes(probe, backend="numpy", precision="float64")
                g64 = prepare_gallery(gal, backend="numpy", precision="float64")
                err = np.abs(tile._unrefined_e2(np, pb, gb) - tile._unrefined_e2(np, p64, g64))
                r_dm = max(r_dm, float((err / accuracy.error_bound_s(np, pb, np.diff(gb.offsets))).max()))
            row.append(r_dm)
            worst = max(worst, r_dm)
        print(f"  d={d:5d}  error / bound at M = 1, 8, 40, 110: " + "  ".join(f"{v:5.3f}" for v in row))
    print(f"{precision}: largest error / bound {worst:.3f} (margin {1 / worst:.2f}x)")
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--probes", type=int, default=60, help="part 1: probe images")
    ap.add_argument("--gallery", type=int, default=60, help="part 1: gallery images")
    ap.add_argument("--locations", type=int, default=110)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--breakdown", action="store_true", help="also time the steps of one tile")
    ap.add_argument("--sources", default="synthetic,resnet18,resnet50",
                    help="comma-separated: synthetic (part 1), resnet18, resnet50 (random init); "
                         "--checkpoint adds a trained source")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a reid-eval checkpoint (e.g. the demo's model.pt)")
    ap.add_argument("--cnn-probes", type=int, default=40, help="probe images extracted per CNN source")
    ap.add_argument("--cnn-gallery", type=int, default=None,
                    help="gallery images per CNN source (default: as many as fill one gallery block of the "
                         "default memory budget)")
    ap.add_argument("--probe-repeat", type=int, default=None,
                    help="stack the CNN probe images this many times (default: enough for about "
                         f"{PROBE_LOCATIONS:,} probe locations)")
    ap.add_argument("--check-pairs", type=int, default=4, help="probes compared with the one-pair definition")
    ap.add_argument("--feature-cache", type=Path, default=Path(tempfile.gettempdir()) / "reid-eval-bench-features")
    ap.add_argument("--calibrate", action="store_true", help="only run the error-model calibration sweep")
    args = ap.parse_args(argv)
    if args.calibrate:
        return 0 if max(calibrate(precision=p) for p in ("float32", "tf32x3")) < 1.0 else 1
    sources = [s for s in args.sources.split(",") if s]
    unknown = sorted(set(sources) - {"synthetic", *CNN_SOURCES})
    if unknown:
        ap.error(f"unknown --sources {', '.join(unknown)}; choose from synthetic, {', '.join(CNN_SOURCES)}")
    ok = True
    if "synthetic" in sources:
        ok &= bench_synthetic(args)
    cnn = [(s, None) for s in sources if s in CNN_SOURCES]
    if args.checkpoint is not None:
        cnn.append(("trained", args.checkpoint))
    for source, checkpoint in cnn:
        print()
        probe, gallery, name = cnn_features(source, args.cnn_probes, args.cnn_gallery or CNN_GALLERY,
                                            args.feature_cache, checkpoint)
        if args.cnn_gallery is None:
            whole = whole_block_gallery(gallery)
            if whole > len(gallery):
                probe, gallery, name = cnn_features(source, args.cnn_probes, whole, args.feature_cache, checkpoint)
            gallery = gallery[:whole]
        ok &= bench_source(name, probe, gallery, args)
    print()
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
