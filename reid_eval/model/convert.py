"""Import weights that other code trained: one small mapping function per
source turns its file into a :class:`ForeignWeights` in our names, and
:func:`convert_state` builds the :class:`FPRNet` from it.

Key layouts accepted (after unwrapping and removing a ``module.`` prefix):

``torchvision``
    an ImageNet ResNet state dict, bare or under ``state_dict`` / ``model``:
    ``conv1.*``, ``bn1.*``, ``layer1-4.*``; ``fc.*`` dropped.
``ibn-net``
    the IBN-Net authors' IBN-a ImageNet files: ``{"state_dict": {"module.conv1.weight", ...}}``
    (or bare); the trunk has ``layer1-3.*.bn1.IN.*`` / ``bn1.BN.*``; ``fc.*`` dropped.
``fast-reid``
    ``{"model": {...}, ...}`` (PartialReID / DSR): ``backbone.*`` is a plain or
    IBN-a trunk (inferred from the keys); the occlusion unit's mask layer is
    ``heads.occ_unit.mask_layer.weight`` [1, d] with or without ``.bias`` [1],
    or the older ``heads.mask_layer.weight`` [1, d, 1, 1] (± bias); the BN neck
    of its global feature is ``heads.bnneck_occ.0.{weight,bias,running_mean,running_var}``
    or ``heads.bnneck_occ.{...}``; other ``heads.*`` and ``pixel_mean`` /
    ``pixel_std`` (checked to be ImageNet's) are dropped.
``torchreid``
    what torchreid's trainer writes, ``{"state_dict": {...}, "epoch", "rank1":
    NumPy float, "optimizer", "scheduler"}``, or a bare state dict (the model
    zoo's files), ``module.`` from DataParallel or not: ``resnet50`` /
    ``resnet50_fc512`` / any ResNet or IBN-a trunk (``classifier.*`` and the
    ``fc.*`` embedding dropped), or an OSNet (``conv1.conv.*``, ``conv2``–``conv5``,
    ``pool2``/``pool3`` for AIN; width and variant inferred from the keys;
    ``fc.*`` kept as the global feature, ``classifier.*`` dropped).

Foreign files are read with weights only: NumPy scalars become Python numbers
and any other pickled object beside the weights (a trainer's arguments, its
helpers) an inert placeholder, so no code from the file runs.

What a source says about its training (stem, resize filter, last stride,
input size, global feature) becomes the default of the converted model's
config, and is reported in ``extra``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from reid_eval.errors import ReidEvalError
from reid_eval.model.checkpoint import FOREGROUND_TRAINED, architecture_differences, file_sha256, read_torch_file
from reid_eval.model.network import (
    BACKBONE_NAMES,
    IBN_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESNET_NAMES,
    FPRNet,
    ModelConfig,
    build_model,
)
from reid_eval.model.osnet import OSNET_NAMES

_TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
_OSNET_PREFIXES = ("conv1.", "conv2.", "conv3.", "conv4.", "conv5.", "pool2.", "pool3.", "fc.")
#: The settings torchreid trains and evaluates with.
_TORCHREID_SETTINGS: dict[str, Any] = {"input_size": (256, 128), "interpolation": "bilinear"}
_NECK_KEYS = ("weight", "bias", "running_mean", "running_var")


@dataclass
class ForeignWeights:
    """A source file's content in our names, and what its code trained with.

    trunk: torchvision-named trunk tensors (``conv1.weight``, ``layer1.0.bn1.IN.weight``...).
    layout: the key layout recognised, in words (reported on conversion).
    mask_weight / mask_bias: fast-reid's occlusion-unit logit, [1, d] / [1] or None.
    occlusion_neck: ``bnneck_occ``'s weight, bias, running_mean, running_var ([d] each) or None.
    defaults: ModelConfig fields the source's training used (stem, interpolation...).
    dropped: key groups left out (classifier, embedding...), for the note.
    """

    trunk: dict[str, torch.Tensor]
    layout: str
    mask_weight: torch.Tensor | None = None
    mask_bias: torch.Tensor | None = None
    occlusion_neck: dict[str, torch.Tensor] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- shared helpers


def _state_dict(payload: Any, where: str, wrappers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of ``payload`` (or of its first ``wrappers`` entry), without a ``module.`` prefix."""
    state = payload
    for key in wrappers:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ReidEvalError(f"{where} holds no state dict (looked under {', '.join(wrappers) or 'the top level'})")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def _split_trunk(state: Mapping[str, torch.Tensor], where: str, drop: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(trunk keys, dropped keys); anything that is neither is refused by name."""
    trunk = {k: v for k, v in state.items() if k.startswith(_TRUNK_PREFIXES)}
    dropped = [k for k in state if k not in trunk and k.startswith(drop)]
    other = [k for k in state if k not in trunk and k not in dropped]
    if other:
        raise ReidEvalError(
            f"{where} has keys outside a ResNet / IBN-a trunk that reid-eval cannot map (non-local or SE blocks?): {_few(other)}"
        )
    if not trunk:
        raise ReidEvalError(f"{where} has no ResNet trunk keys (conv1, bn1, layer1-4)")
    return trunk, dropped


def _groups(keys: list[str]) -> list[str]:
    """``classifier.weight``, ``classifier.bias`` -> ``classifier.*``."""
    return sorted({k.rsplit(".", 1)[0] + ".*" if "." in k else k for k in keys})


# --------------------------------------------------------------------------- one mapping per source


def map_torchvision(payload: Any, where: str) -> ForeignWeights:
    """torchvision ImageNet ResNet state dict -> trunk; ``fc.*`` dropped."""
    trunk, dropped = _split_trunk(_state_dict(payload, where, ("state_dict", "model")), where, ("fc.",))
    return ForeignWeights(trunk, "torchvision ResNet state dict", dropped=_groups(dropped))


def map_ibn_net(payload: Any, where: str) -> ForeignWeights:
    """IBN-Net authors' IBN-a file (``state_dict``, ``module.`` keys) -> trunk; ``fc.*`` dropped."""
    trunk, dropped = _split_trunk(_state_dict(payload, where, ("state_dict", "model")), where, ("fc.",))
    return ForeignWeights(trunk, "IBN-Net IBN-a state dict", dropped=_groups(dropped))


def map_torchreid(payload: Any, where: str) -> ForeignWeights:
    """torchreid trainer checkpoint -> trunk; classifier and ``fc`` embedding dropped.

    torchreid's ``resnet50`` uses last stride 2 and ``resnet50_fc512`` (the
    one with an ``fc.*`` embedding) last stride 1; both are trained at
    256×128 with bilinear resizing.
    """
    state = _state_dict(payload, where, ("state_dict", "model"))
    if "conv1.conv.weight" in state:
        return _torchreid_osnet(state, where)
    trunk, dropped = _split_trunk(state, where, ("classifier.", "fc.", "global_avgpool."))
    has_fc = any(k.startswith("fc.") for k in dropped)
    name = "torchreid checkpoint" + (" with an fc embedding (resnet50_fc512-like)" if has_fc else "")
    defaults = {"last_stride": 1 if has_fc else 2, **_TORCHREID_SETTINGS}
    return ForeignWeights(trunk, name, defaults=defaults, dropped=_groups(dropped))


def _torchreid_osnet(state: Mapping[str, torch.Tensor], where: str) -> ForeignWeights:
    """A torchreid OSNet state dict: trunk and ``fc`` embedding in torchreid's names; ``classifier.*`` dropped."""
    trunk = {k: v for k, v in state.items() if k.startswith(_OSNET_PREFIXES)}
    dropped = [k for k in state if k.startswith("classifier.")]
    other = [k for k in state if k not in trunk and k not in dropped]
    if other:
        raise ReidEvalError(f"{where} looks like a torchreid OSNet but has keys reid-eval cannot map: {_few(other)}")
    has_fc = "fc.0.weight" in trunk
    defaults: dict[str, Any] = {**_TORCHREID_SETTINGS, "global_feature": "embedding" if has_fc else "average"}
    layout = "torchreid OSNet state dict" + (" with its fc embedding" if has_fc else "")
    return ForeignWeights(trunk, layout, defaults=defaults, dropped=_groups(dropped))


def _fast_reid_neck(state: Mapping[str, torch.Tensor], where: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    for prefix in ("heads.bnneck_occ.0.", "heads.bnneck_occ."):
        found = {k: state[prefix + k] for k in _NECK_KEYS if prefix + k in state}
        if found:
            if len(found) != len(_NECK_KEYS):
                missing = [prefix + k for k in _NECK_KEYS if k not in found]
                raise ReidEvalError(f"{where}: the occlusion unit's BN neck lacks {', '.join(missing)}")
            return found, prefix + "*"
    return None, ""


def map_fast_reid(payload: Any, where: str) -> ForeignWeights:
    """fast-reid PartialReID / DSR checkpoint -> trunk, mask layer, occlusion-feature neck."""
    state = _state_dict(payload, where, ("model", "state_dict"))
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not backbone:
        raise ReidEvalError(f"{where} has no backbone.* keys, so it is no fast-reid checkpoint")
    trunk, _ = _split_trunk(backbone, where + " (backbone.*)", ())
    other = [k for k in state if not k.startswith(("backbone.", "heads.", "pixel_mean", "pixel_std"))]
    if other:
        raise ReidEvalError(f"{where} has keys outside backbone.* and heads.* that reid-eval cannot map: {_few(other)}")
    for name, expected in (("pixel_mean", IMAGENET_MEAN), ("pixel_std", IMAGENET_STD)):
        if name in state and not torch.allclose(state[name].flatten().double(), 255.0 * torch.tensor(expected, dtype=torch.float64), atol=1e-2):
            raise ReidEvalError(
                f"{where}: {name} is {[round(v, 3) for v in state[name].flatten().tolist()]}, not ImageNet's; "
                "reid-eval normalises with ImageNet's mean and std"
            )
    parts = ["backbone.*"]
    mask_weight = mask_bias = None
    for prefix in ("heads.occ_unit.mask_layer.", "heads.mask_layer."):
        if prefix + "weight" in state:
            mask_weight = state[prefix + "weight"].reshape(1, -1)
            mask_bias = state.get(prefix + "bias")
            parts.append(prefix + "weight" + (" + bias" if mask_bias is not None else " (no bias)"))
            break
    neck, neck_name = _fast_reid_neck(state, where)
    if neck is not None:
        parts.append(neck_name)
    dropped = [k for k in state if k.startswith("heads.") and "mask_layer." not in k and not k.startswith("heads.bnneck_occ.")]
    defaults: dict[str, Any] = {"stem": "fast-reid", "interpolation": "bicubic", "last_stride": 1, "input_size": (384, 128)}
    if neck is not None and mask_weight is not None:
        defaults["global_feature"] = "occlusion-weighted"
    return ForeignWeights(
        trunk,
        "fast-reid checkpoint: " + ", ".join(parts),
        mask_weight=mask_weight,
        mask_bias=mask_bias,
        occlusion_neck=neck,
        defaults=defaults,
        dropped=_groups(dropped),
    )


#: ``--from`` name -> its mapping function.
CONVERTERS: dict[str, Callable[[Any, str], ForeignWeights]] = {
    "torchvision": map_torchvision,
    "ibn-net": map_ibn_net,
    "fast-reid": map_fast_reid,
    "torchreid": map_torchreid,
}
CONVERT_SOURCES: tuple[str, ...] = tuple(CONVERTERS)
#: The trunks each source can hold (its file's trunk is inferred among all, then checked against these).
SOURCE_BACKBONES: dict[str, tuple[str, ...]] = {
    "torchvision": RESNET_NAMES,
    "ibn-net": IBN_NAMES,
    "fast-reid": RESNET_NAMES + IBN_NAMES,
    "torchreid": BACKBONE_NAMES,
}


# --------------------------------------------------------------------------- building the model


_BLOCKS: dict[str, tuple[int, ...]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "resnext50_32x4d": (3, 4, 6, 3),
    "resnext101_32x8d": (3, 4, 23, 3),
    "resnext101_64x4d": (3, 4, 23, 3),
    "wide_resnet50_2": (3, 4, 6, 3),
    "wide_resnet101_2": (3, 4, 23, 3),
}


def _block_counts(state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    counts = [0, 0, 0, 0]
    for key in state:
        parts = key.split(".")
        if len(parts) > 2 and parts[0] in ("layer1", "layer2", "layer3", "layer4") and parts[1].isdigit():
            i = int(parts[0][-1]) - 1
            counts[i] = max(counts[i], int(parts[1]) + 1)
    return tuple(counts)


def infer_backbone(backbone_state: Mapping[str, torch.Tensor], candidates: tuple[str, ...] = BACKBONE_NAMES) -> str:
    """The trunk among ``candidates`` that has exactly these keys and shapes.

    ``backbone_state`` uses torchvision's trunk names (``conv1.weight``,
    ``layer1.0.conv1.weight``, ``layer1.0.bn1.IN.weight``...). Candidates are
    built on the meta device, so nothing is allocated or downloaded.
    """
    # Try first the trunks with the file's block counts and norm kind: building
    # every candidate, even on the meta device, takes seconds.
    blocks = _block_counts(backbone_state)
    ibn = any(".bn1.IN." in k for k in backbone_state)
    if "conv1.conv.weight" in backbone_state:
        likely = [n for n in candidates if n in OSNET_NAMES]
    else:
        likely = [n for n in candidates if _BLOCKS.get(n.removesuffix("_ibn_a")) == blocks and (n in IBN_NAMES) == ibn]
    embedding = "fc.0.weight" in backbone_state
    closest: tuple[int, str, list[str]] | None = None
    for name in likely + [n for n in candidates if n not in likely]:
        osnet = name in OSNET_NAMES
        config = ModelConfig(backbone=name, foreground_head=False, global_feature="embedding" if osnet and embedding else "average")
        with torch.device("meta"):
            own = FPRNet(config).backbone.state_dict()
        diffs = architecture_differences(own, backbone_state)
        if not diffs:
            return name
        wrong = len(set(own) ^ set(backbone_state)) + sum(
            tuple(own[k].shape) != tuple(backbone_state[k].shape) for k in own if k in backbone_state
        )
        if closest is None or wrong < closest[0]:
            closest = (wrong, name, diffs)
    assert closest is not None
    raise ReidEvalError(f"the weights match no known ResNet / IBN-a / OSNet trunk; closest is {closest[1]}: " + "; ".join(closest[2]))


def convert_state(
    source: str, payload: Any, where: str, seed: int = 0, **config_fields: Any
) -> tuple[FPRNet, ModelConfig, dict[str, Any]]:
    """An :class:`FPRNet` from a loaded foreign ``payload``; returns (model in eval mode, config, extra).

    ``where`` names the input in messages. ``config_fields`` set
    :class:`ModelConfig` fields and win over the source's defaults; a
    ``backbone`` among them must be the inferred one. Parts the source lacks
    (the foreground generator for all but fast-reid) keep a seeded random
    init; ``extra`` records the layout, the settings taken from the source
    and what was dropped.
    """
    if source not in CONVERTERS:
        raise ValueError(f"--from must be one of {', '.join(CONVERT_SOURCES)}, got {source!r}")
    try:
        foreign = CONVERTERS[source](payload, where)
    except ReidEvalError as exc:
        others = [s for s in CONVERTERS if s != source and _reads_as(s, payload, where)]
        if others:
            raise ReidEvalError(f"{exc}; the file reads as --from {' or '.join(others)}") from exc
        raise
    try:
        inferred = infer_backbone(foreign.trunk)
    except ReidEvalError as exc:
        raise ReidEvalError(f"{where}: {exc}") from exc
    if inferred not in SOURCE_BACKBONES[source]:
        fits = [s for s, names in SOURCE_BACKBONES.items() if inferred in names]
        raise ReidEvalError(f"{where} holds a {inferred} trunk, which --from {source} does not hold; use --from {' or '.join(fits)}")
    wanted = config_fields.pop("backbone", None) or inferred
    if wanted != inferred:
        raise ReidEvalError(f"{where} holds {inferred} weights, not the requested --backbone {wanted}")
    fields = {**foreign.defaults, **{k: v for k, v in config_fields.items() if v is not None}}
    if fields.get("foreground_head") is False and "global_feature" not in config_fields:
        fields.pop("global_feature", None)
    if fields.get("global_feature") == "occlusion-weighted" and foreign.occlusion_neck is None:
        raise ReidEvalError(
            f"{where} has no occlusion unit with a BN neck (fast-reid's heads.bnneck_occ and mask layer); "
            "use --global-feature average"
        )
    try:
        config = ModelConfig(backbone=inferred, **fields)
    except ValueError as exc:
        raise ReidEvalError(f"{where}: {exc}") from exc
    # Built without its random init (seconds for a ResNet-50): the trunk is
    # loaded strictly, and only the parts the source lacks get a seeded init.
    with torch.device("meta"):
        model = build_model(config)
    model = model.to_empty(device="cpu")
    trunk = dict(foreign.trunk)
    if config.is_osnet and config.global_feature != "embedding" and any(k.startswith("fc.") for k in trunk):
        trunk = {k: v for k, v in trunk.items() if not k.startswith("fc.")}
        foreign.dropped = sorted(set(foreign.dropped) | {"fc.* (--global-feature average)"})
    model.backbone.load_state_dict(trunk)
    torch.manual_seed(seed)
    if model.foreground is not None:
        model.foreground.reset_parameters()
    if model.global_neck is not None:
        model.global_neck.reset_parameters()
    extra: dict[str, Any] = {
        "converted_from": source,
        "source_layout": foreign.layout,
        "source_settings": {k: list(v) if isinstance(v, tuple) else v for k, v in foreign.defaults.items()},
        "dropped": foreign.dropped,
        FOREGROUND_TRAINED: False,
    }
    if model.foreground is not None:
        if foreign.mask_weight is not None:
            _load_mask_layer(model, foreign.mask_weight, foreign.mask_bias, where)
            extra["foreground"] = "converted from the fast-reid occlusion unit's mask layer"
            extra[FOREGROUND_TRAINED] = True
        else:
            extra["foreground"] = f"random (seed {seed}): the source has no foreground generator"
    if model.global_neck is not None:
        assert foreign.occlusion_neck is not None
        _load_neck(model, foreign.occlusion_neck, where)
    model.eval()
    return model, config, extra


def _reads_as(source: str, payload: Any, where: str) -> bool:
    """Whether ``source``'s mapping reads ``payload`` and its trunk kind (plain / IBN-a) is one that source holds."""
    try:
        trunk = CONVERTERS[source](payload, where).trunk
    except ReidEvalError:
        return False
    ibn = any(".bn1.IN." in k for k in trunk)
    return any((name in IBN_NAMES) == ibn for name in SOURCE_BACKBONES[source])


def _load_mask_layer(model: FPRNet, weight: torch.Tensor, bias: torch.Tensor | None, where: str) -> None:
    # sigmoid(z) is channel 1 of a softmax over (0, z): channel 0 gets zero
    # weights and the softmax reproduces fast-reid's mask exactly.
    d = model.config.feature_dim
    if weight.shape != (1, d):
        raise ReidEvalError(f"{where}: the mask layer has {weight.numel()} weights, the trunk gives d={d} channels")
    head = model.foreground
    assert head is not None
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[1] = weight.reshape(d, 1, 1).to(head.weight.dtype)
        if bias is not None:
            head.bias[1] = bias.reshape(()).to(head.bias.dtype)


def _load_neck(model: FPRNet, neck: Mapping[str, torch.Tensor], where: str) -> None:
    own = model.global_neck
    assert own is not None
    for name, value in neck.items():
        target = getattr(own, name)
        if value.numel() != target.numel():
            raise ReidEvalError(f"{where}: the occlusion unit's BN neck {name} has {value.numel()} values, the trunk gives {target.numel()}")
        with torch.no_grad():
            target.copy_(value.reshape(target.shape))


def convert_checkpoint(
    source: str, in_path: str | os.PathLike, seed: int = 0, name: str | None = None, **config_fields: Any
) -> tuple[FPRNet, ModelConfig, dict]:
    """Read ``in_path`` (a ``source`` file, see the module docstring) and :func:`convert_state` it.

    ``name`` (the model in words, for tables) goes into ``extra["name"]``;
    by default the trunk, the source and the file's name.
    """
    if source not in CONVERTERS:
        raise ValueError(f"--from must be one of {', '.join(CONVERT_SOURCES)}, got {source!r}")
    path = Path(in_path)
    payload = read_torch_file(path, f"{source} checkpoint", ignore_objects=True)
    model, config, extra = convert_state(source, payload, str(path), seed, **config_fields)
    extra.update({"source_file": str(path.resolve()), "source_sha256": file_sha256(path),
                  "name": name or f"{config.backbone}, {source} ({path.name})"})
    return model, config, extra
