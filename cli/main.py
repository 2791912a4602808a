"""The `reid-eval` command: a thin click front end over the reid_eval library.

Commands live in the ``*_commands`` modules of this package, each listing its top-level
commands in a module-level ``COMMANDS`` tuple. :data:`COMMANDS` below maps
every command name to its module and one-line summary, so ``reid-eval --help``
and ``--version`` import none of them, and running a command imports only its
own module: several pull in torch, which costs seconds. Errors a user can fix
(ReidEvalError, and the ValueError/OSError family raised on bad input) end in
one line and exit status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from gettext import gettext as _

import click

from reid_eval import __version__
from reid_eval.errors import ReidEvalError

# name -> (module defining it, relative to this package, its summary in `reid-eval --help`). The summary
# is the first sentence of the command's docstring (click's short help without
# truncation); tests/test_cli_basics.py checks both columns against the modules.
COMMANDS: dict[str, tuple[str, str]] = {
    "checkpoint": (".model_commands", "Write model checkpoints in reid-eval's format."),
    "compare": (
        ".compare_commands",
        "Paired difference A-B of rank-1 and mAP on the same queries, with its bootstrap interval.",
    ),
    "datasets": (".dataset_commands", "List the known datasets and whether each is found under the data root."),
    "demo": (
        ".demo_commands",
        "Synthetic occluded persons -> short FPR training -> extract -> match (Baseline, DSR, FPR) -> report.",
    ),
    "extract": (
        ".extract_commands",
        "Extract pyramid, foreground and global features into the HDF5 cache (resumable).",
    ),
    "manifest": (
        ".dataset_commands",
        "Scan a dataset, validate it against its published counts, write the manifest CSV.",
    ),
    "masks": (
        ".mask_commands",
        "Write person masks for `reid-eval train --masks` with torchvision or MediaPipe (resumable).",
    ),
    "match": (".match_commands", "Distance matrix from the cache, Market-1501 evaluation, results JSON."),
    "report": (
        ".report_commands",
        "Regenerate Tables 3 and 4 (paper rows beside measured rows) and the figures.",
    ),
    "synthesize": (
        ".demo_commands",
        "Write the synthetic occluded-person dataset (the `synthetic_occluded` dataset of `reid-eval datasets`).",
    ),
    "train": (
        ".train_commands",
        "Train the FPR network: batch-hard triplet loss on the FPR distance + α·foreground loss.",
    ),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when invoked.

    ``lazy_commands`` maps a command name to ``(module, summary)``; the module
    must have a ``COMMANDS`` tuple holding a command of that name. This is
    click's documented lazy-loading pattern, plus a help listing drawn from the
    summaries so that ``--help`` imports no command module.
    """

    def __init__(self, *args, lazy_commands: Mapping[str, tuple[str, str]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, tuple[str, str]] = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy_commands:
            return super().get_command(ctx, cmd_name)
        module_name = self.lazy_commands[cmd_name][0]
        # Relative names (".match_commands") resolve inside this package, whatever it is installed as.
        module = importlib.import_module(module_name, __package__)
        for command in getattr(module, "COMMANDS", ()):
            if command.name == cmd_name:
                return command
        raise RuntimeError(f"{module_name} has no command {cmd_name!r} in its COMMANDS")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The "Commands:" section, laid out as click.Group does it, without importing lazy modules."""
        eager = {name: command for name, command in self.commands.items() if not command.hidden}
        names = sorted({*eager, *(name for name in self.lazy_commands if name not in self.commands)})
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in eager:
                rows.append((name, eager[name].get_short_help_str(limit)))
            else:
                # A stand-in shortens the summary exactly as click shortens the real docstring.
                stand_in = click.Command(name, help=self.lazy_commands[name][1])
                rows.append((name, stand_in.get_short_help_str(limit)))
        with formatter.section(_("Commands")):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
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
