"""Options shared by every command that uses them, each with its environment variable."""

from __future__ import annotations

from pathlib import Path

import click

data_root_option = click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="REID_EVAL_DATA_ROOT",
    default=Path("."),
    show_default=True,
    show_envvar=True,
    help="Folder under which the datasets' own folders are looked for.",
)
cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="REID_EVAL_CACHE_DIR",
    default=Path("./reid-cache"),
    show_default=True,
    show_envvar=True,
    help="Folder of the HDF5 feature caches.",
)
results_dir_option = click.option(
    "--results-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="REID_EVAL_RESULTS_DIR",
    default=Path("./results"),
    show_default=True,
    show_envvar=True,
    help="Folder of the results JSON files, tables and figures.",
)
checkpoint_option = click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="REID_EVAL_CHECKPOINT",
    default=None,
    show_envvar=True,
    help="Model checkpoint in reid-eval's format (see `reid-eval checkpoint`).",
)


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """``"2,4,6"`` or ``"384x128"`` -> (2, 4, 6) / (384, 128); click.BadParameter naming ``option`` otherwise."""
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None
    if not values:
        raise click.BadParameter("expected at least one integer", param_hint=option)
    return values
