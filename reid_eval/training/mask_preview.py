"""A picture of person masks a person can check at a glance: `reid-eval masks --preview N`.

Each crop is shown as three panels side by side, all scaled to one height:
the image, its mask (white = person), and the image with the background
dimmed and the mask's outline drawn in red. Triplets are laid out
``per_row`` to a row on a dark background.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from reid_eval.atomic import write_atomically

OUTLINE_RGB = (255, 32, 32)
BACKGROUND_DIM = 0.4  # background pixels of the outline panel keep this share of their brightness


def spread(items: Sequence[str], n: int) -> list[str]:
    """``n`` items spread evenly over ``items`` (first and last included), in order; all of them if fewer."""
    if n >= len(items):
        return list(items)
    if n <= 1:
        return list(items[:n])
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, n)).astype(int))
    return [items[i] for i in picks]


def outline_panel(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 3]: ``image`` with the background (``mask`` < 128) dimmed and the mask's border in red."""
    person = np.asarray(mask) >= 128
    out = image.astype(np.float32)
    out[~person] *= BACKGROUND_DIM
    inner = np.asarray(Image.fromarray(person.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(5))) > 0
    out[person & ~inner] = OUTLINE_RGB
    return out.astype(np.uint8)


def preview_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], cell_height: int = 192,
                 per_row: int = 4, gap: int = 6) -> Image.Image:
    """The grid of (image | mask | outline) triplets: ``images`` uint8 [h, w, 3], ``masks`` uint8 [h, w]."""
    if len(images) != len(masks) or not images:
        raise ValueError(f"need as many masks as images, at least one; got {len(images)} and {len(masks)}")
    triplets = []
    for image, mask in zip(images, masks):
        h, w = image.shape[:2]
        width = max(1, round(w * cell_height / h))
        # Scaled first, so that the outline is one display pixel wide whatever the crop's size.
        img = np.asarray(Image.fromarray(image).resize((width, cell_height), Image.BILINEAR))
        msk = np.asarray(Image.fromarray(np.asarray(mask)).resize((width, cell_height), Image.NEAREST))
        scaled = [img, np.repeat(msk[:, :, None], 3, axis=2), outline_panel(img, msk)]
        strip = np.full((cell_height, 3 * width + 2 * 2, 3), 40, dtype=np.uint8)
        for i, panel in enumerate(scaled):
            strip[:, i * (width + 2):i * (width + 2) + width] = panel
        triplets.append(strip)
    rows = [triplets[i:i + per_row] for i in range(0, len(triplets), per_row)]
    width = max(sum(t.shape[1] for t in row) + gap * (len(row) + 1) for row in rows)
    canvas = np.full((len(rows) * (cell_height + gap) + gap, width, 3), 16, dtype=np.uint8)
    for r, row in enumerate(rows):
        x, y = gap, gap + r * (cell_height + gap)
        for strip in row:
            canvas[y:y + cell_height, x:x + strip.shape[1]] = strip
            x += strip.shape[1] + gap
    return Image.fromarray(canvas)


def write_preview(path: Path, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> Path:
    """Write :func:`preview_grid` of the crops to ``path`` (PNG) and return it."""
    return write_atomically(path, lambda tmp: preview_grid(images, masks).save(tmp, format="PNG"), "mask preview",
                            "`reid-eval masks --preview`")
