"""The training loop: PK batches, FPR batch-hard triplet + α·foreground loss,
a checkpoint after every epoch, resume, and a JSON-lines loss log.

Files written under ``out_dir``:

* ``checkpoint.pt`` — after every epoch (atomically replaced): the model in
  reid-eval's checkpoint format, with the optimizer state, the epoch count
  and the training settings in ``extra``; ``--resume`` continues from it;
* ``model.pt`` — the final model (no optimizer state), for ``reid-eval extract``;
* ``train_log.jsonl`` — one JSON object per line: ``{"event": "start", ...}``
  with the settings (and whether the foreground loss is on, and why not),
  ``{"event": "step", "epoch", "step", "loss", "triplet", "foreground",
  "fg_accuracy", "d_ap", "d_an", "active", "lr", "seconds"}`` per iteration,
  ``{"event": "epoch", ...}`` with the epoch means, ``{"event": "end", ...}``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from reid_eval.errors import ReidEvalError
from reid_eval.features import resolve_device
from reid_eval.model import FPRNet, ModelConfig, build_model, load_checkpoint, save_checkpoint
from reid_eval.training.data import BatchLoader, training_images
from reid_eval.training.labels import DEFAULT_TAU, foreground_labels
from reid_eval.training.losses import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    batch_fpr_distances,
    batch_hard_triplet_loss,
    foreground_loss,
)
from reid_eval.training.sampler import PKSampler

CHECKPOINT_NAME = "checkpoint.pt"
FINAL_NAME = "model.pt"
LOG_NAME = "train_log.jsonl"

#: on_progress(epoch (0-based), step in epoch (1-based), steps per epoch, stats of that step)
ProgressFn = Callable[[int, int, int, dict], None]


@dataclass
class TrainConfig:
    """Settings of one training run; defaults follow the paper (§3.3, §4.1).

    ``model`` is used when training starts from scratch; with
    ``init_checkpoint`` the checkpoint's own model config is used instead.
    ``lr`` is Adam's learning rate; ``max_seconds`` is a wall-clock guard: the
    run stops after the iteration that crosses it (the interrupted epoch is
    saved as not completed, so a resume redoes it).
    """

    dataset: str
    root: Path
    out_dir: Path
    masks: Path | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    init_checkpoint: Path | None = None
    epochs: int = 60
    batch_p: int = 16
    batch_k: int = 4
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    margin: float = DEFAULT_MARGIN
    alpha: float = DEFAULT_ALPHA
    tau: float = DEFAULT_TAU
    beta: float = 0.01
    foreground_loss: bool = True
    flip: bool = False
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    max_seconds: float | None = None

    def validate(self) -> None:
        """ValueError naming the option when a setting is out of range."""
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.margin < 0:
            raise ValueError(f"--margin must be non-negative, got {self.margin}")
        if self.alpha < 0:
            raise ValueError(f"--alpha must be non-negative, got {self.alpha}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"--tau must be in [0, 1], got {self.tau}")
        if self.beta <= 0:
            raise ValueError(f"--beta must be positive, got {self.beta}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        for k in ("root", "out_dir", "masks", "init_checkpoint"):
            d[k] = None if d[k] is None else str(d[k])
        return d


@dataclass
class TrainResult:
    """What a run produced: the final model file, the last checkpoint, the log,
    the epochs completed (in total, resumed ones included) and the mean loss
    of each epoch run in this call."""

    model_path: Path
    checkpoint_path: Path
    log_path: Path
    epochs_completed: int
    epoch_losses: list[float]
    stopped_early: bool
    seconds: float


class _Log:
    def __init__(self, path: Path):
        self.fh = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.fh.write(json.dumps(row, sort_keys=True) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def training_step(model: FPRNet, images: torch.Tensor, masks: torch.Tensor | None, pids: torch.Tensor,
                  cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """One forward pass and the loss of Eq. 10 for a PK batch.

    ``images`` [B, 3, H, W] normalised, ``masks`` [B, 1, H, W] in [0, 1] (None:
    no foreground loss), ``pids`` [B]. The triplet distance is FPR with the
    network's own foreground probabilities as probe weights, so the triplet
    loss trains the foreground generator too. Returns the loss and diagnostics.
    """
    out = model(images)
    dist = batch_fpr_distances(out.local, out.foreground, weighted=True, beta=cfg.beta)
    tri, st = batch_hard_triplet_loss(dist, pids, cfg.margin)
    stats = {"triplet": float(tri.detach()), "d_ap": st.hardest_positive, "d_an": st.hardest_negative,
             "active": st.active}
    loss = tri
    if masks is not None:
        if out.foreground_logits is None:
            raise ReidEvalError("the model has no foreground head, so it cannot learn from masks; "
                                "pass --no-foreground-loss")
        mcfg = model.config
        labels = foreground_labels(masks, out.map_size, mcfg.pyramid_kernels, mcfg.pyramid_stride, cfg.tau)
        fg = foreground_loss(out.foreground_logits, labels)
        loss = loss + cfg.alpha * fg
        stats["foreground"] = float(fg.detach())
        stats["fg_accuracy"] = float(((out.foreground.detach() > 0.5).long() == labels).float().mean())
        stats["fg_fraction"] = float(labels.float().mean())
    stats["loss"] = float(loss.detach())
    return loss, stats


def _prepare_model(cfg: TrainConfig, device: torch.device) -> tuple[FPRNet, ModelConfig, dict | None]:
    """The model to train and, when resuming, the saved training state."""
    ckpt = cfg.out_dir / CHECKPOINT_NAME
    if cfg.resume:
        if not ckpt.is_file():
            raise ReidEvalError(f"--resume: {ckpt} does not exist (nothing to resume in --out {cfg.out_dir})")
        model, mcfg, meta = load_checkpoint(ckpt)
        state = meta["extra"]
        if "optimizer" not in state or "epochs_completed" not in state:
            raise ReidEvalError(f"--resume: {ckpt} holds no training state")
        saved = state.get("train", {})
        for key in ("dataset", "batch_p", "batch_k", "seed"):
            if key in saved and saved[key] != getattr(cfg, key):
                raise ReidEvalError(f"--resume: {ckpt} was trained with {key}={saved[key]!r}, not {getattr(cfg, key)!r}")
        return model.to(device), mcfg, state
    if ckpt.exists():
        raise ReidEvalError(f"--out {cfg.out_dir} already holds a training run ({CHECKPOINT_NAME}); "
                            "pass --resume to continue it or choose another --out")
    if cfg.init_checkpoint is not None:
        model, mcfg, _ = load_checkpoint(cfg.init_checkpoint)
        return model.to(device), mcfg, None
    torch.manual_seed(cfg.seed)
    return build_model(cfg.model).to(device), cfg.model, None


def train(cfg: TrainConfig, on_progress: ProgressFn | None = None,
          on_message: Callable[[str], None] | None = None) -> TrainResult:
    """Train the FPR network on ``cfg.dataset``'s train split (see the module docstring)."""
    cfg.validate()
    t_start = time.perf_counter()
    say = on_message or (lambda _msg: None)
    device = resolve_device(cfg.device)
    cfg = replace(cfg, out_dir=Path(cfg.out_dir), root=Path(cfg.root))
    cfg.out_dir.mkdir(parents=True, exist_ok=True)

    model, mcfg, state = _prepare_model(cfg, device)
    if cfg.foreground_loss and not mcfg.foreground_head:
        raise ReidEvalError("the model has no foreground head, so it cannot learn from masks; pass --no-foreground-loss")
    images = training_images(cfg.dataset, cfg.root, cfg.masks, need_masks=cfg.foreground_loss)
    sampler = PKSampler(images.pids, cfg.batch_p, cfg.batch_k, seed=cfg.seed)
    loader = BatchLoader(images, mcfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epochs_completed"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])

    log = _Log(cfg.out_dir / LOG_NAME)
    fg_note = ("on" if cfg.foreground_loss else
               "off (--no-foreground-loss): the foreground generator learns only through the FPR triplet loss")
    log.write({"event": "start", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "settings": cfg.to_json(), "model": mcfg.to_dict(), "device": str(device),
               "train_images": len(images.paths), "train_ids": int(len(sampler.identities)),
               "batches_per_epoch": len(sampler), "start_epoch": start_epoch, "foreground_loss": fg_note})
    say(f"training on {len(images.paths)} images of {len(sampler.identities)} identities, "
        f"{len(sampler)} batches of {cfg.batch_p}x{cfg.batch_k} per epoch, device {device}; foreground loss {fg_note}")

    epoch_losses: list[float] = []
    stopped = False
    completed = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            sums: dict[str, float] = {}
            steps = 0
            t_epoch = time.perf_counter()
            flip_rng = np.random.default_rng([cfg.seed, epoch, 1])
            for step, batch in enumerate(sampler.epoch(epoch), start=1):
                t0 = time.perf_counter()
                flip = flip_rng.random(len(batch)) < 0.5 if cfg.flip else None
                x, m, pids = loader.batch(batch, flip, device)
                loss, stats = training_step(model, x, m if cfg.foreground_loss else None, pids, cfg)
                if not math.isfinite(stats["loss"]):
                    raise ReidEvalError(f"the loss became {stats['loss']} at epoch {epoch + 1} step {step}; "
                                        "lower --lr or check the masks")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                stats["seconds"] = time.perf_counter() - t0
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
                log.write({"event": "step", "epoch": epoch + 1, "step": step, "lr": cfg.lr, **stats})
                if on_progress is not None:
                    on_progress(epoch, step, len(sampler), stats)
                if cfg.max_seconds is not None and time.perf_counter() - t_start > cfg.max_seconds:
                    stopped = True
                    break
            means = {k: v / max(steps, 1) for k, v in sums.items()}
            finished = steps == len(sampler)
            if finished:
                completed = epoch + 1
                epoch_losses.append(means.get("loss", float("nan")))
            stopped = stopped and completed < cfg.epochs
            extra = {"optimizer": optimizer.state_dict(), "epochs_completed": completed,
                     "train": cfg.to_json(), "torch_rng": torch.get_rng_state()}
            save_checkpoint(cfg.out_dir / CHECKPOINT_NAME, model, mcfg, extra=extra)
            log.write({"event": "epoch", "epoch": epoch + 1, "completed": finished, "steps": steps,
                       "seconds": time.perf_counter() - t_epoch, **{f"mean_{k}": v for k, v in means.items()}})
            if stopped:
                where = f"after epoch {epoch + 1}" if finished else f"in epoch {epoch + 1}"
                say(f"stopped after {time.perf_counter() - t_start:.0f} s (time limit), {where}")
                break
        model.eval()
        final = save_checkpoint(cfg.out_dir / FINAL_NAME, model, mcfg,
                                extra={"trained_on": cfg.dataset, "epochs_completed": completed,
                                       "stopped_early": stopped, "train": cfg.to_json()})
        seconds = time.perf_counter() - t_start
        log.write({"event": "end", "epochs_completed": completed, "stopped_early": stopped, "seconds": seconds,
                   "model": str(final)})
    finally:
        log.close()
    return TrainResult(model_path=final, checkpoint_path=cfg.out_dir / CHECKPOINT_NAME,
                       log_path=cfg.out_dir / LOG_NAME, epochs_completed=completed, epoch_losses=epoch_losses,
                       stopped_early=stopped, seconds=seconds)
