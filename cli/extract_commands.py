"""`reid-eval extract` (fill the HDF5 feature cache) and `reid-eval match` (distances, evaluation, results)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.options import cache_dir_option, checkpoint_option, data_root_option, results_dir_option
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
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None, help="The dataset's own folder [default: found under --data-root].")
@data_root_option
@cache_dir_option
@checkpoint_option
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, help="auto: CUDA when available.")
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


@click.command("match")
@click.option("--metric", type=click.Choice(["fpr", "dsr", "euclidean", "cosine"]), required=True, help="fpr/dsr: pyramid reconstruction; euclidean/cosine: global features (Baseline).")
@click.option("--dataset", default=None, help="Dataset to match [default: every dataset in the cache dir].")
@click.option("--beta", type=click.FloatRange(min=0.0, min_open=True), default=0.01, show_default=True, help="Ridge β of the reconstruction (paper: 0.01).")
@click.option("--backend", type=click.Choice(["auto", "numpy", "cupy"]), default="auto", show_default=True)
@click.option("--shortlist", type=click.IntRange(min=1), default=None, help="Reconstruct only the K nearest gallery images by global distance.")
@click.option("--fuse", type=click.FloatRange(0.0, 1.0), default=None, metavar="LAMBDA", help="(1-λ)·global + λ·FPR/DSR with a λ chosen beforehand.")
@click.option("--fuse-global", type=click.Choice(["euclidean", "cosine"]), default="euclidean", show_default=True, help="Global distance used by --fuse.")
@click.option("--ap", type=click.Choice(["standard", "market1501"]), default="standard", show_default=True, help="AP flavour (market1501: the official trapezoid rule).")
@cache_dir_option
@results_dir_option
@checkpoint_option
def match_command(metric, dataset, beta, backend, shortlist, fuse, fuse_global, ap, cache_dir, results_dir, checkpoint) -> None:
    """Distance matrix from the cache, Market-1501 evaluation, results JSON.

    With several caches for a dataset, the one made with --checkpoint is used,
    else the newest.
    """
    from reid_eval.experiments import match_cache, select_caches
    from reid_eval.model import file_sha256

    sha = None
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise click.BadParameter(f"{checkpoint} does not exist", param_hint="--checkpoint")
        sha = file_sha256(checkpoint)
    for name, path in select_caches(cache_dir, dataset, sha).items():
        outcome = match_cache(path, metric, results_dir, beta=beta, backend=backend, shortlist=shortlist, fuse=fuse, fuse_global=fuse_global, ap=ap)
        click.echo(outcome.summary)


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (extract_command, match_command)
