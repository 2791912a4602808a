"""Person masks for the foreground labels (paper §3.3), from a semantic
segmentation network of torchvision.

The paper takes its masks from a human-parsing model; a real dataset ships
none. This module writes them with one of torchvision's segmentation models
(:data:`SEGMENTATION_MODELS`), all trained on COCO with the 20 Pascal VOC
categories, whose class ``person`` (index 15) is the foreground: a pixel is
foreground when ``person`` is its most probable class. Why these: they are
maintained with torchvision, which the project already depends on, load
through its weights API (downloaded once into torch's cache, or read from a
file with ``weights_file`` on an offline machine), and person is one of the
classes they were scored on. The default, DeepLabV3 with a ResNet-101
backbone, has the highest mIoU of them on COCO val2017 with VOC labels
(67.4, torchvision's model card); ``deeplabv3_mobilenet_v3_large`` (60.3)
costs about a twentieth and suits a CPU. A semantic (not instance) model
also marks a second person as foreground, which matches the paper's
parser-based labels: its labels are "person", not "the identity".

The mask of ``<root>/<path>`` is written to ``<out>/<path>`` with a ``.png``
suffix (an 8-bit PNG of 0 and 255, at the image's own size), the layout
:func:`reid_eval.training.data.training_images` reads. Images are resized to
``size`` for the network (person crops are about 2:1) and the class scores
are resized back to the image before the per-pixel decision. A mask that
exists is never recomputed, and each is written atomically (temporary file,
then rename), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from reid_eval.datasets import load_manifest
from reid_eval.errors import ReidEvalError
from reid_eval.features import resolve_device
from reid_eval.features.preprocess import Preprocessing, load_rgb, to_tensor_batch
from reid_eval.kill_hooks import kill_hook
from reid_eval.training.data import mask_file

SEGMENTATION_MODELS: tuple[str, ...] = (
    "deeplabv3_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_mobilenet_v3_large",
    "fcn_resnet101",
    "fcn_resnet50",
    "lraspp_mobilenet_v3_large",
)
DEFAULT_SEGMENTATION_MODEL = "deeplabv3_resnet101"
#: (height, width) the network sees: person crops are about 2:1.
DEFAULT_SEGMENTATION_SIZE = (512, 256)
PERSON_CLASS = "person"

#: progress(masks done (written or found), masks in the splits, masks written by this run)
MaskProgressFn = Callable[[int, int, int], None]


@dataclass(frozen=True)
class MaskRun:
    """What :func:`write_person_masks` did: masks written now, found from before, the folder, seconds."""

    written: int
    skipped: int
    out_dir: Path
    seconds: float


def load_segmentation_model(name: str = DEFAULT_SEGMENTATION_MODEL, weights_file: Path | None = None
                            ) -> tuple[torch.nn.Module, int]:
    """A torchvision segmentation model with its COCO/VOC weights, in eval mode, and the index of its person class.

    ``weights_file``: a state dict saved with ``torch.save`` (the file behind
    the weights' URL, or any state dict of that architecture); None downloads
    through torchvision's weights API into torch's cache (``$TORCH_HOME``),
    or reads it from there. Failing that, a ReidEvalError names --weights.
    """
    if name not in SEGMENTATION_MODELS:
        raise ReidEvalError(f"--model must be one of {', '.join(SEGMENTATION_MODELS)}, got {name!r}")
    weights = torchvision.models.get_model_weights(name).DEFAULT
    categories = list(weights.meta["categories"])
    if weights_file is None:
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise ReidEvalError(
                f"cannot get the {name} weights ({weights.url}): {reason}; on a machine without internet, "
                f"download that file elsewhere and pass --weights FILE") from exc
    else:
        weights_file = Path(weights_file)
        if not weights_file.is_file():
            raise ReidEvalError(f"--weights {weights_file} does not exist")
        try:
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
            raise ReidEvalError(f"--weights {weights_file}: cannot read it as a state dict: "
                                f"{' '.join(str(exc).split())[:160]}") from exc
        if not isinstance(state, dict):
            raise ReidEvalError(f"--weights {weights_file} is not a state dict (a dict of tensors)")
    aux = any(k.startswith("aux_classifier.") for k in state)
    builder = torchvision.models.get_model_builder(name)
    model = builder(weights=None, weights_backbone=None, num_classes=len(categories), **({"aux_loss": True} if aux else {}))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        where = f"--weights {weights_file}" if weights_file is not None else f"the downloaded {name} weights"
        raise ReidEvalError(f"{where} do not fit {name} with {len(categories)} classes: "
                            f"{' '.join(str(exc).split())[:200]}") from exc
    return model.eval(), categories.index(PERSON_CLASS)


@torch.no_grad()
def person_masks(model: torch.nn.Module, person: int, images: torch.Tensor, sizes: Sequence[tuple[int, int]]
                 ) -> list[np.ndarray]:
    """Masks of a batch: ``images`` [B, 3, H, W] normalised; ``sizes`` each image's own (height, width).

    Returns uint8 [h_i, w_i] arrays, 255 where ``person`` is the most probable class, else 0.
    """
    logits = model(images)["out"]  # [B, classes, H, W]
    out = []
    for i, (h, w) in enumerate(sizes):
        scores = F.interpolate(logits[i:i + 1].float(), size=(h, w), mode="bilinear", align_corners=False)
        out.append(((scores.argmax(1)[0] == person).to(torch.uint8) * 255).cpu().numpy())
    return out


# Test hook (reid_eval.kill_hooks): REID_EVAL_TEST_KILL_AFTER_MASKS=k SIGKILLs the
# process right after its k-th mask file is in place (tests/test_training_masks.py).
_KILL_ENV = "REID_EVAL_TEST_KILL_AFTER_MASKS"


def _write_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(mask, mode="L").save(tmp, format="PNG")
    os.replace(tmp, path)


def write_person_masks(dataset: str, root: Path, out_dir: Path | None = None, splits: Sequence[str] = ("train",),
                       model_name: str = DEFAULT_SEGMENTATION_MODEL, weights_file: Path | None = None,
                       device: str = "auto", batch_size: int = 16,
                       size: tuple[int, int] = DEFAULT_SEGMENTATION_SIZE,
                       progress: MaskProgressFn | None = None) -> MaskRun:
    """Write the person mask of every image of ``splits`` of ``dataset`` at ``root``
    into ``out_dir`` (default ``<root>/masks``), skipping masks that exist.

    Memory is bounded by ``batch_size`` images at ``size`` (height, width). The
    next batch is decoded in a thread while the network runs on this one.
    """
    t0 = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"--size must be HEIGHTxWIDTH of at least 8 pixels each, got {size}")
    root = Path(root)
    out_dir = Path(out_dir) if out_dir is not None else root / "masks"
    table = load_manifest(dataset, root)
    unknown = sorted(set(splits) - set(table["split"]))
    if unknown or not splits:
        raise ReidEvalError(f"--splits: {dataset} at {root} has no {', '.join(unknown) or 'split'} images "
                            f"(it has {', '.join(sorted(set(table['split'])))})")
    paths = [str(p) for p in table.loc[table["split"].isin(list(splits)), "path"]]
    todo = [p for p in paths if not mask_file(out_dir, p).is_file()]
    skipped = len(paths) - len(todo)
    if todo:
        dev = resolve_device(device)
        model, person = load_segmentation_model(model_name, weights_file)
        model = model.to(dev)
    if progress is not None:
        progress(skipped, len(paths), 0)
    if not todo:
        return MaskRun(0, skipped, out_dir, time.perf_counter() - t0)
    prep = Preprocessing(resize="fixed", size=(int(size[0]), int(size[1])), stride=8, min_height=8)

    def load(batch: list[str]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        arrays, sizes = [], []
        for p in batch:
            img = load_rgb(root / p)
            sizes.append((img.height, img.width))
            arrays.append(np.asarray(img.resize((prep.size[1], prep.size[0]), Image.BILINEAR), dtype=np.uint8))
        return to_tensor_batch(arrays, prep, "cpu"), sizes

    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    written, kill = 0, kill_hook(_KILL_ENV)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0])
        for b, batch in enumerate(batches):
            images, sizes = pending.result()
            if b + 1 < len(batches):
                pending = pool.submit(load, batches[b + 1])
            for p, mask in zip(batch, person_masks(model, person, images.to(dev, non_blocking=True), sizes)):
                _write_png(mask_file(out_dir, p), mask)
                if kill is not None:
                    kill()
            written += len(batch)
            if progress is not None:
                progress(skipped + written, len(paths), written)
    return MaskRun(written, skipped, out_dir, time.perf_counter() - t0)
