"""Naming schemes: how a person id and a camera id come from an image's path.

A dataset spec (``data_manifests/<name>.toml``) names one scheme in its
``naming`` field. A new dataset whose files follow a known scheme needs only a
spec file; a new way of naming files needs one more entry in :data:`SCHEMES`.

A scheme sees the image's path relative to its split folder, as a tuple of
path components (``("0002_c1s1_000451_03.jpg",)`` or ``("001", "001_01.tif")``),
and returns ``(pid, camid)``; ``camid`` is ``None`` when the names carry no
camera, in which case the spec gives each split a fixed camera id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Parsed = tuple[int, "int | None"]


@dataclass(frozen=True)
class NamingScheme:
    """One way of reading pid and camera from a path below a split folder.

    ``depth`` is the number of path components below the split folder
    (1: files directly in it; 2: ``<folder>/<file>``); the scan looks no deeper.
    ``gives_camera`` tells whether :meth:`parse` returns a camera id.
    """

    name: str
    depth: int
    gives_camera: bool
    example: str
    description: str
    _parse: Callable[[tuple[str, ...]], "Parsed | None"]

    def parse(self, parts: tuple[str, ...]) -> Parsed | None:
        """``(pid, camid)`` for a path given as components below the split folder, or None if it does not fit."""
        if len(parts) != self.depth:
            return None
        return self._parse(parts)


# Market-1501 "0002_c1s1_000451_03.jpg", DukeMTMC-reID "0001_c2_f0046182.jpg",
# CUHK03-NP "0001_c1_1.png"; junk images in Market are "-1_c1s1_...".
_MARKET = re.compile(r"^(-?\d+)_c(\d+)(?=[s_.])")
# Partial-REID "001_01.jpg" / "001_1.jpg", Partial-iLIDS "001.jpg".
_PID_PREFIX = re.compile(r"^(\d+)(?:[_-][^.]*)?\.[^.]+$")
_DIGITS = re.compile(r"^\d+$")
# CUHK03 as extracted from cuhk-03.mat: "0042_07.jpg" = pid 42, shot 7 of 10.
_PID_SHOT = re.compile(r"^(\d+)_(\d{2})\.[^.]+$")
#: CUHK03 stores a person's shots of one camera pair as 5 from the first camera, then 5 from the second.
CUHK03_SHOTS_PER_CAMERA = 5


def _parse_market(parts: tuple[str, ...]) -> Parsed | None:
    match = _MARKET.match(parts[-1])
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def _parse_pid_prefix(parts: tuple[str, ...]) -> Parsed | None:
    match = _PID_PREFIX.match(parts[-1])
    if match is None:
        return None
    return int(match.group(1)), None


def _parse_cuhk03_shot(parts: tuple[str, ...]) -> Parsed | None:
    match = _PID_SHOT.match(parts[-1])
    if match is None:
        return None
    shot = int(match.group(2))
    if shot >= 2 * CUHK03_SHOTS_PER_CAMERA:
        return None
    return int(match.group(1)), shot // CUHK03_SHOTS_PER_CAMERA + 1


def _parse_pid_folder(parts: tuple[str, ...]) -> Parsed | None:
    if _DIGITS.match(parts[0]) is None:
        return None
    return int(parts[0]), None


SCHEMES: dict[str, NamingScheme] = {
    scheme.name: scheme
    for scheme in (
        NamingScheme(
            name="market",
            depth=1,
            gives_camera=True,
            example="0002_c1s1_000451_03.jpg",
            description="<pid>_c<camera>... file names directly in the split folder (pid may be -1)",
            _parse=_parse_market,
        ),
        NamingScheme(
            name="pid_prefix",
            depth=1,
            gives_camera=False,
            example="001_01.jpg or 001.jpg",
            description="file names that start with the pid, optionally followed by _ or - and anything",
            _parse=_parse_pid_prefix,
        ),
        NamingScheme(
            name="cuhk03_shot",
            depth=1,
            gives_camera=True,
            example="0042_07.jpg",
            description="<pid>_<shot>: shots 00-04 are camera 1, 05-09 camera 2 (CUHK03's per-pair order)",
            _parse=_parse_cuhk03_shot,
        ),
        NamingScheme(
            name="pid_folder",
            depth=2,
            gives_camera=False,
            example="001/001_01.tif",
            description="one folder per pid (named by the number) holding that person's images",
            _parse=_parse_pid_folder,
        ),
    )
}


def get_scheme(name: str) -> NamingScheme:
    """The naming scheme called ``name``; ValueError listing the known ones otherwise."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown naming scheme {name!r}; known: {', '.join(sorted(SCHEMES))}") from None
