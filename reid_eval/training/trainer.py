"""The training loop: PK batches from a multi-process DataLoader, FPR
batch-hard triplet + α·foreground loss, a warmup-and-decay learning rate,
optional mixed precision and distributed data parallel, a checkpoint after
every epoch, resume, model selection and a JSON-lines log.

Files written under ``out_dir`` (by rank 0 alone in a distributed run):

* ``checkpoint.pt`` — after every epoch (atomically replaced): the model in
  reid-eval's checkpoint format, with the optimizer state, the epoch count,
  the best evaluation so far and the training settings in ``extra``;
  ``--resume`` continues from it;
* ``model.pt`` — the final (last) model (no optimizer state), for ``reid-eval extract``;
* ``best.pt`` — with ``eval_every``: the model of the evaluated epoch with the
  highest FPR mAP (rank-1 breaks ties), its scores in ``extra["evaluation"]``;
* ``eval/epoch<NNNN>/`` — the results JSON of each evaluation;
* ``train_log.jsonl`` — one JSON object per line: ``{"event": "start", ...}``
  with the settings (and whether the foreground loss is on, and why not),
  ``{"event": "step", "epoch", "step", "loss", "triplet", "foreground",
  "fg_accuracy", "d_ap", "d_an", "active", "lr", "seconds"}`` per iteration
  (values averaged over the ranks), ``{"event": "epoch", ...}`` with the epoch
  means, ``{"event": "eval", "epoch", "rank1", "mAP", "mINP", "best", ...}``,
  ``{"event": "end", ...}``.

Distributed runs (``torchrun``, see :mod:`reid_eval.training.distributed`):
every rank holds a full P×K batch of the same epoch plan (distinct batches
on distinct ranks, see :class:`EpochBatchSampler`), batch-hard mining stays
within a rank's batch, and DDP averages the gradients; an epoch on W ranks
thus sees the same images as on one, in W times fewer steps. BatchNorm
statistics are per rank (rank 0's buffers are broadcast at each forward).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from reid_eval.datasets import load_manifest
from reid_eval.errors import ReidEvalError
from reid_eval.features import resolve_device
from reid_eval.matching import DEFAULT_BETA
from reid_eval.model import FPRNet, ModelConfig, build_model, load_checkpoint, save_checkpoint
from reid_eval.training import distributed
from reid_eval.training.data import Augmentation, TrainingDataset, default_workers, make_loader, training_images
from reid_eval.training.evaluate import check_evaluable, evaluate_checkpoint
from reid_eval.training.labels import DEFAULT_TAU, foreground_labels
from reid_eval.training.losses import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    batch_fpr_distances,
    batch_hard_triplet_loss,
    foreground_loss,
)
from reid_eval.training.sampler import EpochBatchSampler, PKSampler
from reid_eval.training.schedule import LRSchedule, default_warmup_epochs

CHECKPOINT_NAME = "checkpoint.pt"
FINAL_NAME = "model.pt"
BEST_NAME = "best.pt"
LOG_NAME = "train_log.jsonl"
EVAL_DIR = "eval"

#: on_progress(epoch (0-based), step in epoch (1-based), steps per epoch, stats of that step)
ProgressFn = Callable[[int, int, int, dict], None]
#: on_step_end(model (unwrapped), epoch (0-based), step (1-based)), on every rank after each optimizer step
StepEndFn = Callable[[FPRNet, int, int], None]


@dataclass
class TrainConfig:
    """Settings of one training run; defaults follow the paper (§3.3, §4.1)
    where it says, and :mod:`reid_eval.training.schedule` for the learning rate.

    ``model`` is used when training starts from scratch (torchvision's random
    initialisation); with ``init_checkpoint`` (any reid-eval checkpoint, e.g.
    ImageNet weights from ``reid-eval checkpoint init --pretrained imagenet``)
    the checkpoint's weights and model config are used instead. ``lr`` is
    Adam's base learning rate. ``workers`` None: :func:`default_workers`.
    ``amp``: mixed precision on CUDA (bfloat16 where the GPU has it, else
    float16 with a gradient scaler); the FPR solve stays in float32.
    ``eval_every`` N > 0: evaluate every N epochs and after the last one.
    ``freeze_trunk``: train only the foreground generator (and nothing of
    the trunk, whose weights and BatchNorm statistics stay as loaded): the
    cheap way to give a converted zoo network the paper's foreground.
    ``max_seconds`` is a wall-clock guard: the run stops after the iteration
    that crosses it, and the interrupted epoch is undone (weights and
    optimizer back to the end of the last completed epoch, in the checkpoint
    and the final model), so a resume redoes it from there and ends with the
    weights of an uninterrupted run.
    """

    dataset: str
    root: Path
    out_dir: Path
    masks: Path | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    init_checkpoint: Path | None = None
    epochs: int = 200
    batch_p: int = 16
    batch_k: int = 4
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    lr_schedule: str = "cosine"
    warmup_epochs: int | None = None  # None: schedule.default_warmup_epochs(epochs)
    lr_milestones: tuple[int, ...] = ()
    margin: float = DEFAULT_MARGIN
    alpha: float = DEFAULT_ALPHA
    tau: float = DEFAULT_TAU
    beta: float = DEFAULT_BETA
    foreground_loss: bool = True
    freeze_trunk: bool = False
    flip: bool = False
    pad_crop: int = 0
    random_erasing: float = 0.0
    workers: int | None = None
    amp: bool = False
    eval_every: int = 0
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    max_seconds: float | None = None

    @property
    def schedule(self) -> LRSchedule:
        warmup = default_warmup_epochs(self.epochs) if self.warmup_epochs is None else self.warmup_epochs
        return LRSchedule(self.lr_schedule, warmup, tuple(self.lr_milestones))

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(self.flip, self.pad_crop, self.random_erasing)

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
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers must be non-negative, got {self.workers}")
        if self.freeze_trunk and not self.model.foreground_head and self.init_checkpoint is None:
            raise ValueError("--freeze-trunk trains only the foreground generator, and the model has none")
        if self.eval_every < 0:
            raise ValueError(f"--eval-every must be non-negative (0: never), got {self.eval_every}")
        self.schedule.check(self.epochs)
        self.augmentation  # noqa: B018 - validates the augmentation settings

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["lr_milestones"] = list(self.lr_milestones)
        for k in ("root", "out_dir", "masks", "init_checkpoint"):
            d[k] = None if d[k] is None else str(d[k])
        return d


@dataclass
class TrainResult:
    """What a run produced: the final model file, the last checkpoint, the log,
    the epochs completed (in total, resumed ones included), the mean loss of
    each epoch run in this call, and with evaluation the best model and every
    evaluation of this call (``{"epoch", "rank1", "mAP", "mINP"}``); ``rank``: this process's
    rank (only rank 0 wrote the files)."""

    model_path: Path
    checkpoint_path: Path
    log_path: Path
    epochs_completed: int
    epoch_losses: list[float]
    stopped_early: bool
    seconds: float
    best_path: Path | None = None
    evaluations: list[dict] = field(default_factory=list)
    rank: int = 0


class _Log:
    """The JSON-lines log; a no-op on ranks other than 0."""

    def __init__(self, path: Path, active: bool):
        self.fh = open(path, "a", encoding="utf-8") if active else None

    def write(self, row: dict) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(row, sort_keys=True) + "\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def training_step(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor | None, pids: torch.Tensor,
                  cfg: TrainConfig, config: ModelConfig | None = None,
                  autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One forward pass and the loss of Eq. 10 for a PK batch.

    ``images`` [B, 3, H, W] normalised, ``masks`` [B, 1, H, W] in [0, 1] (None:
    no foreground loss), ``pids`` [B]. ``model`` is an :class:`FPRNet` or a
    wrapper of one (DDP; then pass its ``config``). The triplet distance is FPR
    with the network's own foreground probabilities as probe weights, so the
    triplet loss trains the foreground generator too. With ``autocast_dtype``
    the network runs under autocast in that dtype, while the FPR solve (a
    Cholesky factorisation, unsafe in half precision) and the losses run in
    float32 with autocast off. Returns the loss and diagnostics.
    """
    mcfg = config if config is not None else model.config
    with torch.autocast(images.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        out = model(images)
    with torch.autocast(images.device.type, enabled=False):
        local, fg_prob = out.local.float(), out.foreground.float()
        dist = batch_fpr_distances(local, fg_prob, weighted=True, beta=cfg.beta)
        tri, st = batch_hard_triplet_loss(dist, pids, cfg.margin)
        stats = {"triplet": float(tri.detach()), "d_ap": st.hardest_positive, "d_an": st.hardest_negative,
                 "active": st.active}
        loss = tri
        if masks is not None:
            if out.foreground_logits is None:
                raise ReidEvalError("the model has no foreground head, so it cannot learn from masks; "
                                    "pass --no-foreground-loss")
            labels = foreground_labels(masks, out.map_size, mcfg.pyramid_kernels, mcfg.pyramid_stride, cfg.tau)
            fg = foreground_loss(out.foreground_logits.float(), labels)
            loss = loss + cfg.alpha * fg
            stats["foreground"] = float(fg.detach())
            stats["fg_accuracy"] = float(((fg_prob.detach() > 0.5).long() == labels).float().mean())
            stats["fg_fraction"] = float(labels.float().mean())
    stats["loss"] = float(loss.detach())
    return loss, stats


def amp_dtype_for(device: torch.device) -> torch.dtype:
    """bfloat16 on a GPU that has it (no gradient scaling needed), else float16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _device(cfg: TrainConfig, ctx: distributed.DistContext) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if cfg.amp and device.type != "cuda":
        raise ReidEvalError("--amp needs a CUDA device (CPU autocast is slower than float32 for this network "
                            "on most CPUs); drop --amp or train with --device cuda")
    return device


def _load_start(cfg: TrainConfig) -> tuple[FPRNet | None, ModelConfig, dict | None]:
    """Rank 0's starting point: (model or None for a fresh random one, its config, saved training state)."""
    ckpt = cfg.out_dir / CHECKPOINT_NAME
    if cfg.resume:
        if not ckpt.is_file():
            raise ReidEvalError(f"--resume: {ckpt} does not exist (nothing to resume in --out {cfg.out_dir})")
        model, mcfg, meta = load_checkpoint(ckpt)
        state = meta["extra"]
        if "optimizer" not in state or "epochs_completed" not in state:
            raise ReidEvalError(f"--resume: {ckpt} holds no training state")
        saved = state.get("train", {})
        for key in ("dataset", "batch_p", "batch_k", "seed", "freeze_trunk"):
            if key in saved and saved[key] != getattr(cfg, key):
                raise ReidEvalError(f"--resume: {ckpt} was trained with {key}={saved[key]!r}, not {getattr(cfg, key)!r}")
        return model, mcfg, state
    if ckpt.exists():
        raise ReidEvalError(f"--out {cfg.out_dir} already holds a training run ({CHECKPOINT_NAME}); "
                            "pass --resume to continue it or choose another --out")
    if cfg.init_checkpoint is not None:
        model, mcfg, _ = load_checkpoint(cfg.init_checkpoint)
        return model, mcfg, None
    return None, cfg.model, None


def _model_name(cfg: TrainConfig, mcfg: ModelConfig) -> str:
    """The trained model in words, for tables: its start's name and what this run trained, e.g.
    'OSNet x0.25, Market-1501, torchreid; foreground trained on cuhk03_pair1'."""
    if cfg.resume:  # the run's own name, as its first part wrote it
        saved = load_checkpoint(cfg.out_dir / CHECKPOINT_NAME)[2]["extra"].get("name")
        if saved:
            return str(saved)
    start = mcfg.backbone
    if cfg.init_checkpoint is not None:
        start = str(load_checkpoint(cfg.init_checkpoint)[2]["extra"].get("name") or start)
    what = "foreground trained" if cfg.freeze_trunk else "fine-tuned" if cfg.init_checkpoint is not None else "trained"
    return f"{start}; {what} on {cfg.dataset}"


def _better(new: dict, best: dict | None) -> bool:
    return best is None or (new["mAP"], new["rank1"]) > (best["mAP"], best["rank1"])


def train(cfg: TrainConfig, on_progress: ProgressFn | None = None,
          on_message: Callable[[str], None] | None = None, on_step_end: StepEndFn | None = None) -> TrainResult:
    """Train the FPR network on ``cfg.dataset``'s train split (see the module docstring).

    Under ``torchrun`` every rank calls this; ``on_progress`` and
    ``on_message`` are called on rank 0 only, ``on_step_end`` on every rank.
    """
    cfg.validate()
    cfg = replace(cfg, out_dir=Path(cfg.out_dir), root=Path(cfg.root))
    ctx = distributed.from_environment()
    device = _device(cfg, ctx)
    created = distributed.start(ctx, device)
    try:
        return _train(cfg, ctx, device, on_progress, on_message, on_step_end)
    finally:
        distributed.stop(created)


def _train(cfg: TrainConfig, ctx: distributed.DistContext, device: torch.device, on_progress: ProgressFn | None,
           on_message: Callable[[str], None] | None, on_step_end: StepEndFn | None) -> TrainResult:
    t_start = time.perf_counter()
    say = on_message if (on_message is not None and ctx.is_main) else (lambda _msg: None)

    def rank0_setup() -> tuple[FPRNet | None, ModelConfig, dict | None, Any]:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        model, mcfg, state = _load_start(cfg)
        manifest = None
        if cfg.eval_every:
            manifest = load_manifest(cfg.dataset, cfg.root)
            check_evaluable(cfg.dataset, manifest)
        return model, mcfg, state, manifest

    start = distributed.agree(ctx, rank0_setup, main_only=True)
    model, mcfg, state, manifest = start if start is not None else (None, None, None, None)
    # The other ranks need the architecture and the optimizer state; DDP copies rank 0's weights to them.
    mcfg, state = distributed.broadcast(ctx, (mcfg, state))
    if model is None:
        torch.manual_seed(cfg.seed)
        model = build_model(mcfg)
    model = model.to(device)
    if cfg.foreground_loss and not mcfg.foreground_head:
        raise ReidEvalError("the model has no foreground head, so it cannot learn from masks; pass --no-foreground-loss")
    if cfg.freeze_trunk:
        if model.foreground is None:
            raise ReidEvalError("--freeze-trunk trains only the foreground generator, and the model has none")
        for p in model.parameters():
            p.requires_grad_(False)
        model.foreground.requires_grad_(True)

    def data_setup():
        images = training_images(cfg.dataset, cfg.root, cfg.masks, need_masks=cfg.foreground_loss)
        pk = PKSampler(images.pids, cfg.batch_p, cfg.batch_k, seed=cfg.seed)
        return images, pk, EpochBatchSampler(pk, ctx.rank, ctx.world_size)

    images, pk, batch_sampler = distributed.agree(ctx, data_setup)
    workers = cfg.workers if cfg.workers is not None else default_workers(ctx.local_world_size)
    loader = make_loader(TrainingDataset(images, mcfg, cfg.augmentation), batch_sampler, workers,
                         pin_memory=device.type == "cuda")
    steps_per_epoch = len(batch_sampler)
    schedule = cfg.schedule

    net: torch.nn.Module = model
    if ctx.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp_dtype = amp_dtype_for(device) if cfg.amp else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    start_epoch, best = 0, None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epochs_completed"])
        best = state.get("best")
        if scaler is not None and state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])

    log = _Log(cfg.out_dir / LOG_NAME, ctx.is_main)
    fg_note = ("on" if cfg.foreground_loss else
               "off (--no-foreground-loss): the foreground generator learns only through the FPR triplet loss")
    if cfg.freeze_trunk:
        fg_note += "; trunk frozen (--freeze-trunk): only the foreground generator learns"
    init_note = (f"resumed from {cfg.out_dir / CHECKPOINT_NAME}" if cfg.resume else
                 f"from {cfg.init_checkpoint}" if cfg.init_checkpoint is not None else
                 "random (torchvision's initialisation)")
    precision = "float32" if amp_dtype is None else f"autocast {str(amp_dtype).replace('torch.', '')}"
    log.write({"event": "start", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "settings": cfg.to_json(), "model": mcfg.to_dict(), "device": str(device), "init": init_note,
               "processes": ctx.world_size, "workers": workers, "precision": precision,
               "train_images": len(images.paths), "train_ids": int(len(pk.identities)),
               "steps_per_epoch": steps_per_epoch, "start_epoch": start_epoch, "foreground_loss": fg_note})
    where = f"{ctx.world_size} processes" if ctx.enabled else f"device {device}"
    say(f"training on {len(images.paths)} images of {len(pk.identities)} identities, {steps_per_epoch} steps of "
        f"{cfg.batch_p}x{cfg.batch_k} per epoch and process, {where}, {workers} loader workers, {precision}; "
        f"start: {init_note}; foreground loss {fg_note}")

    run_name = _model_name(cfg, mcfg)
    epoch_losses: list[float] = []
    evaluations: list[dict] = []
    stopped = False
    completed = start_epoch
    final = cfg.out_dir / FINAL_NAME
    try:
        for epoch in range(start_epoch, cfg.epochs):
            net.train()
            if cfg.freeze_trunk:  # its BatchNorm statistics stay as loaded too
                model.backbone.eval()
            batch_sampler.set_epoch(epoch)
            sums: dict[str, float] = {}
            steps = 0
            t_epoch = time.perf_counter()
            t0 = time.perf_counter()
            # what a stop in this epoch rolls back to (only a run with a time limit can stop mid-epoch)
            epoch_start = None if cfg.max_seconds is None else copy.deepcopy(
                (model.state_dict(), optimizer.state_dict(), scaler.state_dict() if scaler is not None else None))
            for step, (x, m, pids) in enumerate(loader, start=1):
                lr = cfg.lr * schedule.factor(epoch, step - 1, steps_per_epoch, cfg.epochs)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, pids = x.to(device, non_blocking=True), pids.to(device, non_blocking=True)
                m = m.to(device, non_blocking=True) if (m is not None and cfg.foreground_loss) else None
                loss, stats = training_step(net, x, m, pids, cfg, mcfg, amp_dtype)
                over_time = cfg.max_seconds is not None and time.perf_counter() - t_start > cfg.max_seconds
                stats, stopped = distributed.mean_over_ranks(ctx, stats, over_time, device)
                if not math.isfinite(stats["loss"]):
                    raise ReidEvalError(f"the loss became {stats['loss']} at epoch {epoch + 1} step {step}; "
                                        "lower --lr or check the masks")
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                if on_step_end is not None:
                    on_step_end(model, epoch, step)
                stats["seconds"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
                log.write({"event": "step", "epoch": epoch + 1, "step": step, "lr": lr, **stats})
                if on_progress is not None and ctx.is_main:
                    on_progress(epoch, step, steps_per_epoch, stats)
                if stopped:
                    break
            means = {k: v / max(steps, 1) for k, v in sums.items()}
            finished = steps == steps_per_epoch
            if not finished and epoch_start is not None:
                model.load_state_dict(epoch_start[0])
                optimizer.load_state_dict(epoch_start[1])
                if scaler is not None:
                    scaler.load_state_dict(epoch_start[2])
            if finished:
                completed = epoch + 1
                epoch_losses.append(means.get("loss", float("nan")))
            stopped = stopped and completed < cfg.epochs
            evaluate = finished and cfg.eval_every > 0 and (completed % cfg.eval_every == 0 or completed == cfg.epochs)

            def end_of_epoch() -> dict | None:
                """Rank 0: checkpoint, log, and evaluation; returns the best evaluation so far."""
                def save(best_so_far: dict | None) -> Path:
                    extra = {"optimizer": optimizer.state_dict(), "epochs_completed": completed, "best": best_so_far,
                             "trained_on": cfg.dataset, "name": run_name,
                             "train": cfg.to_json(),
                             "grad_scaler": scaler.state_dict() if scaler is not None else None}
                    return save_checkpoint(cfg.out_dir / CHECKPOINT_NAME, model, mcfg, extra=extra)

                ckpt = save(best)
                log.write({"event": "epoch", "epoch": epoch + 1, "completed": finished, "steps": steps,
                           "seconds": time.perf_counter() - t_epoch, **{f"mean_{k}": v for k, v in means.items()}})
                if not evaluate:
                    return best
                result = evaluate_checkpoint(cfg.dataset, cfg.root, manifest, ckpt,
                                             cfg.out_dir / EVAL_DIR / f"epoch{completed:04d}", str(device),
                                             cfg.eval_batch_size, cfg.beta)
                row = {"epoch": completed, "rank1": result.rank1, "mAP": result.mAP, "mINP": result.mINP}
                evaluations.append(row)
                is_best = _better(row, best)
                if is_best:
                    save_checkpoint(cfg.out_dir / BEST_NAME, model, mcfg,
                                    extra={"trained_on": cfg.dataset, "name": run_name, "evaluation": row,
                                           "train": cfg.to_json()})
                    save(row)
                log.write({"event": "eval", **row, "best": is_best, "seconds": result.seconds,
                           "results_file": str(result.results_file)})
                top = row if is_best else best
                say(f"epoch {completed}: FPR rank-1 {100 * result.rank1:.2f}% mAP {100 * result.mAP:.2f}% "
                    + ("(best so far)" if is_best else f"(best: epoch {top['epoch']}, mAP {100 * top['mAP']:.2f}%)"))
                return top

            best = distributed.agree(ctx, end_of_epoch, main_only=True)
            if stopped:
                where = f"after epoch {epoch + 1}" if finished else f"in epoch {epoch + 1}"
                say(f"stopped after {time.perf_counter() - t_start:.0f} s (time limit), {where}")
                break
        model.eval()
        distributed.agree(ctx, lambda: save_checkpoint(
            final, model, mcfg, extra={"trained_on": cfg.dataset, "name": run_name, "epochs_completed": completed,
                                       "stopped_early": stopped, "train": cfg.to_json()}), main_only=True)
        seconds = time.perf_counter() - t_start
        log.write({"event": "end", "epochs_completed": completed, "stopped_early": stopped, "seconds": seconds,
                   "model": str(final), "best": best})
    finally:
        log.close()
    return TrainResult(model_path=final, checkpoint_path=cfg.out_dir / CHECKPOINT_NAME,
                       log_path=cfg.out_dir / LOG_NAME, epochs_completed=completed, epoch_losses=epoch_losses,
                       stopped_early=stopped, seconds=seconds,
                       best_path=cfg.out_dir / BEST_NAME if best is not None else None, evaluations=evaluations,
                       rank=ctx.rank)
