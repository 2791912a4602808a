"""Person masks for the foreground labels (paper §3.3): from a semantic
segmentation network of torchvision, or from MediaPipe's pose model offline.

The paper takes its masks from a human-parsing model; a real dataset ships
none. This module writes them with one of :data:`MASK_MODELS`:

- torchvision's segmentation models (:data:`SEGMENTATION_MODELS`), all
  trained on COCO with the 20 Pascal VOC categories, whose class ``person``
  (index 15) is the foreground: a pixel is foreground when ``person`` is its
  most probable class. They are maintained with torchvision, which the
  project already depends on, and load through its weights API (downloaded
  once into torch's cache, or read from a file with ``weights_file`` on an
  offline machine). The default, DeepLabV3 with a ResNet-101 backbone, has
  the highest mIoU of them on COCO val2017 with VOC labels (67.4,
  torchvision's model card); ``deeplabv3_mobilenet_v3_large`` (60.3) costs
  about a twentieth and suits a CPU. Images are resized to ``size`` for the
  network (person crops are about 2:1) and the class scores resized back.
- MediaPipe's pose segmentation, with its selfie model as the fallback
  (:mod:`reid_eval.training.masks_mediapipe`, the ``mediapipe`` extra): its
  model ships in the wheel, so it needs no download at all.

Both mark every person, not only the identity, which matches the paper's
parser-based labels ("person", not "the identity").

The mask of ``<root>/<path>`` is written to ``<out>/<path>`` with a ``.png``
suffix (an 8-bit PNG of 0 and 255, at the image's own size), the layout
:func:`reid_eval.training.data.training_images` reads. ``<out>/masks.json``
records the model and its settings: a folder holds one model's masks, and a
run with other settings is refused rather than mixed in. A mask that exists
is never recomputed, and each is written atomically (temporary file, then
rename), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from reid_eval.atomic import write_atomically, write_text_atomically
from reid_eval.datasets import load_manifest
from reid_eval.errors import ReidEvalError
from reid_eval.features import resolve_device
from reid_eval.features.preprocess import Preprocessing, load_rgb, to_tensor_batch
from reid_eval.kill_hooks import kill_hook
from reid_eval.training.data import mask_file
from reid_eval.training.mask_preview import spread, write_preview
from reid_eval.training.masks_mediapipe import MEDIAPIPE_MODELS, MediaPipeMasker, PoseRecipe

SEGMENTATION_MODELS: tuple[str, ...] = (
    "deeplabv3_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_mobilenet_v3_large",
    "fcn_resnet101",
    "fcn_resnet50",
    "lraspp_mobilenet_v3_large",
)
DEFAULT_SEGMENTATION_MODEL = "deeplabv3_resnet101"
#: Every model `reid-eval masks --model` accepts.
MASK_MODELS: tuple[str, ...] = SEGMENTATION_MODELS + MEDIAPIPE_MODELS
#: The settings a mask folder's masks were made with (beside them).
MASK_RECORD = "masks.json"
#: The overlay grid of `masks --preview N`, in the mask folder.
PREVIEW_FILE = "preview.png"
#: (height, width) the network sees: person crops are about 2:1.
DEFAULT_SEGMENTATION_SIZE = (512, 256)
PERSON_CLASS = "person"

#: progress(masks done (written or found), masks in the splits, masks written by this run)
MaskProgressFn = Callable[[int, int, int], None]


@dataclass(frozen=True)
class MaskRun:
    """What :func:`write_person_masks` did: masks written now, found from before, the folder, seconds;
    ``sources``: how many of the written masks came from where (the model's name, or for MediaPipe pose /
    pose at a retry margin / selfie fallback / empty); ``preview``: the grid file of ``preview`` runs."""

    written: int
    skipped: int
    out_dir: Path
    seconds: float
    sources: dict[str, int] = field(default_factory=dict)
    preview: Path | None = None


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
    """One mask file, atomically (reid_eval.atomic: a full disk names the file and leaves no temporary)."""
    write_atomically(path, lambda tmp: Image.fromarray(mask, mode="L").save(tmp, format="PNG"), "mask",
                     "`reid-eval masks` (masks already written are kept)")


# One model's masks of a batch: prepare(paths) runs in the loader thread (decoding, resizing) and returns
# what segment(prepared) turns into (mask uint8 [h, w] at the image's size, source) pairs.
_Segmenter = tuple[Callable[[list[Path]], Any], Callable[[Any], list[tuple[np.ndarray, str]]], Callable[[], None]]


def _torchvision_segmenter(model_name: str, weights_file: Path | None, device: str, size: tuple[int, int]
                           ) -> _Segmenter:
    dev = resolve_device(device)
    model, person = load_segmentation_model(model_name, weights_file)
    model = model.to(dev)
    prep = Preprocessing(resize="fixed", size=(int(size[0]), int(size[1])), stride=8, min_height=8)

    def prepare(files: list[Path]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        arrays, sizes = [], []
        for f in files:
            img = load_rgb(f)
            sizes.append((img.height, img.width))
            arrays.append(np.asarray(img.resize((prep.size[1], prep.size[0]), Image.BILINEAR), dtype=np.uint8))
        return to_tensor_batch(arrays, prep, "cpu"), sizes

    def segment(batch: tuple[torch.Tensor, list[tuple[int, int]]]) -> list[tuple[np.ndarray, str]]:
        images, sizes = batch
        return [(m, model_name) for m in person_masks(model, person, images.to(dev, non_blocking=True), sizes)]

    return prepare, segment, lambda: None


def _mediapipe_segmenter(model_name: str, device: str, recipe: PoseRecipe) -> _Segmenter:
    if device == "cuda":
        raise ReidEvalError(f"--device cuda: {model_name} runs on the CPU (use --device cpu or auto)")
    masker = MediaPipeMasker(model_name, recipe)

    def prepare(files: list[Path]) -> list[np.ndarray]:
        return [np.asarray(load_rgb(f), dtype=np.uint8) for f in files]

    return prepare, lambda images: [masker(image) for image in images], masker.close


def mask_settings(model_name: str, size: Sequence[int] | None = None, recipe: PoseRecipe | None = None
                  ) -> tuple[dict[str, Any], tuple[int, int], PoseRecipe]:
    """What a run with these options records in ``masks.json``, with the network size (torchvision) and
    recipe (MediaPipe) it uses. ``size`` None is the model's default; for MediaPipe it is one square side
    (``(512,)`` or ``(512, 512)``), and overrides ``recipe.size``."""
    if model_name not in MASK_MODELS:
        raise ReidEvalError(f"--model must be one of {', '.join(MASK_MODELS)}, got {model_name!r}")
    recipe = recipe or PoseRecipe()
    if model_name in MEDIAPIPE_MODELS:
        if size is not None:
            if len(size) not in (1, 2) or len(set(size)) != 1:
                raise ReidEvalError(f"--size for {model_name} is one square side such as 512, "
                                    f"got {'x'.join(map(str, size))}")
            recipe = replace(recipe, size=int(size[0]))
        recipe.validate()
        settings = {"model": model_name, "mediapipe": recipe.record()}
        if model_name == "mediapipe-selfie":  # the pose-only fields do not apply
            settings["mediapipe"] = {k: v for k, v in settings["mediapipe"].items() if k not in ("complexity", "fallback")}
        return settings, DEFAULT_SEGMENTATION_SIZE, recipe
    hw = tuple(int(v) for v in (size if size is not None else DEFAULT_SEGMENTATION_SIZE))
    if len(hw) != 2 or min(hw) < 8:
        raise ReidEvalError(f"--size must be HEIGHTxWIDTH of at least 8 pixels each, got {'x'.join(map(str, hw))}")
    return {"model": model_name, "size": list(hw)}, (hw[0], hw[1]), recipe


def _check_record(out_dir: Path, settings: dict[str, Any]) -> bool:
    """Whether ``out_dir`` has a settings record; ReidEvalError when it records other settings."""
    record = out_dir / MASK_RECORD
    if not record.is_file():
        return False
    try:
        before = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReidEvalError(f"cannot read {record} ({exc}): remove it only if the masks beside it "
                            f"are all from one model") from None
    if before != settings:
        raise ReidEvalError(f"--out {out_dir} holds masks made with {json.dumps(before, sort_keys=True)}; "
                            f"this run would make {json.dumps(settings, sort_keys=True)}: use another --out")
    return True


def _write_record(out_dir: Path, settings: dict[str, Any]) -> None:
    write_text_atomically(out_dir / MASK_RECORD, json.dumps(settings, indent=2, sort_keys=True) + "\n",
                          "mask settings record", "`reid-eval masks`")


def write_person_masks(dataset: str, root: Path, out_dir: Path | None = None, splits: Sequence[str] = ("train",),
                       model_name: str = DEFAULT_SEGMENTATION_MODEL, weights_file: Path | None = None,
                       device: str = "auto", batch_size: int = 16, size: Sequence[int] | None = None,
                       progress: MaskProgressFn | None = None, recipe: PoseRecipe | None = None,
                       preview: int = 0) -> MaskRun:
    """Write the person mask of every image of ``splits`` of ``dataset`` at ``root``
    into ``out_dir`` (default ``<root>/masks``), skipping masks that exist.

    ``size``: (height, width) the torchvision network sees, or the square side
    of MediaPipe's input (see :func:`mask_settings`); ``recipe``: MediaPipe's
    (:class:`PoseRecipe`). ``preview`` > 0: only that many images, spread
    evenly over the splits, and their overlay grid written to
    ``<out>/preview.png`` (:mod:`reid_eval.training.mask_preview`).
    Memory is bounded by ``batch_size`` images; the next batch is decoded in
    a thread while the model runs on this one.
    """
    t0 = time.perf_counter()
    if batch_size < 1:
        raise ReidEvalError(f"--batch-size must be at least 1, got {batch_size}")
    if preview < 0:
        raise ReidEvalError(f"--preview must be a positive number of images, got {preview}")
    settings, hw, recipe = mask_settings(model_name, size, recipe)
    root = Path(root)
    out_dir = Path(out_dir) if out_dir is not None else root / "masks"
    recorded = _check_record(out_dir, settings)
    table = load_manifest(dataset, root)
    unknown = sorted(set(splits) - set(table["split"]))
    if unknown or not splits:
        raise ReidEvalError(f"--splits: {dataset} at {root} has no {', '.join(unknown) or 'split'} images "
                            f"(it has {', '.join(sorted(set(table['split'])))})")
    paths = [str(p) for p in table.loc[table["split"].isin(list(splits)), "path"]]
    if preview:
        paths = spread(paths, preview)
    todo = [p for p in paths if not mask_file(out_dir, p).is_file()]
    skipped = len(paths) - len(todo)
    if todo:
        if model_name in MEDIAPIPE_MODELS:
            prepare, segment, close = _mediapipe_segmenter(model_name, device, recipe)
        else:
            prepare, segment, close = _torchvision_segmenter(model_name, weights_file, device, hw)
        if not recorded:  # after the model loads: a failed load leaves no folder behind
            _write_record(out_dir, settings)
    if progress is not None:
        progress(skipped, len(paths), 0)
    sources: dict[str, int] = {}
    written, kill = 0, kill_hook(_KILL_ENV)
    if todo:
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(prepare, [root / p for p in batches[0]])
                for b, batch in enumerate(batches):
                    prepared = pending.result()
                    if b + 1 < len(batches):
                        pending = pool.submit(prepare, [root / p for p in batches[b + 1]])
                    for p, (mask, source) in zip(batch, segment(prepared)):
                        _write_png(mask_file(out_dir, p), mask)
                        sources[source] = sources.get(source, 0) + 1
                        if kill is not None:
                            kill()
                    written += len(batch)
                    if progress is not None:
                        progress(skipped + written, len(paths), written)
        finally:
            close()
    grid = None
    if preview:
        images = [np.asarray(load_rgb(root / p), dtype=np.uint8) for p in paths]
        masks = [np.asarray(Image.open(mask_file(out_dir, p)).convert("L")) for p in paths]
        grid = write_preview(out_dir / PREVIEW_FILE, images, masks)
    return MaskRun(written, skipped, out_dir, time.perf_counter() - t0, sources, grid)
