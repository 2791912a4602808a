"""Benchmark of matching at scale: memory, throughput, Market-1501 time, shortlist, Dask.

Writes feature caches of random features through the project's own cache
writer (``create_cache`` + ``SplitWriter``; no images, no model) under
``--workdir``, then, from one run:

1. **Peak RSS** of `reid-eval match --metric fpr --memory-budget B` (a child
   process; ``os.wait4``'s ``ru_maxrss``) at two gallery sizes, against the
   cache size: it must stay within B + the [P, G] float32 result + 0.5 GB and
   must not grow with the gallery beyond the result.
2. **Exact FPR throughput** (``fpr_distances_from_cache``, default budget,
   one process) against the bare float32 GEMM of the same total shape
   ``[ΣM, d] @ [d, ΣN]`` (NumPy, all BLAS threads), side by side: target ≥ 0.85×.
3. The **extrapolated wall time of exact Market-1501** (3,368 × 15,913
   images, 110 × 2048) at the measured FPR rate.
4. With ``--market-shortlist``: a Market-size cache (17 GB; skipped with a
   message when the disk lacks the room) and the wall time of `reid-eval
   match --shortlist 100` on it (target ≤ 10 minutes); the cache is deleted
   right after.
5. **Dask**: a LocalCluster of 2 single-thread workers (``workers=2``, the
   cluster started and stopped by the match, as ``--workers 2`` does)
   against one process with 2 threads, same cache and tile plan: identical
   matrix, time ratio (target ≤ 1.2×), best of ``--repeats`` interleaved
   runs of each. Then where the rest goes: the cluster's start and stop
   timed alone, and one run on a cluster started beforehand, split from
   Dask's task stream into the time before the first task starts, the
   tasks, and after the last; each worker's time computing, its first
   task, and its idle time (waiting for the other at the end, between
   tasks). The default shape is large enough for one process to take about
   half a minute on 2 cores: a user starts a cluster for matches of minutes
   to hours, where the start-up's second or so is no part of the ratio
   that matters, and a few-second match would mostly time the start-up.

Every cache is flushed to disk (``os.sync``) before anything is timed: the
write-back of gigabytes just written otherwise runs during the timed part.

Exit status 1 when a target is missed.

    python benchmarks/bench_scale.py [--probes 8] [--galleries 2000,8000] [--budget 5e8]
        [--workdir /tmp/bench_scale] [--market-shortlist] [--shortlist-budget 4e9] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import reid_eval  # noqa: F401  isort: skip  (its OpenBLAS setting before NumPy, as in `reid-eval match`)

import numpy as np

from reid_eval.features.cache import SplitWriter, cache_key, cache_path, create_cache, open_cache
from reid_eval.matching.streaming import fpr_distances_from_cache

MARKET = (3368, 15913)
SETTINGS = {"model": {"backbone": "random-features", "input_size": [384, 128]}, "preprocessing": {"resize": "fixed"}}
REPO = Path(__file__).resolve().parents[1]


def write_cache(cache_dir: Path, n_query: int, n_gallery: int, d: int = 2048, m: int = 110, seed: int = 0,
                dataset: str = "market1501", batch: int = 64) -> Path:
    """A cache of random non-negative features (like ReLU maps) with m locations per image, written batch by batch."""
    rng = np.random.default_rng(seed)
    key = cache_key(dataset, f"{seed:064x}", SETTINGS, f"{n_query}-{n_gallery}-{d}-{m}".ljust(64, "0"))
    path = cache_path(cache_dir, dataset, key)
    if path.exists():
        return path
    create_cache(path, {"cache_key": key, "dataset": dataset, "dataset_root": str(cache_dir), "checkpoint_sha256": f"{seed:064x}",
                        "manifest_sha256": f"{n_query}-{n_gallery}-{d}-{m}".ljust(64, "0"), "settings": json.dumps(SETTINGS)})
    with open_cache(path, "r+") as f:
        for split, n, cam in (("query", n_query, 1), ("gallery", n_gallery, 2)):
            writer = SplitWriter(f, split, n, d, 1)
            for a in range(0, n, batch):
                b = min(n, a + batch)
                k = b - a
                local = np.abs(rng.standard_normal((k * m, d), dtype=np.float32))
                writer.append(
                    k, [f"{split}/{i:06d}.jpg" for i in range(a, b)], np.arange(a, b) % 751 + 1, np.full(k, cam),
                    np.arange(a, b), np.full((k, 1, 2), (m, 1), dtype=np.int32), local, np.full(k, m),
                    rng.uniform(0.05, 1.0, k * m).astype(np.float32), local.reshape(k, m, d).mean(axis=1),
                )
    return path


def settle() -> None:
    """Flush freshly written caches to disk before timing anything.

    Writing gigabytes leaves dirty pages that the kernel writes back for tens
    of seconds afterwards; measured, that background I/O slowed a timed run
    started right after by up to 40% (the Dask comparison read 1.82x with it,
    1.15x without).
    """
    os.sync()


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def run_match(cache_dir: Path, results: Path, extra: list[str]) -> tuple[float, int, str]:
    """`reid-eval match` in a child process: (wall seconds, peak RSS bytes from wait4's ru_maxrss, its stderr)."""
    cmd = [sys.executable, "-c", "import sys; from reid_eval_cli.main import main; sys.exit(main(sys.argv[1:]))", "match",
           "--metric", "fpr", "--dataset", "market1501", "--cache-dir", str(cache_dir), "--results-dir", str(results),
           "--recompute", "--untrained-foreground", *extra]  # random features: no foreground was trained
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = results.parent / "match-stderr.txt"
    results.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as err_file:
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err_file)
        _, status, usage = os.wait4(child.pid, 0)  # reap it ourselves to get its own rusage
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    err = log.read_text()
    if child.returncode != 0:
        raise SystemExit(f"match failed ({child.returncode}): {err.strip().splitlines()[-1:]}")
    return wall, int(usage.ru_maxrss) * 1024, err


def bare_gemm_rate(rows_g: int, rows_p: int, d: int, seconds: float = 20.0) -> float:
    """GFLOP/s of float32 GEMMs ``[chunk, d] @ [d, rows_p]`` covering ``rows_g`` gallery rows (all BLAS threads)."""
    rng = np.random.default_rng(1)
    chunk = min(rows_g, 22000)
    a = rng.standard_normal((chunk, d), dtype=np.float32)
    b = rng.standard_normal((rows_p, d), dtype=np.float32)
    flops, t0 = 0.0, time.perf_counter()
    done = 0
    while done < rows_g and time.perf_counter() - t0 < seconds:
        _ = a @ b.T
        flops += 2.0 * chunk * rows_p * d
        done += chunk
    return flops / (time.perf_counter() - t0) / 1e9


def dask_comparison(path: Path, n_probe: int, n_gallery: int, budget: int, repeats: int) -> bool:
    """Part 5: ``workers=2`` against ``threads=2`` on one cache, then where Dask's extra time goes; True: target met."""
    import distributed

    print(f"\n5. Dask LocalCluster, 2 single-thread workers, vs one process with 2 threads ({n_probe} x {n_gallery}, "
          f"budget {budget}, same plan; best of {repeats}, interleaved; the Dask time includes starting and stopping "
          f"its cluster)")
    t_one, t_dask = [], []
    for _ in range(repeats):  # interleaved, so that both see the same page cache and load
        t0 = time.perf_counter()
        one = fpr_distances_from_cache(path, backend="numpy", threads=2, memory_budget_bytes=budget)
        t_one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        two = fpr_distances_from_cache(path, backend="numpy", workers=2, memory_budget_bytes=budget)
        t_dask.append(time.perf_counter() - t0)
    same = np.array_equal(one.distances, two.distances)
    best_one, best_dask = min(t_one), min(t_dask)
    runs = ", ".join(f"{a:.1f} / {b:.1f} s ({b / a:.2f})" for a, b in zip(t_one, t_dask))
    print(f"  runs, one process / Dask (ratio): {runs}")
    print(f"  best: one process {best_one:.1f} s, Dask {best_dask:.1f} s: ratio {best_dask / best_one:.2f} (target <= 1.2); "
          f"identical: {same} ({one.plan.num_tiles} tiles: {len(one.plan.probe_blocks)} probe x "
          f"{len(one.plan.gallery_blocks)} gallery blocks of <= {one.plan.block_rows} locations)")

    # where the rest goes: the cluster's start and stop alone, then one run on a cluster started beforehand
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, memory_limit=0,
                                       silence_logs=40)
    client = distributed.Client(cluster)
    t_up = time.perf_counter() - t0
    try:
        wall0 = time.time()
        t0 = time.perf_counter()
        with distributed.get_task_stream(client) as stream:
            warm = fpr_distances_from_cache(path, backend="numpy", scheduler=cluster.scheduler_address,
                                            memory_budget_bytes=budget)
        t_warm = time.perf_counter() - t0
        wall1 = time.time()
    finally:
        t0 = time.perf_counter()
        client.close()
        cluster.close()
        t_down = time.perf_counter() - t0
    tasks: dict[str, list[tuple[float, float]]] = {}
    for record in stream.data:
        for ss in record["startstops"]:
            if ss["action"] == "compute":
                tasks.setdefault(record["worker"], []).append((ss["start"], ss["stop"]))
    first = min(a for spans in tasks.values() for a, _ in spans)
    last = max(b for spans in tasks.values() for _, b in spans)
    print(f"  the cluster alone: {t_up:.1f} s to start, {t_down:.1f} s to stop "
          f"({(t_up + t_down) / best_one:.2f} of the one-process time)")
    print(f"  a run on the started cluster: {t_warm:.1f} s ({t_warm / best_one:.2f} of one process; identical: "
          f"{np.array_equal(one.distances, warm.distances)}) = {first - wall0:.1f} s before the first task "
          f"(plan, probe centre, submitting) + {last - first:.1f} s of tasks + {wall1 - last:.1f} s after the last "
          f"(reading the tiles back into the matrix)")
    for worker, spans in sorted(tasks.items()):
        spans.sort()
        busy = sum(b - a for a, b in spans)
        gaps = [max(0.0, c - b) for (_, b), (c, _) in zip(spans, spans[1:])]  # clocks of two processes: clamp jitter
        print(f"    worker {worker.rsplit(':', 1)[-1]}: {len(spans)} tasks, computing {busy:.1f} s; first task "
              f"{spans[0][1] - spans[0][0]:.1f} s (the others {np.mean([b - a for a, b in spans[1:]] or [0]):.1f} s "
              f"on average); idle {max(0.0, last - first - busy):.1f} s (between tasks {sum(gaps) * 1e3:.0f} ms, "
              f"waiting for the other at the end {last - spans[-1][1]:.1f} s)")
    extra = t_warm - best_one
    rest = best_dask - best_one - (t_up + t_down) - extra
    print(f"  Dask {best_dask:.1f} s = one process {best_one:.1f} s + the cluster's start and stop {t_up + t_down:.1f} s "
          f"+ {extra:+.1f} s on the started cluster (each worker's first task above its others, the wait at the end) "
          f"+ {rest:+.1f} s left (the spread of the runs above: one process {min(t_one):.1f}-{max(t_one):.1f} s, "
          f"Dask {min(t_dask):.1f}-{max(t_dask):.1f} s)")
    return same and best_dask / best_one <= 1.2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", type=int, default=8, help="probes of the RSS caches")
    ap.add_argument("--throughput-shape", default="300x150", help="probes x gallery of the throughput cache")
    ap.add_argument("--dask-shape", default="250x400", help="probes x gallery of the Dask comparison")
    ap.add_argument("--galleries", default="2000,8000")
    ap.add_argument("--budget", type=float, default=5e8)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--locations", type=int, default=110)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_scale"))
    ap.add_argument("--market-shortlist", action="store_true")
    ap.add_argument("--shortlist-budget", type=float, default=4e9)
    ap.add_argument("--shortlist-fraction", type=int, default=1,
                    help="F > 1: a Market-size query with 1/F of the gallery and K = 100/F (the same work per gallery "
                         "image: each is shortlisted by about 21 probes), the time extrapolated x F")
    ap.add_argument("--repeats", type=int, default=2, help="Dask comparison: interleaved runs of each, best kept")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: rss,throughput,dask")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    d, m, P = args.dim, args.locations, args.probes
    galleries = [int(g) for g in args.galleries.split(",")]
    budget = int(args.budget)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ok = True
    print(f"bench_scale: {P} probes, galleries {galleries}, d={d}, {m} locations/image, random non-negative features, "
          f"{os.cpu_count()} CPUs")

    caches = {}
    for G in galleries if "rss" not in skip else []:
        t0 = time.perf_counter()
        caches[G] = write_cache(args.workdir / f"g{G}", P, G, d, m)
        print(f"  cache {G}: {gib(caches[G].stat().st_size)} written in {time.perf_counter() - t0:.0f} s")
    settle()

    if "rss" not in skip:
        print(f"\n1. peak RSS of `reid-eval match --metric fpr --memory-budget {budget}` (child process)")
        rss = {}
        for G in galleries:
            wall, peak, err = run_match(caches[G].parent.parent, args.workdir / "results", ["--memory-budget", str(budget)])
            result = P * G * 4
            limit = budget + result + 0.5 * 2**30
            rss[G] = peak
            last = [ln for ln in err.splitlines() if "GFLOP/s" in ln][-1]
            print(f"  gallery {G:>6}: cache {gib(caches[G].stat().st_size)}, peak RSS {gib(peak)} "
                  f"(budget {gib(budget)} + result {result / 2**20:.1f} MiB + 0.5 GiB = {gib(limit)}), "
                  f"{wall:.0f} s; last progress: {last.strip()}")
            ok &= peak <= limit
        if len(galleries) > 1:
            g0, g1 = galleries[0], galleries[-1]
            growth = rss[g1] - rss[g0]
            res_growth = P * (g1 - g0) * 4
            print(f"  growth {g0} -> {g1}: RSS {growth / 2**20:+.1f} MiB, result {res_growth / 2**20:+.1f} MiB, "
                  f"cache {(caches[g1].stat().st_size - caches[g0].stat().st_size) / 2**30:+.2f} GiB")
            ok &= growth <= res_growth + 64 * 2**20

    rate = None
    if "throughput" not in skip:
        P2, G = (int(v) for v in args.throughput_shape.split("x"))
        path = write_cache(args.workdir / f"t{P2}x{G}", P2, G, d, m)
        settle()
        print(f"\n2. exact FPR throughput, {P2} x {G}, default budget, one process, vs the bare GEMM of the same shape")
        g_before = bare_gemm_rate(G * m, P2 * m, d)
        t0 = time.perf_counter()
        res = fpr_distances_from_cache(path, backend="numpy")
        fpr_s = time.perf_counter() - t0
        g_after = bare_gemm_rate(G * m, P2 * m, d)
        flops = 2.0 * d * (G * m) * (P2 * m)
        rate = flops / fpr_s / 1e9
        gemm = max(g_before, g_after)
        print(f"  FPR: {fpr_s:.1f} s for {flops / 1e12:.2f} TFLOP = {rate:.1f} GFLOP/s ({res.plan.num_tiles} tiles of "
              f"<= {res.plan.block_rows} rows); bare GEMM {g_before:.1f} / {g_after:.1f} GFLOP/s (before / after)")
        print(f"  ratio FPR / GEMM = {rate / gemm:.2f} (target >= 0.85)")
        ok &= rate / gemm >= 0.85
        market = 2.0 * d * m * m * MARKET[0] * MARKET[1]
        print(f"\n3. exact Market-1501 ({MARKET[0]} x {MARKET[1]}): {market / 1e15:.2f} PFLOP at {rate:.1f} GFLOP/s "
              f"= {market / rate / 1e9 / 3600:.1f} h on this machine (at the bare GEMM rate: "
              f"{market / gemm / 1e9 / 3600:.1f} h)")

    if "dask" not in skip:
        P3, G = (int(v) for v in args.dask_shape.split("x"))
        path = write_cache(args.workdir / f"d{P3}x{G}", P3, G, d, m)
        settle()
        ok &= dask_comparison(path, P3, G, budget, max(1, args.repeats))

    if args.market_shortlist:
        frac = max(1, args.shortlist_fraction)
        n_q, n_g, k = MARKET[0], round(MARKET[1] / frac), round(100 / frac)
        need = (n_q + n_g) * m * d * 4 * 1.05 + (n_q + n_g) * d * 4
        free = shutil.disk_usage(args.workdir).free
        what = "a Market-size cache" if frac == 1 else f"a Market-size query and 1/{frac} of its gallery, K = {k}"
        print(f"\n4. shortlist on {what} ({n_q} x {n_g}, {gib(need)})")
        if free < need * 1.2:
            print(f"  skipped: {gib(free)} free under {args.workdir}, the cache needs {gib(need)}")
        else:
            market_dir = args.workdir / "market"
            try:
                t0 = time.perf_counter()
                path = write_cache(market_dir, n_q, n_g, d=d, m=m)
                print(f"  cache written: {gib(path.stat().st_size)} in {time.perf_counter() - t0:.0f} s")
                settle()
                wall, peak, err = run_match(market_dir, args.workdir / "results",
                                            ["--shortlist", str(k), "--memory-budget", str(int(args.shortlist_budget))])
                full = wall * frac
                print(f"  `match --shortlist {k} --memory-budget {int(args.shortlist_budget)}`: {wall:.0f} s, peak RSS "
                      f"{gib(peak)}" + (f"; Market-1501 with K = 100 extrapolated: {full:.0f} s" if frac > 1 else "")
                      + f" ({full / 60:.1f} min, target <= 10)")
                ok &= full <= 600
            finally:
                shutil.rmtree(market_dir, ignore_errors=True)
    print("\nall targets met" if ok else "\nsome target missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
