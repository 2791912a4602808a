"""`build_report`: results files (+ caches) -> tables and figures under one folder."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from reid_eval.atomic import write_text_atomically
from reid_eval.errors import ReidEvalError
from reid_eval.evaluation import query_stats
from reid_eval.evaluation.records import recorded_ranks
from reid_eval.experiments import select_cache
from reid_eval.experiments.compare import records_of
from reid_eval.report import figures as fig
from reid_eval.report.cache import ReportCache
from reid_eval.report.paper import load_paper_tables
from reid_eval.report.results import ResultRecord, load_results
from reid_eval.report.tables import (
    build_dataset_table,
    build_paper_table,
    build_verification_table,
    dataset_label,
    provenance_markdown,
    to_markdown,
    write_table,
)

log = logging.getLogger("reid_eval.report")
FOREGROUND_IMAGES = 6  # images in a foreground figure when no probes are chosen
N_BEST = N_WORST = 2  # probes drawn automatically per dataset


@dataclass
class ReportSummary:
    """What `build_report` did: files written, the Markdown it printed, warnings."""

    results_dir: Path
    out_dir: Path
    records: list[ResultRecord]
    markdown: str
    table_files: list[Path] = field(default_factory=list)
    figure_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        return sorted({r.dataset for r in self.records})


def build_report(
    results_dir: Path,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
    probes: Sequence[int] | None = None,
    top_k: int = 10,
    figures: bool = True,
    warn: Callable[[str], None] | None = None,
) -> ReportSummary:
    """Tables 3 and 4 (paper rows beside measured rows), per-dataset tables and figures.

    Reads every results JSON directly under ``results_dir``; writes
    ``<out_dir>/tables/{table3,table4,<dataset>}.{md,csv,tex}`` and
    ``report.md``, and ``<out_dir>/figures/*.{png,pdf}`` (``out_dir`` defaults
    to ``results_dir``). Caches come from each results file's
    recorded cache file, else from ``<cache_dir>`` as `match` chooses it
    (:func:`reid_eval.experiments.select_cache` with the result's checkpoint); without a cache the retrieval and foreground
    figures of that dataset are skipped with a warning. ``probes``: query
    indices to draw (default: the best and worst ones). ``warn`` receives each
    warning once (default: the ``reid_eval.report`` logger).
    A probe index out of range for a dataset is left out there with a warning.
    Raises ReidEvalError when there are no results, or when ``probes`` were
    given and none of them is a query of any dataset with a cache.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    if top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {top_k}")
    seen: list[str] = []

    def note(message: str) -> None:
        if message not in seen:
            seen.append(message)
            (warn or log.warning)(message)

    records = load_results(results_dir, note)
    if not records:
        raise ReidEvalError(f"no results under {results_dir}; run `reid-eval match` first")

    tables = []
    paper_tables = load_paper_tables()
    checkpoint = _extraction_checkpoint(records)
    for paper in paper_tables.values():
        tables.append(build_paper_table(paper, records, checkpoint))
    covered = {ds for p in paper_tables.values() for ds in p.datasets}
    for dataset in sorted({r.dataset for r in records if r.base_dataset not in covered}):
        tables.append(build_dataset_table(dataset, records))
    if any(r.result.verification for r in records):
        tables.append(build_verification_table(records))
    markdown = "\n".join(to_markdown(t) for t in tables) + "\n" + provenance_markdown(tables)
    table_dir = out_dir / "tables"
    table_files = [p for t in tables for p in write_table(t, table_dir)]
    table_files.append(write_text_atomically(table_dir / "report.md", markdown, "report", "`reid-eval report`"))

    summary = ReportSummary(results_dir, out_dir, records, markdown, table_files, [], seen)
    if figures:
        summary.figure_files, out_of_range = _figures(records, out_dir / "figures", cache_dir, probes, top_k, note)
        if probes and out_of_range and all(len(bad) == len(probes) for bad in out_of_range):
            raise ReidEvalError(f"--probes: no index of {','.join(map(str, probes))} is a query of any matched dataset")
    return summary


def _figures(
    records: list[ResultRecord],
    folder: Path,
    cache_dir: Path | None,
    probes: Sequence[int] | None,
    top_k: int,
    note: Callable[[str], None],
) -> tuple[list[Path], list[list[int]]]:
    """Figure files written, and for each cache the ``probes`` out of its range."""
    written: list[Path] = []
    out_of_range: list[list[int]] = []
    by_dataset: dict[str, list[ResultRecord]] = {}
    for record in records:
        by_dataset.setdefault(record.dataset, []).append(record)
    for dataset, recs in by_dataset.items():
        name = fig.safe_name(dataset)
        title = f"{dataset_label(dataset)} ({dataset})"
        written += fig.cmc_figure(folder / f"cmc_{name}", f"CMC, {title}", recs)
        groups = fig.beta_groups(recs)
        if groups:
            written += fig.beta_sweep_figure(folder / f"beta_sweep_{name}", f"β sweep, {title}", groups)
        by_cache: dict[Path, list[ResultRecord]] = {}
        for record in recs:
            cache, why = _find_cache(record, cache_dir, note)
            if cache is None:
                note(f"{record.path.name}: {why}; retrieval and foreground figures skipped")
                continue
            by_cache.setdefault(cache, []).append(record)
        for i, (cache, crecs) in enumerate(sorted(by_cache.items())):
            suffix = "" if len(by_cache) == 1 else f"_{crecs[0].short_sha}_{i}"
            try:
                view = ReportCache(cache)
            except ReidEvalError as exc:
                note(f"{exc}; retrieval and foreground figures of {dataset} skipped")
                continue
            with view:
                files, bad = _cache_figures(view, dataset, name + suffix, title, crecs, folder, probes, top_k, note)
            written += files
            out_of_range.append(bad)
    return written, out_of_range


def _extraction_checkpoint(records: list[ResultRecord]) -> str | None:
    """The checkpoint file the measured results' caches were extracted with, when one is recorded and still
    there (the report's hints then run as printed); None otherwise."""
    for record in records:
        cache = record.provenance.get("cache_file")
        if not cache or not Path(cache).is_file():
            continue
        try:
            with ReportCache(Path(cache)) as view:
                path = view.checkpoint_file
        except ReidEvalError:
            continue
        if path is not None and path.is_file():
            return str(path)
    return None


def _recorded_stats(record: ResultRecord, paths: Sequence[str], top_k: int) -> SimpleNamespace | None:
    """``first_rank``, ``top_gallery`` and ``ap`` (the results' AP flavour) from the result's per-query
    records, or None when unusable."""
    if not record.result.query_records:
        return None
    try:
        table = records_of(record.result, record.path)
    except ReidEvalError:
        return None  # absent, damaged or not the results file's own: the figures recompute the ranks
    if table["path"].tolist() != [str(p) for p in paths]:
        return None
    ranks = recorded_ranks(table, top_k)
    if ranks is None:
        return None
    return SimpleNamespace(first_rank=ranks[0], top_gallery=ranks[1], ap=table["ap"].to_numpy(dtype=np.float64))


def _computed_stats(record: ResultRecord, d: np.ndarray, query, gallery, top_k: int) -> SimpleNamespace:
    """The same three, computed by the evaluation stage from the distance matrix ``d`` [P, G]."""
    stats = query_stats(d, query.pids, gallery.pids, query.camids, gallery.camids, top_k=top_k)
    return SimpleNamespace(first_rank=stats.first_rank, top_gallery=stats.top_gallery, ap=stats.ap(record.ap_flavour))


def _find_cache(record: ResultRecord, cache_dir: Path | None, note: Callable[[str], None]) -> tuple[Path | None, str]:
    """The results file's own cache, else the one :func:`select_cache` picks for its dataset and checkpoint; (None, why) when none."""
    recorded = record.provenance.get("cache_file")
    if recorded and Path(recorded).is_file():
        return Path(recorded), ""
    why = f"cache {recorded or '(not recorded)'} not found"
    if cache_dir is None or not Path(cache_dir).is_dir():
        return None, why
    try:
        return select_cache(cache_dir, record.dataset, record.checkpoint_sha256 or None, note), ""
    except ReidEvalError as exc:
        return None, f"{why}, and in {cache_dir}: {exc}"


def _cache_figures(
    view: ReportCache,
    dataset: str,
    name: str,
    title: str,
    records: list[ResultRecord],
    folder: Path,
    probes: Sequence[int] | None,
    top_k: int,
    note: Callable[[str], None],
) -> tuple[list[Path], list[int]]:
    """Retrieval and foreground figures from one cache; also the ``probes`` out of its range."""
    if not (view.has_split("query") and view.has_split("gallery")):
        note(f"{view.path}: no query/gallery split; retrieval and foreground figures of {dataset} skipped")
        return [], []
    query, gallery = view.split("query"), view.split("gallery")
    root = view.dataset_root
    tiles: dict[tuple[str, int], np.ndarray] = {}

    def tile(split: str, index: int) -> np.ndarray:
        if (split, index) not in tiles:
            paths = query.paths if split == "query" else gallery.paths
            tiles[(split, index)] = fig.load_tile(root / paths[index] if root else None, note)[0]
        return tiles[(split, index)]

    bad: list[int] = []
    if probes is not None:
        bad = [p for p in probes if not 0 <= p < len(query.paths)]
        if bad:
            note(f"--probes: index {', '.join(map(str, bad))} out of range for {dataset} ({len(query.paths)} queries); left out")
        probes = [p for p in probes if 0 <= p < len(query.paths)]

    matrices: dict[str, tuple[ResultRecord, np.ndarray]] = {}
    for record in sorted(records, key=lambda r: r.sort_key):
        label = record.method_name + (f" ({record.variant_label})" if record.variant_label else "")
        if label in matrices:
            continue
        dist, why = view.distances_for(record)
        if dist is None:
            note(f"{why}; {record.label()} left out of the retrieval figures")
        elif dist.shape != (len(query.paths), len(gallery.paths)):
            note(f"{view.path}: distances/{record.metric} is {dist.shape}, splits are {len(query.paths)}×{len(gallery.paths)}; left out")
        else:
            matrices[label] = (record, dist)

    written: list[Path] = []
    top_k = min(top_k, len(gallery.paths))
    chosen: list[fig.ProbeChoice] = [fig.ProbeChoice(q, "chosen with --probes") for q in probes or []]
    if matrices:
        # The evaluation stage's per-query ranks, APs and top-k (one rank rule: junk left out, ties by
        # gallery index), so the probes picked and the images shown agree with the CMC and mAP reported
        # beside them. Read from the per-query records `match` wrote beside each results file when they
        # cover these queries and top_k; recomputed otherwise (older results files).
        stats = {
            label: _recorded_stats(r, query.paths, top_k) or _computed_stats(r, d, query, gallery, top_k)
            for label, (r, d) in matrices.items()
        }
        if probes is None:
            primary = next((label for label, (r, _) in matrices.items() if r.metric == "fpr"), next(iter(matrices)))
            chosen = fig.choose_probes({label: s.ap for label, s in stats.items()}, primary, N_BEST, N_WORST)
        else:
            chosen = [fig.ProbeChoice(q, "chosen with --probes") for q in probes]
        for choice in chosen:
            q = choice.index
            rows = []
            for label, (_, d) in matrices.items():
                shown = [int(g) for g in stats[label].top_gallery[q] if g >= 0]
                rows.append(
                    fig.RetrievalRow(
                        label=label,
                        gallery=[int(g) for g in shown],
                        distances=[float(d[q, g]) for g in shown],
                        correct=[bool(gallery.pids[g] == query.pids[q]) for g in shown],
                        ap=float(stats[label].ap[q]),
                        first_rank=int(stats[label].first_rank[q]),
                    )
                )
            written += fig.retrieval_figure(
                folder / f"retrieval_{name}_q{q}",
                f"{title}, query {q} (pid {int(query.pids[q])}): {choice.reason}\n"
                f"top {top_k}; green: same identity, red: other; distance below",
                tile("query", q),
                rows,
                lambda g: tile("gallery", g),
                top_k,
            )
    else:
        note(f"{view.path}: no usable distance matrix for {dataset}; retrieval figures skipped")

    shown_fg = ([c.index for c in chosen] or list(range(min(FOREGROUND_IMAGES, len(query.paths)))))[:8]
    if shown_fg:
        written += fig.foreground_figure(
            folder / f"foreground_{name}",
            f"Foreground probabilities (finest pyramid level)\n{title}",
            [tile("query", q) for q in shown_fg],
            [view.foreground_map("query", q) for q in shown_fg],
            [f"q{q} pid {int(query.pids[q])}" for q in shown_fg],
        )
    return written, bad
