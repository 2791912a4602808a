"""`reid-eval extract`: fill the HDF5 feature cache."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .options import Folder, cache_dir_option, checkpoint_option, data_root_option, device_option
from reid_eval.features import RESIZE_MODES, SPLITS, extract_dataset


class _Progress:
    """One click progress bar per split, showing images/s."""

    def __init__(self) -> None:
        self.bar = None
        self.split = None
        self.rate = 0.0
        self.done = 0

    def __call__(self, split: str, done: int, total: int, rate: float) -> None:
        if split != self.split:
            self.close()
            self.split, self.done = split, done
            self.bar = click.progressbar(
                length=total,
                label=f"extract {split:<7}",
                file=sys.stderr,
                show_pos=True,
                item_show_func=lambda _: f"{self.rate:.1f} img/s" if self.rate else None,
            )
            self.bar.__enter__()
            self.bar.update(done)
            return
        self.rate = rate
        self.bar.update(done - self.done, current_item=split)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _dataset_root(name: str, root: Path | None, data_root: Path) -> Path:
    if root is not None:
        if not root.is_dir():
            raise click.BadParameter(f"{root} is not a folder", param_hint="--root")
        return root
    from reid_eval.datasets import find_dataset_root

    return find_dataset_root(name, data_root)


@click.command("extract")
@click.option("--dataset", required=True, help="Dataset name (see `reid-eval datasets`).")
@click.option("--root", type=Folder(), default=None, help="The dataset's own folder [default: found under --data-root].")
@data_root_option
@cache_dir_option
@checkpoint_option
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--resize", type=click.Choice(RESIZE_MODES), default="fixed", show_default=True, help="fixed: the model's input size; keep-aspect: the model's width, the image's aspect.")
@click.option("--splits", default="query,gallery", show_default=True, help=f"Comma-separated splits among {', '.join(SPLITS)}.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (listed in the cache) instead of stopping.")
@click.option("--allow-mismatch", is_flag=True, help="Accept a dataset whose counts differ from the published ones.")
def extract_command(dataset, root, data_root, cache_dir, checkpoint, device, batch_size, resize, splits, skip_bad, allow_mismatch) -> None:
    """Extract pyramid, foreground and global features into the HDF5 cache (resumable)."""
    from reid_eval.features import read_split_index

    split_list = [s.strip() for s in splits.split(",") if s.strip()]
    bad = [s for s in split_list if s not in SPLITS]
    if bad or not split_list:
        raise click.BadParameter(f"unknown split {','.join(bad) or '(none)'}; choose among {', '.join(SPLITS)}", param_hint="--splits")
    folder = _dataset_root(dataset, root, data_root)
    progress = _Progress()
    try:
        path = extract_dataset(
            dataset,
            folder,
            checkpoint,
            cache_dir,
            splits=split_list,
            device=device,
            batch_size=batch_size,
            resize=resize,
            skip_bad=skip_bad,
            allow_mismatch=allow_mismatch,
            progress=progress,
        )
    finally:
        progress.close()
    parts = []
    for s in split_list:
        index = read_split_index(path, s)  # ids and paths only: the features can be tens of GB
        skipped = index.skipped
        parts.append(f"{s} {len(index.paths)}" + (f" ({len(skipped)} skipped: {', '.join(skipped[:3])}{'...' if len(skipped) > 3 else ''})" if skipped else ""))
    click.echo(f"{dataset}: {', '.join(parts)} images -> {path}")


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (extract_command,)
