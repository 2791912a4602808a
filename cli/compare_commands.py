"""`reid-eval compare`: paired difference of rank-1 and mAP between two results files."""

from __future__ import annotations

import click

from reid_eval.evaluation.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED, MAX_RESAMPLES

from .options import FiniteFloat


@click.command("compare")
@click.argument("results_a", type=click.Path(dir_okay=False))
@click.argument("results_b", type=click.Path(dir_okay=False))
@click.option("--resamples", type=click.IntRange(min=1, max=MAX_RESAMPLES), default=DEFAULT_RESAMPLES, show_default=True,
              help="Identity bootstrap resamples.")
@click.option("--ci-seed", type=click.IntRange(min=0), default=DEFAULT_SEED, show_default=True,
              help="Seed of the identity bootstrap (as `reid-eval match --ci-seed`).")
@click.option("--level", type=FiniteFloat(0.0, 1.0, min_open=True, max_open=True), default=DEFAULT_LEVEL,
              show_default=True, help="Interval level.")
def compare_command(results_a, results_b, resamples, ci_seed, level) -> None:
    """Paired difference A-B of rank-1 and mAP on the same queries, with its bootstrap interval.

    RESULTS_A and RESULTS_B are results files of `reid-eval match` on the same
    dataset and queries; their per-query records (written beside them) are
    resampled by whole identities with the same draws for both.
    """
    from reid_eval.experiments.compare import compare_results

    for line in compare_results(results_a, results_b, resamples=resamples, seed=ci_seed, level=level).lines():
        click.echo(line)


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (compare_command,)
