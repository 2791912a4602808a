"""Small problems: the engine against the bare GEMM of the same shape, side by side in one run.

The test sets of the paper are small: Partial-REID has 300 probes × 300
gallery images, Partial-iLIDS 119 × 119. At such sizes the fixed costs of a
run (block preparation, centring, thread hand-offs) weigh against a GEMM of
a second or less. For each shape, ``--repeats`` rounds of: the bare float32
GEMM ``[G·m, d] @ [d, P·m]``, ``fpr_distances`` (float32, in memory, one
call as a user makes it), the GEMM again; the engine's time over the mean of
the two GEMMs around it, and the median of those ratios over the rounds (a
drift of a shared machine's speed cancels to first order). Target: at most
1.2× at every shape. Features are generated (non-negative, correlated, like
a CNN's; the time does not depend on the values, as nothing is refined).

Shapes: the two sets with the real OSNet x0.25's pyramid (70 locations,
d = 128, tests/test_real_partial_sets.py), with a ResNet-18's at 384x128
(110 locations, d = 512), 60 × 60 images of 110 locations at d = 2048 and
40 × 30 at d = 512.

    python benchmarks/bench_small.py
    python benchmarks/bench_small.py --shapes partial_ilids-osnet,60x60-2048 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from reid_eval.features import SpatialFeatures
from reid_eval.matching import fpr_distances

#: name -> (probe images, gallery images, locations per image, d)
SHAPES = {
    "partial_reid-osnet": (300, 300, 70, 128),
    "partial_ilids-osnet": (119, 119, 70, 128),
    "partial_reid-resnet18": (300, 300, 110, 512),
    "partial_ilids-resnet18": (119, 119, 110, 512),
    "60x60-2048": (60, 60, 110, 2048),
    "40x30-512": (40, 30, 110, 512),
}
TARGET = 1.2


def features(rng: np.random.Generator, n: int, m: int, d: int) -> SpatialFeatures:
    """``n`` images of ``m`` non-negative, correlated locations."""
    local = np.maximum(rng.standard_normal((n * m, d)) + 0.5 * rng.standard_normal(d), 0) + 1e-3
    return SpatialFeatures(local.astype(np.float32), np.arange(n + 1, dtype=np.int64) * m,
                           rng.uniform(0.05, 1.0, n * m).astype(np.float32))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(p: int, g: int, m: int, d: int, repeats: int, seed: int = 0) -> tuple[list[float], float, float]:
    """(ratios per round, best engine s, best GEMM s) at one shape."""
    rng = np.random.default_rng(seed)
    probe, gallery = features(rng, p, m, d), features(rng, g, m, d)
    a = np.ascontiguousarray(gallery.local)
    b = np.ascontiguousarray(probe.local.T)
    np.matmul(a, b)
    fpr_distances(probe, gallery, backend="numpy", precision="float32")  # warm-up: thread pools, page faults
    ratios, engines, gemms = [], [], []
    for _ in range(repeats):
        before = timed(lambda: np.matmul(a, b))
        engine = timed(lambda: fpr_distances(probe, gallery, backend="numpy", precision="float32"))
        after = timed(lambda: np.matmul(a, b))
        ratios.append(engine / ((before + after) / 2))
        engines.append(engine)
        gemms += [before, after]
    return ratios, min(engines), min(gemms)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    names = [s for s in args.shapes.split(",") if s]
    unknown = sorted(set(names) - set(SHAPES))
    if unknown:
        ap.error(f"--shapes: unknown {', '.join(unknown)} (known: {', '.join(SHAPES)})")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    missed = 0
    for name in names:
        p, g, m, d = SHAPES[name]
        ratios, engine, gemm = measure(p, g, m, d, args.repeats)
        median = statistics.median(ratios)
        ok = median <= TARGET
        missed += not ok
        print(f"{name:24s} {p}x{g} images x {m} locations, d={d}: engine {engine:.3f} s, GEMM "
              f"{p * m}x{d} @ {d}x{g * m} {gemm:.3f} s (best); engine / GEMM median {median:.2f}x "
              f"(best-of {engine / gemm:.2f}x; rounds {' '.join(f'{r:.2f}' for r in ratios)}) "
              f"{'ok' if ok else 'ABOVE'} {TARGET}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
