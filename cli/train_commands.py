"""`reid-eval train` (FPR triplet + foreground loss), `reid-eval demo` (the
embedded default) and `reid-eval synthesize` (the synthetic occluded set)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.options import checkpoint_option, data_root_option


class _Bars:
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


def _threads_option(func):
    return click.option(
        "--threads", type=click.IntRange(min=1), default=None,
        help="CPU threads for torch [default: torch's choice, one per core]. On a machine busy with other "
             "work, 1 avoids OpenMP oversubscription and can be several times faster.")(func)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None
    if not values:
        raise click.BadParameter("expected at least one integer", param_hint=option)
    return values


@click.command("train")
@click.option("--dataset", required=True, help="Dataset name (see `reid-eval datasets`); its train split is used.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The dataset's own folder [default: found under --data-root].")
@data_root_option
@click.option("--masks", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of person masks mirroring the dataset's paths [default: <root>/masks].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder: checkpoint.pt, model.pt, train_log.jsonl [default: ./runs/<dataset>].")
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--batch-p", type=click.IntRange(min=2), default=16, show_default=True, help="Identities per batch (P).")
@click.option("--batch-k", type=click.IntRange(min=2), default=4, show_default=True, help="Images per identity (K).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3.5e-4, show_default=True, help="Adam learning rate.")
@click.option("--margin", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Triplet margin (FPR distances lie in [0, 1]).")
@click.option("--alpha", type=click.FloatRange(min=0), default=0.02, show_default=True, help="Weight α of the foreground loss (Eq. 10).")
@click.option("--tau", type=click.FloatRange(0, 1), default=0.35, show_default=True, help="Foreground label threshold τ (Eq. 8).")
@click.option("--no-foreground-loss", is_flag=True, help="Train without masks: triplet loss only.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.pt.")
@checkpoint_option
@click.option("--backbone", default="resnet50", show_default=True, help="torchvision ResNet when starting from scratch.")
@click.option("--input-size", default="384x128", show_default=True, help="HEIGHTxWIDTH in pixels, when starting from scratch.")
@click.option("--pyramid-kernels", default="2,4,6,8", show_default=True, help="Pyramid max-pool kernels, when starting from scratch.")
@click.option("--pyramid-stride", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--flip", is_flag=True, help="Random horizontal flips (the paper uses no augmentation).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this much wall time (a later --resume redoes the interrupted epoch).")
@_threads_option
def train_command(dataset, root, data_root, masks, out_dir, epochs, batch_p, batch_k, lr, margin, alpha, tau,
                  no_foreground_loss, resume, checkpoint, backbone, input_size, pyramid_kernels, pyramid_stride,
                  flip, seed, device, max_minutes, threads) -> None:
    """Train the FPR network: batch-hard triplet loss on the FPR distance + α·foreground loss.

    --checkpoint initialises from a reid-eval checkpoint (its architecture
    wins over --backbone/--input-size/--pyramid-*). A checkpoint is written
    after every epoch; --resume continues an interrupted run.
    """
    from reid_eval.datasets import find_dataset_root
    from reid_eval.model import ModelConfig
    from reid_eval.training import TrainConfig, train

    _set_threads(threads)
    if root is None:
        root = find_dataset_root(dataset, data_root)
    elif not root.is_dir():
        raise click.BadParameter(f"{root} is not a folder", param_hint="--root")
    size = _ints(input_size, "--input-size")
    if len(size) != 2:
        raise click.BadParameter(f"expected HEIGHTxWIDTH, got {input_size!r}", param_hint="--input-size")
    model = ModelConfig(backbone=backbone, input_size=size, pyramid_kernels=_ints(pyramid_kernels, "--pyramid-kernels"),
                        pyramid_stride=pyramid_stride)
    cfg = TrainConfig(dataset=dataset, root=root, out_dir=out_dir or Path("runs") / dataset, masks=masks, model=model,
                      init_checkpoint=checkpoint, epochs=epochs, batch_p=batch_p, batch_k=batch_k, lr=lr,
                      margin=margin, alpha=alpha, tau=tau, foreground_loss=not no_foreground_loss, flip=flip,
                      seed=seed, device=device, resume=resume,
                      max_seconds=None if max_minutes is None else 60.0 * max_minutes)
    bars = _Bars()

    def on_step(epoch: int, step: int, steps: int, stats: dict) -> None:
        note = f"loss {stats['loss']:.3f} tri {stats['triplet']:.3f}"
        if "foreground" in stats:
            note += f" fg {stats['foreground']:.2f} acc {stats['fg_accuracy']:.2f}"
        bars(f"epoch {epoch + 1}/{epochs}", step, steps, note)

    try:
        result = train(cfg, on_step, _echo_err)
    finally:
        bars.close()
    losses = ", ".join(f"{v:.3f}" for v in result.epoch_losses[-5:])
    click.echo(f"{result.epochs_completed} epochs done in {result.seconds:.0f} s (last epoch losses: {losses or '-'}); "
               f"model -> {result.model_path}, log -> {result.log_path}")


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-work"),
              show_default=True, help="Everything the demo writes goes here; a rerun reuses it.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic set and the training.")
@click.option("--size", type=click.Choice(["tiny", "default"]), default="default", show_default=True,
              help="tiny: a seconds-long smoke run; default: a few minutes on a laptop CPU.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--no-report", is_flag=True, help="Skip the report (tables and figures).")
@_threads_option
def demo_command(workdir, seed, size, device, no_report, threads) -> None:
    """Synthetic occluded persons -> short FPR training -> extract -> match (Baseline, DSR, FPR) -> report."""
    from reid_eval.demo import demo_settings, run_demo

    _set_threads(threads)
    bars = _Bars({"generate": "generate images", "train": "train", "extract-query": "extract query",
                  "extract-gallery": "extract gallery", "match": "match"})
    try:
        result = run_demo(workdir, seed=seed, size=size, device=device, progress=bars, say=_echo_err,
                          report=not no_report)
    finally:
        bars.close()
    settings = demo_settings(size, seed)
    trained = f"{result.training.get('epochs_completed')} of {settings.epochs} training epochs"
    if result.training.get("stopped_early"):
        trained += ", stopped by the time limit"
    click.echo(f"\nsynthetic_occluded, occluded and partial queries ({size} demo, seed {seed}, {trained}):\n")
    click.echo(result.table)
    times = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
    click.echo(f"\ntimes: {times}")
    click.echo(f"results: {result.results_dir}" + (f"; report: {result.report_dir / 'tables' / 'report.md'}"
                                                    if result.report_dir else ""))


@click.command("synthesize")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("synthetic_occluded"),
              show_default=True, help="Dataset folder to write (Market-style layout, masks/, manifest.csv).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train-ids", type=click.IntRange(min=2), default=150, show_default=True)
@click.option("--test-ids", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--train-images", type=click.IntRange(min=2), default=8, show_default=True, help="Train images per identity.")
@click.option("--gallery-images", type=click.IntRange(min=1), default=3, show_default=True, help="Gallery images per test identity.")
@click.option("--query-images", type=click.IntRange(min=1), default=2, show_default=True, help="Query images per test identity.")
@click.option("--size", "image_size", default="128x64", show_default=True, help="HEIGHTxWIDTH of whole-body images.")
@click.option("--overwrite", is_flag=True, help="Replace a set made with other settings in --out.")
def synthesize_command(out_dir, seed, train_ids, test_ids, train_images, gallery_images, query_images, image_size,
                       overwrite) -> None:
    """Write the synthetic occluded-person dataset (the `synthetic_occluded` dataset of `reid-eval datasets`)."""
    from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset

    size = _ints(image_size, "--size")
    if len(size) != 2:
        raise click.BadParameter(f"expected HEIGHTxWIDTH, got {image_size!r}", param_hint="--size")
    cfg = SyntheticConfig(seed=seed, num_train_ids=train_ids, num_test_ids=test_ids, train_images_per_id=train_images,
                          gallery_images_per_id=gallery_images, query_images_per_id=query_images,
                          height=size[0], width=size[1])
    bars = _Bars({"generate": "generate images"})
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
COMMANDS: tuple[click.Command, ...] = (train_command, demo_command, synthesize_command)
