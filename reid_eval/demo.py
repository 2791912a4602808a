"""`reid-eval demo`: the whole method on a CPU in minutes, on synthetic data.

1. generate the synthetic occluded-person set (:mod:`reid_eval.datasets.synthetic`)
   under ``<workdir>/data/synthetic_occluded``;
2. train a small FPR network on its train split (:mod:`reid_eval.training`)
   into ``<workdir>/train``;
3. extract query and gallery features into ``<workdir>/cache``
   (:func:`reid_eval.features.extract_dataset`);
4. match with the Baseline (``euclidean`` on the global features), DSR and
   FPR and evaluate (:func:`reid_eval.experiments.match_cache`), results JSON
   (:class:`reid_eval.experiments.MatchResult`) under ``<workdir>/results``;
5. cross-domain, as the paper's Table 3 is (trained on one set, tested on
   another): when a data root holding ``pets09_s2l1`` (real PETS09-S2L1
   surveillance crops, see ``data_manifests/pets09_s2l1.toml``) is given,
   extract it with the same synthetic-trained model into the same cache dir
   and match it with the same three methods; its results files sit beside the
   synthetic ones, so the report gives it a table of its own;
6. build the report (:func:`reid_eval.report.build_report`) into
   ``<workdir>/results/tables`` and ``figures``.

Every step reuses what an earlier run left in the same workdir with the same
settings (the dataset, a finished training, the feature cache), so a rerun
after an interruption continues instead of starting over.

The model is a ResNet-18 at 128×64 with last stride 1 (an 8×4 map) and a
pyramid of every cell, every 2×2 and every 4×4 window (stride 1): 58
locations for a whole-body image. Training rescales every image to 128×64, as
the paper does (§4.1), and runs 12 epochs of 8×4 PK batches (216 steps). It
trains by epochs, never by the clock, so a busy machine takes longer and
prints the same table. A time limit is only an explicit choice
(``max_train_seconds``): the run then says how many epochs it trained, and a
rerun in the same workdir continues the unfinished training instead of
reusing it. Extraction keeps the aspect ratio, so a half-body crop gives a
shorter map and fewer locations, as in the paper's alignment-free setting.

Same seed, same numbers: torch runs on :data:`DEMO_THREADS` threads unless
told otherwise, whatever the machine's core count, because float sums come
out in another order (and a trained network drifts a little) with another
thread count. Machines whose CPUs run other kernels (AVX2 against AVX-512)
can still differ in the last bits.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from reid_eval.datasets import find_dataset_root, locate_dataset
from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
from reid_eval.errors import ReidEvalError
from reid_eval.evaluation import evaluate_ranking
from reid_eval.experiments import GLOBAL_METRICS, METRIC_NAMES, MatchParams, match_cache
from reid_eval.experiments.compare import compare_results
from reid_eval.features import extract_dataset, read_split_index
from reid_eval.model import ModelConfig, load_checkpoint
from reid_eval.report import build_report
from reid_eval.training import FINAL_NAME, TrainConfig, train
from reid_eval.training.trainer import CHECKPOINT_NAME

DATASET = "synthetic_occluded"
#: The real set the demo's model is also tested on, never trained on.
CROSS_DOMAIN_DATASET = "pets09_s2l1"
#: torch's CPU threads in the demo, on every machine: its numbers are reproduced at a fixed count.
DEMO_THREADS = 2
#: Metrics of the demo table, in its row order (labels: experiments.METRIC_NAMES).
DEMO_METRICS: tuple[str, ...] = ("euclidean", "dsr", "fpr")

#: progress(stage, done, total, note): stage is one of "generate", "train", "extract-query",
#: "extract-gallery", "match", "pets09-query", "pets09-gallery", "pets09-match"; note is a short
#: status text (e.g. the current loss).
Progress = Callable[[str, int, int, str], None]


@dataclass(frozen=True)
class DemoSettings:
    """Everything that decides the demo's outcome (the seed included)."""

    synthetic: SyntheticConfig
    model: ModelConfig
    epochs: int
    batch_p: int
    batch_k: int
    lr: float = 3.5e-4
    margin: float = 0.1
    resize: str = "keep-aspect"


def demo_settings(size: str = "default", seed: int = 0) -> DemoSettings:
    """The ``tiny`` (a test-sized smoke run, well under a minute) or ``default`` (a few minutes) demo."""
    model = ModelConfig(backbone="resnet18", input_size=(128, 64), last_stride=1,
                        pyramid_kernels=(1, 2, 4), pyramid_stride=1)
    if size == "tiny":
        return DemoSettings(
            synthetic=SyntheticConfig(seed=seed, num_train_ids=8, num_test_ids=6, train_images_per_id=4,
                                      gallery_images_per_id=2, query_images_per_id=2, height=64, width=32),
            model=replace(model, input_size=(64, 32)), epochs=1, batch_p=4, batch_k=2)
    if size == "default":
        return DemoSettings(
            synthetic=SyntheticConfig(seed=seed, num_train_ids=150, num_test_ids=100, train_images_per_id=8,
                                      gallery_images_per_id=3, query_images_per_id=2),
            model=model, epochs=12, batch_p=8, batch_k=4)
    raise ValueError(f"--size must be tiny or default, got {size!r}")


@dataclass
class DemoResult:
    """The demo's table rows (metric -> rank-1, rank-5, mAP as fractions), the rank-1 of each
    metric per kind of query (occluded / partial), files and timings (seconds)."""

    rows: dict[str, dict[str, float]]
    table: str
    workdir: Path
    results_dir: Path
    report_dir: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rank1_by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # epochs_completed, stopped_early
    cross_domain: dict[str, dict[str, float]] = field(default_factory=dict)  # pets09_s2l1 rows, as ``rows``


#: TrainConfig fields that do not change what is learnt (a resumed run equals an uninterrupted one).
_RUN_ONLY = ("resume", "device", "max_seconds")


def _train(settings: DemoSettings, data_root: Path, train_dir: Path, device: str, max_seconds: float | None,
           progress: Progress | None, say: Callable[[str], None]) -> tuple[Path, dict]:
    """Train (or reuse a finished, or continue an unfinished) demo model; returns its file and
    {epochs_completed, stopped_early}."""
    final = train_dir / FINAL_NAME
    wanted = TrainConfig(dataset=DATASET, root=data_root, out_dir=train_dir, model=settings.model,
                         epochs=settings.epochs, batch_p=settings.batch_p, batch_k=settings.batch_k,
                         lr=settings.lr, lr_schedule="constant", warmup_epochs=0,  # the demo's short runs: no warmup
                         margin=settings.margin, flip=True, seed=settings.synthetic.seed,
                         device=device, max_seconds=max_seconds)
    if final.is_file():
        _, _, meta = load_checkpoint(final)
        extra = meta["extra"]
        same = {k: v for k, v in extra.get("train", {}).items() if k not in _RUN_ONLY} == \
            {k: v for k, v in wanted.to_json().items() if k not in _RUN_ONLY}
        if not same:
            raise ReidEvalError(f"{train_dir} holds a model trained with other settings; use another --workdir")
        done = extra.get("epochs_completed")
        if done == settings.epochs:
            say(f"reusing the trained model {final} ({done} epochs)")
            return final, {"epochs_completed": done, "stopped_early": False}
        say(f"continuing the unfinished training in {train_dir} ({done} of {settings.epochs} epochs done)")
    wanted.resume = (train_dir / CHECKPOINT_NAME).is_file()

    def on_step(epoch: int, step: int, steps: int, stats: dict) -> None:
        if progress is not None:
            done = epoch * steps + step
            progress("train", done, settings.epochs * steps,
                     f"epoch {epoch + 1}/{settings.epochs} loss {stats['loss']:.3f}")

    result = train(wanted, on_step, say)
    if result.stopped_early:
        say(f"training stopped at the time limit you set ({max_seconds / 60:g} min) after {result.epochs_completed} "
            f"of {settings.epochs} epochs: the table below is that shorter training's, not the demo's; "
            "rerun the same command without the limit (or with a larger one) to continue the training")
    return result.model_path, {"epochs_completed": result.epochs_completed, "stopped_early": result.stopped_early}


def run_demo(workdir: Path = Path("demo-work"), *, seed: int = 0, size: str = "default", device: str = "auto",
             progress: Progress | None = None, say: Callable[[str], None] | None = None,
             report: bool = True, cross_domain_root: Path | None = None, threads: int = DEMO_THREADS,
             max_train_seconds: float | None = None) -> DemoResult:
    """Run the demo (see the module docstring) under ``workdir``; returns its table.

    cross_domain_root: a data root holding ``pets09_s2l1`` (step 5); None skips step 5.
    threads: torch's CPU threads during the run (restored after it).
    max_train_seconds: stop training after the step that crosses it (None: train every epoch).
    """
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_demo(Path(workdir), seed, size, device, progress, say or (lambda _m: None), report,
                         cross_domain_root, threads, max_train_seconds)
    finally:
        torch.set_num_threads(before)


def _run_demo(workdir: Path, seed: int, size: str, device: str, progress: Progress | None,
              say: Callable[[str], None], report: bool, cross_domain_root: Path | None, threads: int,
              max_train_seconds: float | None) -> DemoResult:
    settings = demo_settings(size, seed)
    data_root = workdir / "data" / DATASET
    cache_dir, results_dir, train_dir = workdir / "cache", workdir / "results", workdir / "train"
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t = time.perf_counter()
    summary = generate_synthetic_dataset(
        data_root, settings.synthetic,
        on_progress=(lambda d, n: progress("generate", d, n, "")) if progress else None)
    timings["generate"] = time.perf_counter() - t
    say(("reused" if summary.reused else "generated") + f" the synthetic set at {data_root}: "
        + ", ".join(f"{summary.counts.get(s, 0)} {s} images ({summary.ids.get(s, 0)} ids)"
                    for s in ("train", "query", "gallery")))

    t = time.perf_counter()
    model_path, training = _train(settings, data_root, train_dir, device, max_train_seconds, progress, say)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()

    def on_extract(split: str, done: int, total: int, rate: float) -> None:
        if progress is not None:
            progress(f"extract-{split}", done, total, f"{rate:.0f} img/s" if rate else "")

    cache = extract_dataset(DATASET, data_root, model_path, cache_dir, device=device, batch_size=64,
                            resize=settings.resize, progress=on_extract)
    timings["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    rows: dict[str, dict[str, float]] = {}
    by_kind: dict[str, dict[str, float]] = {}
    query, gallery = read_split_index(cache, "query"), read_split_index(cache, "gallery")
    kinds = _query_kinds(data_root, query.paths)
    files: dict[str, Path] = {}
    for i, metric in enumerate(DEMO_METRICS):
        outcome = match_cache(cache, MatchParams(metric=metric), results_dir, dataset=DATASET)
        cmc = outcome.result.cmc
        rows[metric] = {"rank1": cmc[0], "rank5": cmc[min(4, len(cmc) - 1)], "mAP": outcome.result.mAP}
        if outcome.result.intervals:  # identity-bootstrap intervals, shown by format_interval_table
            iv = outcome.result.intervals
            rows[metric].update(rank1_ci=iv["cmc_ci"][0], mAP_ci=iv["mAP_ci"], bootstrap=iv.get("bootstrap", {}))
        files[metric] = outcome.results_file
        for kind in sorted(set(kinds)):
            sel = np.array([k == kind for k in kinds])
            r = evaluate_ranking(outcome.distances[sel], query.pids[sel], gallery.pids, query.camids[sel],
                                 gallery.camids)
            by_kind.setdefault(kind, {})[metric] = float(r.cmc[0])
        if progress is not None:
            progress("match", i + 1, len(DEMO_METRICS), metric)
    timings["match"] = time.perf_counter() - t

    cross: dict[str, dict[str, float]] = {}
    if cross_domain_root is not None:
        t = time.perf_counter()
        cross = _cross_domain(Path(cross_domain_root), model_path, cache_dir, results_dir, settings, device,
                              progress, say)
        timings[CROSS_DOMAIN_DATASET] = time.perf_counter() - t

    report_dir = None
    notes: list[str] = []
    if report:
        t = time.perf_counter()
        rep = build_report(results_dir, cache_dir=cache_dir, warn=notes.append)
        report_dir = rep.out_dir
        timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all
    table = format_interval_table(rows) + "\n\n" + format_kind_table(by_kind, kinds)
    if "fpr" in files and "dsr" in files:  # is FPR's gain over DSR more than these queries' noise?
        table += "\n\nFPR vs DSR, paired on the same queries (`reid-eval compare`):\n" + "\n".join(
            compare_results(files["fpr"], files["dsr"]).lines())
    if cross:
        table += f"\n\n{CROSS_DOMAIN_DATASET} (real crops, cross-domain: the same synthetic-trained model):\n\n" \
            + format_interval_table(cross)
    (workdir / "demo_summary.json").write_text(json.dumps(
        {"settings": {"size": size, "seed": seed, "synthetic": asdict(settings.synthetic),
                      "model": settings.model.to_dict(), "epochs": settings.epochs,
                      "batch": [settings.batch_p, settings.batch_k], "resize": settings.resize,
                      "threads": threads},
         "training": training, "rows": rows, "rank1_by_query_kind": by_kind,
         "cross_domain": {CROSS_DOMAIN_DATASET: cross} if cross else {}, "timings_s": timings},
        indent=2) + "\n")
    return DemoResult(rows, table, workdir, results_dir, report_dir, timings, notes, by_kind, training, cross)


def default_cross_domain_root() -> Path | None:
    """The shared data root ``../shared/data`` if it holds ``pets09_s2l1``, else None.

    Looked for relative to the working directory (a run from the repository
    root) and then beside the checkout the package was installed from.
    """
    checkout = Path(__file__).resolve().parents[1]
    for candidate in (Path.cwd().parent / "shared" / "data", checkout.parent / "shared" / "data"):
        if candidate.is_dir() and locate_dataset(CROSS_DOMAIN_DATASET, candidate) is not None:
            return candidate
    return None


def _cross_domain(data_root: Path, model_path: Path, cache_dir: Path, results_dir: Path, settings: DemoSettings,
                  device: str, progress: Progress | None, say: Callable[[str], None]) -> dict[str, dict[str, float]]:
    """Step 5: extract and match ``pets09_s2l1`` under ``data_root`` with the demo's model; its table rows."""
    root = find_dataset_root(CROSS_DOMAIN_DATASET, data_root)

    def on_extract(split: str, done: int, total: int, rate: float) -> None:
        if progress is not None:
            progress(f"pets09-{split}", done, total, f"{rate:.0f} img/s" if rate else "")

    cache = extract_dataset(CROSS_DOMAIN_DATASET, root, model_path, cache_dir, device=device, batch_size=64,
                            resize=settings.resize, progress=on_extract)
    rows: dict[str, dict] = {}
    for i, metric in enumerate(DEMO_METRICS):
        result = match_cache(cache, MatchParams(metric=metric), results_dir, dataset=CROSS_DOMAIN_DATASET).result
        rows[metric] = {"rank1": result.cmc[0], "rank5": result.cmc[min(4, len(result.cmc) - 1)], "mAP": result.mAP}
        if result.intervals:  # identity-bootstrap intervals: with 7 query people they are wide
            rows[metric].update(rank1_ci=result.intervals["cmc_ci"][0], mAP_ci=result.intervals["mAP_ci"],
                                bootstrap=result.intervals.get("bootstrap", {}))
        if progress is not None:
            progress("pets09-match", i + 1, len(DEMO_METRICS), metric)
    say(f"{CROSS_DOMAIN_DATASET}: {result.num_query} real occluded queries against {result.num_gallery} "
        f"gallery crops from {root}")
    return rows


def _query_kinds(data_root: Path, paths: list[str]) -> list[str]:
    """``occluded`` / ``partial`` for each query path, from the generator's annotations.csv."""
    with open(data_root / "annotations.csv", newline="") as fh:
        kind = {row["path"]: row["kind"] for row in csv.DictReader(fh)}
    return [kind.get(p, "unknown") for p in paths]


def _label(metric: str) -> str:
    """'Baseline (euclidean)', 'DSR', 'FPR': the report's method names, the Baseline's distance named."""
    return METRIC_NAMES[metric] + (f" ({metric})" if metric in GLOBAL_METRICS else "")


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """The demo table as Markdown, rates in percent."""
    lines = ["| method | rank-1 | rank-5 | mAP |", "| --- | ---: | ---: | ---: |"]
    for metric in DEMO_METRICS:
        if metric in rows:
            r = rows[metric]
            lines.append(f"| {_label(metric)} | {100 * r['rank1']:.1f} | {100 * r['rank5']:.1f} | {100 * r['mAP']:.1f} |")
    return "\n".join(lines)


def format_interval_table(rows: dict[str, dict]) -> str:
    """The demo table with the rank-1 and mAP bootstrap intervals when the rows have them, as Markdown."""
    if not all("rank1_ci" in r for r in rows.values()):
        return format_table(rows)
    cell = lambda v, ci: f"{100 * v:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"  # noqa: E731
    lines = ["| method | rank-1 [CI] | rank-5 | mAP [CI] |", "| --- | ---: | ---: | ---: |"]
    for metric in DEMO_METRICS:
        if metric in rows:
            r = rows[metric]
            lines.append(f"| {_label(metric)} | {cell(r['rank1'], r['rank1_ci'])} | {100 * r['rank5']:.1f} "
                         f"| {cell(r['mAP'], r['mAP_ci'])} |")
    boot = next(iter(rows.values())).get("bootstrap", {})
    if boot:
        lines.append(f"\nIntervals: {boot.get('method', 'percentile')} bootstrap over the "
                     f"{boot.get('num_identities', '?')} query identities, {boot.get('resamples', '?')} resamples "
                     f"(level {boot.get('level', 0.95)}).")
    return "\n".join(lines)


def format_kind_table(by_kind: dict[str, dict[str, float]], kinds: list[str]) -> str:
    """Rank-1 (percent) of each method on each kind of query, as Markdown."""
    names = sorted(by_kind)
    head = " | ".join(f"rank-1 {k} ({kinds.count(k)})" for k in names)
    lines = [f"| method | {head} |", "| --- |" + " ---: |" * len(names)]
    for metric in DEMO_METRICS:
        cells = " | ".join(f"{100 * by_kind[k][metric]:.1f}" for k in names if metric in by_kind[k])
        lines.append(f"| {_label(metric)} | {cells} |")
    return "\n".join(lines)
