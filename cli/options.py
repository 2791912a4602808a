"""Options shared by every command that uses them, each with its environment variable."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click


class FiniteFloat(click.FloatRange):
    """A float option that refuses NaN and ±infinity, naming the option; optional bounds as click.FloatRange.

    Use it for every numeric option that takes a real number
    (``type=FiniteFloat(min=0, min_open=True)``): click's own FLOAT and
    FloatRange accept "nan" and "inf", which no computation here can use.
    """

    name = "finite float"

    def __init__(self, min: float | None = None, max: float | None = None, min_open: bool = False,
                 max_open: bool = False, clamp: bool = False) -> None:
        super().__init__(min=min, max=max, min_open=min_open, max_open=max_open, clamp=clamp)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)

    def __repr__(self) -> str:
        return f"FiniteFloat({self._describe_range()})" if (self.min, self.max) != (None, None) else "FiniteFloat"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "FLOAT"

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
