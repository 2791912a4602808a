"""The 1e-5 contract of the float32-operand precisions (float32, tf32x3) on CNN features, with the refined share.

For each source, the whole query × gallery matrix of ``fpr_distances`` in
float32 and in tf32x3 (on NumPy: the TF32 parts in a float32 GEMM, the
emulation of the tensor cores' exact products) against the engine's float64
matrix: the largest difference (the contract: at most 1e-5) and the refined
share (entries recomputed in float64, :class:`reid_eval.matching.RefinementStats`).
Sources:

* ``resnet18``, ``resnet50``: randomly initialised networks of reid_eval.model
  on generated occluded-person images at 384x128 (the features of
  benchmarks/bench_matching.py, cached under ``--feature-cache``);
* ``osnet-partial_reid``, ``osnet-partial_ilids``: the real OSNet x0.25
  (torchreid's Market-1501 weights, converted) on the shared Partial-REID and
  Partial-iLIDS (all 300 × 300 and 119 × 119 images; extracted once into
  ``--feature-cache``), skipped when ../shared is absent;
* ``coherent``: generated non-negative features with one strong shared
  direction and self-matches (the float32 model's hard case), d = 2048.

Exit status 1 when any distance is outside the contract.

    python benchmarks/bench_precision.py
    python benchmarks/bench_precision.py --sources osnet-partial_reid,coherent
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from reid_eval.features import SpatialFeatures  # noqa: E402
from reid_eval.matching import RefinementStats, fpr_distances  # noqa: E402

SHARED = ROOT.parent / "shared"
OSNET = SHARED / "weights" / "osnet_x0_25_market1501.pth"
REAL_SETS = {"partial_reid": "Partial-REID_Dataset", "partial_ilids": "Partial_iLIDS"}
SOURCES = ("resnet18", "resnet50", "osnet-partial_reid", "osnet-partial_ilids", "coherent")
CONTRACT = 1e-5
PRECISIONS = ("float32", "tf32x3")


def coherent_features(seed: int = 0, n_probe: int = 20, n_gallery: int = 40, m: int = 110,
                      d: int = 2048) -> tuple[SpatialFeatures, SpatialFeatures, str]:
    """Non-negative features along one shared direction; the first gallery images repeat probe images."""
    rng = np.random.default_rng(seed)
    shared = np.abs(rng.standard_normal(d))[None]

    def split(n: int) -> np.ndarray:
        return (shared + 0.3 * np.abs(rng.standard_normal((n * m, d)))).astype(np.float32)

    probe, gallery = split(n_probe), split(n_gallery)
    gallery[: 5 * m] = probe[: 5 * m]
    fg = lambda n: rng.uniform(0.05, 1.0, n * m).astype(np.float32)  # noqa: E731
    offsets = lambda n: np.arange(n + 1, dtype=np.int64) * m  # noqa: E731
    return (SpatialFeatures(probe, offsets(n_probe), fg(n_probe)), SpatialFeatures(gallery, offsets(n_gallery), fg(n_gallery)),
            f"generated coherent, {m} locations, d={d}, 5 self-matches")


def osnet_features(dataset: str, cache_dir: Path) -> tuple[SpatialFeatures, SpatialFeatures, str] | None:
    """The real OSNet features of a shared set (query, gallery), extracted once into ``cache_dir``; None if absent."""
    from reid_eval.features import extract_dataset, read_split
    from reid_eval_cli.main import main as cli

    root = SHARED / "data" / REAL_SETS[dataset]
    if not (OSNET.exists() and root.is_dir()):
        return None
    ckpt = cache_dir / "osnet_x0_25_market1501.pt"
    if not ckpt.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        if cli(["checkpoint", "convert", "--from", "torchreid", str(OSNET), "--out", str(ckpt)]) != 0:
            raise SystemExit(f"could not convert {OSNET}")
    t0 = time.perf_counter()
    cache = extract_dataset(dataset, root, ckpt, cache_dir / "features", device="cpu", batch_size=64)
    print(f"  {dataset} features ready in {time.perf_counter() - t0:.0f} s ({cache})")
    q, g = read_split(cache, "query").spatial, read_split(cache, "gallery").spatial
    return q, g, f"OSNet x0.25 (Market-1501 weights) on {dataset}, {len(q)} x {len(g)} images, d={q.dim}"


def load(source: str, cache_dir: Path) -> tuple[SpatialFeatures, SpatialFeatures, str] | None:
    """(probe, gallery, description) of ``source``, or None when its data is absent."""
    if source == "coherent":
        return coherent_features()
    if source.startswith("osnet-"):
        return osnet_features(source.split("-", 1)[1], cache_dir)
    from bench_matching import cnn_features

    return cnn_features(source, 40, 60, cache_dir)


def check(probe: SpatialFeatures, gallery: SpatialFeatures) -> dict[str, tuple[float, RefinementStats, float]]:
    """Per precision: (max |D − D64|, refinement counts, seconds)."""
    exact = fpr_distances(probe, gallery, backend="numpy", precision="float64")
    out = {}
    for precision in PRECISIONS:
        stats = RefinementStats()
        t0 = time.perf_counter()
        dist = fpr_distances(probe, gallery, backend="numpy", precision=precision, stats=stats)
        out[precision] = (float(np.abs(dist - exact).max()), stats, time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated, of {', '.join(SOURCES)}")
    ap.add_argument("--feature-cache", type=Path, default=Path("/tmp/reid_eval_bench_features"),
                    help="where extracted features are kept between runs")
    args = ap.parse_args(argv)
    sources = [s for s in args.sources.split(",") if s]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        ap.error(f"--sources: unknown {', '.join(unknown)} (known: {', '.join(SOURCES)})")
    outside = 0
    for source in sources:
        loaded = load(source, args.feature_cache)
        if loaded is None:
            print(f"{source}: skipped: the shared OSNet weights or data set are absent ({SHARED})")
            continue
        probe, gallery, what = loaded
        print(f"{source}: {what}")
        for precision, (err, stats, seconds) in check(probe, gallery).items():
            ok = err <= CONTRACT
            outside += not ok
            print(f"  {precision:8s} max |D - D64| {err:.2e} ({'within' if ok else 'OUTSIDE'} 1e-5); refined share "
                  f"{stats.refined_share:.2e} ({stats.refined} of {stats.entries} entries); {seconds:.2f} s")
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main())
