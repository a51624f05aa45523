"""Attentive probes on frozen tokens, one per task: step, motion, event, anticipation."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.encoder import PATCH
from models.probe import AttentiveProbe
from surgwm.evaluation import metrics as M
from surgwm.params import Params
from surgwm.evaluation.table import ClipTable


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
