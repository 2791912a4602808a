"""reid-eval checkpoints: one ``torch.save`` file holding the state dict, the
:class:`ModelConfig` and a format version; and the safe reader every
checkpoint-like input goes through (ours and the foreign files of
:mod:`reid_eval.model.convert`).

File layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {"format": "reid-eval-checkpoint", "format_version": 1,
     "config": ModelConfig.to_dict(), "state_dict": {...}, "extra": {...}}

Configs written before a :class:`ModelConfig` field existed load with that
field's default (the behaviour they were written with).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from reid_eval.atomic import write_atomically
from reid_eval.digest import file_sha256
from reid_eval.errors import ReidEvalError
from reid_eval.model.network import FPRNet, ModelConfig, build_model

CHECKPOINT_FORMAT = "reid-eval-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1

#: ``extra`` key: whether the checkpoint's foreground generator was trained (bool).
FOREGROUND_TRAINED = "foreground_trained"

#: What the user is told makes a checkpoint, at the end of every refusal.
MAKE_CHECKPOINT_HINT = "a checkpoint is made with `reid-eval checkpoint init` or `reid-eval checkpoint convert --from SOURCE FILE`"

# torch.save's legacy (pre-1.6) format starts with a pickle (opcode PROTO) of this magic number (a long).
_LEGACY_TORCH_MAGIC = b"\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"



def foreground_trained(extra: Mapping[str, Any]) -> bool:
    """Whether a checkpoint's ``extra`` says its foreground generator was trained.

    Checkpoints written before the flag existed: trained when they came out of
    ``reid-eval train`` or from a fast-reid mask layer; random otherwise
    (``checkpoint init``, or converted from a source without a generator).
    """
    if FOREGROUND_TRAINED in extra:
        return bool(extra[FOREGROUND_TRAINED])
    return "trained_on" in extra or str(extra.get("foreground", "")).startswith("converted")


def _with_foreground_flag(extra: Mapping[str, Any], config: ModelConfig) -> dict[str, Any]:
    """``extra`` with :data:`FOREGROUND_TRAINED` set (False without a foreground head)."""
    out = dict(extra)
    out[FOREGROUND_TRAINED] = config.foreground_head and foreground_trained(out)
    return out


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: ModelConfig, extra: dict | None = None) -> Path:
    """Write ``model``'s weights with ``config`` to ``path`` (reid_eval.atomic: a failure, a full disk
    included, raises ReidEvalError naming ``path``, leaves no temporary file and keeps the file there before)."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": _with_foreground_flag(extra or {}, config),
    }
    # torch's zip writer reports a full disk as a RuntimeError ("[enforce fail at inline_container.cc] ...")
    return write_atomically(path, lambda tmp: torch.save(payload, tmp), "checkpoint", "the command that writes it",
                            failures=(OSError, RuntimeError))


def _numpy_scalar_globals() -> list:
    """What unpickling a NumPy number needs (torchreid stores ``rank1`` as one).

    Only numeric dtypes are listed: an object-dtype scalar (arbitrary Python
    objects) still fails to load. The ``numpy.core`` spelling is the one files
    written with NumPy 1.x use.
    """
    core = getattr(np, "_core", None) or np.core  # NumPy 2 / NumPy 1
    scalar = core.multiarray.scalar
    dtypes = [type(np.dtype(code)) for code in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")]
    spellings = [(scalar, f"numpy.{c}.multiarray.scalar") for c in ("core", "_core")]
    return [*spellings, np.dtype, *dtypes]


def _plain(obj: Any) -> Any:
    """NumPy scalars -> Python numbers, recursively through dicts and lists."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _torch_file_kind(path: Path) -> str | None:
    """"zip" / "legacy" for the two torch.save formats, a reason string for anything else."""
    with open(path, "rb") as f:
        head = f.read(32)
    if head.startswith(b"\x80") and _LEGACY_TORCH_MAGIC in head:
        return "legacy"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "a damaged zip archive"
        if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            return "zip"
        return "a zip archive without torch's data.pkl"
    if not head:
        return "an empty file"
    if head.startswith(b"PK"):
        return "a truncated or damaged zip archive"
    return "neither torch's zip format nor its legacy pickle"


class IgnoredObject(list):
    """Stands in for a pickled object of a foreign file's trainer (``argparse.Namespace``
    arguments, a scheduler...) that reid-eval does not need: built from nothing, it runs
    none of the original class's code. A list so that list-like pickles fill it harmlessly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "IgnoredObject":
        return IgnoredObject()


#: Most foreign objects stubbed in one file before giving up.
_MAX_IGNORED_GLOBALS = 32


def read_torch_file(
    path: str | os.PathLike, what: str = "checkpoint", map_location: str | torch.device = "cpu", ignore_objects: bool = False
) -> Any:
    """``torch.load`` of ``path`` with weights only, NumPy scalars allowed and returned as Python numbers.

    ``what`` names the file's role in messages ("checkpoint", "fast-reid
    checkpoint"...). With ``ignore_objects`` (foreign files, whose tensors
    are all that is used) any other pickled object becomes an inert
    :class:`IgnoredObject` instead of failing the load: the tensors only are
    read, still without running any code from the file. Every failure is a
    one-line ReidEvalError naming the file: missing, a folder, not a PyTorch
    file at all, a PyTorch file holding pickled Python objects beyond
    weights, or a damaged one.
    """
    path = Path(path)
    if not path.exists():
        raise ReidEvalError(f"{what} {path} does not exist; {MAKE_CHECKPOINT_HINT}")
    if path.is_dir():
        raise ReidEvalError(f"{what} {path} is a folder, not a checkpoint file; {MAKE_CHECKPOINT_HINT}")
    try:
        kind = _torch_file_kind(path)
    except OSError as exc:
        raise ReidEvalError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if kind not in ("zip", "legacy"):
        raise ReidEvalError(f"{what} {path} is not a PyTorch checkpoint ({kind}); {MAKE_CHECKPOINT_HINT}")
    ignored: list[tuple[type, str]] = []
    while True:
        try:
            with torch.serialization.safe_globals([*_numpy_scalar_globals(), *ignored]):
                return _plain(torch.load(path, map_location=map_location, weights_only=True))
        except pickle.UnpicklingError as exc:
            unsupported = re.search(r"GLOBAL ([\w.]+)", str(exc))
            name = unsupported.group(1) if unsupported else None
            if ignore_objects and name and len(ignored) < _MAX_IGNORED_GLOBALS and name not in {n for _, n in ignored}:
                ignored.append((IgnoredObject, name))
                continue
            culprit = name or (re.search(r"got <class '([\w.]+)'>", str(exc)) or [None, None])[1]
            raise ReidEvalError(
                f"{what} {path} is a PyTorch file holding pickled Python objects{f' ({culprit})' if culprit else ''}, not only "
                f"weights; reid-eval reads weights only: save the model's state_dict(), or "
                f"{MAKE_CHECKPOINT_HINT.replace('a checkpoint is made', 'make a checkpoint')}"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/EOFError/... for damaged files
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise ReidEvalError(f"{what} {path} is a damaged or truncated PyTorch file ({reason}); {MAKE_CHECKPOINT_HINT}") from exc


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
        return ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")

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
    Raises ReidEvalError naming the file when it is not a PyTorch file, not
    our format (a foreign one is told which ``convert`` to run), or its
    weights do not fit the architecture its config describes.
    """
    path = Path(path)
    payload = read_torch_file(path, "checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ReidEvalError(
            f"{path} is a PyTorch file but not a reid-eval checkpoint; if it holds torchvision, IBN-Net, fast-reid or torchreid "
            f"weights, convert it with `reid-eval checkpoint convert --from SOURCE {path} --out FILE`, "
            "else make one with `reid-eval checkpoint init`"
        )
    version = int(payload.get("format_version", -1))
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ReidEvalError(f"checkpoint {path} has format version {version}; this reid-eval reads up to {CHECKPOINT_FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(dict(payload["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ReidEvalError(f"checkpoint {path} has an invalid model config: {exc}; {MAKE_CHECKPOINT_HINT}") from exc
    with torch.device("meta"):  # no random init: every tensor comes from the file
        model = build_model(config)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise ReidEvalError(f"checkpoint {path} holds no state dict; {MAKE_CHECKPOINT_HINT}")
    diffs = architecture_differences(model, state)
    if diffs:
        raise ReidEvalError(
            f"checkpoint {path}: its weights do not fit the {config.backbone} model its config describes ("
            + "; ".join(diffs)
            + f"); {MAKE_CHECKPOINT_HINT}"
        )
    model.load_state_dict(state, assign=True)
    model.eval()
    meta = {"format_version": version, "sha256": file_sha256(path), "extra": dict(payload.get("extra", {}))}
    return model, config, meta
