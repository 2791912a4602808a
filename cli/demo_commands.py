"""`reid-eval demo` (the whole method on synthetic data) and `reid-eval synthesize` (the synthetic occluded set)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import FiniteFloat, Folder, HeightWidth, device_option
from .progress import Bars, echo_err

#: reid_eval.demo.DEMO_THREADS, repeated so that `--help` needs no torch import (a test checks they agree).
DEMO_THREADS = 2


@click.command("demo")
@click.option("--workdir", type=Folder(output=True), default=Path("demo-work"),
              show_default=True, help="Everything the demo writes goes here; a rerun reuses it.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic set and the training.")
@click.option("--size", type=click.Choice(["tiny", "default"]), default="default", show_default=True,
              help="tiny: a seconds-long smoke run; default: a few minutes on a laptop CPU.")
@device_option
@click.option("--no-report", is_flag=True, help="Skip the report (tables and figures).")
@click.option("--pets-root", type=Folder(), envvar="REID_EVAL_PETS_ROOT",
              show_envvar=True, default=None,
              help="Data root holding pets09_s2l1 (real PETS09-S2L1 crops), on which the demo's model is also "
                   "tested, cross-domain [default: ../shared/data if it holds it, else skipped].")
@click.option("--no-pets", is_flag=True, help="Skip the cross-domain test on pets09_s2l1.")
@click.option("--threads", type=click.IntRange(min=1), default=DEMO_THREADS, show_default=True,
              help="torch's CPU threads, the same on every machine: the same seed and thread count give the "
                   "same numbers (another count moves them slightly).")
@click.option("--max-train-minutes", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Stop training after this many minutes (the run says how many epochs it trained; a rerun "
                   "continues the training) [default: no limit, every epoch].")
def demo_command(workdir, seed, size, device, no_report, pets_root, no_pets, threads, max_train_minutes) -> None:
    """Synthetic occluded persons -> short FPR training -> extract -> match (Baseline, DSR, FPR) -> report.

    Training runs all its epochs (a busy machine takes longer and prints the same numbers). The trained
    model is also tested on the real PETS09-S2L1 crops (pets09_s2l1) when they are found.
    """
    from reid_eval.datasets import locate_dataset
    from reid_eval.demo import CROSS_DOMAIN_DATASET, default_cross_domain_root, demo_settings, run_demo

    if no_pets:
        pets_root = None
    elif pets_root is not None:
        if not pets_root.is_dir() or locate_dataset(CROSS_DOMAIN_DATASET, pets_root) is None:
            raise click.BadParameter(f"{pets_root} holds no {CROSS_DOMAIN_DATASET} folder", param_hint="--pets-root")
    else:
        pets_root = default_cross_domain_root()
        if pets_root is None:
            echo_err(f"{CROSS_DOMAIN_DATASET} not found in ../shared/data: skipping the cross-domain test "
                     "on real crops (--pets-root DIR to give its data root)")
    bars = Bars({"generate": "generate images", "train": "train", "extract-query": "extract query",
                  "extract-gallery": "extract gallery", "match": "match", "pets09-query": "pets09 query",
                  "pets09-gallery": "pets09 gallery", "pets09-match": "pets09 match"})
    try:
        result = run_demo(workdir, seed=seed, size=size, device=device, progress=bars, say=echo_err,
                          report=not no_report, cross_domain_root=pets_root, threads=threads,
                          max_train_seconds=None if max_train_minutes is None else 60.0 * max_train_minutes)
    finally:
        bars.close()
    settings = demo_settings(size, seed)
    trained = f"{result.training.get('epochs_completed')} of {settings.epochs} training epochs"
    if result.training.get("stopped_early"):
        trained += f", stopped by --max-train-minutes {max_train_minutes:g}"
    click.echo(f"\nsynthetic_occluded, occluded and partial queries ({size} demo, seed {seed}, {threads} threads, "
               f"{trained}):\n")
    click.echo(result.table)
    times = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
    click.echo(f"\ntimes: {times}")
    click.echo(f"results: {result.results_dir}" + (f"; report: {result.report_dir / 'tables' / 'report.md'}"
                                                    if result.report_dir else ""))


@click.command("synthesize")
@click.option("--out", "out_dir", type=Folder(output=True), default=Path("synthetic_occluded"),
              show_default=True, help="Dataset folder to write (Market-style layout, masks/, manifest.csv).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train-ids", type=click.IntRange(min=2), default=150, show_default=True)
@click.option("--test-ids", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--train-images", type=click.IntRange(min=2), default=8, show_default=True, help="Train images per identity.")
@click.option("--gallery-images", type=click.IntRange(min=1), default=3, show_default=True, help="Gallery images per test identity.")
@click.option("--query-images", type=click.IntRange(min=1), default=2, show_default=True, help="Query images per test identity.")
@click.option("--size", "image_size", type=HeightWidth(), default="128x64", show_default=True,
              help="HEIGHTxWIDTH of whole-body images.")
@click.option("--overwrite", is_flag=True, help="Replace a set made with other settings in --out.")
def synthesize_command(out_dir, seed, train_ids, test_ids, train_images, gallery_images, query_images, image_size,
                       overwrite) -> None:
    """Write the synthetic occluded-person dataset (the `synthetic_occluded` dataset of `reid-eval datasets`)."""
    from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset

    size = image_size
    cfg = SyntheticConfig(seed=seed, num_train_ids=train_ids, num_test_ids=test_ids, train_images_per_id=train_images,
                          gallery_images_per_id=gallery_images, query_images_per_id=query_images,
                          height=size[0], width=size[1])
    bars = Bars({"generate": "generate images"})
    try:
        summary = generate_synthetic_dataset(out_dir, cfg, overwrite=overwrite,
                                             on_progress=lambda d, n: bars("generate", d, n))
    finally:
        bars.close()
    what = "found (same settings)" if summary.reused else f"wrote in {summary.seconds:.1f} s"
    counts = ", ".join(f"{s} {summary.counts.get(s, 0)} images / {summary.ids.get(s, 0)} ids"
                       for s in ("train", "query", "gallery"))
    click.echo(f"{out_dir}: {what}: {counts}; manifest {summary.manifest}")


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (demo_command, synthesize_command)
