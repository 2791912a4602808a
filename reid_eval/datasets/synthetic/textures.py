"""Vectorised procedural textures for the synthetic occluded-person set.

Every function works on a batch of ``n`` images at once: coordinates are
float32 arrays broadcastable to ``[n, H, W]`` (pixels), colours are float32
RGB in [0, 1] with shape ``[n, 3]`` (one per image) and results are
``[n, H, W]`` (scalar fields) or ``[n, H, W, 3]`` (colour images).

Two families live here and are kept deliberately apart:

* clothing patterns (solid, stripes, checks) — regular, periodic, two colours;
* clutter (foliage, brick, painted metal, wood, posters) — noise driven, used
  for occluders and backgrounds, so that an occluder never looks like a
  garment yet shares the garments' colour distribution (a model cannot tell
  occluder from person by colour alone).
"""

from __future__ import annotations

import numpy as np

# Clothing pattern codes.
SOLID, HSTRIPES, VSTRIPES, CHECKS = 0, 1, 2, 3
PATTERN_NAMES = ("solid", "hstripes", "vstripes", "checks")

# Occluder texture codes.
FOLIAGE, BRICK, METAL, WOOD, POSTER = 0, 1, 2, 3, 4
OCCLUDER_NAMES = ("foliage", "brick", "metal", "wood", "poster")


def col(c: np.ndarray) -> np.ndarray:
    """Per-image colours ``[n, 3]`` -> ``[n, 1, 1, 3]`` for broadcasting over pixels."""
    return c[:, None, None, :]


def per_image(a: np.ndarray) -> np.ndarray:
    """Per-image scalars ``[n]`` -> ``[n, 1, 1]`` for broadcasting over pixels."""
    return np.asarray(a, dtype=np.float32)[:, None, None]


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] (same shape ``S``) -> RGB float32 ``S + (3,)``."""
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def value_noise(rng: np.random.Generator, n: int, height: int, width: int,
                cells: tuple[int, int], octaves: int = 3) -> np.ndarray:
    """Smooth multi-octave value noise, float32 ``[n, height, width]`` in [0, 1].

    ``cells`` is the (rows, cols) lattice of the coarsest octave; each further
    octave doubles it with half the amplitude.
    """
    out = np.zeros((n, height, width), np.float32)
    total = 0.0
    for k in range(octaves):
        cy, cx = cells[0] * 2**k, cells[1] * 2**k
        grid = rng.random((n, cy + 1, cx + 1), dtype=np.float32)
        ys = np.linspace(0, cy, height, endpoint=False, dtype=np.float32)
        xs = np.linspace(0, cx, width, endpoint=False, dtype=np.float32)
        y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
        fy, fx = ys - y0, xs - x0
        fy = (fy * fy * (3 - 2 * fy))[None, :, None]  # smoothstep: no lattice creases
        fx = (fx * fx * (3 - 2 * fx))[None, None, :]
        g00 = grid[:, y0][:, :, x0]
        g01 = grid[:, y0][:, :, x0 + 1]
        g10 = grid[:, y0 + 1][:, :, x0]
        g11 = grid[:, y0 + 1][:, :, x0 + 1]
        top = g00 + (g01 - g00) * fx
        bottom = g10 + (g11 - g10) * fx
        amp = 0.5**k
        out += amp * (top + (bottom - top) * fy)
        total += amp
    return out / total


def clothing_pattern(kind: np.ndarray, u: np.ndarray, v: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Which of a garment's two colours each pixel takes, bool ``[n, H, W]``.

    ``kind`` [n] pattern code, ``u``/``v`` garment-relative pixel coordinates
    (they move with the body), ``period`` [n] stripe/check period in pixels.
    """
    p = per_image(period)
    a = np.floor(u / p).astype(np.int64)
    b = np.floor(v / p).astype(np.int64)
    k = kind[:, None, None]
    return np.where(k == HSTRIPES, b % 2 == 1,
                    np.where(k == VSTRIPES, a % 2 == 1,
                             np.where(k == CHECKS, (a + b) % 2 == 1, False)))


def occluder_texture(rng: np.random.Generator, kind: np.ndarray, base: np.ndarray,
                     xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Clutter textures of the occluding objects, float32 ``[n, H, W, 3]``.

    ``kind`` [n] occluder code, ``base`` [n, 3] the object's colour, ``xx``/``yy``
    pixel coordinates ``[1, H, W]``. Each texture mixes the base colour with
    noise-driven detail so the occluder has structure at several scales.
    """
    n = len(kind)
    h, w = xx.shape[-2:]
    fine = value_noise(rng, n, h, w, (16, 8), octaves=2)
    coarse = value_noise(rng, n, h, w, (4, 2), octaves=2)
    k = kind[:, None, None]
    b = col(base)

    # Foliage: leaf blobs of varied lightness, a darker second hue in the gaps.
    leaves = value_noise(rng, n, h, w, (24, 12), octaves=2)
    foliage = b * (0.45 + 0.9 * leaves[..., None]) * (0.75 + 0.5 * coarse[..., None])

    # Brick: staggered courses with mortar lines and per-brick tint.
    bh = 7.0
    bw = 14.0
    row = np.floor(yy / bh)
    shift = (row % 2) * (bw / 2)
    colx = np.floor((xx + shift) / bw)
    mortar = ((yy % bh) < 1.2) | (((xx + shift) % bw) < 1.2)
    tint = np.sin(row * 12.9898 + colx * 78.233) * 43758.5453
    tint = (tint - np.floor(tint)).astype(np.float32)
    brick = b * (0.7 + 0.45 * tint[..., None]) * (0.85 + 0.3 * fine[..., None])
    brick = np.where(mortar[..., None], np.float32(0.72) + 0.1 * fine[..., None], brick)

    # Painted metal (cars, bins): smooth vertical gradient, a specular band, grime.
    grad = 0.65 + 0.5 * np.clip(1.0 - yy / h, 0, 1)
    spec = np.exp(-(((yy / h) - 0.35 - 0.3 * coarse) ** 2) / 0.004)
    metal = b * (grad * (0.9 + 0.2 * coarse))[..., None] + 0.5 * spec[..., None]
    metal = metal * (0.92 + 0.16 * fine[..., None])

    # Wood (fences, crates): planks of random width with grain along them.
    plank = np.floor(xx / 9.0 + 0.6 * coarse)
    grain = np.sin(xx * 1.7 + 9.0 * fine + plank * 3.1) * 0.5 + 0.5
    seam = ((xx / 9.0 + 0.6 * coarse) % 1.0) < 0.1
    wood = b * (0.7 + 0.35 * grain[..., None]) * np.where(seam, 0.55, 1.0)[..., None]

    # Posters / signs: blocky random print over a paper colour.
    blocks = value_noise(rng, n, h, w, (10, 5), octaves=1)
    ink = hsv_to_rgb(rng.random(n), np.full(n, 0.7, np.float32), np.full(n, 0.35, np.float32))
    printed = (blocks > 0.62)[..., None]
    poster = np.where(printed, col(ink) * (0.8 + 0.4 * fine[..., None]), b * (0.9 + 0.2 * fine[..., None]))

    out = np.select([k[..., None] == FOLIAGE, k[..., None] == BRICK, k[..., None] == METAL, k[..., None] == WOOD],
                    [foliage, brick, metal, wood], poster)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def background_canvas(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One camera's scene: a wall over a floor, float32 ``[height, width, 3]``.

    The wall is brick, panels or foliage-like noise; the floor is paving with
    noise. Colours are muted so people stand out about as much as in a street.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * rng.uniform(0.45, 0.7)
    wall_hue, floor_hue = rng.random(2)
    wall = hsv_to_rgb(np.float32(wall_hue), np.float32(rng.uniform(0.1, 0.45)), np.float32(rng.uniform(0.4, 0.85)))
    floor = hsv_to_rgb(np.float32(floor_hue), np.float32(rng.uniform(0.05, 0.3)), np.float32(rng.uniform(0.3, 0.7)))
    noise = value_noise(rng, 1, height, width, (max(2, height // 16), max(2, width // 16)), octaves=3)[0]
    style = int(rng.integers(3))
    if style == 0:  # brick wall
        bh, bw = rng.uniform(5, 9), rng.uniform(10, 18)
        row = np.floor(yy / bh)
        shift = (row % 2) * bw / 2
        mortar = ((yy % bh) < 1) | (((xx + shift) % bw) < 1)
        wall_img = wall * (0.8 + 0.4 * noise[..., None]) * np.where(mortar, 0.7, 1.0)[..., None]
    elif style == 1:  # panels / shop windows
        pw = rng.uniform(14, 30)
        frame = ((xx % pw) < 2) | ((yy % (pw * 1.5)) < 2)
        wall_img = wall * (0.75 + 0.5 * noise[..., None]) * np.where(frame, 0.55, 1.0)[..., None]
    else:  # hedge / trees
        leaves = value_noise(rng, 1, height, width, (height // 5, width // 5), octaves=2)[0]
        wall_img = wall * (0.5 + 0.8 * leaves[..., None])
    tile = rng.uniform(8, 16)
    joints = ((xx % tile) < 1) | ((yy % (tile * 0.6)) < 1)
    floor_img = floor * (0.8 + 0.35 * noise[..., None]) * np.where(joints, 0.8, 1.0)[..., None]
    img = np.where((yy < horizon)[..., None], wall_img, floor_img)
    return np.clip(img, 0.0, 1.0).astype(np.float32)
