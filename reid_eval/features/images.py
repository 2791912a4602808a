"""Reading an image file as upright 8-bit RGB: the one image reader of extraction, masks and the report.

Torch-free, so that `report` reads its figure tiles with the same rules
(EXIF orientation, mode conversion, one-line errors) without loading torch.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from reid_eval.errors import ReidEvalError


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image once turned upright by its EXIF Orientation (headers only)."""
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except (OSError, ValueError, TypeError, SyntaxError):
        orientation = 1
    w, h = img.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image fully decoded as 8-bit RGB.

    Grayscale, palette (transparency included), RGBA/LA (alpha dropped), CMYK
    and 16-bit / 32-bit integer or float images are converted; 16-bit data is
    scaled by its full range (v / 65535 · 255). The image is first turned
    upright by its EXIF Orientation tag (phones store portraits sideways with
    Orientation 6 or 8). Raises ReidEvalError naming the file when it cannot
    be read or decoded (truncated, not an image, missing). PIL's warnings
    (a palette-transparency note, a large image's DecompressionBombWarning)
    never reach the user: an image too large to decode safely is an error
    naming it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                img.load()
                return _to_rgb(ImageOps.exif_transpose(img))
    except ReidEvalError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ReidEvalError(f"cannot read image {path}: {reason}") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            scale = 65535.0
        elif mode == "I":
            scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
        else:  # float images: assume [0, 1] when they look like it, else [0, 255]
            scale = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(np.rint(arr / scale * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")




__all__ = ["load_rgb", "oriented_size"]
