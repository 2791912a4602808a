"""`reid-eval masks`: person masks for `reid-eval train --masks`, from a torchvision segmentation model or
MediaPipe's pose model (offline)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .options import FiniteFloat, Folder, data_root_option, parse_ints
from .progress import Bars, set_threads, threads_option

# Kept here as literals so that --help imports neither torch nor torchvision; a
# test checks them against reid_eval.training.masks.MASK_MODELS.
_MODELS = ("deeplabv3_resnet101", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "fcn_resnet101",
           "fcn_resnet50", "lraspp_mobilenet_v3_large", "mediapipe-pose", "mediapipe-selfie")


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


@click.command("masks")
@click.option("--dataset", required=True, help="Dataset name (see `reid-eval datasets`).")
@click.option("--root", type=Folder(), default=None, help="The dataset's own folder [default: found under --data-root].")
@data_root_option
@click.option("--splits", default="train", show_default=True, help="Comma-separated splits whose images get masks.")
@click.option("--out", "out_dir", type=Folder(output=True), default=None,
              help="Mask folder, mirroring the dataset's paths with .png names [default: <root>/masks, where "
                   "`reid-eval train` looks].")
@click.option("--model", "model_name", type=click.Choice(_MODELS), default=_MODELS[0], show_default=True,
              help="torchvision segmentation model (COCO with VOC labels; the person class is the mask): "
                   "deeplabv3_resnet101 is the most accurate, deeplabv3_mobilenet_v3_large ~20x cheaper, for CPUs; "
                   "or MediaPipe (the mediapipe extra, needs no download): mediapipe-pose (pose segmentation, "
                   "selfie model where pose finds no one) or mediapipe-selfie alone.")
@click.option("--weights", "weights_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The model's weights file (a state dict), for machines without internet [default: torchvision's "
                   "download, cached by torch].")
@click.option("--size", default=None,
              help="HEIGHTxWIDTH the images are resized to for the network (torchvision) [default: 512x256], or the "
                   "side of MediaPipe's padded square [default: 512]; masks are written at each image's size.")
@click.option("--margins", default=None,
              help="MediaPipe: padding around the crop, as a fraction of its longer side, tried in order until the "
                   "pose model finds a person [default: 0.6,0.3,1.0].")
@click.option("--complexity", type=click.IntRange(0, 2), default=None,
              help="MediaPipe pose model [default: 1, shipped in the wheel]; 0 and 2 need their model file "
                   "(mediapipe downloads it at run time, which fails offline).")
@click.option("--threshold", type=FiniteFloat(min=0, max=1, min_open=True, max_open=True), default=None,
              help="MediaPipe: person probability from which a pixel is foreground [default: 0.5].")
@click.option("--fallback/--no-fallback", default=None,
              help="MediaPipe pose: use the selfie model where no margin finds a person [default: on].")
@click.option("--preview", type=click.IntRange(min=1), default=None,
              help="Only N images spread over the splits, and their overlay grid (image | mask | outline) written "
                   "to <out>/preview.png: check a model before the full run.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per forward pass (bounds the memory).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@threads_option
def masks_command(dataset, root, data_root, splits, out_dir, model_name, weights_file, size, margins, complexity,
                  threshold, fallback, preview, batch_size, device, threads) -> None:
    """Write person masks for `reid-eval train --masks` with torchvision or MediaPipe (resumable).

    Masks that exist are kept, so an interrupted run continues where it stopped.
    """
    from dataclasses import replace

    from reid_eval.datasets import find_dataset_root
    from reid_eval.training.masks import write_person_masks
    from reid_eval.training.masks_mediapipe import PoseRecipe

    set_threads(threads)
    if root is None:
        root = find_dataset_root(dataset, data_root)
    elif not root.is_dir():
        raise click.BadParameter(f"{root} is not a folder", param_hint="--root")
    hw = parse_ints(size, "--size") if size is not None else None
    recipe = PoseRecipe()
    if margins is not None:
        try:
            recipe = replace(recipe, margins=tuple(float(m) for m in margins.split(",") if m.strip()))
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers, got {margins!r}", param_hint="--margins")
    given = {"complexity": complexity, "threshold": threshold, "fallback": fallback}
    recipe = replace(recipe, **{k: v for k, v in given.items() if v is not None})
    split_names = tuple(s.strip() for s in splits.split(",") if s.strip())
    bars = Bars()
    t0 = time.perf_counter()

    def on_progress(done: int, total: int, written: int) -> None:
        note = ""
        if written:
            rate = written / max(time.perf_counter() - t0, 1e-9)
            note = f"{rate:.1f} img/s, ETA {_eta((total - done) / rate)}"
        bars("masks", done, total, note)

    try:
        run = write_person_masks(dataset, root, out_dir, split_names, model_name, weights_file, device, batch_size,
                                 hw, on_progress, recipe, preview or 0)
    finally:
        bars.close()
    click.echo(f"{run.written} masks written, {run.skipped} already there, in {run.seconds:.0f} s -> {run.out_dir}")
    if run.sources:
        click.echo("written from: " + ", ".join(f"{name} {n}" for name, n in sorted(run.sources.items())))
    if run.preview is not None:
        click.echo(f"preview: {run.preview}")


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (masks_command,)
