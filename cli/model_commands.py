"""`reid-eval checkpoint init|convert`: write checkpoints in reid-eval's format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from reid_eval.model import BACKBONE_NAMES, CONVERT_SOURCES, GLOBAL_FEATURES, INTERPOLATIONS, STEMS

from .options import HeightWidth


def _model_fields(input_size, pyramid_kernels, pyramid_stride, no_foreground, last_stride, stem, global_feature,
                  interpolation) -> dict[str, Any]:
    """The ModelConfig fields the user gave (None for the ones left to their default)."""
    fields: dict[str, Any] = {
        "input_size": tuple(input_size) if input_size else None,
        "pyramid_stride": pyramid_stride,
        "last_stride": last_stride,
        "stem": stem,
        "global_feature": global_feature,
        "interpolation": interpolation,
        "foreground_head": False if no_foreground else None,
    }
    if pyramid_kernels:
        try:
            fields["pyramid_kernels"] = tuple(int(k) for k in pyramid_kernels.split(","))
        except ValueError:
            raise click.BadParameter(f"expected comma-separated integers, got {pyramid_kernels!r}", param_hint="--pyramid-kernels")
    return {k: v for k, v in fields.items() if v is not None}


_model_options = [
    click.option("--input-size", type=HeightWidth(), default=None,
                 help="Input HEIGHTxWIDTH in pixels [default: 384x128; converting: the source's]."),
    click.option("--pyramid-kernels", default=None, metavar="K1,K2,...", help="Pyramid max-pooling kernels [default: 2,4,6,8]."),
    click.option("--pyramid-stride", type=click.IntRange(min=1), default=None,
                 help="Pyramid max-pooling stride [default: 2; the demo's model: 1]."),
    click.option("--no-foreground", is_flag=True, help="Leave out the foreground probability generator (DSR-only models)."),
    click.option("--last-stride", type=click.Choice(["1", "2"]), default=None,
                 help="Stride of layer4 [default: 1 (the paper's); converting torchreid resnet50: 2, its own]."),
    click.option("--stem", type=click.Choice(STEMS), default=None,
                 help="Stem max pooling: torchvision's (padding 1) or fast-reid's (padding 0, ceil mode) "
                      "[default: torchvision; converting fast-reid: fast-reid]."),
    click.option("--global-feature", type=click.Choice(GLOBAL_FEATURES), default=None,
                 help="Global feature: the map's average, or fast-reid's occlusion-weighted one through its BN neck "
                      "[default: average; converting fast-reid with a bnneck_occ: occlusion-weighted]."),
    click.option("--interpolation", type=click.Choice(INTERPOLATIONS), default=None,
                 help="Resize filter the model was trained with, used by extract and train "
                      "[default: bilinear; converting fast-reid: bicubic]."),
]


def _with_model_options(f):
    for opt in reversed(_model_options):
        f = opt(f)
    return f


def _describe(config) -> str:
    stem = "fast-reid's MaxPool2d(3, 2, padding=0, ceil_mode=True)" if config.stem == "fast-reid" else "torchvision's MaxPool2d(3, 2, padding=1)"
    trunk = "output stride 16" if config.is_osnet else f"last stride {config.last_stride}, stem {stem}"
    return (
        f"{config.backbone}, input {config.input_size[0]}x{config.input_size[1]} resized {config.interpolation}, "
        f"{trunk}, global feature {config.global_feature} (d={config.global_dim}), "
        f"{config.num_locations()} locations of d={config.feature_dim}"
    )


@click.group("checkpoint")
def checkpoint_group() -> None:
    """Write model checkpoints in reid-eval's format."""


@checkpoint_group.command("init")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint file to write.")
@click.option("--backbone", type=click.Choice(BACKBONE_NAMES), default="resnet50", show_default=True, help="ResNet, IBN-a ResNet or OSNet trunk.")
@click.option("--pretrained", type=click.Choice(["none", "imagenet"]), default="none", show_default=True,
              help="imagenet: torchvision's ImageNet (IMAGENET1K_V1) trunk via its weights API and torch's hub cache "
                   "(needs the network once; IBN-a: use `convert --from ibn-net`).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random initialisation (the foreground generator with --pretrained).")
@_with_model_options
def init_command(out: Path, backbone: str, pretrained: str, seed: int, **options) -> None:
    """A randomly initialised model, or torchvision's ImageNet trunk with --pretrained imagenet."""
    import torch

    from reid_eval.model import ModelConfig, build_model, file_sha256, imagenet_model, save_checkpoint

    fields = _model_fields(**options)
    if "last_stride" in fields:
        fields["last_stride"] = int(fields["last_stride"])
    config = ModelConfig(backbone=backbone, **fields)
    if pretrained == "imagenet":
        model, config, extra = imagenet_model(config, seed)
    else:
        torch.manual_seed(seed)
        model, extra = build_model(config), {"init": "random", "seed": seed}
    save_checkpoint(out, model, config, extra=extra)
    click.echo(f"wrote {out} ({_describe(config)}; {extra['init']}; sha256 {file_sha256(out)[:12]})")


@checkpoint_group.command("convert")
@click.option("--from", "source", required=True, type=click.Choice(CONVERT_SOURCES), help="Layout of the input file.")
@click.argument("in_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint file to write.")
@click.option("--backbone", type=click.Choice(BACKBONE_NAMES), default=None, help="Expected trunk [default: inferred from the weights].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for parts the source lacks (the foreground generator).")
@click.option("--name", default=None, metavar="TEXT",
              help="The model in words, for tables (e.g. 'OSNet x0.25, Market-1501, torchreid') [default: trunk, source and file].")
@_with_model_options
def convert_command(source: str, in_file: Path, out: Path, backbone: str | None, seed: int, name: str | None, **options) -> None:
    """Import torchvision, IBN-Net, fast-reid (PartialReID/DSR) or torchreid weights from IN_FILE.

    The trunk (plain or IBN-a ResNet, or an OSNet) is inferred from the keys. What the
    source's code trains with becomes the model's setting unless an option
    says otherwise: fast-reid gives its stem, bicubic resizing, last stride 1,
    384x128 and its occlusion-weighted global feature; torchreid 256x128,
    bilinear and last stride 2 (1 with an fc512 embedding); a torchreid OSNet
    keeps its fc embedding as the global feature (torchreid's test feature).
    """
    from reid_eval.model import convert_checkpoint, save_checkpoint
    from reid_eval.features.cache import TRAIN_FOREGROUND_HINT
    from reid_eval.model.checkpoint import FOREGROUND_TRAINED

    fields = _model_fields(**options)
    if "last_stride" in fields:
        fields["last_stride"] = int(fields["last_stride"])
    model, config, extra = convert_checkpoint(source, in_file, seed, name=name, backbone=backbone, **fields)
    save_checkpoint(out, model, config, extra=extra)
    from_source = sorted(k for k in extra["source_settings"] if k not in fields)
    click.echo(f"wrote {out} ({_describe(config)})")
    click.echo(f"  read: {extra['source_layout']}" + (f"; dropped {', '.join(extra['dropped'])}" if extra["dropped"] else ""))
    if from_source:
        click.echo(f"  as {source} trains: {', '.join(from_source)} (override with the options of the same name)")
    if config.stem == "fast-reid":
        click.echo("  stem: MaxPool2d(3, 2, padding=0, ceil_mode=True), as fast-reid builds it since 2020 "
                   "(torchvision pads by 1; --stem torchvision for older fast-reid checkpoints)")
    click.echo(f"  foreground: {extra.get('foreground', 'none')}")
    if config.foreground_head and not extra[FOREGROUND_TRAINED]:
        click.echo(f"  match --metric fpr refuses its caches until the generator is trained: {TRAIN_FOREGROUND_HINT}")


# What cli.main.COMMANDS says this module defines; its lazy group picks a command from here by name.
COMMANDS: tuple[click.Command, ...] = (checkpoint_group,)
