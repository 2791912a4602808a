"""Learning-rate schedule values, and mixed precision keeping the FPR solve in float32."""

from __future__ import annotations

import math

import pytest
import torch

import reid_eval.training.trainer as trainer_module
from reid_eval.errors import ReidEvalError
from reid_eval.model import ModelConfig, build_model
from reid_eval.training import LRSchedule, TrainConfig, train, training_step


def test_warmup_then_cosine_exact_values():
    s = LRSchedule("cosine", warmup_epochs=2)
    f = lambda epoch, step: s.factor(epoch, step, steps_per_epoch=4, epochs=10)  # noqa: E731
    assert f(0, 0) == pytest.approx(0.1)
    assert f(1, 0) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the warmup
    assert f(2, 0) == pytest.approx(1.0)
    assert f(6, 0) == pytest.approx(0.5)  # halfway through the cosine (epochs 2..10)
    assert f(9, 3) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7.75 / 8)))
    values = [f(e, k) for e in range(2, 10) for k in range(4)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing after the warmup


def test_step_and_constant_schedules():
    s = LRSchedule("step", warmup_epochs=0, milestones=(3, 5))
    assert [s.factor(e, 1, 10, 8) for e in range(8)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01, 0.01, 0.01])
    c = LRSchedule("constant", warmup_epochs=1)
    assert [c.factor(e, 0, 2, 4) for e in range(4)] == pytest.approx([0.1, 1, 1, 1])
    with pytest.raises(ValueError, match="--lr-milestones"):
        LRSchedule("step")
    with pytest.raises(ValueError, match="--lr-schedule"):
        LRSchedule("linear")
    with pytest.raises(ValueError, match="--warmup-epochs 10 .* --epochs 10"):
        LRSchedule().check(10)
    with pytest.raises(ValueError, match="--lr-milestones 12"):
        LRSchedule("step", 0, (4, 12)).check(12)


def test_amp_is_an_error_on_a_cpu(tmp_path):
    cfg = TrainConfig(dataset="synthetic_occluded", root=tmp_path, out_dir=tmp_path / "run", device="cpu", amp=True)
    with pytest.raises(ReidEvalError, match="--amp needs a CUDA device"):
        train(cfg)


def test_under_autocast_the_network_runs_in_half_precision_and_the_fpr_solve_in_float32(monkeypatch):
    # CPU autocast in bfloat16 stands in for CUDA's here: training_step treats both alike.
    seen = {}
    real = trainer_module.batch_fpr_distances

    def spy(local, foreground, **kw):
        seen["dtype"] = local.dtype
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return real(local, foreground, **kw)

    monkeypatch.setattr(trainer_module, "batch_fpr_distances", spy)
    config = ModelConfig(backbone="resnet18", input_size=(64, 32), pyramid_kernels=(1, 2), pyramid_stride=1)
    torch.manual_seed(0)
    model = build_model(config)
    captured = {}
    model.register_forward_hook(lambda mod, inp, out: captured.update(local=out.local.dtype))
    images = torch.randn(4, 3, 64, 32)
    masks = (torch.rand(4, 1, 64, 32) > 0.5).float()
    pids = torch.tensor([1, 1, 2, 2])
    cfg = TrainConfig(dataset="x", root=".", out_dir=".")
    loss, stats = training_step(model, images, masks, pids, cfg, autocast_dtype=torch.bfloat16)
    assert captured["local"] == torch.bfloat16
    assert seen == {"dtype": torch.float32, "autocast": False}
    assert loss.dtype == torch.float32 and math.isfinite(stats["loss"])
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
