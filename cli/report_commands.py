"""`reid-eval report`: Tables 3 and 4 beside the paper, and the figures, from the results files."""

from __future__ import annotations

from pathlib import Path

import click

from reid_eval.evaluation.ranking import MAX_TOP_K

from .options import Folder, cache_dir_option, results_dir_input_option


def _probe_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None or not value.strip():
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated query indices like 0,12,40, got {value!r}") from None


@click.command("report")
@results_dir_input_option
@cache_dir_option
@click.option("--out-dir", type=Folder(output=True), default=None,
              help="Where tables/ and figures/ go (default: the results dir).")
@click.option("--probes", callback=_probe_list, default=None, metavar="IDX,...",
              help="Query indices for the retrieval figures (default: the best and worst probes).")
@click.option("--top-k", type=click.IntRange(min=1, max=MAX_TOP_K), default=10, show_default=True,
              help=f"Gallery images per retrieval row (at most {MAX_TOP_K}).")
@click.option("--no-figures", is_flag=True, help="Tables only.")
def report_command(results_dir: Path, cache_dir: Path, out_dir: Path | None, probes: list[int] | None, top_k: int, no_figures: bool) -> None:
    """Regenerate Tables 3 and 4 (paper rows beside measured rows) and the figures.

    Reads every results JSON under --results-dir, writes Markdown, CSV and
    LaTeX (booktabs) tables to <results-dir>/tables/ and PNG/PDF figures to
    <results-dir>/figures/, and prints the Markdown.
    """
    from reid_eval.report import build_report

    if out_dir is None:
        # tables/ and figures/ go into the results folder: it must then be writable, said at the option
        try:
            Folder(output=True).convert(results_dir, None, None)
        except click.BadParameter as exc:
            raise click.BadParameter(f"{exc.message} Give --out-dir for the tables and figures.",
                                     param_hint="--results-dir") from None
    summary = build_report(
        results_dir,
        out_dir=out_dir,
        cache_dir=cache_dir,
        probes=probes,
        top_k=top_k,
        figures=not no_figures,
        warn=lambda message: click.echo(f"Warning: {message}", err=True),
    )
    click.echo(summary.markdown)
    click.echo(
        f"Wrote {len(summary.table_files)} table files to {summary.out_dir / 'tables'} and "
        f"{len(summary.figure_files)} figure files to {summary.out_dir / 'figures'}.",
        err=True,
    )


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (report_command,)
