"""The match step: distances from a feature cache, evaluated, written as results.

For one cache file (one dataset, checkpoint and preprocessing):

1. read the complete ``query`` and ``gallery`` splits;
2. compute the [P, G] float32 distance matrix — ``fpr`` / ``dsr`` with
   :func:`reid_eval.matching.fpr_distances` on the pyramid features
   (``weighted`` True / False), ``euclidean`` / ``cosine`` with
   :func:`reid_eval.matching.global_distances` on the global features; with
   ``fuse=λ`` the matrix is (1−λ)·global + λ·FPR (or DSR), the global part by
   ``fuse_global``, λ given by the user and never tuned on the test set;
3. store it in the cache as ``distances/<name>`` with its parameters;
4. evaluate it with :func:`reid_eval.evaluation.evaluate_ranking` under the
   dataset's protocol (Market-1501 junk rules; the occluded sets' manifests
   already give query and gallery different cameras; CUHK03 classic's single
   gallery shot from the dataset spec);
5. write ``<results_dir>/<dataset>__<metric>[__beta<β>][__fuse<λ>][__ap-market1501].json``
   (the AP flavour changes the results, not the matrix: both flavours share
   ``distances/<name>``, recorded as ``params["distance_name"]``).

When several caches exist for one dataset, :func:`select_caches` takes the one
made with the given checkpoint, else the newest (by its ``created`` attribute).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reid_eval.datasets import get_spec
from reid_eval.errors import ReidEvalError
from reid_eval.evaluation import AP_FLAVOURS, evaluate_ranking
from reid_eval.features import SplitData, read_attrs, read_split, split_status, write_distances
from reid_eval.features.extract import iter_cache_files
from reid_eval.matching import fpr_distances, global_distances

MATCH_METRICS: tuple[str, ...] = ("fpr", "dsr", "euclidean", "cosine")
GLOBAL_METRICS: tuple[str, ...] = ("euclidean", "cosine")
PAPER_BETA = 0.01


@dataclass
class MatchOutcome:
    """What one match run produced: the results file, its content and the summary line."""

    results_file: Path
    record: dict[str, Any]
    summary: str
    distances: np.ndarray


def metric_label(metric: str, fuse: float | None = None, fuse_global: str = "euclidean") -> str:
    """Metric name in results: ``fpr``, ``dsr``, ``euclidean``, ``cosine``, or ``fpr+euclidean`` when fused."""
    return f"{metric}+{fuse_global}" if fuse is not None else metric


def _num(v: float) -> str:
    return format(float(v), "g")


def distance_name(metric: str, beta: float = PAPER_BETA, fuse: float | None = None, fuse_global: str = "euclidean") -> str:
    """``<metric>[__beta<β>][__fuse<λ>]``: the results file stem after the dataset, and the cache's distances name."""
    name = metric_label(metric, fuse, fuse_global)
    if metric not in GLOBAL_METRICS and float(beta) != PAPER_BETA:
        name += f"__beta{_num(beta)}"
    if fuse is not None:
        name += f"__fuse{_num(fuse)}"
    return name


def results_file_name(
    dataset: str,
    metric: str,
    beta: float = PAPER_BETA,
    fuse: float | None = None,
    fuse_global: str = "euclidean",
    ap: str = "standard",
) -> str:
    """``<dataset>__<metric>[__beta<β>][__fuse<λ>][__ap-<flavour>].json`` (team contract).

    The AP flavour is named only when it is not the standard one, so the two
    flavours of one matrix get two files.
    """
    suffix = "" if ap == "standard" else f"__ap-{ap}"
    return f"{dataset}__{distance_name(metric, beta, fuse, fuse_global)}{suffix}.json"


def _check_args(metric: str, beta: float, fuse: float | None, fuse_global: str, shortlist: int | None) -> None:
    if metric not in MATCH_METRICS:
        raise ValueError(f"--metric must be one of {', '.join(MATCH_METRICS)}, got {metric!r}")
    if not beta > 0:
        raise ValueError(f"--beta must be positive, got {beta}")
    if fuse is not None:
        if metric in GLOBAL_METRICS:
            raise ValueError(f"--fuse combines a global distance with fpr or dsr; --metric {metric} is already global")
        if not 0.0 <= fuse <= 1.0:
            raise ValueError(f"--fuse must be in [0, 1], got {fuse}")
        if fuse_global not in GLOBAL_METRICS:
            raise ValueError(f"--fuse-global must be one of {', '.join(GLOBAL_METRICS)}, got {fuse_global!r}")
    if shortlist is not None and shortlist < 1:
        raise ValueError(f"--shortlist must be at least 1, got {shortlist}")
    if shortlist is not None and metric in GLOBAL_METRICS:
        raise ValueError(f"--shortlist re-ranks with fpr or dsr; it does nothing for --metric {metric}")
    if shortlist is not None and fuse is not None:
        # outside the shortlist the engine returns ranks, not distances: a weighted sum would mix units
        raise ValueError("--shortlist and --fuse cannot be combined")


def compute_distances(
    query: SplitData,
    gallery: SplitData,
    metric: str,
    *,
    beta: float = PAPER_BETA,
    backend: str = "auto",
    shortlist: int | None = None,
    fuse: float | None = None,
    fuse_global: str = "euclidean",
) -> np.ndarray:
    """[P, G] float32 distances (smaller = more similar) between a cache's query and gallery."""
    _check_args(metric, beta, fuse, fuse_global, shortlist)
    if metric in GLOBAL_METRICS:
        return np.asarray(global_distances(query.global_features, gallery.global_features, metric=metric), np.float32)
    kwargs: dict[str, Any] = {"beta": beta, "weighted": metric == "fpr", "backend": backend}
    if shortlist is not None:
        kwargs["shortlist"] = shortlist
        kwargs["probe_global"], kwargs["gallery_global"] = query.global_features, gallery.global_features
    local = np.asarray(fpr_distances(query.spatial, gallery.spatial, **kwargs), np.float32)
    if fuse is None:
        return local
    glob = np.asarray(global_distances(query.global_features, gallery.global_features, metric=fuse_global), np.float32)
    return ((1.0 - fuse) * glob + fuse * local).astype(np.float32)


def match_cache(
    cache_file: str | os.PathLike,
    metric: str,
    results_dir: str | os.PathLike,
    *,
    beta: float = PAPER_BETA,
    backend: str = "auto",
    shortlist: int | None = None,
    fuse: float | None = None,
    fuse_global: str = "euclidean",
    ap: str = "standard",
    max_rank: int = 50,
) -> MatchOutcome:
    """Run steps 1-5 of the module docstring on one cache file."""
    _check_args(metric, beta, fuse, fuse_global, shortlist)
    if ap not in AP_FLAVOURS:
        raise ValueError(f"--ap must be one of {', '.join(AP_FLAVOURS)}, got {ap!r}")
    cache_file = Path(cache_file).resolve()
    attrs = read_attrs(cache_file)
    dataset = str(attrs["dataset"])
    query, gallery = read_split(cache_file, "query"), read_split(cache_file, "gallery")
    t0 = time.perf_counter()
    D = compute_distances(
        query, gallery, metric, beta=beta, backend=backend, shortlist=shortlist, fuse=fuse, fuse_global=fuse_global
    )
    seconds = time.perf_counter() - t0
    spec = get_spec(dataset)
    single_gallery_shot = bool(getattr(spec, "single_gallery_shot", False))
    params: dict[str, Any] = {
        "cache_file": str(cache_file),
        "metric": metric,
        "beta": float(beta) if metric not in GLOBAL_METRICS else None,
        "backend": backend if metric not in GLOBAL_METRICS else None,
        "shortlist": shortlist,
        "shortlist_metric": "euclidean" if shortlist is not None else None,
        "fuse": fuse,
        "fuse_global": fuse_global if fuse is not None else None,
        "weighted": (metric == "fpr") if metric not in GLOBAL_METRICS else None,
        "normalize": True if metric not in GLOBAL_METRICS else None,
        "single_gallery_shot": single_gallery_shot,
        "max_rank": max_rank,
        "resize": attrs["settings"]["preprocessing"]["resize"],
        "backbone": attrs["settings"]["model"]["backbone"],
        "input_size": attrs["settings"]["model"]["input_size"],
        "skipped_query": len(query.skipped),
        "skipped_gallery": len(gallery.skipped),
        "matching_seconds": round(seconds, 3),
    }
    name = distance_name(metric, beta, fuse, fuse_global)
    params["distance_name"] = name
    write_distances(cache_file, name, D, params)
    r = evaluate_ranking(
        D, query.pids, gallery.pids, query.camids, gallery.camids, ap=ap, max_rank=max_rank, single_gallery_shot=single_gallery_shot
    )
    label = metric_label(metric, fuse, fuse_global)
    record = {
        "dataset": dataset,
        "metric": label,
        "cmc": [float(v) for v in np.asarray(r.cmc)],
        "mAP": float(r.mAP),
        "mINP": float(r.mINP),
        "ap_flavour": ap,
        "num_query": int(len(query.paths)),
        "num_valid_query": int(np.count_nonzero(r.valid)),
        "num_gallery": int(len(gallery.paths)),
        "params": params,
        "checkpoint_sha256": str(attrs["checkpoint_sha256"]),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(results_dir) / results_file_name(dataset, metric, beta, fuse, fuse_global, ap)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, out)
    cmc = record["cmc"]
    r5 = cmc[min(4, len(cmc) - 1)]
    flavour = "" if ap == "standard" else f" (AP {ap})"
    summary = (
        f"{dataset} {name}{flavour}: R1 {100 * cmc[0]:.2f}% R5 {100 * r5:.2f}% mAP {100 * record['mAP']:.2f}% "
        f"mINP {100 * record['mINP']:.2f}% ({record['num_valid_query']}/{record['num_query']} queries, "
        f"{record['num_gallery']} gallery) -> {out}"
    )
    return MatchOutcome(out, record, summary, D)


def select_caches(cache_dir: str | os.PathLike, dataset: str | None = None, checkpoint_sha256: str | None = None) -> dict[str, Path]:
    """{dataset: cache file} to match: every dataset with a cache whose query and gallery are complete.

    With ``checkpoint_sha256`` only caches made with that checkpoint count.
    Among several caches of a dataset the newest (``created`` attribute, then
    file time) wins. Raises ReidEvalError naming the folder when nothing fits.
    """
    found: dict[str, list[tuple[str, Path]]] = {}
    for path in iter_cache_files(cache_dir, dataset):
        try:
            attrs = read_attrs(path)
            status = split_status(path)
        except ReidEvalError:
            continue  # a damaged or foreign file is not a candidate; extract reports it
        if any(s not in status or status[s][0] != status[s][1] for s in ("query", "gallery")):
            continue
        if checkpoint_sha256 and attrs["checkpoint_sha256"] != checkpoint_sha256:
            continue
        found.setdefault(str(attrs["dataset"]), []).append((str(attrs.get("created", "")), path))
    if not found:
        what = f"dataset {dataset}" if dataset else "any dataset"
        ck = " made with that --checkpoint" if checkpoint_sha256 else ""
        raise ReidEvalError(f"no complete feature cache{ck} for {what} under {cache_dir}; run `reid-eval extract` first")
    return {ds: max(items, key=lambda t: (t[0], t[1].stat().st_mtime))[1] for ds, items in sorted(found.items())}
