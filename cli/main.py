"""The `reid-eval` command: a thin click front end over the reid_eval library.

Every command module registers its commands on :data:`cli`. Errors a user can
fix (ReidEvalError, and the ValueError/OSError family raised on bad input) end
in one line and exit status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from reid_eval import __version__
from reid_eval.errors import ReidEvalError

# Modules whose import adds commands to `cli` (each calls cli.add_command).
COMMAND_MODULES: tuple[str, ...] = ("cli.dataset_commands", "cli.model_commands", "cli.extract_commands", "cli.report_commands", "cli.train_commands")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="reid-eval")
@click.option("--debug", is_flag=True, help="Show the full traceback when a command fails.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Occluded person re-identification evaluation with FPR.

    extract features into an HDF5 cache, match probes against galleries with
    Foreground-aware Pyramid Reconstruction, score with the Market-1501
    protocol, and regenerate the paper's tables.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _load_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    _load_commands()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        status = cli.main(args=args, prog_name="reid-eval", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    except (ReidEvalError, ValueError, OSError, KeyError) as exc:
        if debug:
            raise
        click.echo(f"Error: {_one_line(exc)}", err=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback unasked
        if debug:
            raise
        click.echo(f"Error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback)", err=True)
        return 1
    # click returns the exit code of ctx.exit(code) in non-standalone mode.
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
