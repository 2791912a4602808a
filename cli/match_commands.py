"""`reid-eval match`: distances from the feature cache, evaluation, results JSON.

Choices and defaults come from the library (reid_eval.experiments.record);
this module parses options into a MatchParams and calls the library. It
imports no torch (only `--checkpoint` hashing loads the model stage).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from reid_eval.evaluation import AP_FLAVOURS
from reid_eval.experiments.record import (
    GLOBAL_METRICS,
    MATCH_METRICS,
    PAPER_AP,
    PAPER_BETA,
    RERANK_AUX,
    RERANK_K1,
    RERANK_K2,
    RERANK_LAMBDA,
    MatchParams,
)
from reid_eval.matching.kernel.backend import BACKENDS
from reid_eval.matching.memory import DEFAULT_MEMORY_BUDGET, MEMORY_BUDGET_ENV

from .options import ByteSize, FiniteFloat, cache_dir_option, checkpoint_option, refuse_unused, results_dir_option
from .progress import Bars

_DEFAULT = MatchParams()


@click.command("match")
@click.option("--metric", type=click.Choice(MATCH_METRICS), required=True,
              help="fpr/dsr: pyramid reconstruction; euclidean/cosine: global features (Baseline).")
@click.option("--dataset", default=None, help="Dataset to match [default: every dataset in the cache dir].")
@click.option("--beta", type=FiniteFloat(), default=PAPER_BETA, show_default=True,
              help=f"Ridge β of the reconstruction (paper: {PAPER_BETA:g}).")
@click.option("--backend", type=click.Choice(BACKENDS), default=_DEFAULT.backend, show_default=True)
@click.option("--shortlist", type=click.IntRange(min=1), default=None, metavar="K",
              help="Reconstruct only the K nearest gallery images by --shortlist-metric (its own results file; "
                   "the paper's tables are exact all-pairs).")
@click.option("--shortlist-metric", type=click.Choice(GLOBAL_METRICS), default="euclidean", show_default=True,
              help="Global distance that picks the --shortlist.")
@click.option("--fuse", type=FiniteFloat(), default=None, metavar="LAMBDA",
              help="(1-λ)·global + λ·FPR/DSR with a λ chosen beforehand.")
@click.option("--fuse-global", type=click.Choice(GLOBAL_METRICS), default="euclidean", show_default=True,
              help="Global distance used by --fuse.")
@click.option("--ap", type=click.Choice(AP_FLAVOURS), default=_DEFAULT.ap, show_default=True,
              help=f"AP flavour ({PAPER_AP}: the official code's trapezoid AP, CMC and mAP over all queries, a query "
                   "without a correct match counting 0, as in the paper's tables; market1501-valid: that AP over the "
                   "valid queries; standard: torchreid's and fast-reid's).")
@click.option("--memory-budget", type=ByteSize(), envvar=MEMORY_BUDGET_ENV, default=DEFAULT_MEMORY_BUDGET,
              show_default=True, show_envvar=True,
              help="Working memory of the matching tiles in flight (the [P, G] result is extra). Sets the tile "
                   "plan of a new matrix; an interrupted one resumes with its own.")
@click.option("--workers", type=click.IntRange(min=1, max=os.cpu_count() or 1), default=None,
              help="Run the tiles on a Dask LocalCluster of N single-thread worker processes (reid-eval[dask]); "
                   "at most one per CPU core (each holds its own --memory-budget).")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Run the tiles on an existing Dask cluster; its workers must see the cache at the same path.")
@click.option("--recompute", is_flag=True, help="Compute the matrix again even when the cache holds it (or some of its tiles).")
@click.option("--shortlist-fill", type=FiniteFloat(), default=None, metavar="D",
              help="Distance of every gallery image outside the --shortlist (fast-reid: 100); lets --shortlist and "
                   "--fuse combine. Default: the shortlist first, the rest behind it in global order.")
@click.option("--rerank", is_flag=True,
              help="k-reciprocal re-ranking (Zhong et al., CVPR 2017) of the matrix; its own results file.")
@click.option("--rerank-aux", type=click.Choice(RERANK_AUX), default="same", show_default=True,
              help="Query-query and gallery-gallery distances for --rerank: same = this metric (for FPR the "
                   "gallery-gallery FPR matrix, computed once and cached), global = the global feature's euclidean "
                   "distance (cheap, mixes two metrics).")
@click.option("--rerank-k1", type=click.IntRange(min=1), default=RERANK_K1, show_default=True)
@click.option("--rerank-k2", type=click.IntRange(min=1), default=RERANK_K2, show_default=True)
@click.option("--rerank-lambda", type=FiniteFloat(), default=RERANK_LAMBDA, show_default=True,
              help="Weight of the original distance in the re-ranked one.")
@click.option("--resamples", type=click.IntRange(min=0), default=_DEFAULT.resamples, show_default=True,
              help="Identity-bootstrap resamples for the 95% intervals (0: no intervals).")
@click.option("--ci-seed", type=click.IntRange(min=0), default=_DEFAULT.ci_seed, show_default=True,
              help="Seed of the bootstrap resamples.")
@click.option("--preset", type=click.Choice(["fastreid"]), default=None,
              help="fastreid: fast-reid's PartialReID test pipeline (β 0.001, shortlist 100 by cosine, 100 outside, "
                   "(1-λ)·cosine + λ·FPR) with --fuse λ, or without --fuse λ tuned on held-out train identities "
                   "(needs the train split in the cache); the optimistic test-set λ sweep is printed and recorded too.")
@click.option("--untrained-foreground", "untrained_foreground", is_flag=True,
              help="Run --metric fpr although the cache's foreground generator was never trained (its rows say so).")
@cache_dir_option
@results_dir_option
@checkpoint_option
def match_command(metric, dataset, beta, backend, shortlist, shortlist_metric, fuse, fuse_global, ap, memory_budget,
                  workers, scheduler, recompute, shortlist_fill, rerank, rerank_aux, rerank_k1, rerank_k2, rerank_lambda,
                  resamples, ci_seed, preset, untrained_foreground, cache_dir, results_dir, checkpoint) -> None:
    """Distance matrix from the cache, Market-1501 evaluation, results JSON.

    With several caches for a dataset, the one made with --checkpoint is used,
    else the newest complete one; a damaged or unfinished newest cache is an
    error, never skipped. Every parameter, and the checkpoint, is part of the
    results file name: runs with other parameters never replace each other.

    FPR/DSR read the features block by block within --memory-budget, show
    progress on stderr and commit every finished tile: after Ctrl-C or a
    crash the same command resumes. The share of entries refined in float64
    is printed on stderr and recorded in the results JSON. A matrix already
    in the cache for the same parameters and features is reused (--recompute
    forces it).
    """
    from reid_eval.experiments import MatchExecution, match_cache, select_caches
    from reid_eval.experiments.foreground import check_foreground
    from reid_eval.experiments.match import refinement_line, tile_check_line

    ctx = click.get_current_context()
    refuse_unused(ctx, "--rerank", rerank, ("rerank_aux", "rerank_k1", "rerank_k2", "rerank_lambda"))
    refuse_unused(ctx, "--shortlist", shortlist is not None or preset is not None, ("shortlist_metric", "shortlist_fill"))
    refuse_unused(ctx, "--fuse", fuse is not None or preset is not None, ("fuse_global",))
    try:  # the ranges and combinations are checked once, by the library, before any cache is read
        params = MatchParams(metric=metric, beta=beta, shortlist=shortlist, shortlist_metric=shortlist_metric,
                             fuse=fuse, fuse_global=fuse_global, ap=ap, backend=backend, shortlist_fill=shortlist_fill,
                             rerank=rerank_aux if rerank else None, rerank_k1=rerank_k1, rerank_k2=rerank_k2,
                             rerank_lambda=rerank_lambda, resamples=resamples, ci_seed=ci_seed).validate()
        if preset is not None:
            if metric != "fpr":
                raise ValueError("--preset fastreid reconstructs with the foreground-weighted distance: use --metric fpr")
            from reid_eval.experiments.fastreid import fastreid_params

            fastreid_params(0.0 if fuse is None else fuse, params)  # its own checks
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    sha = None
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise click.BadParameter(f"{checkpoint} does not exist", param_hint="--checkpoint")
        from reid_eval.model import file_sha256  # the model stage loads torch: only when a checkpoint is named

        sha = file_sha256(checkpoint)
    if workers is not None and scheduler is not None:
        raise click.BadParameter("give --workers (a local cluster) or --scheduler (an existing one), not both",
                                 param_hint="--workers/--scheduler")
    if workers is not None:  # each worker holds its own --memory-budget
        from reid_eval.errors import ReidEvalError
        from reid_eval.matching.memory import check_workers_fit

        try:
            check_workers_fit(workers, memory_budget)
        except ReidEvalError as exc:
            raise click.BadParameter(str(exc).removeprefix(f"--workers {workers} "), param_hint="--workers") from None
    if dataset is not None:  # an unknown name is named as such, not taken for a dataset without a cache
        from reid_eval.datasets import get_spec

        get_spec(dataset)
    if untrained_foreground and metric != "fpr":
        raise click.BadParameter("weighs FPR's locations; it has no effect without --metric fpr",
                                 param_hint="--untrained-foreground")
    caches = select_caches(cache_dir, dataset, sha, warn=lambda m: click.echo(f"Warning: {m}", err=True))
    for path in caches.values():  # before any matrix is computed
        check_foreground(path, metric, untrained_foreground)
    for name, path in caches.items():
        bars = Bars({"tiles": f"match {name} tiles"})
        execution = MatchExecution(memory_budget_bytes=memory_budget, workers=workers, scheduler=scheduler,
                                   recompute=recompute,
                                   progress=lambda p: bars("tiles", p.tiles_done, p.tiles_total, p.rates()),
                                   notice=lambda line, name=name: click.echo(f"match {name}: {line}", err=True))
        try:
            if preset is not None:
                from reid_eval.experiments.fastreid import run_fastreid

                outcome = run_fastreid(path, results_dir, params, fuse, dataset=name, execution=execution)
            else:
                outcome = match_cache(path, params, results_dir, dataset=name, execution=execution)
        finally:
            bars.close()
        for line in (tile_check_line(outcome.result.provenance), refinement_line(outcome.result.provenance)):
            if line is not None:  # on stderr with the progress lines: stdout keeps one summary line per dataset
                click.echo(f"match {name} {line}", err=True)
        click.echo(outcome.summary)


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (match_command,)
