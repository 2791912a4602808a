"""The device check: everything a short GPU lease should measure, in one run (benchmarks/device_check.sh).

Steps, each printing one line per result, each bounded by what is left of
``--budget-s`` (a step that would not fit is skipped, saying so):

1. ``install``: the project from its own files (``pip install --no-deps
   --no-build-isolation -e .``: the machine may have no registry) and the
   requirements of the ``gpu`` extra as pyproject.toml lists them; a
   requirement that cannot be installed is reported with the CuPy that is
   there instead, if any.
2. ``tests``: the gpu-marked tests (``pytest -m gpu`` on the files that hold them).
3. ``fpr``: the engine's exact FPR (:func:`reid_eval.matching.fpr_distances`)
   on features shaped like Market-1501's (3,368 query × 15,913 gallery
   images, 110 locations, d = 2048; random, generated on the device),
   against the GEMM of the same shape (``[P·110, d] × [d, G·110]``, in
   gallery blocks, on the same array module), for each precision, and the
   precision ``auto`` picks. When the whole shape does not fit the time or
   memory, a proportional slice (the same share ``s`` of query and gallery
   images) is run and the time extrapolated by ``P·G / (p·g)``.
4. ``shortlist``: the shortlist path at K = 100 on that slice (extrapolated
   by ``P / p``: its FPR work is K images per probe).
5. ``stream``: the streamed match from an HDF5 feature cache of the slice
   (read, host → device transfer and all), against the in-memory engine.
6. ``amp``: benchmarks/bench_train.py at ResNet-50 384×128, batch 16×4, with
   ``--amp``: the training step against a bare forward+backward.

Without a GPU, ``--backend numpy`` runs steps 3-5 on the CPU at a small slice
(what tests/test_device_check.py does).

    python benchmarks/device_check.py --out device_check.txt
    python benchmarks/device_check.py --backend numpy --scale 0.002 --steps fpr,shortlist,stream
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Market-1501's query and gallery images, the paper's pyramid locations per image, ResNet-50's channels.
MARKET_QUERY, MARKET_GALLERY, LOCATIONS, DIM = 3368, 15913, 110, 2048
STEPS: tuple[str, ...] = ("install", "tests", "fpr", "shortlist", "stream", "amp")
DEFAULT_BUDGET_S = 450.0  # 7.5 minutes: the check must stay under 8, so that a rerun fits a 15-minute lease
SHORTLIST_K = 100
#: Seconds the install and the gpu-marked tests may take at most (the benchmarks get the rest of the budget).
INSTALL_CAP_S, TESTS_CAP_S = 120.0, 150.0
#: Seconds the fpr step aims at per timed run (engine or GEMM, per precision) when choosing the slice.
FPR_SECONDS_PER_RUN = 20.0
#: Engine time over GEMM time assumed when choosing the slice (measured ratios are near 1.1-1.3).
ENGINE_OVERHEAD = 1.5


@dataclass(frozen=True)
class Slice:
    """``p`` query and ``g`` gallery images of ``m`` locations at ``d`` channels; ``factor`` = full pairs / slice's."""

    p: int
    g: int
    m: int = LOCATIONS
    d: int = DIM

    @property
    def factor(self) -> float:
        return (MARKET_QUERY * MARKET_GALLERY) / (self.p * self.g)

    @property
    def probe_factor(self) -> float:
        return MARKET_QUERY / self.p

    @property
    def flops(self) -> float:
        """Multiply-adds × 2 of the exact matrix's GEMM, ``[p·m, d] × [d, g·m]``."""
        return 2.0 * self.p * self.m * self.g * self.m * self.d

    def feature_bytes(self, itemsize: int = 4) -> int:
        return (self.p + self.g) * self.m * self.d * itemsize


def market_slice(scale: float) -> Slice:
    """The share ``scale`` (0 < scale ≤ 1) of Market-1501's query and gallery images (at least one each)."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and 0 < scale <= 1):
        raise ValueError(f"--scale must be in (0, 1], got {scale}")
    return Slice(max(1, round(MARKET_QUERY * scale)), max(1, round(MARKET_GALLERY * scale)))


def fitting_scale(flops_per_s: float, seconds_per_run: float = FPR_SECONDS_PER_RUN, free_bytes: float | None = None,
                  itemsize: int = 8, overhead: float = ENGINE_OVERHEAD) -> float:
    """The largest slice share whose engine run is estimated to take ``seconds_per_run`` at the measured GEMM
    rate ``flops_per_s`` (times ``overhead``) and whose features fit in half of ``free_bytes`` (when given)."""
    full = market_slice(1.0)
    by_time = math.sqrt(seconds_per_run * flops_per_s / (full.flops * overhead))
    by_memory = 0.5 * free_bytes / full.feature_bytes(itemsize) if free_bytes is not None else 1.0
    return max(1e-4, min(1.0, by_time, by_memory))


class Report:
    """Lines to stdout and the output file, flushed at once (a killed check keeps what it printed)."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.t0 = time.monotonic()

    def __call__(self, line: str) -> None:
        for stream in (sys.stdout, self.out):
            if stream is not None:
                print(line, file=stream, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


# ---------------------------------------------------------------- install and tests

def gpu_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The ``gpu`` extra's requirements as pyproject.toml lists them."""
    import tomllib

    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    return list(data["project"]["optional-dependencies"]["gpu"])


def requirement_met(requirement: str) -> str | None:
    """The installed version when ``requirement`` (a PEP 508 string) is satisfied, else None."""
    from importlib import metadata

    from packaging.requirements import Requirement

    req = Requirement(requirement)
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return None
    return version if req.specifier.contains(version, prereleases=True) else None


def installed_cupy() -> str | None:
    """``"<distribution> <version>, N GPU(s)"`` of an importable CuPy that sees a GPU, else None."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no CuPy, or no driver: either way none to use
        return None
    from importlib import metadata

    names = [d.metadata["Name"] for d in metadata.distributions() if (d.metadata["Name"] or "").startswith("cupy")]
    return f"{', '.join(sorted(set(names))) or 'cupy'} {cupy.__version__}, {count} GPU(s)"


Runner = Callable[[list[str], float], subprocess.CompletedProcess]


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _tail(proc: subprocess.CompletedProcess, n: int = 1) -> str:
    lines = [line for line in (proc.stdout + proc.stderr).strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) if lines else f"exit {proc.returncode}"


def step_install(report: Report, timeout: float, run: Runner = _run) -> None:
    py = sys.executable
    proc = run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", "."], timeout)
    report(f"install: project ({'ok' if proc.returncode == 0 else 'FAILED: ' + _tail(proc)})")
    wheels = ROOT / ".whl"
    for req in gpu_requirements():
        have = requirement_met(req)
        if have is not None:
            report(f"install: gpu extra {req}: installed ({have})")
            continue
        source = ["--no-index", "--find-links", str(wheels)] if wheels.is_dir() else ["--retries", "0", "--timeout", "5"]
        proc = run([py, "-m", "pip", "install", "-q", *source, req], timeout)
        if proc.returncode == 0:
            report(f"install: gpu extra {req}: installed now ({requirement_met(req)})")
            continue
        cupy = installed_cupy()
        instead = f"using the CuPy already here: {cupy}" if cupy else "and no CuPy is here: the GPU steps will fail"
        report(f"install: gpu extra {req}: cannot be installed here ({_tail(proc)[:160]}); {instead}")


def gpu_test_files(tests: Path = ROOT / "tests") -> list[str]:
    """The test files that hold gpu-marked tests (collecting only these keeps a module that cannot be
    imported on the GPU machine, for want of a package only the CPU tests need, from stopping the run)."""
    return [str(p.relative_to(ROOT)) for p in sorted(tests.glob("test_*.py"))
            if "mark.gpu" in p.read_text(encoding="utf-8")]


def step_tests(report: Report, timeout: float, run: Runner = _run) -> None:
    files = gpu_test_files()
    proc = run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs",
                "--continue-on-collection-errors", *files], timeout)
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    report(f"tests (-m gpu): {_tail(proc)}")
    for line in failed:
        report(f"  {line[:300]}")


# ---------------------------------------------------------------- FPR, shortlist, stream

def _sync(xp: Any) -> None:
    if xp is not np:
        xp.cuda.Device().synchronize()


def _timed(xp: Any, fn: Callable[[], Any]) -> tuple[float, Any]:
    _sync(xp)
    t = time.perf_counter()
    value = fn()
    _sync(xp)
    return time.perf_counter() - t, value


def generate_features(xp: Any, s: Slice, seed: int = 0) -> tuple[Any, Any]:
    """Random query and gallery SpatialFeatures of the slice (generated by ``xp``, handed over as host arrays)."""
    from reid_eval.features.spatial import SpatialFeatures

    rng = xp.random.default_rng(seed)
    to_host = (lambda a: a.get()) if xp is not np else (lambda a: a)

    def split(n: int) -> SpatialFeatures:
        local = to_host(rng.standard_normal((n * s.m, s.d), dtype=xp.float32))
        fg = to_host(0.05 + 0.95 * rng.random(n * s.m, dtype=xp.float32))
        return SpatialFeatures(local, np.arange(n + 1, dtype=np.int64) * s.m, fg)

    return split(s.p), split(s.g)


def gemm_seconds(xp: Any, s: Slice, precision: str, tile: int = 32768, seed: int = 1) -> float:
    """Seconds of the GEMM ``[p·m, d] × [d, g·m]`` in ``tile`` × ``tile`` output tiles (each product is
    allocated from ``xp``'s pool and dropped; the gallery operand of every tile is one reused block), in the
    operands of ``precision``: float32, float64, or tf32x3's TF32 parts (depth 3d, on the tensor cores)."""
    from reid_eval.matching.kernel.accuracy import operand_depth
    from reid_eval.matching.kernel.tf32 import round_tf32, tensor_cores

    rng = xp.random.default_rng(seed)
    rows, cols = s.p * s.m, s.g * s.m
    depth, tf32 = operand_depth(precision), precision == "tf32x3"
    dtype = np.float64 if precision == "float64" else np.float32

    def operand(n: int) -> Any:
        a = rng.standard_normal((n, s.d * depth), dtype=xp.float32)
        return round_tf32(xp, a) if tf32 else a.astype(dtype)

    a, b = operand(rows), operand(min(cols, tile))
    tiles = [(i, min(rows, i + tile), j, min(cols, j + tile)) for i in range(0, rows, tile) for j in range(0, cols, tile)]

    def run() -> None:
        for i, i2, j, j2 in tiles:
            xp.matmul(a[i:i2], b[:j2 - j].T)

    with tensor_cores(xp, tf32):
        xp.matmul(a[:tile], b.T)  # warm-up: handles, kernel choice
        return _timed(xp, run)[0]


def measure_gemm_rate(xp: Any, precision: str) -> float:
    """FLOP/s of one mid-sized GEMM (the slice's choice needs an estimate, not a benchmark)."""
    s = Slice(128, 256) if xp is not np else Slice(2, 4, d=256)  # ~1.6 TFLOP on the GPU: tens of ms
    return s.flops / gemm_seconds(xp, s, precision)


def cnn_like_features(s: Slice, seed: int = 4) -> tuple[Any, Any]:
    """Host query and gallery features like a CNN's (non-negative, one strong shared direction, some
    gallery images repeating query images: residuals near 0), the hard case of the float32 error model."""
    from reid_eval.features.spatial import SpatialFeatures

    rng = np.random.default_rng(seed)

    def split(n: int) -> SpatialFeatures:
        shared = np.abs(rng.standard_normal(s.d))[None]
        local = np.maximum(shared + rng.standard_normal((n * s.m, s.d)), 0) + 1e-3
        fg = rng.uniform(0.05, 1.0, n * s.m)
        return SpatialFeatures(local.astype(np.float32), np.arange(n + 1, dtype=np.int64) * s.m, fg.astype(np.float32))

    query, gallery = split(s.p), split(s.g)
    k = max(1, min(s.p, s.g) // 4)  # self-matches
    local = np.concatenate([query.local[: k * s.m], gallery.local[k * s.m:]])
    return query, SpatialFeatures(local, gallery.offsets, gallery.foreground)


#: The precisions in the order the fpr step runs them: float64 first, the reference of the others' whole matrix.
CHECK_ORDER = ("float64", "float32", "tf32x3")
#: The CNN-like contract check of the fpr step: images of query and gallery (at the slice's m and d).
CONTRACT_IMAGES = (24, 48)


def step_fpr(report: Report, xp: Any, backend: str, s: Slice, budget_bytes: int) -> None:
    from reid_eval.matching import EngineSettings, RefinementStats, fpr_distance_reference, fpr_distances
    from reid_eval.matching.kernel.accuracy import gemm_times

    auto = EngineSettings(backend=backend, precision="auto").resolved().precision
    measured = "" if xp is np else " from square GEMMs of " + ", ".join(
        f"{p} {t * 1e3:.1f} ms" for p, t in gemm_times(xp).items())
    report(f"fpr: slice {s.p} x {s.g} images x {s.m} locations, d={s.d} ({s.flops:.3g} FLOP; full Market "
           f"x{s.factor:.1f}); precision auto picks {auto} on {backend}{measured}")
    query, gallery = generate_features(xp, s)
    reference = None
    for precision in CHECK_ORDER:
        fpr_distances(query[:1], gallery[:2], backend=backend, precision=precision)  # warm-up
        stats = RefinementStats()
        engine, dist = _timed(xp, lambda: fpr_distances(query, gallery, backend=backend, precision=precision,
                                                        memory_budget_bytes=budget_bytes, stats=stats))
        gemm = gemm_seconds(xp, s, precision)
        # the contract, on a corner of the matrix: the float64 definition, pair by pair
        picks = [(i, j) for i in (0, s.p - 1) for j in (0, s.g - 1)]
        err = max(abs(float(dist[i, j]) - fpr_distance_reference(
            query.local[query.offsets[i]:query.offsets[i + 1]], gallery.local[gallery.offsets[j]:gallery.offsets[j + 1]],
            query.foreground[query.offsets[i]:query.offsets[i + 1]])) for i, j in picks)
        whole = "" if reference is None else (
            f"; max |{precision} - float64| on the whole matrix {np.abs(dist - reference).max():.1e}")
        reference = dist if reference is None else reference
        mark = " (auto)" if precision == auto else ""
        report(f"fpr {precision}{mark}: engine {engine:.2f} s, GEMM {gemm:.2f} s, ratio {engine / gemm:.2f}; "
               f"{s.flops / engine / 1e12:.3g} TFLOP/s; full Market extrapolated {engine * s.factor:.0f} s "
               f"(GEMM {gemm * s.factor:.0f} s); refined share {stats.refined_share:.2e}; "
               f"max |error| vs float64 reference on {len(picks)} pairs {err:.1e}{whole}")
    del reference
    contract_check(report, backend, Slice(min(CONTRACT_IMAGES[0], s.p), min(CONTRACT_IMAGES[1], s.g), s.m, s.d),
                   budget_bytes)


def contract_check(report: Report, backend: str, s: Slice, budget_bytes: int) -> None:
    """One line per float32-operand precision on CNN-like features (:func:`cnn_like_features`): the largest
    difference to the engine's float64 matrix (the 1e-5 contract) and the refined share, on this device."""
    from reid_eval.matching import RefinementStats, fpr_distances

    query, gallery = cnn_like_features(s)
    exact = fpr_distances(query, gallery, backend=backend, precision="float64", memory_budget_bytes=budget_bytes)
    for precision in CHECK_ORDER[1:]:
        stats = RefinementStats()
        dist = fpr_distances(query, gallery, backend=backend, precision=precision, memory_budget_bytes=budget_bytes,
                             stats=stats)
        err = float(np.abs(dist - exact).max())
        report(f"contract {precision}: CNN-like {s.p} x {s.g} images, max |{precision} - float64| {err:.1e} "
               f"({'within' if err <= 1e-5 else 'OUTSIDE'} 1e-5); refined share {stats.refined_share:.2e}")


def step_shortlist(report: Report, xp: Any, backend: str, s: Slice, budget_bytes: int,
                   left: Callable[[], float] = lambda: math.inf) -> None:
    from reid_eval.matching import fpr_distances

    k = min(SHORTLIST_K, s.g - 1)
    query, gallery = generate_features(xp, s, seed=2)
    qg = query.local.reshape(s.p, s.m, s.d).mean(axis=1)
    gg = gallery.local.reshape(s.g, s.m, s.d).mean(axis=1)
    for precision in CHECK_ORDER:
        if left() < 20:
            report(f"shortlist {precision}: skipped: {left():.0f} s of the budget left")
            continue
        seconds, _ = _timed(xp, lambda: fpr_distances(query, gallery, backend=backend, shortlist=k, probe_global=qg,
                                                      gallery_global=gg, memory_budget_bytes=budget_bytes,
                                                      precision=precision))
        report(f"shortlist K={k} {precision}: {seconds:.2f} s for {s.p} probes x {s.g} gallery; full Market "
               f"extrapolated {seconds * s.probe_factor:.0f} s (x{s.probe_factor:.1f}: K images per probe)")


def write_feature_cache(cache_dir: Path, query: Any, gallery: Any, batch: int = 256) -> Path:
    """An HDF5 feature cache under ``cache_dir`` holding ``query`` and ``gallery`` (the project's cache writer;
    random features, so the checkpoint and manifest hashes are placeholders of the right form)."""
    from reid_eval.features.cache import SplitWriter, cache_key, cache_path, create_cache, open_cache

    settings = {"model": {"backbone": "random", "input_size": [384, 128]}, "device_check": True}
    key = cache_key("market1501", "0" * 64, settings, "0" * 64)
    path = cache_path(cache_dir, "market1501", key)
    create_cache(path, {"cache_key": key, "dataset": "market1501", "dataset_root": str(cache_dir),
                        "checkpoint_sha256": "0" * 64, "manifest_sha256": "0" * 64, "settings": json.dumps(settings)})
    with open_cache(path, "r+") as f:
        for split, feats in (("query", query), ("gallery", gallery)):
            n, m = len(feats), int(feats.offsets[1])
            writer = SplitWriter(f, split, n, feats.local.shape[1], 1)
            glob = feats.local.reshape(n, m, -1).mean(axis=1)
            for a in range(0, n, batch):
                b = min(n, a + batch)
                ra, rb = int(feats.offsets[a]), int(feats.offsets[b])
                writer.append(b - a, [f"{split}/{i:05d}.jpg" for i in range(a, b)], np.arange(a, b) + 1,
                              np.full(b - a, 1 if split == "query" else 2), np.arange(a, b),
                              np.full((b - a, 1, 2), (m, 1), dtype=np.int32), feats.local[ra:rb],
                              np.full(b - a, m, dtype=np.int64), feats.foreground[ra:rb], glob[a:b])
    return path


def step_stream(report: Report, xp: Any, backend: str, s: Slice, budget_bytes: int, tmp: Path,
                left: Callable[[], float] = lambda: math.inf) -> None:
    from reid_eval.matching import fpr_distances
    from reid_eval.matching.streaming import fpr_distances_from_cache

    query, gallery = generate_features(xp, s, seed=3)
    t = time.perf_counter()
    cache = write_feature_cache(tmp, query, gallery)
    written = time.perf_counter() - t
    for precision in CHECK_ORDER:
        if left() < 20:
            report(f"stream {precision}: skipped: {left():.0f} s of the budget left")
            continue
        memory, expected = _timed(xp, lambda: fpr_distances(query, gallery, backend=backend, precision=precision,
                                                            memory_budget_bytes=budget_bytes))
        streamed, result = _timed(xp, lambda: fpr_distances_from_cache(cache, backend=backend, precision=precision,
                                                                       memory_budget_bytes=budget_bytes))
        agree = float(np.max(np.abs(np.asarray(result.distances, dtype=np.float64) - expected)))
        report(f"stream {precision}: from an HDF5 cache of {cache.stat().st_size / 2**30:.2f} GiB (written in "
               f"{written:.1f} s): {streamed:.2f} s against {memory:.2f} s in memory (ratio {streamed / memory:.2f});"
               f" full Market extrapolated {streamed * s.factor:.0f} s; max |streamed - in-memory| {agree:.1e}")


def step_amp(report: Report, timeout: float, run: Runner = _run) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--backbone", "resnet50", "--input-size",
           "384x128", "--batch-p", "16", "--batch-k", "4", "--device", "cuda", "--amp", "--skip", "fpr",
           "--steps", "3", "--rounds", "2"]
    proc = run(cmd, timeout)
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode not in (0, 1) or not lines:  # bench_train exits 1 below its loader-ratio target
        report(f"amp: FAILED: {_tail(proc, 3)[:400]}")
        return
    for line in lines:
        report(f"amp: {line}")


# ---------------------------------------------------------------- driver

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="also write every line to this file")
    ap.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, in order: {','.join(STEPS)}")
    ap.add_argument("--backend", choices=("cupy", "numpy"), default="cupy",
                    help="array module of the fpr/shortlist/stream steps (numpy: the CPU run)")
    ap.add_argument("--scale", type=float, default=None,
                    help="share of Market-1501's images in the slice, in (0, 1] [default: what fits the budget]")
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="whole check's time limit, seconds")
    ap.add_argument("--memory-gib", type=float, default=None,
                    help="the engine's memory budget [default: half the free device memory, at most 64 GiB]")
    args = ap.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or not steps:
        ap.error(f"--steps: unknown {', '.join(unknown) or '(none given)'}; steps are {', '.join(STEPS)}")
    args.steps = [s for s in STEPS if s in steps]
    if args.scale is not None:
        try:
            market_slice(args.scale)
        except ValueError as exc:
            ap.error(str(exc))
    if not (math.isfinite(args.budget_s) and args.budget_s > 0):
        ap.error(f"--budget-s must be a positive number of seconds, got {args.budget_s}")
    if args.memory_gib is not None and not (math.isfinite(args.memory_gib) and args.memory_gib > 0):
        ap.error(f"--memory-gib must be positive, got {args.memory_gib}")
    return args


def _array_module(backend: str) -> Any:
    from reid_eval.matching import get_array_module

    return get_array_module(backend)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = open(args.out, "a" if args.append else "w", encoding="utf-8") if args.out is not None else None
    report = Report(out)
    failures = 0
    try:
        left = lambda: args.budget_s - report.elapsed()  # noqa: E731
        report(f"device check: steps {','.join(args.steps)}, budget {args.budget_s:.0f} s, backend {args.backend}")
        for step, cap in (("install", INSTALL_CAP_S), ("tests", TESTS_CAP_S)):
            if step in args.steps:
                try:
                    (step_install if step == "install" else step_tests)(report, max(1.0, min(cap, left() - 120)))
                except subprocess.TimeoutExpired:
                    failures += 1
                    report(f"{step}: FAILED: stopped after its share of the budget")
        array_steps = [s for s in ("fpr", "shortlist", "stream") if s in args.steps]
        if array_steps:
            try:
                xp = _array_module(args.backend)
            except ValueError as exc:
                report(f"{','.join(array_steps)}: FAILED: {exc}")
                xp, failures = None, failures + 1
            if xp is not None:
                free = xp.cuda.Device().mem_info[0] if xp is not np else None
                budget = int((args.memory_gib * 2**30) if args.memory_gib else min(free / 2, 64 * 2**30) if free
                             else 2 * 2**30)
                scale = args.scale or fitting_scale(measure_gemm_rate(xp, "float64"), free_bytes=free)
                s = market_slice(scale)
                report(f"slice: scale {scale:.4g} -> {s.p} query x {s.g} gallery images; engine memory budget "
                       f"{budget / 2**30:.1f} GiB")
                with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
                    for step in array_steps:
                        if left() < 30:
                            report(f"{step}: skipped: {left():.0f} s of the budget left")
                            continue
                        try:
                            if step == "fpr":
                                step_fpr(report, xp, args.backend, s, budget)
                            elif step == "shortlist":
                                step_shortlist(report, xp, args.backend, s, budget, left)
                            else:
                                step_stream(report, xp, args.backend, market_slice(min(scale, 0.25)), budget,
                                            Path(tmp), left)
                        except Exception as exc:  # noqa: BLE001 - one step's failure must not stop the check
                            failures += 1
                            report(f"{step}: FAILED: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        if "amp" in args.steps:
            if left() < 45:
                report(f"amp: skipped: {left():.0f} s of the budget left")
            else:
                try:
                    step_amp(report, left() - 10)
                except subprocess.TimeoutExpired:
                    failures += 1
                    report("amp: FAILED: stopped at the end of the budget")
        report(f"device check: done in {report.elapsed():.0f} s, {failures} step(s) failed")
    finally:
        if out is not None:
            out.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
