"""`reid-eval train`: the FPR network, batch-hard triplet loss on the FPR distance + α·foreground loss."""

from __future__ import annotations

from pathlib import Path

import click

from .options import checkpoint_option, data_root_option, parse_ints
from .progress import Bars, echo_err, set_threads, threads_option


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
@threads_option
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

    set_threads(threads)
    if root is None:
        root = find_dataset_root(dataset, data_root)
    elif not root.is_dir():
        raise click.BadParameter(f"{root} is not a folder", param_hint="--root")
    size = parse_ints(input_size, "--input-size")
    if len(size) != 2:
        raise click.BadParameter(f"expected HEIGHTxWIDTH, got {input_size!r}", param_hint="--input-size")
    model = ModelConfig(backbone=backbone, input_size=size, pyramid_kernels=parse_ints(pyramid_kernels, "--pyramid-kernels"),
                        pyramid_stride=pyramid_stride)
    cfg = TrainConfig(dataset=dataset, root=root, out_dir=out_dir or Path("runs") / dataset, masks=masks, model=model,
                      init_checkpoint=checkpoint, epochs=epochs, batch_p=batch_p, batch_k=batch_k, lr=lr,
                      margin=margin, alpha=alpha, tau=tau, foreground_loss=not no_foreground_loss, flip=flip,
                      seed=seed, device=device, resume=resume,
                      max_seconds=None if max_minutes is None else 60.0 * max_minutes)
    bars = Bars()

    def on_step(epoch: int, step: int, steps: int, stats: dict) -> None:
        note = f"loss {stats['loss']:.3f} tri {stats['triplet']:.3f}"
        if "foreground" in stats:
            note += f" fg {stats['foreground']:.2f} acc {stats['fg_accuracy']:.2f}"
        bars(f"epoch {epoch + 1}/{epochs}", step, steps, note)

    try:
        result = train(cfg, on_step, echo_err)
    finally:
        bars.close()
    losses = ", ".join(f"{v:.3f}" for v in result.epoch_losses[-5:])
    click.echo(f"{result.epochs_completed} epochs done in {result.seconds:.0f} s (last epoch losses: {losses or '-'}); "
               f"model -> {result.model_path}, log -> {result.log_path}")


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (train_command,)
