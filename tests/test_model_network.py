"""The FPR network: geometry, last stride, pyramid pooling, foreground generator."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from reid_eval.model import ModelConfig, build_model, pyramid_grid, pyramid_pool



def test_paper_geometry_resnet50_384x128():
    config = ModelConfig()
    assert (config.backbone, config.input_size, config.pyramid_kernels, config.pyramid_stride) == ("resnet50", (384, 128), (2, 4, 6, 8), 2)
    assert config.num_locations() == 12 * 4 + 11 * 3 + 10 * 2 + 9 * 1 == 110 and config.feature_dim == 2048
    torch.manual_seed(0)
    model = build_model(config).eval()
    images = torch.randn(2, 3, 384, 128)
    with torch.no_grad():
        out = model(images)
        fmap = model.feature_map(images)
    assert fmap.shape == (2, 2048, 24, 8) and out.map_size == (24, 8)
    assert out.local.shape == (2, 110, 2048) and out.foreground.shape == (2, 110)
    assert out.foreground_logits.shape == (2, 110, 2) and out.global_features.shape == (2, 2048)
    assert out.grid == [(12, 4), (11, 3), (10, 2), (9, 1)]
    torch.testing.assert_close(out.global_features, fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(out.foreground, torch.softmax(out.foreground_logits, -1)[..., 1])
    assert torch.all((out.foreground > 0) & (out.foreground < 1))
    # the 1×1 convolution applied at every pyramid location
    w, b = model.foreground.weight.flatten(1), model.foreground.bias
    with torch.no_grad():
        torch.testing.assert_close(out.foreground_logits[1, 37], w @ out.local[1, 37] + b)
    # no pooling or classifier left in the trunk
    assert not hasattr(model.backbone, "fc") and not hasattr(model.backbone, "avgpool")


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_last_stride_is_one_in_layer4_first_block(backbone):
    with torch.device("meta"):
        model = build_model(ModelConfig(backbone=backbone))
    strides = [m.stride for m in model.backbone.layer4.modules() if isinstance(m, nn.Conv2d)]
    assert all(s == (1, 1) for s in strides)
    with torch.device("meta"):
        two = build_model(ModelConfig(backbone=backbone, last_stride=2))
    assert (2, 2) in [m.stride for m in two.backbone.layer4[0].modules() if isinstance(m, nn.Conv2d)]


def test_pyramid_pool_hand_built_map():
    fmap = torch.arange(5 * 3, dtype=torch.float32).reshape(1, 1, 5, 3)  # rows [0 1 2] [3 4 5] ... [12 13 14]
    local, grid = pyramid_pool(fmap, (2, 4, 6), 2)
    # kernel 2: windows at rows 0-1 / 2-3, cols 0-1 -> max 4, 10; kernel 4 needs w >= 4: skipped
    assert grid == [(2, 1), (0, 0), (0, 0)]
    assert local.shape == (1, 2, 1) and local[0, :, 0].tolist() == [4.0, 10.0]
    avg, _ = pyramid_pool(fmap, (2,), 2, mode="avg")
    assert avg[0, :, 0].tolist() == [(0 + 1 + 3 + 4) / 4, (6 + 7 + 9 + 10) / 4]
    with pytest.raises(ValueError, match="smaller than every pyramid kernel"):
        pyramid_pool(fmap, (4, 6), 2)
    with pytest.raises(ValueError, match="mode"):
        pyramid_pool(fmap, (2,), 2, mode="median")


def test_pyramid_order_matches_the_authors_concatenation():
    torch.manual_seed(0)
    fmap = torch.randn(2, 7, 24, 8)
    local, grid = pyramid_pool(fmap, (2, 4, 6, 8), 2)
    # fast-reid's OcclusionUnit: MaxPool2d(k, 2) per level, flattened, concatenated on the location axis
    ref = torch.cat([nn.MaxPool2d(k, 2)(fmap).flatten(2) for k in (2, 4, 6, 8)], dim=2).transpose(1, 2)
    assert torch.equal(local, ref) and sum(h * w for h, w in grid) == 110


@functools.lru_cache(maxsize=None)
def _meta_model(backbone: str, last_stride: int):
    with torch.device("meta"):
        return build_model(ModelConfig(backbone=backbone, last_stride=last_stride)).eval()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 700), st.integers(1, 300), st.sampled_from(["resnet18", "resnet50"]), st.sampled_from([1, 2]))
def test_config_predicts_map_and_locations(height, width, backbone, last_stride):
    config = ModelConfig(backbone=backbone, last_stride=last_stride)
    with torch.device("meta"):
        fmap = _meta_model(backbone, last_stride).feature_map(torch.empty(1, 3, height, width))
    assert tuple(fmap.shape[2:]) == config.map_size(height, width)
    grid = pyramid_grid(fmap.shape[2:], config.pyramid_kernels, config.pyramid_stride)
    assert config.num_locations(height, width) == sum(h * w for h, w in grid)
    if config.map_size(height, width)[0] >= 2 and config.map_size(height, width)[1] >= 2:
        local, got = pyramid_pool(fmap, config.pyramid_kernels, config.pyramid_stride)
        assert got == grid and local.shape[1] == config.num_locations(height, width)


def test_small_maps_skip_levels_instead_of_crashing():
    config = ModelConfig(backbone="resnet18", input_size=(64, 32))
    model = build_model(config).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 32))
    assert out.map_size == (4, 2) and out.grid == [(2, 1), (0, 0), (0, 0), (0, 0)] and out.local.shape == (1, 2, 512)


def test_without_foreground_head_every_weight_is_one():
    model = build_model(ModelConfig(backbone="resnet18", input_size=(64, 32), foreground_head=False)).eval()
    assert model.foreground is None and not any(k.startswith("foreground") for k in model.state_dict())
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 32))
    assert out.foreground_logits is None and torch.equal(out.foreground, torch.ones(1, 2))


def test_config_round_trip_and_validation():
    config = ModelConfig(backbone="resnet34", input_size=(256, 128), pyramid_kernels=(2, 4))
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig(input_size=[384, 128]) == ModelConfig()
    for bad in ({"backbone": "vgg16"}, {"last_stride": 3}, {"pyramid_kernels": ()}, {"input_size": (0, 4)}):
        with pytest.raises(ValueError):
            ModelConfig(**bad)
    with pytest.raises(ValueError, match="colour"):
        ModelConfig.from_dict({**config.to_dict(), "colour": 1})
    assert np.prod(ModelConfig().input_size) == 384 * 128


def test_ibn_a_trunk_splits_bn1_in_layers_1_to_3_only():
    with torch.device("meta"):
        model = build_model(ModelConfig(backbone="resnet50_ibn_a"))
    state = model.backbone.state_dict()
    # planes 64 in layer1: 32 instance-normalised channels, 32 batch-normalised
    assert state["layer1.0.bn1.IN.weight"].shape == (32,) and state["layer1.0.bn1.BN.running_var"].shape == (32,)
    assert "layer1.0.bn1.IN.running_mean" not in state  # InstanceNorm2d(affine=True) keeps no statistics
    assert "layer3.5.bn1.IN.bias" in state and "layer1.0.bn1.weight" not in state
    assert "layer4.0.bn1.weight" in state and not any(k.startswith("layer4") and ".IN." in k for k in state)
    assert "bn1.weight" in state and not any(".bn2.IN" in k or ".bn3.IN" in k for k in state)
    with torch.device("meta"):
        deep = build_model(ModelConfig(backbone="resnet101_ibn_a", foreground_head=False)).backbone.state_dict()
    assert "layer3.22.bn1.IN.weight" in deep and "layer3.23.conv1.weight" not in deep


def test_ibn_norm_is_instance_norm_then_batch_norm_on_the_halves():
    model = build_model(ModelConfig(backbone="resnet50_ibn_a", input_size=(64, 32))).eval()
    ibn = model.backbone.layer2[0].bn1  # 128 channels
    with torch.no_grad():
        ibn.IN.weight.uniform_(0.5, 1.5), ibn.IN.bias.uniform_(-1, 1)
        ibn.BN.running_mean.uniform_(-1, 1), ibn.BN.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 128, 5, 3, dtype=torch.float64)
    ibn = ibn.double()
    a, b = x[:, :64], x[:, 64:]
    mean, var = a.mean(dim=(2, 3), keepdim=True), a.var(dim=(2, 3), unbiased=False, keepdim=True)
    ref_a = (a - mean) / torch.sqrt(var + 1e-5) * ibn.IN.weight.view(1, -1, 1, 1) + ibn.IN.bias.view(1, -1, 1, 1)
    ref_b = (b - ibn.BN.running_mean.view(1, -1, 1, 1)) / torch.sqrt(ibn.BN.running_var.view(1, -1, 1, 1) + 1e-5)
    ref_b = ref_b * ibn.BN.weight.view(1, -1, 1, 1) + ibn.BN.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(ibn(x), torch.cat([ref_a, ref_b], 1))


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 500), st.integers(3, 200), st.sampled_from([1, 2]))
def test_fast_reid_stem_map_size(height, width, last_stride):
    config = ModelConfig(backbone="resnet18", last_stride=last_stride, stem="fast-reid")
    with torch.device("meta"):
        fmap = _meta_model_stem("fast-reid", last_stride).feature_map(torch.empty(1, 3, height, width))
    assert tuple(fmap.shape[2:]) == config.map_size(height, width)


@functools.lru_cache(maxsize=None)
def _meta_model_stem(stem: str, last_stride: int):
    with torch.device("meta"):
        return build_model(ModelConfig(backbone="resnet18", last_stride=last_stride, stem=stem)).eval()


def test_fast_reid_stem_shifts_the_windows():
    """padding 0 + ceil mode: window i covers input rows 2i..2i+2 (torchvision's: 2i-1..2i+1)."""
    x = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1).expand(1, 1, 8, 3)
    assert _meta_model_stem("fast-reid", 1).backbone.maxpool(x)[0, 0, :, 0].tolist() == [2.0, 4.0, 6.0, 7.0]
    assert _meta_model_stem("torchvision", 1).backbone.maxpool(x)[0, 0, :, 0].tolist() == [1.0, 3.0, 5.0, 7.0]


def test_occlusion_weighted_global_feature_by_hand():
    """fast-reid's test-time global feature: first level weighted by L1-normalised foreground, then the BN neck."""
    config = ModelConfig(backbone="resnet18", input_size=(128, 64), global_feature="occlusion-weighted")
    torch.manual_seed(3)
    model = build_model(config).eval()
    neck = model.global_neck
    with torch.no_grad():
        neck.weight.uniform_(0.5, 1.5), neck.bias.uniform_(-1, 1)
        neck.running_mean.uniform_(-1, 1), neck.running_var.uniform_(0.5, 2)
        out = model(torch.randn(2, 3, 128, 64))
    local, fg = out.local.double(), out.foreground.double()
    n0 = out.grid[0][0] * out.grid[0][1]  # 4×2 = 8 locations of kernel 2
    pooled = (fg[:, :n0, None] * local[:, :n0]).sum(1) / fg[:, :n0].sum(1, keepdim=True)
    ref = (pooled - neck.running_mean.double()) / torch.sqrt(neck.running_var.double() + neck.eps) * neck.weight.double() + neck.bias.double()
    torch.testing.assert_close(out.global_features.double(), ref, rtol=1e-5, atol=1e-5)
    # the neck is frozen: training leaves it (and DDP's gradient reduction) alone
    assert not any(p.requires_grad for p in neck.parameters())
    model.train()
    before = neck.running_mean.clone()
    model(torch.randn(2, 3, 128, 64))
    assert torch.equal(before, neck.running_mean)
    assert sorted(k for k in model.state_dict() if k.startswith("global_neck")) == [
        "global_neck.bias", "global_neck.num_batches_tracked", "global_neck.running_mean", "global_neck.running_var", "global_neck.weight"]


def test_new_config_fields_validate_and_default_for_old_checkpoints():
    for bad in ({"stem": "caffe"}, {"global_feature": "max"}, {"interpolation": "nearest"},
                {"global_feature": "occlusion-weighted", "foreground_head": False}, {"backbone": "resnet18_ibn_a"}):
        with pytest.raises(ValueError):
            ModelConfig(**bad)
    old = {k: v for k, v in ModelConfig().to_dict().items() if k not in ("stem", "global_feature", "interpolation")}
    assert ModelConfig.from_dict(old) == ModelConfig()
    assert (ModelConfig().stem, ModelConfig().global_feature, ModelConfig().interpolation) == ("torchvision", "average", "bilinear")


def test_ibn_a_model_trains_its_instance_norms():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet50_ibn_a", input_size=(64, 32))).train()
    out = model(torch.randn(2, 3, 64, 32))
    (out.local.square().mean() + out.foreground_logits.square().mean()).backward()
    grad = model.backbone.layer1[0].bn1.IN.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert model.backbone.layer3[5].bn1.BN.weight.grad.abs().sum() > 0
