"""`reid-eval train`: the FPR network, batch-hard triplet loss on the FPR distance + α·foreground loss."""

from __future__ import annotations

from pathlib import Path

import click

from reid_eval.model import BACKBONE_NAMES

from .options import FiniteFloat, HeightWidth, data_root_option, parse_ints
from .progress import Bars, echo_err, set_threads, threads_option


_INIT_HELP = (
    "Starting weights: a reid-eval checkpoint FILE (its architecture wins over --backbone/--input-size/"
    "--pyramid-*), or `random` for torchvision's random initialisation. [default: random, on every dataset; "
    "the paper starts from ImageNet: write that start once with `reid-eval checkpoint init --pretrained imagenet "
    "--out imagenet.pt` and pass --init imagenet.pt]")


@click.command("train")
@click.option("--dataset", required=True, help="Dataset name (see `reid-eval datasets`); its train split is used.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The dataset's own folder [default: found under --data-root].")
@data_root_option
@click.option("--masks", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of person masks mirroring the dataset's paths, as `reid-eval masks` writes it "
                   "[default: <root>/masks].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder: checkpoint.pt, model.pt (last), best.pt, train_log.jsonl [default: ./runs/<dataset>].")
@click.option("--init", "init", default="random", metavar="FILE|random", help=_INIT_HELP)
@click.option("--epochs", type=click.IntRange(min=1), default=200, show_default=True, help="The paper trains 200.")
@click.option("--batch-p", type=click.IntRange(min=2), default=16, show_default=True,
              help="Identities per batch (P), per process.")
@click.option("--batch-k", type=click.IntRange(min=2), default=4, show_default=True, help="Images per identity (K).")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=3.5e-4, show_default=True,
              help="Adam's base learning rate.")
@click.option("--lr-schedule", type=click.Choice(["cosine", "step", "constant"]), default="cosine", show_default=True,
              help="Decay after the warmup: half cosine to 0 at the last step, ×0.1 at each of --lr-milestones, or none "
                   "(the paper states none; see docs/training.md).")
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=None,
              help="Linear warmup from 0.1·lr to lr over these epochs (Bag of Tricks, Luo et al. 2019) "
                   "[default: 10, or half of --epochs when that is fewer than 20].")
@click.option("--lr-milestones", default="", help="Epochs after which --lr-schedule step multiplies the rate by 0.1, "
                                                   "e.g. 40,70.")
@click.option("--margin", type=FiniteFloat(min=0), default=0.1, show_default=True,
              help="Triplet margin (FPR distances lie in [0, 1]).")
@click.option("--alpha", type=FiniteFloat(min=0), default=0.02, show_default=True, help="Weight α of the foreground loss (Eq. 10).")
@click.option("--tau", type=FiniteFloat(0, 1), default=0.35, show_default=True, help="Foreground label threshold τ (Eq. 8).")
@click.option("--no-foreground-loss", is_flag=True, help="Train without masks: triplet loss only.")
@click.option("--freeze-trunk", is_flag=True,
              help="Train only the foreground generator on the --init network's frozen trunk (its weights and "
                   "BatchNorm statistics stay): the cheap way to give a converted zoo model the paper's foreground.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.pt.")
@click.option("--backbone", type=click.Choice(BACKBONE_NAMES), default="resnet50", show_default=True,
              help="The trunk, when starting from random weights (as `reid-eval checkpoint init --backbone`).")
@click.option("--input-size", type=HeightWidth(), default="384x128", show_default=True,
              help="HEIGHTxWIDTH in pixels, when starting from random weights.")
@click.option("--pyramid-kernels", default="2,4,6,8", show_default=True, help="Pyramid max-pool kernels, when starting from random weights.")
@click.option("--pyramid-stride", type=click.IntRange(min=1), default=2, show_default=True,
              help="Pyramid max-pool stride, when starting from random weights.")
@click.option("--flip", is_flag=True, help="Random horizontal flips (the paper uses no augmentation).")
@click.option("--pad-crop", type=click.IntRange(min=0), default=0, show_default=True,
              help="Pad this many pixels, then crop a random window back (0: off; 10 is the usual choice).")
@click.option("--random-erasing", type=FiniteFloat(0, 1), default=0.0, show_default=True,
              help="Probability of erasing a random rectangle (0: off; 0.5 is the usual choice).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Data-loading worker processes per training process (0: load in the training process) "
                   "[default: the CPUs shared by the machine's training processes, less one, at most 8].")
@click.option("--amp", is_flag=True, help="Mixed precision on CUDA (bfloat16, or float16 with gradient scaling); the "
                                         "FPR solve stays in float32. An error on a CPU.")
@click.option("--eval-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Every N epochs (and after the last): extract query and gallery, match with FPR, log rank-1/mAP, "
                   "keep the best model as best.pt (0: never).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Under torchrun, cuda means each process's own GPU (LOCAL_RANK).")
@click.option("--max-minutes", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Stop after this much wall time (a later --resume redoes the interrupted epoch).")
@threads_option
def train_command(dataset, root, data_root, masks, out_dir, init, epochs, batch_p, batch_k, lr, lr_schedule,
                  warmup_epochs, lr_milestones, margin, alpha, tau, no_foreground_loss, freeze_trunk, resume, backbone, input_size,
                  pyramid_kernels, pyramid_stride, flip, pad_crop, random_erasing, workers, amp, eval_every, seed,
                  device, max_minutes, threads) -> None:
    """Train the FPR network: batch-hard triplet loss on the FPR distance + α·foreground loss.

    A checkpoint is written after every epoch; --resume continues an
    interrupted run. For several GPUs or machines, launch it with torchrun
    (see docs/training.md): each process trains on its own P×K batches and rank 0
    writes the files.
    """
    from reid_eval.datasets import find_dataset_root
    from reid_eval.errors import ReidEvalError
    from reid_eval.model import ModelConfig
    from reid_eval.training import TrainConfig, train

    set_threads(threads)
    if root is None:
        root = find_dataset_root(dataset, data_root)
    elif not root.is_dir():
        raise click.BadParameter(f"{root} is not a folder", param_hint="--root")
    init_checkpoint = None
    if init != "random":
        init_checkpoint = Path(init)
        if not init_checkpoint.is_file():
            raise ReidEvalError(f"--init {init} is neither a checkpoint file nor `random`")
    model = ModelConfig(backbone=backbone, input_size=input_size, pyramid_kernels=parse_ints(pyramid_kernels, "--pyramid-kernels"),
                        pyramid_stride=pyramid_stride)
    milestones = parse_ints(lr_milestones, "--lr-milestones") if lr_milestones.strip() else ()
    cfg = TrainConfig(dataset=dataset, root=root, out_dir=out_dir or Path("runs") / dataset, masks=masks, model=model,
                      init_checkpoint=init_checkpoint, epochs=epochs, batch_p=batch_p, batch_k=batch_k, lr=lr,
                      lr_schedule=lr_schedule, warmup_epochs=warmup_epochs, lr_milestones=milestones,
                      margin=margin, alpha=alpha, tau=tau, foreground_loss=not no_foreground_loss,
                      freeze_trunk=freeze_trunk, flip=flip,
                      pad_crop=pad_crop, random_erasing=random_erasing, workers=workers, amp=amp,
                      eval_every=eval_every, seed=seed, device=device, resume=resume,
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
    if result.rank != 0:
        return
    losses = ", ".join(f"{v:.3f}" for v in result.epoch_losses[-5:])
    best = f"; best -> {result.best_path}" if result.best_path is not None else ""
    click.echo(f"{result.epochs_completed} epochs done in {result.seconds:.0f} s (last epoch losses: {losses or '-'}); "
               f"model -> {result.model_path}{best}, log -> {result.log_path}")


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (train_command,)
