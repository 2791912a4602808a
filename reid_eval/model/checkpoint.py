"""reid-eval checkpoints: one ``torch.save`` file holding the state dict, the
:class:`ModelConfig` and a format version; plus converters from torchvision,
fast-reid (PartialReID / DSR) and torchreid weight files.

File layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {"format": "reid-eval-checkpoint", "format_version": 1,
     "config": ModelConfig.to_dict(), "state_dict": {...}, "extra": {...}}
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from reid_eval.errors import ReidEvalError
from reid_eval.model.network import RESNET_NAMES, FPRNet, ModelConfig, build_model

CHECKPOINT_FORMAT = "reid-eval-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
CONVERT_SOURCES: tuple[str, ...] = ("torchvision", "fast-reid", "torchreid")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: ModelConfig, extra: dict | None = None) -> Path:
    """Write ``model``'s weights with ``config`` to ``path`` (atomically: temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def _torch_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    if not path.is_file():
        raise ReidEvalError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        reason = " ".join(str(exc).split())[:200]
        raise ReidEvalError(f"cannot read checkpoint {path}: {type(exc).__name__}: {reason}") from exc


def architecture_differences(model: torch.nn.Module | Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between a model's (or a state dict's) parameters and ``state_dict``; empty when they fit."""
    own = model.state_dict() if isinstance(model, torch.nn.Module) else model
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]

    def _few(items: list[str]) -> str:
        return ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")

    out = []
    if missing:
        out.append(f"{len(missing)} missing keys: {_few(missing)}")
    if unexpected:
        out.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
    if shapes:
        out.append(f"{len(shapes)} shape mismatches (file vs model): {_few(shapes)}")
    return out


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[FPRNet, ModelConfig, dict]:
    """Load a reid-eval checkpoint; returns (model in eval mode, config, meta).

    meta holds ``format_version``, ``sha256`` (of the file) and ``extra``.
    Raises ReidEvalError naming the file when it is not our format or its
    weights do not fit the architecture its config describes.
    """
    path = Path(path)
    payload = _torch_load(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ReidEvalError(
            f"{path} is not a reid-eval checkpoint; write one with `reid-eval checkpoint init` or `reid-eval checkpoint convert`"
        )
    version = int(payload.get("format_version", -1))
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ReidEvalError(f"checkpoint {path} has format version {version}; this reid-eval reads up to {CHECKPOINT_FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(dict(payload["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ReidEvalError(f"checkpoint {path} has an invalid model config: {exc}") from exc
    model = build_model(config)
    state = payload["state_dict"]
    diffs = architecture_differences(model, state)
    if diffs:
        raise ReidEvalError(f"checkpoint {path} does not fit a {config.backbone} FPR model: " + "; ".join(diffs))
    model.load_state_dict(state)
    model.eval()
    meta = {"format_version": version, "sha256": file_sha256(path), "extra": dict(payload.get("extra", {}))}
    return model, config, meta


# --------------------------------------------------------------------------- conversion


def _unwrap(payload: Any, path: Path, wrapper_keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    state = payload
    for key in wrapper_keys:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ReidEvalError(f"{path} holds no state dict (looked under {', '.join(wrapper_keys) or 'the top level'})")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def infer_backbone(backbone_state: Mapping[str, torch.Tensor]) -> str:
    """The torchvision ResNet whose trunk has exactly these keys and shapes.

    ``backbone_state`` uses torchvision's trunk names (``conv1.weight``,
    ``layer1.0.conv1.weight``...). Candidates are built on the meta device, so
    nothing is allocated or downloaded.
    """
    closest: tuple[int, str, list[str]] | None = None
    for name in RESNET_NAMES:
        with torch.device("meta"):
            trunk = FPRNet(ModelConfig(backbone=name, foreground_head=False)).backbone
        own = trunk.state_dict()
        diffs = architecture_differences(own, backbone_state)
        if not diffs:
            return name
        wrong = len(set(own) ^ set(backbone_state)) + sum(
            tuple(own[k].shape) != tuple(backbone_state[k].shape) for k in own if k in backbone_state
        )
        if closest is None or wrong < closest[0]:
            closest = (wrong, name, diffs)
    assert closest is not None
    raise ReidEvalError(f"the weights match no torchvision ResNet trunk; closest is {closest[1]}: " + "; ".join(closest[2]))


def _foreign_trunk(state: dict[str, torch.Tensor], path: Path, drop_prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Keep torchvision trunk keys; drop classifier/neck keys; refuse anything else."""
    trunk_prefixes = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
    trunk = {k: v for k, v in state.items() if k.startswith(trunk_prefixes)}
    other = [k for k in state if k not in trunk and not k.startswith(drop_prefixes)]
    if other:
        shown = ", ".join(other[:4]) + (f" (+{len(other) - 4} more)" if len(other) > 4 else "")
        raise ReidEvalError(f"{path} has keys outside a plain ResNet trunk (IBN / non-local variants are not supported): {shown}")
    if not trunk:
        raise ReidEvalError(f"{path} has no ResNet trunk keys (conv1, bn1, layer1-4)")
    return trunk


def convert_checkpoint(
    source: str,
    in_path: str | os.PathLike,
    seed: int = 0,
    **config_fields: Any,
) -> tuple[FPRNet, ModelConfig, dict]:
    """Import foreign weights into an :class:`FPRNet`; returns (model, config, extra).

    source:
      ``torchvision`` – an ImageNet ResNet state dict (``conv1.weight``,
        ``layer1.0...``); ``fc.*`` is dropped.
      ``fast-reid`` – a PartialReID/DSR checkpoint ``{"model": {...}}``:
        ``backbone.*`` is the trunk, and the occlusion unit's mask layer
        ``heads.occ_unit.mask_layer.weight`` [1, d] (+ ``bias`` [1]) — or the
        older ``heads.mask_layer.weight`` [1, d, 1, 1] — becomes the foreground
        generator: a sigmoid of one logit z equals channel 1 of a softmax over
        (0, z), so channel 0 gets zero weights and the softmax reproduces the
        mask exactly. Other heads are dropped.
      ``torchreid`` – ``{"state_dict": {...}}`` (``module.`` prefixes
        removed); ``classifier.*`` / ``fc.*`` are dropped.
    The backbone is inferred from the weights; ``config_fields`` set the other
    :class:`ModelConfig` fields (input size, kernels...) and, when they name a
    ``backbone``, it must be the inferred one. Parts the source lacks (the foreground generator for
    torchvision / torchreid) keep a seeded random init, recorded in ``extra``.
    """
    if source not in CONVERT_SOURCES:
        raise ValueError(f"--from must be one of {', '.join(CONVERT_SOURCES)}, got {source!r}")
    path = Path(in_path)
    payload = _torch_load(path)
    mask_weight = mask_bias = None
    if source == "torchvision":
        state = _strip_prefix(_unwrap(payload, path, ("state_dict", "model")), "module.")
        trunk = _foreign_trunk(state, path, ("fc.",))
    elif source == "torchreid":
        state = _strip_prefix(_unwrap(payload, path, ("state_dict", "model")), "module.")
        trunk = _foreign_trunk(state, path, ("classifier.", "fc.", "global_avgpool."))
    else:
        state = _strip_prefix(_unwrap(payload, path, ("model", "state_dict")), "module.")
        if "heads.occ_unit.mask_layer.weight" in state:
            mask_weight = state["heads.occ_unit.mask_layer.weight"].reshape(1, -1)
            mask_bias = state.get("heads.occ_unit.mask_layer.bias")
        elif "heads.mask_layer.weight" in state:
            mask_weight = state["heads.mask_layer.weight"].reshape(1, -1)
            mask_bias = state.get("heads.mask_layer.bias")
        backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        trunk = _foreign_trunk(backbone, path, ())
    try:
        inferred = infer_backbone(trunk)
    except ReidEvalError as exc:
        raise ReidEvalError(f"{path}: {exc}") from exc
    wanted = config_fields.pop("backbone", None) or inferred
    if wanted != inferred:
        raise ReidEvalError(f"{path} holds {inferred} weights, not the requested --backbone {wanted}")
    config = ModelConfig(backbone=inferred, **config_fields)
    torch.manual_seed(seed)
    model = build_model(config)
    model.backbone.load_state_dict(trunk)
    extra: dict[str, Any] = {"converted_from": source, "source_file": str(path.resolve()), "source_sha256": file_sha256(path)}
    if model.foreground is not None:
        if mask_weight is not None:
            d = config.feature_dim
            if mask_weight.shape[1] != d:
                raise ReidEvalError(f"{path}: mask layer has {mask_weight.shape[1]} input channels, the trunk gives {d}")
            with torch.no_grad():
                model.foreground.weight.zero_()
                model.foreground.bias.zero_()
                model.foreground.weight[1] = mask_weight.reshape(d, 1, 1).to(model.foreground.weight.dtype)
                if mask_bias is not None:
                    model.foreground.bias[1] = mask_bias.reshape(()).to(model.foreground.bias.dtype)
            extra["foreground"] = "converted from the fast-reid occlusion unit's mask layer"
        else:
            extra["foreground"] = f"random (seed {seed}): the source has no foreground generator"
    model.eval()
    return model, config, extra
