"""Evaluation metrics in numpy, each checked against scikit-learn in tests/test_metrics.py.

Conventions: labels are class indices; a class absent from `y_true` never crashes a metric (it has no support,
so it weighs nothing in weighted F1 and is left out of mean class recall); a metric that is undefined on the
data (AUROC with one class present, anything on zero samples) is None, never an invented number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float | None:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float((t == p).mean()) if len(t) else None


def _prf(t: np.ndarray, p: np.ndarray, c: int) -> tuple[float, float, float]:
    """Precision, recall, F1 of class c (0 where a denominator is 0, as sklearn's zero_division=0)."""
    tp = float(np.sum((t == c) & (p == c)))
    fp = float(np.sum((t != c) & (p == c)))
    fn = float(np.sum((t == c) & (p != c)))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return prec, rec, f1


def f1_weighted(y_true: Sequence[int], y_pred: Sequence[int]) -> float | None:
    """sklearn's f1_score(average="weighted"): per-class F1 weighted by the class's support in y_true."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if not len(t):
        return None
    classes, support = np.unique(t, return_counts=True)
    return float(sum(_prf(t, p, c)[2] * n for c, n in zip(classes, support)) / support.sum())


def per_video_f1(y_true: Sequence[int], y_pred: Sequence[int], videos: Sequence[str]) -> float | None:
    """The SurgVU step metric: weighted F1 within each video, averaged over videos (each video counts once)."""
    t, p, v = np.asarray(y_true), np.asarray(y_pred), np.asarray(videos)
    scores = [f1_weighted(t[v == vid], p[v == vid]) for vid in np.unique(v)]
    return float(np.mean(scores)) if scores else None


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: row = true class, column = predicted."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(M, k) class indices of the k highest scores, ties broken like sklearn's top_k_accuracy_score."""
    return np.argsort(scores, axis=1, kind="mergesort")[:, ::-1][:, :k]


def mean_class_recall_at_k(y_true: Sequence[int], scores: np.ndarray, k: int) -> float | None:
    """For each class present in y_true: the share of its samples whose true class is among the top k scores;
    averaged over those classes (classes absent from y_true are left out)."""
    t = np.asarray(y_true)
    if not len(t):
        return None
    hit = (top_k(np.asarray(scores), min(k, scores.shape[1])) == t[:, None]).any(axis=1)
    return float(np.mean([hit[t == c].mean() for c in np.unique(t)]))


def binary_counts(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float | None]:
    """Accuracy, precision, recall, F1 of the positive class 1."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    prec, rec, f1 = _prf(t, p, 1)
    return {"acc": accuracy(t, p), "precision": prec, "recall": rec, "f1": f1}


def auroc(y_true: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties counting 1/2; None
    unless both classes are present."""
    t, s = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int((t == 1).sum()), int((t != 1).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(s)  # 1-based, ties get their average rank
    return float((ranks[t == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_threshold(y_true: Sequence[int], scores: Sequence[float]) -> float | None:
    """The score threshold (predict positive when score >= it) with the highest F1; None without positives."""
    t, s = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    if not (t == 1).any():
        return None
    best, best_f1 = None, -1.0
    for thr in np.unique(s):
        f1 = _prf(t, (s >= thr).astype(int), 1)[2]
        if f1 > best_f1:
            best, best_f1 = float(thr), f1
    return best


def mae(y_true: Sequence[float], y_pred: Sequence[float]) -> float | None:
    """Mean absolute error (e.g. seconds to the next step); None on zero samples."""
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    return float(np.abs(t - p).mean()) if len(t) else None


def class_f1(y_true: Sequence[int], y_pred: Sequence[int], c: int) -> float:
    """F1 of class c (sklearn's f1_score(labels=[c], average=None)[0] with zero_division=0)."""
    return _prf(np.asarray(y_true), np.asarray(y_pred), c)[2]


def average_precision(y_true: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the precision-recall curve as scikit-learn's average_precision_score: sum over thresholds
    (each distinct score, high to low) of (recall gained) x precision; None without positives."""
    t, s = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    n_pos = int((t == 1).sum())
    if not n_pos:
        return None
    order = np.argsort(-s, kind="mergesort")
    t, s = t[order] == 1, s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]      # the last index of each distinct score
    tp = np.cumsum(t)[last]
    precision, recall = tp / (last + 1), tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
