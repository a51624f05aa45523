"""DVC stage `evaluate`: frozen-encoder probes for one trained run or baseline (`python -m tasks.evaluate <name>`).

<name> is a run of `train.methods` or a baseline (`untrained_encoder`, `raw_pixels`); every name gets the same
split and the same probes.

Protocol (after V-JEPA 2's frozen evaluation): the encoder is frozen; each clip of the decode cache becomes its
tokens once; a small attentive probe (models/probe.py; inputs standardised with training statistics, plus each
token's change over one time step unless `evaluate.probe_deltas: false`) is trained per task on the tokens of
labelled clips (AdamW, warmup + cosine, `evaluate.probe_epochs`; the epoch with the best validation score is kept).
Split BY CASE, never by clip: the test cases are those the train stage held out (`train.val_fraction`,
`train.seed`: no world model saw their video) unless `evaluate.test_fraction` is set; of the other cases
`evaluate.val_fraction` validate the probe (its best epoch, the event threshold), the rest train it.

Tasks, each where the data has the labels (otherwise the metric says why it is missing):
  step          per-video weighted F1 averaged over videos (SurgVU's metric), top-1 accuracy, confusion matrix
  motion        top-1 accuracy over the motion classes
  anticipation  mean class recall@k of the next step; the encoder-only probe vs. the probe that also sees the
                predictor's tokens rolled `evaluate.rollouts` times beyond the clip (methods only)
  event         accuracy, precision, recall, F1 at the threshold with the best validation F1, and AUROC
  future        held-out temporal (L1) and contrastive (InfoNCE) losses of the predictor on the test clips, and
                top-1 retrieval of the true future among `evaluate.batch_size` futures (methods only)
  efficiency    step / motion / event probes trained on `evaluate.fractions` of the probe's training cases
  convergence   first epoch whose `evaluate.convergence_metric` (train history) reaches `convergence_fraction`
                of its final value (for a loss: is within final / fraction)
  cost          train wall time, peak memory and device (from the train stage), USD at `evaluate.gpu_prices`

Baselines: `untrained_encoder` = the pretrained encoder's architecture (data/weights/config.json; model.* when
there are no weights), randomly initialised with `evaluate.seed`; `raw_pixels` = no encoder: each token is its
tubelet's pixels pooled to `evaluate.pixel_pool`^2 (a fixed linear map), then the same probe.

Outputs: metrics/evaluate_<name>.json (DVC metrics), metrics/evaluate_<name>_efficiency.json (DVC plots: one
record per fraction), data/evaluate/<name>/ (confusion matrices as PNG, test predictions as CSV, the split).
A run whose training did not finish gets {"status": "failed", "error": ...} and exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.format import open_memmap
from torch import Tensor

from models import Predictor, VideoEncoder, contrastive_loss, encoder_config, preprocess, temporal_loss
from models.encoder import PATCH
from models.probe import AttentiveProbe, PixelTokens
from tasks import metrics as M
from tasks.checkpoint import fingerprint
from tasks.clips import Clip, ClipCache, build_clips, next_step
from tasks.manifest import Manifest, atomic_write_text, file_sha256, read_manifest
from tasks.params import BASELINE_NAMES, DEFAULT_PARAMS, Params, ParamsError, load_params
from tasks.paths import CACHE, DATA, DECODED, METRICS, RUNTIME, TRAIN, WEIGHTS
from tasks.failures import clear_failure, record_failure
from tasks.train import device_name

log = logging.getLogger("tasks.evaluate")
EVALUATE = DATA / "evaluate"            # evaluate: one dir per name (plots, predictions, split)
CLASSIFY = ("step", "motion")


class EvaluateError(RuntimeError):
    """The evaluation cannot run; the message says what is missing and what to run."""


# ------------------------------------------------------------------------------------------------ split

@dataclass(frozen=True)
class EvalSplit:
    train: tuple[str, ...]      # probe training cases, in a seeded order (efficiency subsets are prefixes)
    val: tuple[str, ...]        # probe validation cases (best epoch, event threshold)
    test: tuple[str, ...]       # never seen by any probe
    source: str                 # how the test cases were chosen

    def subset(self, fraction: float) -> tuple[str, ...]:
        return tuple(sorted(self.train[:max(1, round(fraction * len(self.train)))]))


def split_cases(clips: Sequence[Clip], params: Params) -> EvalSplit:
    """Cases (never clips) into probe train / val / test; deterministic in the params."""
    from tasks.trainset import split_by_case

    ev, tr = params.evaluate, params.train
    cases = sorted({c.case for c in clips})
    if len(cases) < 3:
        raise EvaluateError(f"evaluation needs at least 3 cases (test, probe validation, probe training); the "
                            f"decoded data has {len(cases)}: {', '.join(cases) or 'none'}")
    if ev.test_fraction is None and tr.val_fraction > 0:
        test = sorted(split_by_case(clips, tr.val_fraction, tr.seed).val_cases)
        source = f"the cases the train stage held out (train.val_fraction {tr.val_fraction}, train.seed {tr.seed})"
    else:
        shuffled = cases[:]
        random.Random(ev.seed).shuffle(shuffled)
        frac = ev.test_fraction if ev.test_fraction is not None else 0.25
        test = sorted(shuffled[:max(1, round(frac * len(cases)))])
        source = f"evaluate.test_fraction {frac} of the cases (evaluate.seed {ev.seed})"
    rest = [c for c in cases if c not in test]
    if len(rest) < 2:
        raise EvaluateError(f"only {len(rest)} case(s) left after the {len(test)} test case(s): lower "
                            "evaluate.test_fraction or train.val_fraction, or add cases")
    random.Random(ev.seed + 1).shuffle(rest)
    n_val = min(len(rest) - 1, max(1, round(ev.val_fraction * len(rest))))
    return EvalSplit(tuple(rest[n_val:]), tuple(sorted(rest[:n_val])), tuple(test), source)


# ----------------------------------------------------------------------------------------------- labels

@dataclass
class ClipTable:
    """Per-clip labels as arrays aligned with `clips` (-1 = unlabelled)."""

    clips: list[Clip]
    video: np.ndarray
    case: np.ndarray
    step: np.ndarray
    motion: np.ndarray
    event: np.ndarray
    next_step: np.ndarray
    step_classes: list[str]
    motion_classes: list[str]
    missing: dict[str, str]     # task -> why the data cannot score it

    def rows(self, cases: Sequence[str], labels: np.ndarray | None = None) -> np.ndarray:
        keep = np.isin(self.case, list(cases))
        if labels is not None:
            keep &= labels >= 0
        return np.flatnonzero(keep)


def clip_table(manifest: Manifest, params: Params) -> ClipTable:
    d = params.data
    clips = build_clips(manifest, d.clip_frames, d.clip_stride, d.fps)
    if not clips:
        raise EvaluateError(f"no clips: no decoded video has >= data.clip_frames ({d.clip_frames}) frames; "
                            "run the decode stage first (`dvc repro decode`)")
    videos = {v.video_id: v for v in manifest.usable()}
    nxt = [next_step(videos[c.video_id], c, manifest.step_classes, d.clip_frames, d.fps) for c in clips]
    t = ClipTable(clips, np.array([c.video_id for c in clips]), np.array([c.case for c in clips]),
                  np.array([c.step for c in clips]), np.array([c.motion for c in clips]),
                  np.array([c.event for c in clips]), np.array(nxt), list(manifest.step_classes),
                  list(manifest.motion_classes), {})
    if not (t.step >= 0).any():
        t.missing["step"] = "no step labels in this data"
    if not manifest.motion_classes or not (t.motion >= 0).any():
        t.missing["motion"] = "no motion labels in this data"
    if not any(v.events for v in manifest.usable()):
        t.missing["event"] = "no event labels in this data"
    if "step" in t.missing or not (t.next_step >= 0).any():
        t.missing["anticipation"] = t.missing.get("step", "no clip has a later, different step")
    if not any(v.events for v in manifest.usable()):
        t.event[:] = -1
    return t


def eval_key(table: ClipTable, split: EvalSplit, manifest: Manifest, params: Params) -> str:
    """What makes two evaluations comparable: same test clips, labels, video content, probe recipe and split."""
    ev = params.evaluate.model_dump(exclude={"device", "threads", "gpu_prices", "convergence_metric",
                                             "convergence_fraction", "baselines", "feature_dtype"})
    test = table.rows(split.test)
    videos = sorted((v.video_id, v.sha256) for v in manifest.usable() if v.video_id in set(table.video[test]))
    labels = [(table.clips[i].video_id, table.clips[i].start, int(table.step[i]), int(table.motion[i]),
               int(table.event[i]), int(table.next_step[i])) for i in test]
    return fingerprint(ev, params.data.model_dump(mode="json", include={"fps", "size", "clip_frames", "clip_stride"}),
                       [split.train, split.val, split.test], videos, labels)[:16]


# -------------------------------------------------------------------------------------- feature sources

@dataclass
class Source:
    """What turns uint8 clips into tokens; methods also have the predictor (future and roll-outs)."""

    name: str
    kind: str                                   # method | baseline
    tokens: Callable[[Tensor], Tensor]          # uint8 (B, T, H, W, 3) -> (B, N, D)
    encoder: VideoEncoder | None = None
    predictor: Predictor | None = None
    context_frames: int = 0
    temperature: float = 0.1
    info: dict[str, Any] = field(default_factory=dict)


def load_predictor(path: Path) -> tuple[Predictor, dict[str, Any]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {})["predictor"])
    pred = Predictor(meta["enc_dim"], meta["dim"], meta["depth"], meta["heads"])
    pred.load_state_dict(load_file(str(path)))
    return pred.eval(), meta


def run_weights_sha(run_dir: Path) -> str:
    """One hash for a trained run's weights: the encoder file and the predictor file."""
    return fingerprint(file_sha256(run_dir / "encoder" / "model.safetensors"),
                       file_sha256(run_dir / "predictor.safetensors"))


def method_source(name: str, run_dir: Path, device: torch.device) -> Source:
    need = [run_dir / "encoder" / "config.json", run_dir / "encoder" / "model.safetensors",
            run_dir / "predictor.safetensors", run_dir / "config.json"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise EvaluateError(f"run '{name}' has no finished model ({', '.join(missing)} missing): its train stage "
                            f"did not complete; run `dvc repro train@{name}` (or `python -m tasks.train {name}`)")
    encoder = VideoEncoder.from_pretrained(run_dir / "encoder", local_files_only=True, use_safetensors=True)
    predictor, meta = load_predictor(run_dir / "predictor.safetensors")
    config = json.loads((run_dir / "config.json").read_text())
    return world_model_source(name, encoder, predictor, meta["context_frames"], config["train"]["temperature"],
                              device, {"weights_sha256": run_weights_sha(run_dir), "method": config.get("method"),
                                       "train_device": config.get("device")})


def world_model_source(name: str, encoder: VideoEncoder, predictor: Predictor, context_frames: int,
                       temperature: float, device: torch.device, info: dict[str, Any] | None = None) -> Source:
    encoder, predictor = encoder.to(device).eval(), predictor.to(device).eval()
    return Source(name, "method", lambda f: encoder(preprocess(f)), encoder, predictor, context_frames,
                  temperature, info or {})


def baseline_source(name: str, params: Params, weights_dir: Path, device: torch.device) -> Source:
    if name == "raw_pixels":
        pix = PixelTokens(params.evaluate.pixel_pool).to(device)
        return Source(name, "baseline", pix, info={"tokens": f"pixels pooled to {pix.pool}x{pix.pool} per patch"})
    torch.manual_seed(params.evaluate.seed)
    cfg_file = weights_dir / "config.json"
    if cfg_file.is_file():
        from transformers import VJEPA2Config

        cfg, arch = VJEPA2Config.from_json_file(str(cfg_file)), f"{cfg_file} (the pretrained encoder's)"
    else:
        m, d = params.model, params.data
        cfg = encoder_config(m.encoder_dim, m.encoder_depth, m.encoder_heads, d.size, d.clip_frames)
        arch = "model.* (no pretrained weights found)"
    encoder = VideoEncoder.from_config(cfg).to(device).eval()
    return Source(name, "baseline", lambda f: encoder(preprocess(f)), encoder,
                  info={"architecture": arch, "init_seed": params.evaluate.seed})


def load_source(name: str, params: Params, train_root: Path, weights_dir: Path, device: torch.device) -> Source:
    if name in params.evaluate.baselines:
        return baseline_source(name, params, weights_dir, device)
    if name in params.train.methods:
        return method_source(name, train_root / name, device)
    raise EvaluateError(f"'{name}' is neither a run of train.methods ({', '.join(params.train.methods)}) nor a "
                        f"baseline of evaluate.baselines ({', '.join(params.evaluate.baselines)})")


def rollout(src: Source, frames: Tensor, steps: int) -> Tensor:
    """Predicted tokens beyond the clip: the last `context_frames` frames alone are the first context, then each
    roll's prediction (the latest context_t token-time-steps) is the next context. -> (B, steps * Nf, D)."""
    assert src.encoder is not None and src.predictor is not None
    b, t, h, w, _ = frames.shape
    grid = src.encoder.grid(t, h, w)
    ct = src.context_frames // src.encoder.tubelet
    n_ctx = ct * grid[1] * grid[2]
    context = src.encoder(preprocess(frames[:, t - src.context_frames:]))  # (B, Nc, D)
    outs = []
    for _ in range(steps):
        fut = src.predictor(context, grid, ct)  # (B, Nf, D)
        outs.append(fut)
        context = torch.cat([context, fut], dim=1)[:, -n_ctx:]
    return torch.cat(outs, dim=1)


@torch.no_grad()
def extract(src: Source, cache: ClipCache, clips: Sequence[Clip], batch_size: int, device: torch.device,
            workdir: Path, dtype: str, rollouts: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Tokens (M, N, D) of every clip and, for methods, the rolled-out future tokens (M, R * Nf, D), memory-mapped."""
    from tqdm import tqdm

    workdir.mkdir(parents=True, exist_ok=True)
    tokens = rolled = None
    for lo in tqdm(range(0, len(clips), batch_size), desc=f"encode {src.name}", disable=not progress, unit="batch"):
        chunk = clips[lo:lo + batch_size]
        frames = torch.from_numpy(np.stack([cache.read(c) for c in chunk])).to(device)  # (B, T, H, W, 3)
        tok = src.tokens(frames).float()
        if tokens is None:
            tokens = open_memmap(workdir / "tokens.npy", "w+", dtype, (len(clips), *tok.shape[1:]))
        tokens[lo:lo + len(chunk)] = tok.cpu().numpy()
        if src.predictor is not None:
            rol = rollout(src, frames, rollouts).float()
            if rolled is None:
                rolled = open_memmap(workdir / "rolled.npy", "w+", dtype, (len(clips), *rol.shape[1:]))
            rolled[lo:lo + len(chunk)] = rol.cpu().numpy()
    return tokens, rolled


# ------------------------------------------------------------------------------------------------ probes

def gather(arrays: Sequence[np.ndarray], idx: np.ndarray, device: torch.device) -> Tensor:
    """Rows `idx` of each token array, concatenated along the token axis: (B, sum N, D) float32."""
    return torch.from_numpy(np.concatenate([np.asarray(a[idx], dtype=np.float32) for a in arrays], axis=1)).to(device)


@torch.no_grad()
def predict(probe: AttentiveProbe, arrays: Sequence[np.ndarray], idx: np.ndarray, device: torch.device,
            batch: int = 256) -> np.ndarray:
    probe.eval()
    out = [F.softmax(probe(gather(arrays, idx[i:i + batch], device)), dim=-1).cpu().numpy()
           for i in range(0, len(idx), batch)]
    return np.concatenate(out) if out else np.zeros((0, probe.head.out_features))


def fit_probe(arrays: Sequence[np.ndarray], y: np.ndarray, train: np.ndarray, val: np.ndarray, n_classes: int,
              params: Params, device: torch.device, select: Callable[[np.ndarray, np.ndarray], float | None],
              balanced: bool = False, seed: int = 0) -> tuple[AttentiveProbe, dict[str, Any]]:
    """AdamW with warmup + cosine; keeps the epoch with the best `select(y_val, scores)` (the last without val)."""
    ev = params.evaluate
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_tokens, dim = sum(a.shape[1] for a in arrays), arrays[0].shape[2]
    lag = (params.data.size // PATCH) ** 2 if ev.probe_deltas else 0  # tokens per token-time-step
    probe = AttentiveProbe(dim, n_tokens, n_classes, ev.probe_dim, ev.probe_depth, ev.probe_heads, lag).to(device)
    probe.standardize(gather(arrays, np.sort(rng.permutation(train)[:2048]), device))
    opt = torch.optim.AdamW(probe.parameters(), lr=ev.probe_lr, weight_decay=ev.probe_weight_decay)
    per_epoch = max(1, math.ceil(len(train) / ev.probe_batch_size))
    total, warm = ev.probe_epochs * per_epoch, max(1, ev.probe_epochs * per_epoch // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    weight = None
    if balanced:
        counts = np.bincount(y[train], minlength=n_classes).astype(np.float64)
        w = np.where(counts > 0, len(train) / (n_classes * np.maximum(counts, 1)), 0.0)
        weight = torch.tensor(np.minimum(w, 20.0), dtype=torch.float32, device=device)
    y_t = torch.from_numpy(y).long()
    best: tuple[float, int, dict[str, Tensor] | None] = (-math.inf, ev.probe_epochs, None)
    for epoch in range(1, ev.probe_epochs + 1):
        probe.train()
        perm = rng.permutation(train)
        for i in range(0, len(perm), ev.probe_batch_size):
            b = perm[i:i + ev.probe_batch_size]
            loss = F.cross_entropy(probe(gather(arrays, b, device)), y_t[b].to(device), weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if len(val):
            score = select(y[val], predict(probe, arrays, val, device))
            if score is not None and score > best[0]:
                best = (score, epoch, {k: v.detach().clone() for k, v in probe.state_dict().items()})
    if best[2] is not None:
        probe.load_state_dict(best[2])
    return probe, {"best_epoch": best[1], "val_score": None if best[2] is None else best[0]}


def _acc(y: np.ndarray, s: np.ndarray) -> float | None:
    return M.accuracy(y, s.argmax(1))


def _auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    return M.auroc(y, s[:, 1])


def _usable(y: np.ndarray, train: np.ndarray, test: np.ndarray, what: str) -> str | None:
    if not len(test):
        return f"no labelled {what} clips in the test cases"
    if len(np.unique(y[train])) < 2:
        return f"the probe's training cases hold fewer than 2 {what} classes"
    return None


def classify(task: str, table: ClipTable, arrays: Sequence[np.ndarray], cases: tuple[Sequence[str], ...],
             params: Params, device: torch.device) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Step or motion: (metrics, test predictions)."""
    y = getattr(table, task)
    n = len(table.step_classes if task == "step" else table.motion_classes)
    tr, va, te = (table.rows(c, y) for c in cases)
    why = _usable(y, tr, te, task)
    if why:
        return {"unavailable": why}, {}
    probe, fit = fit_probe(arrays, y, tr, va, n, params, device, _acc, seed=params.evaluate.seed)
    scores = predict(probe, arrays, te, device)
    pred = scores.argmax(1)
    majority = int(np.bincount(y[tr], minlength=n).argmax())
    out: dict[str, Any] = {"acc": M.accuracy(y[te], pred),
                           "majority_acc": M.accuracy(y[te], np.full(len(te), majority)), "chance": 1 / n, "test_clips": int(len(te)), "train_clips": int(len(tr)),
                           "classes_in_test": int(len(np.unique(y[te]))), **fit}
    if task == "step":
        out = {"f1_video": M.per_video_f1(y[te], pred, table.video[te]),
               "videos_in_test": int(len(np.unique(table.video[te]))), **out}
    return out, {"rows": te, "true": y[te], "pred": pred}


def detect_event(table: ClipTable, arrays: Sequence[np.ndarray], cases: tuple[Sequence[str], ...], params: Params,
                 device: torch.device) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    y = table.event
    tr, va, te = (table.rows(c, y) for c in cases)
    why = _usable(y, tr, te, "event")
    if why:
        return {"unavailable": why}, {}
    if not (y[te] == 1).any():
        return {"unavailable": "no event clips in the test cases (recall, F1 and AUROC are undefined)"}, {}
    probe, fit = fit_probe(arrays, y, tr, va, 2, params, device, _auroc, balanced=True, seed=params.evaluate.seed)
    p_val = predict(probe, arrays, va, device)[:, 1] if len(va) else np.zeros(0)
    thr = M.best_threshold(y[va], p_val) if len(va) else None
    thr_from = "best F1 on the validation cases"
    if thr is None:
        thr, thr_from = 0.5, "0.5 (no event clip in the validation cases)"
    p = predict(probe, arrays, te, device)[:, 1]
    pred = (p >= thr).astype(int)
    out = {**M.binary_counts(y[te], pred), "auroc": M.auroc(y[te], p), "threshold": float(thr),
           "threshold_from": thr_from, "positives_test": int(y[te].sum()), "test_clips": int(len(te)),
           "positive_rate_test": float(y[te].mean()), **fit}
    return out, {"rows": te, "true": y[te], "pred": pred, "score": p}


def anticipate(table: ClipTable, tokens: np.ndarray, rolled: np.ndarray | None, cases: tuple[Sequence[str], ...],
               params: Params, device: torch.device) -> dict[str, Any]:
    """Next-step recall@k: encoder-only probe, and (methods) the probe on [tokens, rolled-out future tokens]."""
    k, y, n = params.evaluate.top_k, table.next_step, len(table.step_classes)
    tr, va, te = (table.rows(c, y) for c in cases)
    why = _usable(y, tr, te, "next-step")
    if why:
        return {"unavailable": why}

    def select(yv: np.ndarray, s: np.ndarray) -> float | None:
        return M.mean_class_recall_at_k(yv, s, k)

    out: dict[str, Any] = {"k": k, "chance": min(1.0, k / n), "test_clips": int(len(te)),
                           "classes_in_test": int(len(np.unique(y[te])))}
    for label, arrays in (("encoder", [tokens]), ("world_model", [tokens, rolled] if rolled is not None else None)):
        if arrays is None:
            out[f"recall_at_{k}_{label}"] = None
            continue
        probe, fit = fit_probe(arrays, y, tr, va, n, params, device, select, balanced=True, seed=params.evaluate.seed)
        s = predict(probe, arrays, te, device)
        out[f"recall_at_{k}_{label}"] = M.mean_class_recall_at_k(y[te], s, k)
        out[f"acc_{label}"] = M.accuracy(y[te], s.argmax(1))
        out[f"best_epoch_{label}"] = fit["best_epoch"]
    if rolled is None:
        out["world_model_note"] = "no predictor (baseline): encoder-only"
    return out


@torch.no_grad()
def future(src: Source, cache: ClipCache, clips: Sequence[Clip], rows: np.ndarray, batch_size: int, seed: int,
           device: torch.device) -> dict[str, Any]:
    """The predictor on held-out clips: losses as in training, and top-1 retrieval of the true future."""
    assert src.encoder is not None and src.predictor is not None
    order = np.random.default_rng(seed).permutation(rows)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [b for b in batches if len(b) >= 2]
    if not batches:
        return {"unavailable": "fewer than 2 test clips"}
    sums, n = {"temporal": 0.0, "contrastive": 0.0, "retrieval_top1": 0.0}, 0
    for b in batches:
        frames = torch.from_numpy(np.stack([cache.read(clips[i]) for i in b])).to(device)
        pixels = preprocess(frames)  # (B, T, C, H, W)
        grid = src.encoder.grid(*pixels.shape[1:2], *pixels.shape[3:])
        ct = src.context_frames // src.encoder.tubelet
        context = src.encoder(pixels[:, :src.context_frames])  # (B, Nc, D): never sees the future
        target = src.encoder(pixels)[:, context.shape[1]:]  # (B, Nf, D)
        pred = src.predictor(context, grid, ct)
        con, acc = contrastive_loss(pred.float(), target.float(), src.temperature)
        for key, v in (("temporal", temporal_loss(pred.float(), target.float())), ("contrastive", con),
                       ("retrieval_top1", acc)):
            sums[key] += float(v) * len(b)
        n += len(b)
    return {**{k: v / n for k, v in sums.items()}, "batch_size": batch_size,
            "retrieval_chance": float(np.mean([1 / len(b) for b in batches])), "test_clips": int(n)}


# ------------------------------------------------------------------------------ train-stage derived rows

def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def convergence(history: Sequence[dict[str, Any]] | None, metric: str, fraction: float) -> dict[str, Any]:
    """First epoch whose `metric` reaches `fraction` of its final value; for losses (lower is better), the first
    epoch whose value is within final / fraction."""
    vals = [(h["epoch"], h[metric]) for h in history or [] if isinstance(h.get(metric), (int, float))]
    if not vals:
        return {"unavailable": f"no '{metric}' in the train history (needs validation cases: train.val_fraction > 0)"}
    final = vals[-1][1]
    lower = "loss" in metric or metric.endswith(("temporal", "contrastive"))
    if lower:
        reached = next(e for e, v in vals if v <= final / fraction) if final > 0 else vals[-1][0]
    else:
        reached = next(e for e, v in vals if v >= fraction * final)
    return {"epoch": int(reached), "epochs": len(vals), "metric": metric, "final": float(final),
            "rule": f"first epoch with {metric} {'<= final / ' if lower else '>= final * '}{fraction}"}


def cost(train_metrics: dict[str, Any] | None, run_config: dict[str, Any] | None,
         prices: dict[str, float]) -> dict[str, Any]:
    if not train_metrics or "train_time_s" not in train_metrics:
        return {"unavailable": "no train_time_s in the train metrics"}
    secs = float(train_metrics["train_time_s"])
    device = (train_metrics.get("device_name") or train_metrics.get("device")
              or (run_config or {}).get("device_name") or (run_config or {}).get("device") or "unknown")
    peak = next((train_metrics[k] for k in ("peak_memory_mb", "peak_gpu_memory_mb", "peak_rss_mb")
                 if isinstance(train_metrics.get(k), (int, float))), None)
    on = [name for name in prices if name.split()[0].lower() in str(device).lower()]
    return {"train_time_s": secs, "device": str(device), "peak_memory_mb": peak,
            **({} if peak is not None else {"peak_memory_note": "not recorded by the train stage"}),
            "usd": {name: round(secs / 3600 * price, 4) for name, price in prices.items()},
            "usd_per_gpu_hour": dict(prices),
            "note": (f"measured on {device}; a price is only meaningful for the device it names"
                     + (f" (this run used {', '.join(on)})" if on else " (none of the priced devices was used)"))}


def held_out_check(name: str, params: Params, clips: Sequence[Clip], split: EvalSplit) -> list[str]:
    """Test cases whose (unlabelled) video this run's world model trained on: empty when the split is clean."""
    from tasks.trainset import split_by_case

    if name not in params.train.methods:
        return []
    t = params.train.resolve(name)
    seen = set(split_by_case(clips, t.val_fraction, t.seed).train_cases)
    return sorted(seen & set(split.test))


# ------------------------------------------------------------------------------------------------- stage

@dataclass
class Prepared:
    manifest: Manifest
    table: ClipTable
    split: EvalSplit
    key: str
    cache: ClipCache


def prepare(params: Params, cache_dir: Path = CACHE, manifest_path: Path = DECODED) -> Prepared:
    if not Path(manifest_path).is_file():
        raise EvaluateError(f"{manifest_path} not found: run the decode stage first (`dvc repro decode`)")
    manifest = read_manifest(manifest_path)
    table = clip_table(manifest, params)
    split = split_cases(table.clips, params)
    return Prepared(manifest, table, split, eval_key(table, split, manifest, params),
                    ClipCache(cache_dir, params.data.clip_frames))


def score(src: Source, prep: Prepared, params: Params, device: torch.device, workdir: Path,
          progress: bool = False) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Every task for one feature source: (metrics, test predictions per task). Used by register too."""
    ev, table, split = params.evaluate, prep.table, prep.split
    tokens, rolled = extract(src, prep.cache, table.clips, ev.batch_size, device, workdir, ev.feature_dtype,
                             ev.rollouts, progress)
    cases = (split.train, split.val, split.test)
    out: dict[str, Any] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    for task in CLASSIFY:
        out[task], preds[task] = ({"unavailable": table.missing[task]}, {}) if task in table.missing else \
            classify(task, table, [tokens], cases, params, device)
    out["event"], preds["event"] = ({"unavailable": table.missing["event"]}, {}) if "event" in table.missing else \
        detect_event(table, [tokens], cases, params, device)
    out["anticipation"] = ({"unavailable": table.missing["anticipation"]} if "anticipation" in table.missing
                           else anticipate(table, tokens, rolled, cases, params, device))
    out["future"] = (future(src, prep.cache, table.clips, table.rows(split.test), ev.batch_size, ev.seed, device)
                     if src.predictor is not None else {"unavailable": "no predictor (baseline)"})
    curve = []
    for frac in sorted(set(ev.fractions)):
        sub = split.subset(frac)
        if sub == tuple(sorted(split.train)):
            res = {t: out[t] for t in (*CLASSIFY, "event")}
        else:
            res = {}
            for task in CLASSIFY:
                res[task] = out[task] if task in table.missing else \
                    classify(task, table, [tokens], (sub, split.val, split.test), params, device)[0]
            res["event"] = out["event"] if "event" in table.missing else \
                detect_event(table, [tokens], (sub, split.val, split.test), params, device)[0]
        curve.append({"fraction": frac, "train_cases": len(sub),
                      "step_f1_video": res["step"].get("f1_video"), "step_acc": res["step"].get("acc"),
                      "motion_acc": res["motion"].get("acc"), "event_f1": res["event"].get("f1"),
                      "event_auroc": res["event"].get("auroc")})
    out["efficiency"] = {f"{round(r['fraction'] * 100)}pct": r for r in curve}
    del tokens, rolled
    shutil.rmtree(workdir, ignore_errors=True)
    return out, preds


def resolve_device(want: str) -> torch.device:
    if want == "cuda" and not torch.cuda.is_available():
        raise EvaluateError("evaluate.device is 'cuda' but no CUDA device is available (set evaluate.device: auto)")
    return torch.device("cuda" if want != "cpu" and torch.cuda.is_available() else "cpu")


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=1, default=_plain) + "\n")


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def evaluate(name: str, params: Params, *, cache_dir: Path = CACHE, manifest_path: Path = DECODED,
             train_root: Path = TRAIN, weights_dir: Path = WEIGHTS, metrics_dir: Path = METRICS,
             out_root: Path = EVALUATE, runtime: Path = RUNTIME, progress: bool = True) -> dict[str, Any]:
    """Evaluate `name`, write its metrics, plots and predictions; raises EvaluateError (after writing a
    failed record) when the run has no trained model."""
    ev = params.evaluate
    clash = sorted(set(params.train.methods) & set(BASELINE_NAMES))
    if clash:
        raise EvaluateError(f"train.methods uses the baseline name(s) {', '.join(clash)}: rename those runs")
    if ev.threads:
        torch.set_num_threads(ev.threads)
    device = resolve_device(ev.device)
    t0 = time.perf_counter()
    prep = prepare(params, cache_dir, manifest_path)
    kind = "baseline" if name in ev.baselines else "method"
    out_dir, metrics_dir = Path(out_root) / name, Path(metrics_dir)
    head: dict[str, Any] = {"name": name, "kind": kind, "eval_key": prep.key}
    try:
        src = load_source(name, params, Path(train_root), Path(weights_dir), device)
    except (EvaluateError, OSError, ValueError) as err:
        failed = {**head, "status": "failed", "error": str(err)}
        write_json(metrics_dir / f"evaluate_{name}.json", failed)
        write_json(metrics_dir / f"evaluate_{name}_efficiency.json", [])
        record_failure("evaluate", name, str(err), runtime)
        raise EvaluateError(str(err)) from None
    split = prep.split
    log.info("%s: test cases %s (%s); probe val %s; probe train %d cases", name, ", ".join(split.test),
             split.source, ", ".join(split.val), len(split.train))
    torch.manual_seed(ev.seed)
    result, preds = score(src, prep, params, device, out_dir / ".features.tmp", progress)
    curve = list(result["efficiency"].values())
    result["split"] = {"test_cases": list(split.test), "val_cases": list(split.val), "train_cases": sorted(split.train),
                       "test_from": split.source, "test_clips": int(len(prep.table.rows(split.test))),
                       "test_cases_seen_by_world_model": held_out_check(name, params, prep.table.clips, split)}
    if kind == "method":
        tm = read_json(metrics_dir / f"train_{name}.json")
        result["convergence"] = convergence(read_json(metrics_dir / f"train_{name}_history.json"),
                                            ev.convergence_metric, ev.convergence_fraction)
        result["cost"] = cost(tm, read_json(Path(train_root) / name / "config.json"), ev.gpu_prices)
    result = {**head, "status": "ok", **result, **src.info, "eval_device": device_name(device),
              "eval_time_s": round(time.perf_counter() - t0, 2)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_outputs(name, result, preds, curve, prep, out_dir)
    write_json(metrics_dir / f"evaluate_{name}_efficiency.json", curve)
    write_json(metrics_dir / f"evaluate_{name}.json", result)
    clear_failure("evaluate", name, runtime)
    log.info("%s: %s", name, summary(result))
    return result


def summary(r: dict[str, Any]) -> str:
    def g(task: str, key: str) -> str:
        v = (r.get(task) or {}).get(key)
        return f"{task}.{key} {v:.3f}" if isinstance(v, (int, float)) else f"{task}.{key} n/a"

    k = (r.get("anticipation") or {}).get("k", 5)
    return ", ".join([g("step", "f1_video"), g("step", "acc"), g("motion", "acc"), g("event", "f1"),
                      g("event", "auroc"), g("anticipation", f"recall_at_{k}_encoder"),
                      g("anticipation", f"recall_at_{k}_world_model"), g("future", "retrieval_top1")])


def write_outputs(name: str, result: dict[str, Any], preds: dict[str, dict[str, np.ndarray]],
                  curve: list[dict[str, Any]], prep: Prepared, out_dir: Path) -> None:
    """Confusion matrices (PNG), test predictions (CSV), the split (JSON)."""
    table = prep.table
    for task, classes in (("step", table.step_classes), ("motion", table.motion_classes)):
        p = preds.get(task) or {}
        if "true" in p:
            plot_confusion(M.confusion_matrix(p["true"], p["pred"], len(classes)), classes,
                           f"{name}: {task} (test cases {', '.join(prep.split.test)})",
                           out_dir / f"{task}_confusion.png")
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["task", "video", "start", "true", "pred", "score"])
        for task, p in preds.items():
            for j, row in enumerate(p.get("rows", [])):
                c = table.clips[int(row)]
                w.writerow([task, c.video_id, c.start, int(p["true"][j]), int(p["pred"][j]),
                            f"{p['score'][j]:.5f}" if "score" in p else ""])
    write_json(out_dir / "split.json", result["split"])


def plot_confusion(cm: np.ndarray, classes: Sequence[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 1.0 * len(classes) + 1.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("name", help="a key of train.methods, or a baseline: " + ", ".join(BASELINE_NAMES))
    ap.add_argument("--params", default=str(DEFAULT_PARAMS))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(args.params)
        evaluate(args.name, params, progress=not args.no_progress)
    except (ParamsError, EvaluateError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, EvaluateError) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
