"""Options shared by every command that uses them, each with its environment variable."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import click

from reid_eval.errors import NO_CHECKPOINT_MESSAGE


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

    def _describe_range(self) -> str:
        # click writes an unbounded range as "x<=None" in --help: an option without bounds shows none
        return "" if (self.min, self.max) == (None, None) else super()._describe_range()

    def __repr__(self) -> str:
        return f"FiniteFloat({self._describe_range()})" if (self.min, self.max) != (None, None) else "FiniteFloat"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "FLOAT"

class HeightWidth(click.ParamType):
    """An image size written one way everywhere: ``HEIGHTxWIDTH`` in pixels (``384x128``) -> (384, 128)."""

    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().split("x")
        try:
            size = tuple(int(v) for v in parts)
        except ValueError:
            size = ()
        if len(size) != 2 or min(size) < 1:
            self.fail(f"{value!r} is not HEIGHTxWIDTH in pixels (e.g. 384x128).", param, ctx)
        return size


class ByteSize(click.ParamType):
    """A number of bytes: ``1500000000``, ``1.5e9``, ``1.5GB``, ``500MiB``; from 1 to 1 PiB, naming the option
    (the library's parser and bound: reid_eval.matching.memory.parse_bytes)."""

    name = "BYTES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        # the library's parser: the same text means the same bytes as REID_EVAL_MEMORY_BUDGET does in demo and training
        from reid_eval.matching.memory import parse_bytes

        try:
            return parse_bytes(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Folder(click.Path):
    """A folder option: refuses a path that is a file or lies under one, naming the option and the file.

    ``output=True`` (a folder the command writes into, created when missing)
    also refuses one whose nearest existing parent cannot be written to, so
    the error comes at the option rather than as "[Errno 20] Not a directory"
    after work has been done.
    """

    name = "folder"

    def __init__(self, output: bool = False) -> None:
        super().__init__(file_okay=False, dir_okay=True, path_type=Path)
        self.output = output

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = Path(super().convert(value, param, ctx))
        if path.exists():
            if not path.is_dir():
                self.fail(f"{path} is a file, not a folder.", param, ctx)
            if self.output and not os.access(path, os.W_OK | os.X_OK):
                self.fail(f"{path} is not writable.", param, ctx)
            return path
        for parent in path.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    self.fail(f"{path} lies under {parent}, which is a file, not a folder.", param, ctx)
                if self.output and not os.access(parent, os.W_OK | os.X_OK):
                    self.fail(f"cannot create {path}: {parent} is not writable.", param, ctx)
                break
        return path


#: What reid_eval.features.extract.resolve_device accepts ("cuda:N" too, through the library).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
device_option = click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                             help="auto: CUDA when available, else the CPU.")

#: Defaults of the output folders: beside each other and outside any tracked folder of a checkout
#: (both are in the repository's .gitignore; the repository's own results/ holds no generated files).
DEFAULT_CACHE_DIR = Path("./reid-cache")
DEFAULT_RESULTS_DIR = Path("./reid-results")

data_root_option = click.option(
    "--data-root",
    type=Folder(),
    envvar="REID_EVAL_DATA_ROOT",
    default=Path("."),
    show_default=True,
    show_envvar=True,
    help="Folder under which the datasets' own folders are looked for.",
)
cache_dir_option = click.option(
    "--cache-dir",
    type=Folder(),
    envvar="REID_EVAL_CACHE_DIR",
    default=DEFAULT_CACHE_DIR,
    show_default=True,
    show_envvar=True,
    help="Folder of the HDF5 feature caches.",
)


def _results_dir_option(output: bool):
    return click.option(
        "--results-dir",
        type=Folder(output=output),
        envvar="REID_EVAL_RESULTS_DIR",
        default=DEFAULT_RESULTS_DIR,
        show_default=True,
        show_envvar=True,
        help="Folder of the results JSON files, tables and figures.",
    )


#: --results-dir for commands that write results into it (match).
results_dir_option = _results_dir_option(output=True)
#: --results-dir for commands that only read it (report checks it can write there when it does).
results_dir_input_option = _results_dir_option(output=False)
class _CheckpointOption(click.Option):
    """``--checkpoint`` of a command that needs a model: marked required, and when it is missing the
    error says how a checkpoint is made."""

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        try:
            return super().process_value(ctx, value)
        except click.MissingParameter:
            raise click.UsageError(NO_CHECKPOINT_MESSAGE, ctx) from None


def _checkpoint_option(required: bool):
    # no default=None where required: click (8.3 on) takes an explicit None default as a given value
    return click.option(
        "--checkpoint",
        cls=_CheckpointOption if required else click.Option,
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="REID_EVAL_CHECKPOINT",
        required=required,
        show_envvar=True,
        help="Model checkpoint in reid-eval's format (see `reid-eval checkpoint`).",
    )


#: --checkpoint where it only chooses among caches (match, report).
checkpoint_option = _checkpoint_option(required=False)
#: --checkpoint where the command needs a model (extract).
required_checkpoint_option = _checkpoint_option(required=True)


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """``"2,4,6"`` or ``"384x128"`` -> (2, 4, 6) / (384, 128); click.BadParameter naming ``option`` otherwise."""
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None
    if not values:
        raise click.BadParameter("expected at least one integer", param_hint=option)
    return values


def refuse_unused(ctx: click.Context, switch: str, on: bool, dependents: tuple[str, ...]) -> None:
    """A usage error naming them when options that act only with ``switch`` are given on the command line
    while ``on`` is false (``--rerank-lambda 2`` without ``--rerank``): an option with no effect is refused,
    not silently ignored. ``dependents`` are click parameter names (``rerank_lambda``)."""
    if on:
        return
    given = [name for name in dependents
             if ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                                   click.core.ParameterSource.ENVIRONMENT)]
    if given:
        names = ", ".join("--" + name.replace("_", "-") for name in given)
        raise click.UsageError(f"{names} {'acts' if len(given) == 1 else 'act'} only with {switch}; "
                               f"add {switch} or leave {'it' if len(given) == 1 else 'them'} out")

