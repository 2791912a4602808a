"""Before/after timing of the matching engine: this tree against another checkout, side by side in one run.

For a change that must leave the engine's speed alone (a refactoring), check
out the old commit beside this one (``git worktree add /tmp/old <commit>``)
and run

    python benchmarks/bench_versions.py --old /tmp/old [--rounds 6]

Each round runs, in a fresh subprocess per tree and alternating which tree
goes first, the same two workloads, each the best of a few calls:

* ``fpr_distances`` in memory on generated non-negative features (d = 512,
  60 probes × 30 gallery images of 110 locations: one tile);
* ``fpr_distances_from_cache`` on a cache written by that tree's own test
  helper, with a forced plan (``block_rows=1100``: 24 tiles, the same blocks
  in both trees) on two threads.

It prints every round and the ratio of the medians (new / old) of each
workload; alternating cancels a drift of the machine's speed to first order.
Target: each ratio at most 1.10 (exit status 1 otherwise; on a shared
machine, rerun before believing a miss).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r'''
import sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "tests")
import reid_eval  # noqa: F401  (its OpenBLAS setting first, as in `reid-eval match`)
import numpy as np
from reid_eval.features import SpatialFeatures
from reid_eval.matching import fpr_distances
from reid_eval.matching.streaming import fpr_distances_from_cache
from test_match_streaming import write_cache

rng = np.random.default_rng(0)

def feats(n, m=110, d=512):
    local = np.abs(rng.standard_normal((n * m, d))).astype(np.float32) + 0.5
    return SpatialFeatures(local, np.arange(n + 1, dtype=np.int64) * m, rng.uniform(0.1, 1, n * m).astype(np.float32))

def best(fn, n):
    fn()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)

probe, gallery = feats(60), feats(30)
cache = write_cache(Path(tempfile.mkdtemp()), n_query=40, n_gallery=60, d=256, m=110, seed=1)
memory = best(lambda: fpr_distances(probe, gallery, backend="numpy"), 5)
streamed = best(lambda: fpr_distances_from_cache(cache, backend="numpy", block_rows=1100, threads=2), 3)
print(f"{memory:.4f} {streamed:.4f}")
'''

WORKLOADS = ("in-memory fpr_distances (1 tile)", "streamed, forced plan (24 tiles, 2 threads)")


def run_tree(tree: Path) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=tree, env=env, capture_output=True, text=True, check=True)
    memory, streamed = out.stdout.split()[-2:]
    return float(memory), float(streamed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="checkout of the commit to compare against")
    ap.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1], help="default: this checkout")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args(argv)
    times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for name in order:
            times[name].append(run_tree(getattr(args, name).resolve()))
            mem, streamed = times[name][-1]
            print(f"round {r + 1} {name}: in-memory {mem:.3f} s, streamed {streamed:.3f} s", flush=True)
    ok = True
    for k, label in enumerate(WORKLOADS):
        old = statistics.median(t[k] for t in times["old"])
        new = statistics.median(t[k] for t in times["new"])
        ratio = new / old
        ok &= ratio <= 1.10
        print(f"{label}: median old {old:.3f} s, new {new:.3f} s, new / old {ratio:.3f} (target <= 1.10)")
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
