"""One training step and everything it needs: the run state, device / precision, the objective, validation."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models import contrastive_loss, temporal_loss
from surgwm.training import ddp
from surgwm.training.features import clip_pixels
from surgwm.training.methods import Models, RunConfig, ema_update, param_groups
from surgwm.training.schedule import WarmupCosine, ema_momentum
from surgwm.training.trainset import Data, EpochSampler, NonFiniteLoss, OutOfMemory

LOSS_KEYS = ("temporal", "contrastive", "loss", "acc")


@dataclass
class Run:
    cfg: RunConfig
    dist: ddp.Dist
    device: torch.device
    models: Models
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    scaler: torch.amp.GradScaler
    sampler: EpochSampler
    aug: torch.Generator
    autocast: Callable[[], AbstractContextManager]
    precision: str
    grid: tuple[int, int, int]          # full-clip token grid (Tg, Hg, Wg)
    context_t: int                      # context token-time-steps
    total_steps: int
    student_fn: Callable[..., Tensor]   # the student, maybe DDP-wrapped / compiled
    target_fn: Callable[[Tensor], Tensor]
    epoch: int = 0                      # epochs completed
    step: int = 0                       # optimizer steps completed
    epoch_step: int = 0                 # steps completed in the current epoch
    running: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: tuple[Path, int] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler)

    @property
    def params(self) -> list[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    @property
    def ema(self) -> float | None:
        e = self.cfg.ema
        return None if e is None else ema_momentum(self.step, self.total_steps, *e)


def autocast_for(cfg: RunConfig, device: torch.device) -> tuple[Callable[[], AbstractContextManager], str]:
    prec = cfg.train.precision
    if prec == "auto":
        prec = "bf16" if device.type == "cuda" else "fp32"
    if prec == "fp32":
        return nullcontext, prec
    dtype = torch.bfloat16 if prec == "bf16" else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), prec


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def make_run(cfg: RunConfig, d: ddp.Dist, device: torch.device, models: Models, train_indices: Sequence[int]) -> Run:
    """Optimizer (AdamW, no decay on 1-D params), warmup+cosine schedule, grad scaler, sampler, aug generator."""
    t = cfg.train
    autocast, precision = autocast_for(cfg, device)
    sampler = EpochSampler(train_indices, t.batch_size, t.seed)
    total = len(sampler) * t.epochs
    optimizer = torch.optim.AdamW(param_groups(models.student, t.weight_decay), lr=t.lr, betas=(0.9, 0.999),
                                  fused=True)  # one kernel for all params (CPU and CUDA)
    scheduler = WarmupCosine(optimizer, total, round(t.warmup_fraction * total), t.final_lr_fraction)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    grid = models.encoder.grid(cfg.data.clip_frames, cfg.data.size, cfg.data.size)
    context_t = cfg.model.context_frames // models.encoder.tubelet
    return Run(cfg, d, device, models, optimizer, scheduler, scaler, sampler,
               torch.Generator().manual_seed(t.seed + 1), autocast, precision, grid, context_t, total,
               models.student, models.target)


def wrap(run: Run) -> None:
    """DDP around the student when several processes run; torch.compile when train.compile."""
    student: Any = run.models.student
    if run.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        student = DDP(student, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if run.cfg.train.compile:
        student = torch.compile(student)
        run.target_fn = torch.compile(run.models.target)
    run.student_fn = student


# ------------------------------------------------------------------------------------------------ one step

def make_batch(run: Run, data: Data, idx: Sequence[int], flips: Tensor | None) -> tuple[Tensor, Tensor]:
    """(student input: context pixels (B, Tc, C, H, W) or context tokens (B, Nc, D); targets (B, Nf, D))."""
    if data.store is not None:
        return data.store.batch(idx, run.device)
    return pixel_inputs(run, clip_pixels(data.cache, [data.clips[i] for i in idx], flips, run.device))


def pixel_inputs(run: Run, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Clips (B, T, C, H, W) -> (student input, future targets (B, Nf, D) from the target encoder)."""
    cf = run.cfg.model.context_frames
    n_ctx = run.context_t * run.grid[1] * run.grid[2]
    with torch.no_grad(), run.autocast():
        full = run.target_fn(pixels)  # (B, N, D): the target encoder sees the whole clip
        if run.cfg.method.train_encoder:
            return pixels[:, :cf], full[:, n_ctx:]
        return run.target_fn(pixels[:, :cf]), full[:, n_ctx:]  # frozen: context tokens from the same encoder


def objective(run: Run, pred: Tensor, target: Tensor, gather: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted loss and its parts; with DDP the InfoNCE negatives are the clips of ALL processes."""
    t = run.cfg.train
    pred, target = pred.float(), target.float()  # (B, Nf, D)
    temporal = temporal_loss(pred, target)
    if gather:
        pred, target = ddp.gather_with_grad(pred, run.dist), ddp.gather_with_grad(target.detach(), run.dist)
    contrastive, acc = contrastive_loss(pred, target, t.temperature)
    loss = t.temporal_weight * temporal + t.contrastive_weight * contrastive
    return loss, {"temporal": temporal, "contrastive": contrastive, "loss": loss, "acc": acc}


def train_step(run: Run, context: Tensor, target: Tensor) -> dict[str, float]:
    """Forward, backward, clip, check, update, EMA: returns the step's metrics (averaged over processes)."""
    t = run.cfg.train
    run.models.student.train()
    run.optimizer.zero_grad(set_to_none=True)
    with run.autocast():
        pred = run.student_fn(context, run.grid, run.context_t)  # (B, Nf, D)
    loss, parts = objective(run, pred, target, gather=run.dist.enabled)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(run.params, t.grad_clip if t.grad_clip > 0 else math.inf)
    scalars = torch.stack([parts[k].detach().float() for k in LOSS_KEYS] + [norm.detach().float()]).tolist()  # 1 sync
    vals = ddp.mean_across(dict(zip((*LOSS_KEYS, "grad_norm"), scalars)), run.dist)
    if not math.isfinite(vals["loss"]):
        raise NonFiniteLoss(nonfinite_message(run, vals))
    vals["lr"] = run.optimizer.param_groups[0]["lr"]
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.cfg.ema is not None:
        vals["ema"] = run.ema
        ema_update(run.models.target, run.models.encoder, vals["ema"])
    run.scheduler.step()
    return vals


def nonfinite_message(run: Run, vals: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {vals[k]:.4g}" for k in ("temporal", "contrastive", "loss"))
    last = (f"last good checkpoint: {run.last_checkpoint[0]} (step {run.last_checkpoint[1]})"
            if run.last_checkpoint else "no checkpoint was written yet")
    return (f"non-finite loss at step {run.step + 1} (epoch {run.epoch + 1}): {parts}; stopped before applying "
            f"the update; {last}. Lower train.lr (now {run.cfg.train.lr:g}), raise train.warmup_fraction, "
            "or check the input clips.")


@contextmanager
def oom_advice(cfg: RunConfig, world: int, where: str) -> Iterator[None]:
    """Turn a CUDA OOM into a message naming the knobs that shrink memory."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        t, d, m = cfg.train, cfg.data, cfg.model
        first = str(err).strip().splitlines()[0] if str(err).strip() else "OutOfMemoryError"
        raise OutOfMemory(
            f"CUDA out of memory during {where} ({t.batch_size // world} clips per GPU of {d.clip_frames} frames at "
            f"{d.size}x{d.size}). Reduce train.batch_size (now {t.batch_size}), data.size (now {d.size}) or "
            f"data.clip_frames (now {d.clip_frames}), or the model dims (scratch: model.encoder_dim/encoder_depth, now "
            f"{m.encoder_dim}/{m.encoder_depth}; model.predictor_dim/predictor_depth, now {m.predictor_dim}/"
            f"{m.predictor_depth}), or spread the batch with train.devices > 1. "
            f"[{first}]") from err


@torch.no_grad()
def validate(run: Run, data: Data) -> dict[str, float]:
    """Mean metrics over fixed val batches (batches dealt round-robin to processes, sums all-reduced)."""
    idx = data.split.val
    if not idx:
        return {}
    bs = run.cfg.train.batch_size
    batches = [idx[i:i + bs] for i in range(0, len(idx), bs)]
    sums = {k: 0.0 for k in LOSS_KEYS} | {"n": 0.0}
    run.models.student.eval()
    for b in batches[run.dist.rank::run.dist.world]:
        context, target = make_batch(run, data, b, None)
        with run.autocast():
            pred = run.models.student(context, run.grid, run.context_t)
        _, parts = objective(run, pred, target, gather=False)
        for k in LOSS_KEYS:
            sums[k] += float(parts[k]) * len(b)
        sums["n"] += len(b)
    sums = ddp.sum_across(sums, run.dist)
    return {k: sums[k] / sums["n"] for k in LOSS_KEYS}
