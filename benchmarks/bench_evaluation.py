"""evaluate_ranking against a stable argsort of the same matrix, side by side.

A random float32 matrix the size of Market-1501's (3,368 queries × 15,913
gallery images) with Market-like ids: 750 identities spread over 6 cameras,
2,793 distractors with pid 0, queries drawn from the same identities. Prints
the best time of each over ``--repeats`` runs, their ratio, and the peak extra
memory of evaluate_ranking (NumPy allocations, via tracemalloc) as a multiple
of the matrix size. Exits 1 when a target is missed: time ratio <= 0.5 and
memory ratio <= 3.

    python benchmarks/bench_evaluation.py [--queries 3368] [--gallery 15913] [--junk 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np

from reid_eval.evaluation import evaluate_ranking

TIME_TARGET = 0.5
MEMORY_TARGET = 3.0


def market_like(num_query: int, num_gallery: int, num_junk: int = 0, seed: int = 0):
    """Distances [num_query, num_gallery] float32 and Market-like pids/camids.

    ``num_junk`` of the gallery images get pid -1 (Market-1501 ships 3,819 such
    images in ``bounding_box_test``; its 15,913-image gallery is without them).
    """
    rng = np.random.default_rng(seed)
    num_ids, num_cams = 750, 6
    num_distractors = min(2793, num_gallery // 6)
    num_people = num_gallery - num_distractors - num_junk
    g_pids = np.concatenate(
        [
            rng.integers(1, num_ids + 1, num_people),
            np.zeros(num_distractors, dtype=np.int64),
            -np.ones(num_junk, dtype=np.int64),
        ]
    )
    rng.shuffle(g_pids)
    g_camids = rng.integers(1, num_cams + 1, num_gallery)
    q_pids = rng.integers(1, num_ids + 1, num_query)
    q_camids = rng.integers(1, num_cams + 1, num_query)
    distmat = rng.random((num_query, num_gallery), dtype=np.float32)
    return distmat, q_pids, g_pids, q_camids, g_camids


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=15913)
    parser.add_argument("--junk", type=int, default=0, help="gallery images with pid -1 (included in --gallery)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    distmat, q_pids, g_pids, q_camids, g_camids = market_like(args.queries, args.gallery, args.junk)

    def run_eval():
        return evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, ap="market1501")

    def run_sort():
        return np.argsort(distmat, axis=1, kind="stable")

    result = run_eval()  # warm-up, and the numbers to print
    # Interleave the two so that load from other processes hits both alike.
    t_eval, t_sort = float("inf"), float("inf")
    for _ in range(args.repeats):
        t_sort = min(t_sort, best_time(run_sort, 1))
        t_eval = min(t_eval, best_time(run_eval, 1))

    tracemalloc.start()
    tracemalloc.reset_peak()
    run_eval()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    time_ratio = t_eval / t_sort
    mem_ratio = peak / distmat.nbytes
    print(f"matrix            {args.queries} x {args.gallery} float32 ({distmat.nbytes / 2**20:.1f} MiB), "
          f"{args.junk} pid -1 gallery images")
    print(f"valid queries     {result.num_valid} / {result.num_query}, mean correct matches per query "
          f"{np.mean([np.count_nonzero((g_pids == p) & (g_camids != c)) for p, c in zip(q_pids, q_camids)]):.1f}")
    print(f"argsort stable    {t_sort:.3f} s (best of {args.repeats})")
    print(f"evaluate_ranking  {t_eval:.3f} s (best of {args.repeats})")
    print(f"time ratio        {time_ratio:.3f}  (target <= {TIME_TARGET})")
    print(f"peak extra memory {peak / 2**20:.1f} MiB = {mem_ratio:.3f} x matrix  (target <= {MEMORY_TARGET})")
    ok = time_ratio <= TIME_TARGET and mem_ratio <= MEMORY_TARGET
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
