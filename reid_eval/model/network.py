"""The FPR network: a fully convolutional torchvision ResNet, pyramid pooling
and the foreground probability generator (paper §3.1, Fig. 2).

Shapes use B images, C = d channels, an h×w feature map and N pyramid
locations. The pyramid follows the authors' released code (fast-reid
``projects/PartialReID``): max pooling with kernels 2, 4, 6, 8 and stride 2, the
levels concatenated in kernel order, each level's locations in row-major order.

Trunks: torchvision's ResNet family, IBN-a ResNets (Pan et al., ECCV 2018)
as fast-reid and the IBN-Net authors build them: in layer1–layer3 every
bottleneck's first norm ``bn1`` is an InstanceNorm2d(affine) over the first
half of its channels beside a BatchNorm2d over the rest (state keys
``bn1.IN.*`` / ``bn1.BN.*``; the stem and layer4 are plain), and torchreid's
OSNets (:mod:`reid_eval.model.osnet`: output stride 16, its conv5 map gives
the locations and its ``fc`` embedding can give the global feature).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from reid_eval.model.osnet import EMBEDDING_DIM, OSNET_NAMES, OSNetTrunk, osnet_map_size

#: ImageNet statistics used by every torchvision ResNet (RGB, images in [0, 1]).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: torchvision ResNet family constructors accepted as ``ModelConfig.backbone``.
RESNET_NAMES: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)

#: IBN-a ResNets: torchvision's ResNet-50/101 with layer1–3's ``bn1`` split into IN + BN.
IBN_NAMES: tuple[str, ...] = ("resnet50_ibn_a", "resnet101_ibn_a")

#: Every trunk accepted as ``ModelConfig.backbone``.
BACKBONE_NAMES: tuple[str, ...] = RESNET_NAMES + IBN_NAMES + OSNET_NAMES

#: Stem max pooling: torchvision's ``MaxPool2d(3, 2, padding=1)``, or fast-reid's
#: ``MaxPool2d(3, 2, padding=0, ceil_mode=True)`` (fast-reid since 2020). The map
#: size is the same for even inputs but every window is shifted by one pixel.
STEMS: tuple[str, ...] = ("torchvision", "fast-reid")

#: Global feature: the feature map's average, fast-reid PartialReID's
#: test-time feature (finest pyramid level averaged with L1-normalised
#: foreground probabilities, then its BN neck ``bnneck_occ`` in eval mode), or
#: torchreid's OSNet test-time feature (the map's average through its ``fc``
#: embedding, 512-d).
GLOBAL_FEATURES: tuple[str, ...] = ("average", "occlusion-weighted", "embedding")

#: Resampling filter of the resize to the model's input (PIL filters).
INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and input geometry; the defaults are the paper's.

    ``input_size`` is (height, width) in pixels for ``--resize fixed``; with
    ``--resize keep-aspect`` the width is kept and the height follows the image.
    ``last_stride`` 1 makes layer4 keep layer3's resolution (output stride 16),
    so a 384×128 input gives a 24×8 map and 110 pyramid locations.
    ``stem`` is one of :data:`STEMS`, ``global_feature`` one of
    :data:`GLOBAL_FEATURES` ("occlusion-weighted" needs the foreground head),
    ``interpolation`` (one of :data:`INTERPOLATIONS`) the resize filter the
    model was trained with, which extraction and training use.
    """

    backbone: str = "resnet50"
    input_size: tuple[int, int] = (384, 128)
    last_stride: int = 1
    pyramid_kernels: tuple[int, ...] = (2, 4, 6, 8)
    pyramid_stride: int = 2
    foreground_head: bool = True
    stem: str = "torchvision"
    global_feature: str = "average"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        # Accept lists (from JSON / checkpoints) and store tuples so configs compare equal.
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "pyramid_kernels", tuple(int(v) for v in self.pyramid_kernels))
        if self.backbone not in BACKBONE_NAMES:
            raise ValueError(f"backbone {self.backbone!r} is not a known ResNet trunk; choose one of {', '.join(BACKBONE_NAMES)}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (height, width) in pixels, got {self.input_size}")
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}")
        if not self.pyramid_kernels or min(self.pyramid_kernels) < 1 or self.pyramid_stride < 1:
            raise ValueError(f"pyramid kernels and stride must be positive, got {self.pyramid_kernels} / {self.pyramid_stride}")
        for name, value, allowed in (
            ("stem", self.stem, STEMS),
            ("global_feature", self.global_feature, GLOBAL_FEATURES),
            ("interpolation", self.interpolation, INTERPOLATIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.global_feature == "occlusion-weighted" and not self.foreground_head:
            raise ValueError("the occlusion-weighted global feature needs the foreground head")
        if self.is_osnet and (self.last_stride != 1 or self.stem != "torchvision"):
            raise ValueError(f"{self.backbone} has a fixed output stride of 16 and its own stem: use last_stride 1 and stem torchvision")
        if self.global_feature == "embedding" and not self.is_osnet:
            raise ValueError(f"the embedding global feature is torchreid's OSNet fc layer; {self.backbone} has none")

    @property
    def is_osnet(self) -> bool:
        """Whether the trunk is one of torchreid's OSNets."""
        return self.backbone in OSNET_NAMES

    @property
    def output_stride(self) -> int:
        """Pixels of input per feature-map cell (16 with last stride 1, else 32; OSNet: 16)."""
        return 16 if self.last_stride == 1 else 32

    @property
    def feature_dim(self) -> int:
        """d: channels of the final feature map (512 for resnet18/34, the conv5 width for OSNet, else 2048)."""
        if self.is_osnet:
            return OSNetTrunk.width(self.backbone)
        return 512 if self.backbone in ("resnet18", "resnet34") else 2048

    @property
    def global_dim(self) -> int:
        """Dimension of the global feature: 512 for the OSNet embedding, else d."""
        return EMBEDDING_DIM if self.global_feature == "embedding" else self.feature_dim

    @property
    def min_input_height(self) -> int:
        """Smallest input side whose map fits the smallest pyramid kernel."""
        return self.output_stride * min(self.pyramid_kernels)

    def map_size(self, height: int, width: int) -> tuple[int, int]:
        """Feature-map (h, w) for an input of ``height``×``width`` pixels (ceil rounding of the strided convs)."""
        if self.is_osnet:
            return osnet_map_size(height, width)
        h, w = (height - 1) // 2 + 1, (width - 1) // 2 + 1  # conv1 (7×7, s2, p3)
        if self.stem == "torchvision":  # maxpool 3, s2, p1
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        else:  # maxpool 3, s2, p0, ceil: ceil((n - 3) / 2) + 1
            h, w = max(h - 2, -1) // 2 + 1, max(w - 2, -1) // 2 + 1
        # layer2 (s2), layer3 (s2), layer4 (s = last_stride)
        for s in (2, 2, self.last_stride):
            h, w = (h - 1) // s + 1, (w - 1) // s + 1
        return h, w

    def num_locations(self, height: int | None = None, width: int | None = None) -> int:
        """N: pyramid locations for an input (default: ``input_size``)."""
        if height is None or width is None:
            height, width = self.input_size
        return sum(h * w for h, w in pyramid_grid(self.map_size(height, width), self.pyramid_kernels, self.pyramid_stride))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        d["pyramid_kernels"] = list(self.pyramid_kernels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)


@dataclass
class PyramidOutput:
    """What the network gives for a batch of B images of one size.

    local: [B, N, d] float32 pyramid features (not normalised; FPR normalises).
    foreground: [B, N] float32, probability that a location is foreground
        (softmax channel 1); all ones when the config has no foreground head.
    foreground_logits: [B, N, 2] float32, or None without a foreground head.
    global_features: [B, D] float32: the feature map's average (D = d), or
        (config ``global_feature="occlusion-weighted"``) the first pyramid
        level's locations weighted by their L1-normalised foreground
        probabilities, through the stored BN neck, or (``"embedding"``) the
        OSNet ``fc`` embedding of the map's average (D = 512).
    grid: one (h, w) per configured pyramid kernel, (0, 0) for a level that does
        not fit the map; N = Σ h·w.
    map_size: (h, w) of the backbone's feature map.
    """

    local: torch.Tensor
    foreground: torch.Tensor
    foreground_logits: torch.Tensor | None
    global_features: torch.Tensor
    grid: list[tuple[int, int]] = field(default_factory=list)
    map_size: tuple[int, int] = (0, 0)


def pyramid_grid(map_size: Sequence[int], kernels: Sequence[int], stride: int) -> list[tuple[int, int]]:
    """(h, w) of every pyramid level for a map of ``map_size``; (0, 0) where the kernel does not fit."""
    h, w = int(map_size[0]), int(map_size[1])
    out = []
    for k in kernels:
        if k > h or k > w:
            out.append((0, 0))
        else:
            out.append(((h - k) // stride + 1, (w - k) // stride + 1))
    return out


def pyramid_pool(
    feature_map: torch.Tensor, kernels: Sequence[int], stride: int, mode: str = "max"
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Spatial pyramid pooling of a [B, C, h, w] map into [B, N, C] locations.

    Each kernel k gives a level of ((h−k)//stride+1)×((w−k)//stride+1) cells
    (no padding); levels follow ``kernels`` order, cells row-major. A level
    whose kernel is larger than the map is skipped (its grid entry is (0, 0)).
    ``mode="avg"`` averages instead of taking the maximum (training pools a
    person mask with it to get each location's mean mask value, paper Eq. 7).
    Raises ValueError when no level fits.
    """
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
    if feature_map.dim() != 4:
        raise ValueError(f"feature_map must be [B, C, h, w], got shape {tuple(feature_map.shape)}")
    grid = pyramid_grid(feature_map.shape[-2:], kernels, stride)
    pool = F.max_pool2d if mode == "max" else F.avg_pool2d
    # Channels-last pooling is vectorised over channels: ~6x faster on a CPU for a 24x8x2048 map.
    fmap = feature_map.contiguous(memory_format=torch.channels_last)
    levels = [pool(fmap, kernel_size=k, stride=stride).flatten(2) for k, g in zip(kernels, grid) if g != (0, 0)]
    if not levels:
        raise ValueError(
            f"feature map {tuple(feature_map.shape[-2:])} is smaller than every pyramid kernel {tuple(kernels)}; use a larger input"
        )
    return torch.cat(levels, dim=2).transpose(1, 2), grid


class InstanceBatchNorm2d(nn.Module):
    """IBN-a's split norm over ``channels``: InstanceNorm2d(affine) on the first
    ``channels // 2``, BatchNorm2d on the rest; [B, C, h, w] -> [B, C, h, w]."""

    def __init__(self, channels: int):
        super().__init__()
        self.half = channels // 2
        # Attribute names are the state-dict names fast-reid and IBN-Net use.
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, rest = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(rest.contiguous())], dim=1)


def _resnet_trunk(backbone: str) -> nn.Module:
    if backbone in IBN_NAMES:
        resnet = getattr(torchvision.models, backbone.removesuffix("_ibn_a"))(weights=None)
        for layer in (resnet.layer1, resnet.layer2, resnet.layer3):
            for block in layer:
                block.bn1 = InstanceBatchNorm2d(block.bn1.num_features)
        return resnet
    return getattr(torchvision.models, backbone)(weights=None)


def _set_last_stride(resnet: nn.Module, stride: int) -> None:
    # layer4's first block is the only strided one: the 3×3 (Bottleneck conv2 /
    # BasicBlock conv1) and the 1×1 downsample carry the stride.
    for module in resnet.layer4[0].modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (stride, stride)


def _trunk(config: ModelConfig) -> nn.Module:
    """The configured trunk without pooling or classifier: an :class:`OSNetTrunk` or a torchvision ResNet."""
    if config.is_osnet:
        return OSNetTrunk(config.backbone, embedding=config.global_feature == "embedding")
    resnet = _resnet_trunk(config.backbone)
    _set_last_stride(resnet, config.last_stride)
    if config.stem == "fast-reid":
        resnet.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    del resnet.avgpool, resnet.fc
    return resnet


class FPRNet(nn.Module):
    """ResNet or OSNet trunk (``backbone.*``), pyramid pooling, foreground
    generator (``foreground.*``) and, for the occlusion-weighted global
    feature, its BN neck (``global_neck.*``)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = _trunk(config)
        # paper §3.1: a 1×1 convolution to two channels (background, foreground) and a softmax
        self.foreground = nn.Conv2d(config.feature_dim, 2, kernel_size=1) if config.foreground_head else None
        self.global_neck: nn.BatchNorm1d | None = None
        if config.global_feature == "occlusion-weighted":
            # Always applied with its stored statistics (fast-reid's test-time
            # use); frozen, so training and DDP leave it alone.
            self.global_neck = nn.BatchNorm1d(config.feature_dim).requires_grad_(False)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalised images -> [B, d, h, w] feature map."""
        if isinstance(self.backbone, OSNetTrunk):
            return self.backbone.feature_map(images)
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, images: torch.Tensor) -> PyramidOutput:
        fmap = self.feature_map(images)
        local, grid = pyramid_pool(fmap, self.config.pyramid_kernels, self.config.pyramid_stride, "max")
        if self.foreground is not None:
            # The 1×1 convolution at every pyramid location, as a matmul over channels.
            logits = F.linear(local, self.foreground.weight.flatten(1), self.foreground.bias)
            foreground = torch.softmax(logits, dim=-1)[..., 1]
        else:
            logits = None
            foreground = local.new_ones(local.shape[:2])
        if self.global_neck is not None:
            global_features = self._occlusion_weighted(local, foreground, grid)
        elif isinstance(self.backbone, OSNetTrunk):
            global_features = self.backbone.embed(fmap)
        else:
            global_features = fmap.mean(dim=(2, 3))
        return PyramidOutput(
            local=local,
            foreground=foreground,
            foreground_logits=logits,
            global_features=global_features,
            grid=grid,
            map_size=(int(fmap.shape[2]), int(fmap.shape[3])),
        )


    def _occlusion_weighted(self, local: torch.Tensor, foreground: torch.Tensor, grid: list[tuple[int, int]]) -> torch.Tensor:
        """fast-reid's OcclusionUnit global feature: [B, N, d] locations, [B, N] probabilities -> [B, d]."""
        first = next(h * w for h, w in grid if h * w > 0)  # the first level that fits the map
        weights = F.normalize(foreground[:, :first], p=1, dim=1)
        pooled = torch.bmm(weights.unsqueeze(1), local[:, :first]).squeeze(1)
        neck = self.global_neck
        assert neck is not None
        return F.batch_norm(pooled, neck.running_mean, neck.running_var, neck.weight, neck.bias, False, 0.0, neck.eps)


def build_model(config: ModelConfig | None = None) -> FPRNet:
    """A randomly initialised :class:`FPRNet` (torchvision's init; never downloads weights)."""
    return FPRNet(config or ModelConfig())
