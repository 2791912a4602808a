"""`reid-eval checkpoint init|convert`: write checkpoints in reid-eval's format."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from reid_eval.model import CONVERT_SOURCES, RESNET_NAMES, ModelConfig, build_model, convert_checkpoint, file_sha256, save_checkpoint


def _config(backbone: str | None, input_size: tuple[int, int] | None, kernels: str | None, no_foreground: bool, default: str) -> ModelConfig:
    kw: dict = {"backbone": backbone or default}
    if input_size:
        kw["input_size"] = tuple(input_size)
    if kernels:
        try:
            kw["pyramid_kernels"] = tuple(int(k) for k in kernels.split(","))
        except ValueError:
            raise click.BadParameter(f"expected comma-separated integers, got {kernels!r}", param_hint="--pyramid-kernels")
    if no_foreground:
        kw["foreground_head"] = False
    return ModelConfig(**kw)


_geometry = [
    click.option("--input-size", type=(int, int), default=None, metavar="H W", help="Input height and width in pixels [default: 384 128]."),
    click.option("--pyramid-kernels", default=None, metavar="K1,K2,...", help="Pyramid max-pooling kernels [default: 2,4,6,8]."),
    click.option("--no-foreground", is_flag=True, help="Leave out the foreground probability generator (DSR-only models)."),
]


def _with_geometry(f):
    for opt in reversed(_geometry):
        f = opt(f)
    return f


@click.group("checkpoint")
def checkpoint_group() -> None:
    """Write model checkpoints in reid-eval's format."""


@checkpoint_group.command("init")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint file to write.")
@click.option("--backbone", type=click.Choice(RESNET_NAMES), default="resnet50", show_default=True, help="torchvision ResNet trunk.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random initialisation.")
@_with_geometry
def init_command(out: Path, backbone: str, seed: int, input_size, pyramid_kernels, no_foreground) -> None:
    """A randomly initialised model (torchvision's init; nothing is downloaded)."""
    config = _config(backbone, input_size, pyramid_kernels, no_foreground, "resnet50")
    torch.manual_seed(seed)
    model = build_model(config)
    save_checkpoint(out, model, config, extra={"init": "random", "seed": seed})
    click.echo(f"wrote {out} ({config.backbone}, {config.num_locations()} locations of d={config.feature_dim}, sha256 {file_sha256(out)[:12]})")


@checkpoint_group.command("convert")
@click.option("--from", "source", required=True, type=click.Choice(CONVERT_SOURCES), help="Layout of the input file.")
@click.argument("in_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint file to write.")
@click.option("--backbone", type=click.Choice(RESNET_NAMES), default=None, help="Expected trunk [default: inferred from the weights].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for parts the source lacks (the foreground generator).")
@_with_geometry
def convert_command(source: str, in_file: Path, out: Path, backbone: str | None, seed: int, input_size, pyramid_kernels, no_foreground) -> None:
    """Import torchvision, fast-reid (PartialReID/DSR) or torchreid ResNet weights from IN_FILE."""
    fields = _config(backbone, input_size, pyramid_kernels, no_foreground, "resnet50").to_dict()
    if not backbone:
        del fields["backbone"]  # inferred from the weights
    model, config, extra = convert_checkpoint(source, in_file, seed, **fields)
    save_checkpoint(out, model, config, extra=extra)
    click.echo(f"wrote {out} ({config.backbone} from {source}; foreground: {extra.get('foreground', 'none')})")


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (checkpoint_group,)
