"""The training loop behind the `train` stage (`python -m tasks.train <run>`): one run of `train.methods`.

Objective (all methods): a clip of `data.clip_frames` frames; the first `model.context_frames` are context, the
rest the future. The online encoder encodes the context frames on their own (no future leakage); the predictor
maps those tokens to the target encoder's tokens of the future frames (target encoder = EMA copy or the frozen
encoder, applied to the FULL clip, future positions kept, no gradient). Loss = train.temporal_weight * L1 to the
layer-normed targets + train.contrastive_weight * InfoNCE on pooled futures (batch negatives, across all GPUs).

Data: clips from the decode cache (surgwm/data/clips.py), split into train/val BY CASE (a seeded shuffle of the case
ids; `train.val_fraction` of the cases, at least one, go to val). Train batches are a seeded shuffle per epoch
(last incomplete batch dropped, so every step sees `train.batch_size` clips). Augmentation (`train.augment`):
a random horizontal flip of the whole clip, p=0.5, when the encoder runs on pixels, i.e. NOT with the frozen
method's feature cache (surgwm/training/features.py explains the trade-off). Validation: fixed batches, no augmentation.

Outputs (`--out`, default data/train/<run>/; a DVC out with `persist: true`, cached so `dvc push` ships it):
  checkpoint.pt          full training state, written atomically every `train.checkpoint_every` steps and at
                         each epoch end; a rerun resumes from it (bit-exact on CPU). Refused if the architecture
                         changed; ignored (fresh start, logged) if the resolved config or the data changed.
  config.json            the resolved config, architecture, fingerprint and provenance
  encoder/               final encoder, HF format (VideoEncoder.from_pretrained): the EMA target encoder for
                         scratch/finetune (V-JEPA convention for downstream use), the frozen one for frozen
  predictor.safetensors  final predictor (surgwm/training/runs.py writes and loads both). The predictor was trained
                         on the ONLINE encoder's tokens (in checkpoint.pt); the EMA target tracks it closely
  steps.jsonl            one line per optimizer step: temporal, contrastive, loss, acc, lr, ema, grad_norm
and (`--metrics`, default metrics/): train_<run>.json (final metrics, DVC `metrics`) and
train_<run>_history.json (one record per epoch, DVC `plots`).

Multi-GPU: `train.devices > 1` relaunches this module under torchrun (DDP; nccl on GPU, gloo on CPU); the batch
is split across processes, only rank 0 writes. CUDA runs use bf16 autocast and SDPA attention.
Layout: surgwm/training/trainset.py (clips, case split, sampler), step.py (one step, validation), runs.py (the
final models on disk), this file (the loop, checkpoints, outputs); tasks/train.py is the stage's command line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from surgwm.training import ddp
from surgwm.training.checkpoint import (CHECKPOINT_NAME, remove_stale_temps, resume_state,
    rng_state, save_atomic, set_rng_state)
from surgwm.io import fingerprint
from surgwm.training.features import FeatureStore, feature_key, open_or_build, over_feature_budget
from surgwm.device import device_name, resolve_device
from surgwm.io import atomic_write_text, read_json, write_json
from surgwm.training.runs import save_models
from surgwm.training.methods import Models, RunConfig, architecture, build, resolve, weights_info
from surgwm.params import Params
from surgwm.paths import CACHE, DECODED, FEATURES, METRICS, TRAIN, WEIGHTS
from surgwm.training.step import (LOSS_KEYS, Run, make_batch, make_run, oom_advice, seed_everything,
                        train_step, validate, wrap)
from surgwm.training.trainset import Data, TrainError, load_data

log = logging.getLogger("surgwm.training.loop")


# ------------------------------------------------------------------------------------------- checkpoints

def checkpoint_state(run: Run, arch: dict[str, Any], fp: str) -> dict[str, Any]:
    return {
        "arch": arch, "fingerprint": fp, "config": run.cfg.to_json(),
        "epoch": run.epoch, "step": run.step, "epoch_step": run.epoch_step,
        "running": dict(run.running), "history": list(run.history),
        "models": run.models.state(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
        "sampler": run.sampler.state_dict(), "aug": run.aug.get_state(), "rng": rng_state(),
    }


def restore(run: Run, state: dict[str, Any]) -> None:
    run.models.load_state(state["models"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.sampler.load_state_dict(state["sampler"])
    run.aug.set_state(state["aug"])
    set_rng_state(state["rng"])
    run.epoch, run.step, run.epoch_step = state["epoch"], state["step"], state["epoch_step"]
    run.running, run.history = dict(state["running"]), list(state["history"])


# ---------------------------------------------------------------------------------------------- the loop

def fit(run: Run, data: Data, out_dir: Path, metrics_dir: Path, save: Callable[[], None], progress: bool) -> None:
    t, d = run.cfg.train, run.dist
    augment = t.augment and data.store is None
    steps_log = out_dir / "steps.jsonl"
    while run.epoch < t.epochs:
        if run.epoch_step == 0:
            run.sampler.start_epoch(run.epoch)
            run.running = {k: 0.0 for k in LOSS_KEYS} | {"steps": 0.0, "time_s": 0.0}
        seg = time.perf_counter()
        bar = tqdm(total=run.steps_per_epoch, initial=run.epoch_step, desc=f"{run.cfg.name} {run.epoch + 1}/{t.epochs}",
                   disable=not (progress and d.main), unit="step", mininterval=1.0, dynamic_ncols=True)
        log_file = open(steps_log, "a") if d.main else None
        try:
            while run.epoch_step < run.steps_per_epoch:
                idx = run.sampler.batch(run.epoch_step, d)
                flips = None
                if augment:  # drawn for the global batch on every process, so DDP flips what one process would
                    per = t.batch_size // d.world
                    flips = (torch.rand(t.batch_size, generator=run.aug) < 0.5)[d.rank * per:(d.rank + 1) * per]
                with oom_advice(run.cfg, d.world, f"training step {run.step + 1}"):
                    context, target = make_batch(run, data, idx, flips)
                    vals = train_step(run, context, target)
                run.step += 1
                run.epoch_step += 1
                for k in LOSS_KEYS:
                    run.running[k] += vals[k]
                run.running["steps"] += 1
                run.running["lr"] = vals["lr"]
                if log_file:
                    log_file.write(json.dumps({"step": run.step, "epoch": run.epoch + 1, **vals}) + "\n")
                bar.update(1)
                bar.set_postfix(t=f"{vals['temporal']:.3f}", c=f"{vals['contrastive']:.3f}",
                                loss=f"{vals['loss']:.3f}", acc=f"{vals['acc']:.2f}", lr=f"{vals['lr']:.2e}",
                                refresh=False)
                if t.checkpoint_every and run.step % t.checkpoint_every == 0 and run.epoch_step < run.steps_per_epoch:
                    now = time.perf_counter()
                    run.running["time_s"] += now - seg
                    seg = now
                    if log_file:
                        log_file.flush()
                    save()
        finally:
            bar.close()
            if log_file:
                log_file.close()
        train_time = run.running["time_s"] + time.perf_counter() - seg
        v0 = time.perf_counter()
        with oom_advice(run.cfg, d.world, f"validation after epoch {run.epoch + 1}"):
            val = validate(run, data)
        n = max(1.0, run.running["steps"])
        rec: dict[str, Any] = {"epoch": run.epoch + 1, "step": run.step}
        rec |= {f"train_{k}": run.running[k] / n for k in LOSS_KEYS}
        rec |= {f"val_{k}": v for k, v in val.items()}
        rec |= {"lr": run.running["lr"], "epoch_time_s": train_time + time.perf_counter() - v0,
                "train_clips_per_s": run.steps_per_epoch * t.batch_size / max(train_time, 1e-9)}
        run.history.append(rec)
        run.epoch += 1
        run.epoch_step = 0
        save()
        if d.main:
            log.info("epoch %d/%d: %s", rec["epoch"], t.epochs, ", ".join(
                f"{k} {v:.4g}" for k, v in rec.items() if k not in ("epoch", "step")))
            write_json(metrics_dir / f"train_{run.cfg.name}_history.json", run.history)


# ---------------------------------------------------------------------------------------------- outputs

def final_metrics(run: Run, data: Data) -> dict[str, Any]:
    last = run.history[-1]
    out: dict[str, Any] = {"run": run.cfg.name, "method": run.cfg.method.name, "epochs": run.epoch,
                           "steps": run.step, "train_clips": len(data.split.train), "val_clips": len(data.split.val),
                           "train_cases": len(data.split.train_cases), "val_cases": len(data.split.val_cases),
                           "feature_cache": data.feature_cache}
    out |= {k: v for k, v in last.items() if k.startswith(("train_", "val_")) and k != "train_clips_per_s"}
    vals = [(h["val_loss"], h["epoch"]) for h in run.history if "val_loss" in h]
    if vals:
        out["best_val_loss"], out["best_epoch"] = min(vals)
    times = [h["epoch_time_s"] for h in run.history]
    out["train_time_s"] = sum(times)
    out["train_clips_per_s"] = sum(h["train_clips_per_s"] for h in run.history) / len(run.history)
    return out | peak_memory(run.device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak GPU memory allocated on a GPU, peak RSS of this process on CPU (this process's lifetime: a resumed
    run reports its own segment)."""
    if device.type == "cuda":
        return {"device_name": device_name(device), "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_kind": "GPU memory allocated (torch)"}
    return {"device_name": device_name(device),
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_memory_kind": "process RSS"}


def write_outputs(run: Run, data: Data, out_dir: Path, metrics_dir: Path, extra: dict[str, Any],
                  more: dict[str, Any] | None = None) -> None:
    """Final encoder + predictor (surgwm/training/runs.py), config.json and metrics, each replaced atomically."""
    save_models(out_dir, run.models.target, run.models.predictor, run.cfg.model.context_frames)
    write_json(out_dir / "config.json", {**run.cfg.to_json(), **extra})
    write_json(metrics_dir / f"train_{run.cfg.name}_history.json", run.history)
    write_json(metrics_dir / f"train_{run.cfg.name}.json", final_metrics(run, data) | (more or {}))


def params_digest(models: Models) -> str:
    h = hashlib.sha256()
    for name, t in sorted(models.state().items()):
        for k, v in sorted(t.items()):
            h.update(k.encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ stage

def train(
    name: str, params: Params, *, cache_dir: Path = CACHE, manifest_path: Path = DECODED,
    weights_dir: Path = WEIGHTS, out_dir: Path | None = None, metrics_dir: Path = METRICS,
    features_dir: Path = FEATURES, progress: bool = True,
) -> dict[str, Any]:
    """Train run `name` (resuming from its checkpoint when one matches); returns the final metrics."""
    cfg = resolve(params, name)
    t = cfg.train
    out_dir = Path(out_dir) if out_dir is not None else TRAIN / name
    d = ddp.setup("cuda" if (t.device != "cpu" and torch.cuda.is_available()) else "cpu")
    try:
        return _train(cfg, d, Path(cache_dir), Path(manifest_path), Path(weights_dir), out_dir, Path(metrics_dir),
                      Path(features_dir), progress, params.storage.budget_gb)
    finally:
        ddp.teardown()


def _train(cfg: RunConfig, d: ddp.Dist, cache_dir: Path, manifest_path: Path, weights_dir: Path, out_dir: Path,
           metrics_dir: Path, features_dir: Path, progress: bool, budget_gb: float = math.inf) -> dict[str, Any]:
    t = cfg.train
    device = resolve_device(t.device, "train.device", d.local_rank)
    if t.threads:
        torch.set_num_threads(t.threads)
    seed_everything(t.seed, t.deterministic)
    data = load_data(cfg, cache_dir, manifest_path, d.world)
    weights_sha = weights_info(weights_dir).get("sha256") if cfg.method.pretrained else None
    models = build(cfg, weights_dir, device)
    arch = architecture(models.encoder, cfg)

    run = make_run(cfg, d, device, models, data.split.train)
    total = run.total_steps
    fp_config = {k: v for k, v in cfg.to_json().items()}
    # how often to checkpoint and how many CPU threads do not change what is trained: resuming across them is fine
    fp_config["train"] = {k: v for k, v in fp_config["train"].items() if k not in ("checkpoint_every", "threads")}
    fp = fingerprint(fp_config, data.signature, weights_sha, d.world)
    ckpt = out_dir / CHECKPOINT_NAME
    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir)
    state = resume_state(ckpt, arch, fp)
    steps_log = out_dir / "steps.jsonl"
    if state is not None:
        restore(run, state)
        run.last_checkpoint = (ckpt, run.step)
        if run.step < total:
            log.info("resuming %s from %s at step %d/%d (epoch %d/%d)", cfg.name, ckpt, run.step, total,
                     run.epoch + 1, t.epochs)
        else:
            log.info("%s already complete (%d steps); rewriting its outputs", cfg.name, run.step)
        if d.main and steps_log.is_file():  # drop the lines of steps after this checkpoint (and a torn last line)
            keep = [ln for ln in steps_log.read_text().splitlines() if _step_of(ln) <= run.step]
            atomic_write_text(steps_log, "".join(ln + "\n" for ln in keep))
    elif d.main:
        steps_log.unlink(missing_ok=True)
    if d.main:
        log.info("%s (%s): %d train clips / %d cases, %d val clips / %d cases; %d steps/epoch x %d epochs; "
                 "device %s x%d, %s", cfg.name, cfg.method.doc, len(data.split.train), len(data.split.train_cases),
                 len(data.split.val), len(data.split.val_cases), run.steps_per_epoch, t.epochs, device, d.world,
                 run.precision)

    too_big = over_feature_budget(cfg.name, len(data.clips), cfg.data.size, cfg.data.clip_frames,
                                  cfg.model.context_frames, models.encoder.dim, t.feature_dtype, cfg.data.clip_stride,
                                  budget_gb) if cfg.uses_feature_cache else None
    use_cache = cfg.uses_feature_cache and not too_big
    if too_big:
        data.feature_cache = "off: over storage.budget_gb"
        if d.main:
            log.warning("feature cache off: %s. The frozen encoder runs on the fly every step instead.", too_big)
    elif use_cache:
        data.feature_cache = "cached"       # the same whether this process built it, reused it or resumed
    elif not cfg.method.train_encoder:
        data.feature_cache = "off: train.feature_cache false"
    # the feature cache's build time is part of the run's cost (the report adds it); kept beside the cache, so a
    # resumed run, or another run reusing the cache, still counts it
    build_record = None
    if use_cache:
        key = feature_key(weights_sha or "", cfg.to_json()["data"], cfg.model.context_frames, t.feature_dtype,
                          data.signature)
        build_record = features_dir / key / "build_time.json"
    if use_cache and run.step < total:
        if d.main:
            t0 = time.perf_counter()
            with oom_advice(cfg, d.world, "feature caching"):
                data.store, built = open_or_build(
                    features_dir / key, data.clips, encoder=models.encoder, cache=data.cache,
                    context_frames=cfg.model.context_frames, batch_size=max(1, t.batch_size // d.world),
                    device=device, dtype=t.feature_dtype, autocast=run.autocast, progress=progress,
                    meta={"weights_sha256": weights_sha, "data": cfg.to_json()["data"]})
            if built:
                write_json(build_record, {"build_s": round(time.perf_counter() - t0, 3)})
            log.info("feature cache %s %s (%d clips)", features_dir / key, "built" if built else "reused",
                     len(data.store))
        ddp.barrier(d)
        if not d.main:
            data.store = FeatureStore(features_dir / key)
    elif not cfg.uses_feature_cache and not cfg.method.train_encoder and t.augment and d.main:
        log.info("feature cache off: the frozen encoder runs every epoch (augmentation on)")

    wrap(run)

    def save() -> None:
        if d.main:
            save_atomic(checkpoint_state(run, arch, fp), ckpt)
        run.last_checkpoint = (ckpt, run.step)

    fit(run, data, out_dir, metrics_dir, save, progress)
    if not ddp.same_everywhere(params_digest(models), d):
        raise TrainError("parameters differ across processes after training (DDP replicas diverged)")
    extra = {"arch": arch, "fingerprint": fp, "weights_sha256": weights_sha, "data_signature": data.signature,
             "world_size": d.world, "device": str(device), "precision": run.precision, "torch": torch.__version__,
             "replicas_identical": True}
    metrics: dict[str, Any] = {}
    record = read_json(build_record) if build_record is not None else None
    more = {} if build_record is None else {"feature_cache_s": (record or {}).get("build_s")}
    if d.main:
        write_outputs(run, data, out_dir, metrics_dir, extra, more)
        metrics = final_metrics(run, data) | more
    ddp.barrier(d)
    return metrics


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf
