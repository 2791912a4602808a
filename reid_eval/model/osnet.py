"""OSNet trunks (Zhou et al., "Omni-Scale Feature Learning for Person
Re-Identification", ICCV 2019; "Learning Generalisable Omni-Scale
Representations", TPAMI 2021) as fully convolutional feature extractors.

Module and parameter names follow torchreid's model zoo, so a zoo state dict
loads into :class:`OSNetTrunk` with its own keys (``conv1.conv.weight``,
``conv2.0.conv2a.conv1.weight``, ``fc.0.weight``...); the identity classifier
is not part of the trunk.

Shapes: an input [B, 3, H, W] gives a conv5 map [B, C, H/16, W/16] (256×128 ->
16×8) with C = the last stage's width; :meth:`OSNetTrunk.embed` turns the map
into torchreid's test-time feature: global average pooling, then ``fc``
(Linear -> BatchNorm1d -> ReLU) where the variant has one.

Variants:

``plain`` (``osnet_x1_0`` ... ``osnet_x0_25``)
    every block sums four gated streams of 1, 2, 3, 4 light 3×3 convolutions;
    conv2 and conv3 end in a 1×1 convolution and 2×2 average pooling.
``ibn`` (``osnet_ibn_x1_0``)
    as plain, with instance norm in the stem (``conv1.bn``) and after each
    conv2 block's residual sum (``conv2.i.IN``).
``ain`` (``osnet_ain_x1_0``)
    streams held in a list (``conv2.t.layers.i``), the stage transitions
    outside the stages (``pool2``, ``pool3``), instance norm in the stem and,
    in the blocks the zoo marks, inside the residual branch instead of the
    last BatchNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Stage widths (stem, conv2, conv3, conv4 = conv5) per zoo width multiplier.
OSNET_WIDTHS: dict[str, tuple[int, int, int, int]] = {
    "x1_0": (64, 256, 384, 512),
    "x0_75": (48, 192, 288, 384),
    "x0_5": (32, 128, 192, 256),
    "x0_25": (16, 64, 96, 128),
}

#: Which blocks of the AIN variant put instance norm inside the residual branch (per stage, per block).
_AIN_INSIDE: tuple[tuple[bool, bool], ...] = ((True, True), (False, True), (True, False))

#: Dimension of torchreid's ``fc`` embedding (the test-time feature).
EMBEDDING_DIM = 512


@dataclass(frozen=True)
class OSNetSpec:
    """One zoo architecture: its stage widths and variant (``plain``, ``ibn`` or ``ain``)."""

    widths: tuple[int, int, int, int]
    variant: str = "plain"


#: Every OSNet trunk accepted as ``ModelConfig.backbone``.
OSNET_SPECS: dict[str, OSNetSpec] = {
    **{f"osnet_{w}": OSNetSpec(c) for w, c in OSNET_WIDTHS.items()},
    "osnet_ibn_x1_0": OSNetSpec(OSNET_WIDTHS["x1_0"], "ibn"),
    "osnet_ain_x1_0": OSNetSpec(OSNET_WIDTHS["x1_0"], "ain"),
}
OSNET_NAMES: tuple[str, ...] = tuple(OSNET_SPECS)


class ConvNormAct(nn.Module):
    """conv (no bias) -> norm -> optional ReLU; ``norm`` is ``"bn"``, ``"in"`` or ``None``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 norm: str | None = "bn", relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        if norm == "bn":
            self.bn: nn.Module | None = nn.BatchNorm2d(cout)
        elif norm == "in":
            self.bn = nn.InstanceNorm2d(cout, affine=True)
        else:
            self.bn = None
        self.act = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.act else x


class LightConv3x3(nn.Module):
    """Pointwise 1×1 (linear) then depthwise 3×3, BatchNorm, ReLU: [B, c, h, w] -> [B, c, h, w]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, groups=channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv2(self.conv1(x))))


class Stream(nn.Module):
    """``depth`` light convolutions in a row (the AIN variant's named stream)."""

    def __init__(self, channels: int, depth: int):
        super().__init__()
        self.layers = nn.Sequential(*(LightConv3x3(channels) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ChannelGate(nn.Module):
    """Unified aggregation gate: x · sigmoid(fc2(relu(fc1(mean over h, w of x)))), reduction 16."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(g)


class OSBlock(nn.Module):
    """Omni-scale residual block: [B, cin, h, w] -> [B, cout, h, w].

    Four streams of 1–4 light convolutions over a bottleneck of cout/4
    channels, each through one shared gate, summed, expanded by a linear 1×1;
    a linear 1×1 projects the shortcut when the widths differ.
    ``streams``: ``"named"`` (conv2a–conv2d, plain/IBN keys) or ``"list"``
    (conv2.0–3, AIN keys). ``instance_norm``: None, ``"after"`` (IBN: after
    the residual sum) or ``"inside"`` (AIN: replaces the expansion's BN).
    """

    def __init__(self, cin: int, cout: int, streams: str = "named", instance_norm: str | None = None):
        super().__init__()
        mid = cout // 4
        self.conv1 = ConvNormAct(cin, mid)
        if streams == "named":
            self.conv2a = LightConv3x3(mid)
            self.conv2b = nn.Sequential(*(LightConv3x3(mid) for _ in range(2)))
            self.conv2c = nn.Sequential(*(LightConv3x3(mid) for _ in range(3)))
            self.conv2d = nn.Sequential(*(LightConv3x3(mid) for _ in range(4)))
            self._streams = [self.conv2a, self.conv2b, self.conv2c, self.conv2d]
        else:
            self.conv2 = nn.ModuleList(Stream(mid, t) for t in range(1, 5))
            self._streams = list(self.conv2)
        self.gate = ChannelGate(mid)
        self.conv3 = ConvNormAct(mid, cout, norm=None if instance_norm == "inside" else "bn", relu=False)
        self.downsample = ConvNormAct(cin, cout, relu=False) if cin != cout else None
        self.instance_norm = instance_norm
        self.IN = nn.InstanceNorm2d(cout, affine=True) if instance_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = sum(self.gate(stream(x1)) for stream in self._streams)
        x3 = self.conv3(x2)
        if self.instance_norm == "inside":
            x3 = self.IN(x3)
        shortcut = self.downsample(x) if self.downsample is not None else x
        out = x3 + shortcut
        if self.instance_norm == "after":
            out = self.IN(out)
        return F.relu(out)


def _transition(channels: int) -> nn.Sequential:
    """1×1 convolution and 2×2 average pooling between stages (halves h and w, floor)."""
    return nn.Sequential(ConvNormAct(channels, channels), nn.AvgPool2d(2, stride=2))


class OSNetTrunk(nn.Module):
    """An OSNet without its classifier: :meth:`feature_map` and :meth:`embed`."""

    def __init__(self, name: str, embedding: bool = True):
        super().__init__()
        spec = OSNET_SPECS[name]
        c0, c1, c2, c3 = spec.widths
        self.spec = spec
        stem_in = spec.variant in ("ibn", "ain")
        self.conv1 = ConvNormAct(3, c0, 7, stride=2, padding=3, norm="in" if stem_in else "bn")
        widths = ((c0, c1), (c1, c2), (c2, c3))
        if spec.variant == "ain":
            stages = [
                nn.Sequential(*(OSBlock(cin if i == 0 else cout, cout, "list", "inside" if inside else None)
                                for i, inside in enumerate(_AIN_INSIDE[s])))
                for s, (cin, cout) in enumerate(widths)
            ]
            self.conv2, self.conv3, self.conv4 = stages
            self.pool2, self.pool3 = _transition(c1), _transition(c2)
            self._order = [self.conv2, self.pool2, self.conv3, self.pool3, self.conv4]
        else:
            stages = []
            for s, (cin, cout) in enumerate(widths):
                norm = "after" if spec.variant == "ibn" and s == 0 else None
                blocks: list[nn.Module] = [OSBlock(cin, cout, "named", norm), OSBlock(cout, cout, "named", norm)]
                if s < 2:
                    blocks.append(_transition(cout))
                stages.append(nn.Sequential(*blocks))
            self.conv2, self.conv3, self.conv4 = stages
            self._order = [self.conv2, self.conv3, self.conv4]
        self.conv5 = ConvNormAct(c3, c3)
        self.fc: nn.Sequential | None = None
        if embedding:
            self.fc = nn.Sequential(nn.Linear(c3, EMBEDDING_DIM), nn.BatchNorm1d(EMBEDDING_DIM), nn.ReLU())

    @staticmethod
    def width(name: str) -> int:
        """C: channels of the conv5 map of trunk ``name``."""
        return OSNET_SPECS[name].widths[3]

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalised images -> [B, C, h, w] conv5 map."""
        x = F.max_pool2d(self.conv1(images), 3, stride=2, padding=1)
        for stage in self._order:
            x = stage(x)
        return self.conv5(x)

    def embed(self, fmap: torch.Tensor) -> torch.Tensor:
        """torchreid's test-time feature of a [B, C, h, w] map: [B, 512] through ``fc``, or [B, C] without one."""
        v = fmap.mean(dim=(2, 3))
        return self.fc(v) if self.fc is not None else v


def osnet_map_size(height: int, width: int) -> tuple[int, int]:
    """conv5 map (h, w) for an input of ``height``×``width`` pixels: stride-2 stem and max pooling (ceil), two floor halvings."""
    h, w = (height - 1) // 2 + 1, (width - 1) // 2 + 1  # conv1 7×7, s2, p3
    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # max pool 3, s2, p1
    return h // 4, w // 4  # two 2×2 average poolings (floor each time; h // 2 // 2 == h // 4)
