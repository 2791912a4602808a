"""`reid-eval extract`: fill the HDF5 feature cache."""

from __future__ import annotations

from pathlib import Path

import click

from .options import Folder, cache_dir_option, data_root_option, device_option, required_checkpoint_option
from .progress import Bars, set_threads, threads_option
from reid_eval.features import RESIZE_MODES, SPLITS, extract_dataset


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
@required_checkpoint_option
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--resize", type=click.Choice(RESIZE_MODES), default="fixed", show_default=True, help="fixed: the model's input size; keep-aspect: the model's width, the image's aspect.")
@click.option("--splits", default="query,gallery", show_default=True, help=f"Comma-separated splits among {', '.join(SPLITS)}.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (listed in the cache) instead of stopping.")
@click.option("--allow-mismatch", is_flag=True, help="Accept a dataset whose counts differ from the published ones.")
@threads_option
def extract_command(dataset, root, data_root, cache_dir, checkpoint, device, batch_size, resize, splits, skip_bad,
                    allow_mismatch, threads) -> None:
    """Extract pyramid, foreground and global features into the HDF5 cache (resumable).

    Progress goes to stderr: a bar on a terminal, a line per tenth of a split otherwise (a log, CI).
    """
    from reid_eval.features import read_split_index

    split_list = [s.strip() for s in splits.split(",") if s.strip()]
    bad = [s for s in split_list if s not in SPLITS]
    if bad or not split_list:
        raise click.BadParameter(f"unknown split {','.join(bad) or '(none)'}; choose among {', '.join(SPLITS)}", param_hint="--splits")
    folder = _dataset_root(dataset, root, data_root)
    set_threads(threads)
    bars, worked = Bars({s: f"extract {s}" for s in SPLITS}), []

    def progress(split: str, done: int, total: int, rate: float) -> None:
        if done < total:  # a finished split is reported once, as done
            worked.append(split)
        bars(split, done, total, f"{rate:.1f} img/s" if rate else "")

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
        bars.close()
    parts = []
    for s in split_list:
        index = read_split_index(path, s)  # ids and paths only: the features can be tens of GB
        skipped = index.skipped
        parts.append(f"{s} {len(index.paths)}" + (f" ({len(skipped)} skipped: {', '.join(skipped[:3])}{'...' if len(skipped) > 3 else ''})" if skipped else ""))
    done = "" if worked else ", already complete: nothing extracted"
    click.echo(f"{dataset}: {', '.join(parts)} images{done} -> {path}")


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (extract_command,)
