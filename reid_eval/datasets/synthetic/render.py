"""Rendering of synthetic people: identities, bodies, occluders, partial crops.

Coordinates: a body is laid out in units of its own height ``hp`` (pixels):
``v`` runs from 0 at the top of the head to 1 at the soles, ``u`` is the
horizontal offset from the body's axis. Garment patterns are laid out in
body-relative pixels so they move and scale with the person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reid_eval.datasets.synthetic import textures as tx

# Clothing colours: a fixed set of hues plus achromatic colours. A finite
# palette makes identities share individual garments (as in real data), so an
# occluder hiding the distinctive garment really removes information.
_HUES = np.array([0.0, 0.06, 0.12, 0.17, 0.3, 0.45, 0.55, 0.62, 0.72, 0.83, 0.92], np.float32)
_SKIN = np.array([[0.96, 0.80, 0.69], [0.87, 0.67, 0.53], [0.76, 0.57, 0.42],
                  [0.55, 0.38, 0.26], [0.36, 0.24, 0.16]], np.float32)
_HAIR = np.array([[0.08, 0.07, 0.06], [0.25, 0.16, 0.09], [0.45, 0.30, 0.15],
                  [0.80, 0.68, 0.42], [0.62, 0.62, 0.62]], np.float32)

TROUSERS, SHORTS, SKIRT = 0, 1, 2


@dataclass(frozen=True)
class Identities:
    """Appearance of ``n`` identities; every array has first dimension ``n``.

    Colours are float32 RGB ``[n, 3]`` in [0, 1]; patterns are codes of
    :mod:`textures`; periods and body factors are floats.
    """

    skin: np.ndarray
    hair: np.ndarray
    long_hair: np.ndarray
    top1: np.ndarray
    top2: np.ndarray
    top_pattern: np.ndarray
    top_period: np.ndarray  # fraction of body height
    long_sleeves: np.ndarray
    bottom1: np.ndarray
    bottom2: np.ndarray
    bottom_pattern: np.ndarray
    bottom_period: np.ndarray
    bottom_kind: np.ndarray
    shoes: np.ndarray
    height: np.ndarray  # relative body height, ~[0.88, 1.0]
    build: np.ndarray  # relative body width, ~[0.85, 1.15]

    def take(self, idx: np.ndarray) -> "Identities":
        """The identities at ``idx`` (int array), e.g. one row per image."""
        return Identities(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


def garment_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` clothing colours, float32 ``[n, 3]``: a palette hue or black/white/grey."""
    hue = _HUES[rng.integers(len(_HUES), size=n)] + rng.normal(0, 0.012, n).astype(np.float32)
    sat = rng.uniform(0.45, 0.95, n).astype(np.float32)
    val = rng.uniform(0.35, 0.95, n).astype(np.float32)
    achromatic = rng.random(n) < 0.25
    sat = np.where(achromatic, 0.04, sat).astype(np.float32)
    val = np.where(achromatic, rng.choice(np.array([0.12, 0.45, 0.9], np.float32), n), val).astype(np.float32)
    return tx.hsv_to_rgb(hue, sat, val)


def sample_identities(rng: np.random.Generator, n: int) -> Identities:
    """Draw ``n`` random identities."""
    top_pattern = rng.choice(4, size=n, p=[0.4, 0.25, 0.15, 0.2])
    bottom_pattern = rng.choice(4, size=n, p=[0.7, 0.1, 0.05, 0.15])
    return Identities(
        skin=_SKIN[rng.integers(len(_SKIN), size=n)],
        hair=_HAIR[rng.integers(len(_HAIR), size=n)],
        long_hair=rng.random(n) < 0.35,
        top1=garment_colours(rng, n),
        top2=garment_colours(rng, n),
        top_pattern=top_pattern,
        top_period=rng.uniform(0.03, 0.06, n).astype(np.float32),
        long_sleeves=rng.random(n) < 0.5,
        bottom1=garment_colours(rng, n),
        bottom2=garment_colours(rng, n),
        bottom_pattern=bottom_pattern,
        bottom_period=rng.uniform(0.035, 0.07, n).astype(np.float32),
        bottom_kind=rng.choice(3, size=n, p=[0.6, 0.2, 0.2]),
        shoes=garment_colours(rng, n) * 0.5,
        height=rng.uniform(0.88, 1.0, n).astype(np.float32),
        build=rng.uniform(0.85, 1.15, n).astype(np.float32),
    )


@dataclass(frozen=True)
class Scene:
    """Per-image viewing conditions, arrays of first dimension ``n``.

    ``gain`` [n, 3] camera colour gain, ``brightness`` [n], ``bg_offset`` [n]
    horizontal offset into the camera's background canvas (pixels),
    ``camera`` [n] 0-based index into the camera canvases.
    """

    camera: np.ndarray
    gain: np.ndarray
    brightness: np.ndarray
    bg_offset: np.ndarray


def render_people(rng: np.random.Generator, ids: Identities, scene: Scene, canvases: np.ndarray,
                  height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one whole-body person per image over its camera's background.

    ``ids`` has one row per image; ``canvases`` float32 ``[cams, height, Wc, 3]``.
    Returns the images float32 ``[n, height, width, 3]`` (before lighting),
    the body mask bool ``[n, height, width]`` and the body box rows
    ``[n, 2]`` (top, bottom) in pixels, float32.
    """
    n = len(scene.camera)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy[None], xx[None]

    # Background: a window into the camera's canvas (same scene, shifted view).
    cols = (np.arange(width)[None, :] + scene.bg_offset[:, None]).astype(np.int64)
    img = canvases[scene.camera[:, None, None], np.arange(height)[None, :, None], cols[:, None, :]]

    # Pose and placement jitter.
    hp = height * rng.uniform(0.86, 0.95, n).astype(np.float32) * ids.height
    top = (height - hp) * rng.uniform(0.15, 0.85, n).astype(np.float32)
    cx = width / 2 + rng.uniform(-0.07, 0.07, n).astype(np.float32) * width
    lean = rng.uniform(-0.06, 0.06, n).astype(np.float32)
    stride = rng.uniform(-1.0, 1.0, n).astype(np.float32)
    swing = rng.uniform(-1.0, 1.0, n).astype(np.float32)
    wf = ids.build * rng.uniform(0.93, 1.07, n).astype(np.float32)

    H, T, CX, L = tx.per_image(hp), tx.per_image(top), tx.per_image(cx), tx.per_image(lean)
    WF, ST, SW = tx.per_image(wf), tx.per_image(stride), tx.per_image(swing)
    v = (yy - T) / H
    u = (xx - CX - L * (yy - T)) / H
    pu, pv = u * H, v * H  # body-relative pixels for garment patterns

    body = np.zeros((n, height, width), bool)

    img = np.ascontiguousarray(img, dtype=np.float32)

    def paint(region: np.ndarray, colour: np.ndarray) -> None:
        np.copyto(img, colour, where=region[..., None], casting="same_kind")
        body[...] |= region

    def garment(c1, c2, kind, period, ou, ov) -> np.ndarray:
        second = tx.clothing_pattern(kind, pu - ou, pv - tx.per_image(ov), period * hp)
        return np.where(second[..., None], tx.col(c2), tx.col(c1))

    # Long hair sits behind the shoulders: painted first, the torso covers most of it.
    paint(ids.long_hair[:, None, None] & (np.abs(u) < 0.065) & (v > 0.05) & (v < 0.22), tx.col(ids.hair))

    # Legs: two slanted limbs from the hip to the feet, trousers / shorts / skirt.
    hip_v, foot_v = 0.5, 0.965
    t_leg = np.clip((v - hip_v) / (foot_v - hip_v), 0, 1)
    leg_shade = np.ones((n, height, width), np.float32)
    legs = np.zeros((n, height, width), bool)
    for side in (-1.0, 1.0):
        centre = side * 0.045 * WF + side * ST * 0.05 * t_leg
        d = np.abs(u - centre)
        leg = (d < 0.036 * WF) & (v >= hip_v) & (v <= foot_v)
        legs |= leg
        leg_shade = np.where(leg, 1.0 - 0.3 * (d / (0.036 * WF)) ** 2, leg_shade)
    pelvis = (v >= hip_v - 0.02) & (v < 0.58) & (np.abs(u) < 0.1 * WF)
    kind = ids.bottom_kind[:, None, None]
    skirt = (kind == SKIRT) & (v >= hip_v - 0.02) & (v < 0.72) & (np.abs(u) < WF * (0.1 + 0.06 * (v - 0.48) / 0.24))
    covered_to = np.where(kind == TROUSERS, foot_v - 0.03, np.where(kind == SHORTS, 0.68, 0.5))
    trousers = (legs & (v < covered_to)) | pelvis | skirt
    cloth_b = garment(ids.bottom1, ids.bottom2, ids.bottom_pattern, ids.bottom_period, 0.0, 0.5 * hp)
    paint(legs, tx.col(ids.skin) * leg_shade[..., None])
    paint(trousers, cloth_b * leg_shade[..., None])
    shoes = np.zeros((n, height, width), bool)
    for side in (-1.0, 1.0):
        centre = side * 0.045 * WF + side * ST * 0.05
        shoes |= (np.abs(u - centre - side * 0.008) < 0.042 * WF) & (v > foot_v - 0.03) & (v <= 1.0)
    paint(shoes, tx.col(ids.shoes))

    # Torso: a tapering trapezoid with rounded shoulders and cylindrical shading.
    t_tor = np.clip((v - 0.15) / 0.38, 0, 1)
    half = WF * (0.125 - 0.025 * t_tor)
    shoulder = np.clip((v - 0.145) / 0.035, 0, 1)
    half = half * np.sqrt(shoulder)
    torso = (v >= 0.145) & (v < 0.53) & (np.abs(u) < half)
    shade = 1.0 - 0.28 * (u / np.maximum(half, 1e-3)) ** 2
    cloth_t = garment(ids.top1, ids.top2, ids.top_pattern, ids.top_period, 0.0, 0.15 * hp)
    paint(torso, cloth_t * shade[..., None])

    # Arms: bands from the shoulders to the hands, swinging with the walk.
    sleeve_end = np.where(ids.long_sleeves[:, None, None], 0.47, 0.28)
    for side in (-1.0, 1.0):
        t_arm = np.clip((v - 0.16) / 0.34, 0, 1)
        centre = side * (0.14 * WF + 0.012 * t_arm) + side * SW * 0.035 * t_arm
        d = np.abs(u - centre)
        arm = (d < 0.024 * WF) & (v >= 0.16) & (v < 0.51)
        arm_shade = (1.0 - 0.3 * (d / (0.024 * WF)) ** 2)[..., None]
        paint(arm & (v >= sleeve_end), tx.col(ids.skin) * arm_shade)
        paint(arm & (v < sleeve_end), cloth_t * arm_shade)

    # Neck, head, hair.
    paint((np.abs(u) < 0.026) & (v >= 0.11) & (v < 0.16), tx.col(ids.skin) * 0.9)
    head = ((u / 0.05) ** 2 + ((v - 0.075) / 0.072) ** 2) <= 1.0
    face_shade = (1.0 - 0.25 * (u / 0.05) ** 2)[..., None]
    paint(head, tx.col(ids.skin) * face_shade)
    hair_line = 0.06 + 0.03 * ids.long_hair[:, None, None]
    paint(head & ((v < 0.045) | ((v < hair_line) & (np.abs(u) > 0.035))), tx.col(ids.hair))

    rows = np.stack([top, top + hp], axis=1).astype(np.float32)
    return img, body, rows


def occlude(rng: np.random.Generator, images: np.ndarray, body: np.ndarray, coverage: np.ndarray,
            xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put a cluttered object in front of each person, hiding ``coverage`` of the body.

    ``images`` float32 ``[n, H, W, 3]``, ``body`` bool ``[n, H, W]``,
    ``coverage`` [n] fraction in (0, 1) of the body's pixels to hide.
    The object enters from the bottom (cars, bins, bushes; most often), the
    left or the right (walls, poles, other clutter), with an edge that is
    straight, curved or ragged depending on the object. Its extent is set per
    image from the quantile of the body's pixels along the entry direction,
    so the hidden fraction is exact up to ties. Returns the occluded images
    and the occluder region bool ``[n, H, W]``.
    """
    n, h, w = body.shape
    side = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])  # 0 bottom, 1 left, 2 right
    angle = np.where(side == 0, np.pi / 2, np.where(side == 1, np.pi, 0.0)) + rng.uniform(-0.3, 0.3, n)
    kind = rng.integers(len(tx.OCCLUDER_NAMES), size=n)
    ca, sa = tx.per_image(np.cos(angle)), tx.per_image(np.sin(angle))
    cxo, cyo = w / 2, h / 2
    along = (xx - cxo) * ca + (yy - cyo) * sa
    across = -(xx - cxo) * sa + (yy - cyo) * ca
    # Edge shape: foliage is ragged, metal objects (cars, bins) are rounded, the rest straight-ish.
    ragged = (tx.value_noise(rng, n, h, w, (6, 3), octaves=2) - 0.5) * 14.0
    k = kind[:, None, None]
    edge = np.where(k == tx.FOLIAGE, ragged,
                    np.where(k == tx.METAL, -0.012 * across**2, 0.15 * ragged))
    depth = along + edge
    region = np.zeros((n, h, w), bool)
    for i in range(n):
        vals = depth[i][body[i]]
        thr = np.quantile(vals, 1.0 - coverage[i]) if vals.size else np.inf
        region[i] = depth[i] > thr
    base = garment_colours(rng, n)
    # Greenery is mostly green/olive; everything else takes any colour, like cars and posters.
    green = tx.hsv_to_rgb(rng.uniform(0.18, 0.35, n).astype(np.float32), rng.uniform(0.4, 0.8, n).astype(np.float32),
                          rng.uniform(0.3, 0.7, n).astype(np.float32))
    base = np.where((kind == tx.FOLIAGE)[:, None] & (rng.random(n) < 0.7)[:, None], green, base)
    tex = tx.occluder_texture(rng, kind, base, xx, yy)
    out = np.where(region[..., None], tex, images)
    return out.astype(np.float32), region


def light(rng: np.random.Generator, images: np.ndarray, scene: Scene) -> np.ndarray:
    """Camera colour gain, brightness and sensor noise; float32 -> uint8 ``[n, H, W, 3]``."""
    out = images * scene.gain[:, None, None, :] * scene.brightness[:, None, None, None]
    out = out + rng.normal(0.0, 0.02, out.shape).astype(np.float32)
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
