"""Person masks from MediaPipe's pose model, which works offline.

MediaPipe 0.10.14 (the ``mediapipe`` extra) ships in its wheel the pose
landmark model of complexity 1 (``pose_landmark_full.tflite``), whose
segmentation output is a per-pixel person probability, and the selfie
segmentation model. Its complexities 0 and 2 are downloaded at run time, so
on a machine without internet they are refused before MediaPipe tries
(:func:`check_pose_model`), with the file to fetch and where to put it.

The recipe (:class:`PoseRecipe`), per crop: pad the crop to a grey square
whose side is ``(1 + margin)`` times the crop's longer side, crop centred
(the pose detector was trained on people with context in roughly square
frames; a tight 1:3 crop stretched to a square is not what it has seen);
resize to ``size`` × ``size``; run
``Pose(static_image_mode=True, enable_segmentation=True, model_complexity=1)``;
when it finds no person, try the next margin; when no margin finds one, take
the selfie model's segmentation of the first margin's square (``fallback``),
else write an empty mask. The probability map is resized back to the padded
square, cut to the crop's box and thresholded at ``threshold``.

What it marks: every person it segments, so on occluded crops the occluding
people (and often objects in front of the person) are marked as person too:
masks for training images, not for judging occluded probes (docs/masks.md).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from reid_eval.errors import ReidEvalError

MEDIAPIPE_MODELS: tuple[str, ...] = ("mediapipe-pose", "mediapipe-selfie")
#: The release whose wheel holds ``mp.solutions`` and the complexity-1 pose model (newer ones drop solutions).
MEDIAPIPE_VERSION = "0.10.14"
#: model_complexity -> the pose landmark model file it loads, below ``mediapipe/modules/pose_landmark/``.
POSE_MODEL_FILES: dict[int, str] = {0: "pose_landmark_lite.tflite", 1: "pose_landmark_full.tflite",
                                    2: "pose_landmark_heavy.tflite"}
_DOWNLOAD_URL = "https://storage.googleapis.com/mediapipe-assets/"
INSTALL_HINT = f"pip install 'reid-eval[mediapipe]' (mediapipe=={MEDIAPIPE_VERSION})"

#: Where a mask came from (MaskRun.sources): pose at the first margin, pose at a retry margin, selfie, nothing.
SOURCE_POSE, SOURCE_POSE_RETRY, SOURCE_SELFIE, SOURCE_EMPTY = "pose", "pose (retry margin)", "selfie", "empty"


@dataclass(frozen=True)
class PoseRecipe:
    """How a crop goes through MediaPipe (module docstring).

    ``margins``: padding around the crop as a fraction of its longer side,
    tried in order until the pose model finds a person; ``size``: side in
    pixels of the square the model sees; ``complexity``: the pose model (1 ships
    in the wheel); ``threshold``: person probability from which a pixel is
    foreground; ``fallback``: use the selfie model where no margin finds a
    person; ``grey``: the padding's value (0-255).
    """

    margins: tuple[float, ...] = (0.6, 0.3, 1.0)
    size: int = 512
    complexity: int = 1
    threshold: float = 0.5
    fallback: bool = True
    grey: int = 128

    def validate(self) -> None:
        """ReidEvalError naming the option of the first bad value."""
        if not self.margins or any(not (0.0 <= m <= 4.0) for m in self.margins):
            raise ReidEvalError(f"--margins must be numbers from 0 to 4, got {','.join(map(str, self.margins))}")
        if not 64 <= self.size <= 2048:
            raise ReidEvalError(f"--size for MediaPipe is one square side from 64 to 2048 pixels, got {self.size}")
        if self.complexity not in POSE_MODEL_FILES:
            raise ReidEvalError(f"--complexity must be 0, 1 or 2, got {self.complexity}")
        if not 0.0 < self.threshold < 1.0:
            raise ReidEvalError(f"--threshold must lie strictly between 0 and 1, got {self.threshold}")
        if not 0 <= self.grey <= 255:
            raise ValueError(f"grey must be 0-255, got {self.grey}")

    def record(self) -> dict[str, Any]:
        """The recipe as a JSON-able dict (stored beside the masks)."""
        out = asdict(self)
        out["margins"] = list(self.margins)
        return out


def pad_to_square(image: np.ndarray, margin: float, size: int, grey: int = 128
                  ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``image`` uint8 [h, w, 3] centred on a grey square, resized to [size, size, 3].

    Returns the square and ``(top, left, side)``: the crop occupies rows
    ``top:top+h`` and columns ``left:left+w`` of the ``side`` × ``side``
    square before it is resized.
    """
    h, w = image.shape[:2]
    side = max(h, w) + 2 * int(round(max(h, w) * margin / 2))
    top, left = (side - h) // 2, (side - w) // 2
    square = np.full((side, side, 3), grey, dtype=np.uint8)
    square[top:top + h, left:left + w] = image
    if side != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))
    return square, (top, left, side)


def crop_back(probability: np.ndarray, height: int, width: int, box: tuple[int, int, int], threshold: float
              ) -> np.ndarray:
    """The mask of the crop: ``probability`` float [size, size] resized to the padded square, cut to the
    crop's ``height`` × ``width`` at ``box`` (from :func:`pad_to_square`), uint8 0/255 at ``threshold``."""
    top, left, side = box
    prob = np.asarray(probability, dtype=np.float32)
    if prob.shape != (side, side):
        prob = np.asarray(Image.fromarray(prob, mode="F").resize((side, side), Image.BILINEAR))
    return np.where(prob[top:top + height, left:left + width] >= threshold, 255, 0).astype(np.uint8)


def mediapipe_folder() -> Path:
    """The installed ``mediapipe`` package's folder (where its model files live); ReidEvalError if absent."""
    try:
        with _quiet():
            import mediapipe
    except ImportError as exc:
        raise ReidEvalError(f"the MediaPipe mask models need mediapipe, which is not installed ({exc}): "
                            f"{INSTALL_HINT}") from None
    version = getattr(mediapipe, "__version__", "?")
    if not hasattr(mediapipe, "solutions"):
        raise ReidEvalError(f"mediapipe {version} has no mp.solutions (the pose and selfie models): "
                            f"{INSTALL_HINT}")
    return Path(mediapipe.__file__).resolve().parent


def check_pose_model(complexity: int) -> Path:
    """The pose landmark model file of ``complexity``, present on disk; otherwise a ReidEvalError saying
    where to put it (MediaPipe would download it at run time, which fails offline)."""
    path = mediapipe_folder() / "modules" / "pose_landmark" / POSE_MODEL_FILES[complexity]
    if not path.is_file() or path.stat().st_size == 0:
        raise ReidEvalError(
            f"--complexity {complexity} needs {path.name}, which mediapipe downloads at run time and which is not "
            f"at {path}: fetch {_DOWNLOAD_URL}{path.name} on a machine with internet and copy it there, "
            f"or use --complexity 1 (shipped in the wheel)")
    return path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence MediaPipe's start-up chatter (protobuf deprecation warnings, TFLite/absl INFO and W lines
    written by C++ straight to file descriptor 2), which would break the one-line progress display."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class MediaPipeMasker:
    """Masks of single crops with one MediaPipe model (``mediapipe-pose`` or ``mediapipe-selfie``).

    Call it with a uint8 [h, w, 3] RGB crop; it returns ``(mask, source)``: a
    uint8 [h, w] mask of 0 and 255 and one of the ``SOURCE_*`` names. Not
    thread-safe (MediaPipe graphs are not); close it when done.
    """

    def __init__(self, model: str, recipe: PoseRecipe = PoseRecipe()) -> None:
        if model not in MEDIAPIPE_MODELS:
            raise ReidEvalError(f"--model must be one of {', '.join(MEDIAPIPE_MODELS)}, got {model!r}")
        recipe.validate()
        self.model, self.recipe = model, recipe
        # mp.solutions' result parsing calls a protobuf API deprecated in protobuf 4, once per crop.
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
        self._pose = self._selfie = None
        mediapipe_folder()  # installed, and a release with mp.solutions: else say how to install it
        if model == "mediapipe-pose":
            check_pose_model(recipe.complexity)  # before mediapipe would try to download it
        with _quiet():
            from mediapipe.python.solutions import pose, selfie_segmentation

            if model == "mediapipe-pose":
                self._pose = pose.Pose(static_image_mode=True, enable_segmentation=True,
                                       model_complexity=recipe.complexity)
            if model == "mediapipe-selfie" or recipe.fallback:
                # model_selection=0: the general model (256x256 input), not the landscape one.
                self._selfie = selfie_segmentation.SelfieSegmentation(model_selection=0)
            # The first call builds the graph's delegates and logs them: keep that quiet too.
            self(np.full((8, 8, 3), recipe.grey, dtype=np.uint8))

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, str]:
        r = self.recipe
        h, w = image.shape[:2]
        first = None
        if self._pose is not None:
            for i, margin in enumerate(r.margins):
                square, box = pad_to_square(image, margin, r.size, r.grey)
                first = first or (square, box)
                result = self._pose.process(square)
                if result.pose_landmarks is not None and result.segmentation_mask is not None:
                    return (crop_back(result.segmentation_mask, h, w, box, r.threshold),
                            SOURCE_POSE if i == 0 else SOURCE_POSE_RETRY)
        if self._selfie is not None:
            square, box = first or pad_to_square(image, r.margins[0], r.size, r.grey)
            mask = crop_back(self._selfie.process(square).segmentation_mask, h, w, box, r.threshold)
            if mask.any():
                return mask, SOURCE_SELFIE
        return np.zeros((h, w), dtype=np.uint8), SOURCE_EMPTY

    def close(self) -> None:
        for graph in (self._pose, self._selfie):
            if graph is not None:
                graph.close()
        self._pose = self._selfie = None
