"""Progress display and CPU-thread options shared by the long-running commands (train, demo, synthesize)."""

from __future__ import annotations

import sys

import click


class Bars:
    """One click progress bar per stage; ``__call__(stage, done, total, note)``.

    click draws no bar when stderr is not a terminal (a log file, CI), so
    there a plain line is written at every tenth of a stage instead.
    """

    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self.labels = labels or {}
        self.bar = None
        self.stage: str | None = None
        self.done = 0
        self.note = ""
        self.tenths = -1
        self.interactive = sys.stderr.isatty()

    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None:
        if not self.interactive:
            self._log_line(stage, done, total, note)
            return
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar = click.progressbar(length=max(total, 1), label=f"{self.labels.get(stage, stage):<16}",
                                         file=sys.stderr, show_pos=True, show_eta=True,
                                         item_show_func=lambda _: self.note or None)
            self.bar.__enter__()
        self.note = note
        self.bar.update(done - self.done, current_item=note)
        self.done = done
        if done >= total:
            self.close()

    def _log_line(self, stage: str, done: int, total: int, note: str) -> None:
        if stage != self.stage:
            self.stage, self.tenths = stage, -1
        tenths = 10 * done // max(total, 1)
        if tenths > self.tenths:
            self.tenths = tenths
            label = self.labels.get(stage, stage)
            click.echo(f"{label}: {done}/{total}" + (f" {note}" if note else ""), err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
            self.stage = None


def threads_option(func):
    """``--threads N``: torch's CPU threads (apply with :func:`set_threads`)."""
    return click.option(
        "--threads", type=click.IntRange(min=1), default=None,
        help="CPU threads for torch [default: torch's choice, one per core]. On a machine busy with other "
             "work, 1 avoids OpenMP oversubscription and can be several times faster.")(func)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def echo_err(message: str) -> None:
    click.echo(message, err=True)
