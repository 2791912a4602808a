"""`reid-eval match`: distances from the feature cache, evaluation, results JSON."""

from __future__ import annotations

from pathlib import Path

import click

from .options import cache_dir_option, checkpoint_option, results_dir_option


@click.command("match")
@click.option("--metric", type=click.Choice(["fpr", "dsr", "euclidean", "cosine"]), required=True, help="fpr/dsr: pyramid reconstruction; euclidean/cosine: global features (Baseline).")
@click.option("--dataset", default=None, help="Dataset to match [default: every dataset in the cache dir].")
@click.option("--beta", type=click.FloatRange(min=0.0, min_open=True), default=0.01, show_default=True, help="Ridge β of the reconstruction (paper: 0.01).")
@click.option("--backend", type=click.Choice(["auto", "numpy", "cupy"]), default="auto", show_default=True)
@click.option("--shortlist", type=click.IntRange(min=1), default=None, help="Reconstruct only the K nearest gallery images by global distance.")
@click.option("--fuse", type=click.FloatRange(0.0, 1.0), default=None, metavar="LAMBDA", help="(1-λ)·global + λ·FPR/DSR with a λ chosen beforehand.")
@click.option("--fuse-global", type=click.Choice(["euclidean", "cosine"]), default="euclidean", show_default=True, help="Global distance used by --fuse.")
@click.option("--ap", type=click.Choice(["standard", "market1501"]), default="standard", show_default=True, help="AP flavour (market1501: the official trapezoid rule).")
@cache_dir_option
@results_dir_option
@checkpoint_option
def match_command(metric, dataset, beta, backend, shortlist, fuse, fuse_global, ap, cache_dir, results_dir, checkpoint) -> None:
    """Distance matrix from the cache, Market-1501 evaluation, results JSON.

    With several caches for a dataset, the one made with --checkpoint is used,
    else the newest.
    """
    from reid_eval.experiments import match_cache, select_caches
    from reid_eval.model import file_sha256

    sha = None
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise click.BadParameter(f"{checkpoint} does not exist", param_hint="--checkpoint")
        sha = file_sha256(checkpoint)
    for name, path in select_caches(cache_dir, dataset, sha).items():
        outcome = match_cache(path, metric, results_dir, beta=beta, backend=backend, shortlist=shortlist, fuse=fuse, fuse_global=fuse_global, ap=ap)
        click.echo(outcome.summary)


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (match_command,)
