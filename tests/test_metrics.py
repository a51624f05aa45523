"""surgwm/evaluation/metrics.py against scikit-learn on hand-made cases, including classes absent from the test labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from surgwm.evaluation import metrics as M

CASES = [
    ([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]),
    ([3, 3, 3, 0], [3, 0, 5, 0]),               # predicted class 5 never occurs in y_true
    ([1, 1, 1, 1], [1, 1, 1, 1]),
    ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0]),
    ([2, 2, 7, 7, 7, 1], [2, 7, 7, 7, 1, 1]),   # classes 0, 3..6 absent from both
]


@pytest.mark.parametrize(("y", "p"), CASES)
def test_accuracy_and_weighted_f1_match_sklearn(y, p):
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
    assert M.f1_weighted(y, p) == pytest.approx(skm.f1_score(y, p, average="weighted", zero_division=0))


def test_per_video_f1_is_the_mean_of_per_video_weighted_f1():
    y = [0, 0, 1, 1, 2, 2, 2, 0]
    p = [0, 1, 1, 1, 2, 0, 2, 0]
    v = ["a", "a", "a", "b", "b", "b", "c", "c"]
    want = np.mean([skm.f1_score([y[i] for i in range(8) if v[i] == k], [p[i] for i in range(8) if v[i] == k],
                                 average="weighted", zero_division=0) for k in "abc"])
    assert M.per_video_f1(y, p, v) == pytest.approx(want)
    assert M.per_video_f1([], [], []) is None


def test_confusion_matrix_matches_sklearn_with_absent_classes():
    y, p = [0, 2, 2, 5], [0, 2, 1, 2]
    assert (M.confusion_matrix(y, p, 8) == skm.confusion_matrix(y, p, labels=range(8))).all()


def test_mean_class_recall_at_k_matches_sklearn_per_class():
    rng = np.random.default_rng(0)
    scores = rng.random((40, 8))
    y = rng.choice([0, 2, 3, 6], size=40)       # classes 1, 4, 5, 7 absent: left out of the mean, no crash
    for k in (1, 3, 5):
        want = np.mean([skm.top_k_accuracy_score(y[y == c], scores[y == c], k=k, labels=range(8))
                        for c in np.unique(y)])
        assert M.mean_class_recall_at_k(y, scores, k) == pytest.approx(want)
    assert M.mean_class_recall_at_k(y, scores, 8) == 1.0
    assert M.mean_class_recall_at_k([], scores[:0], 5) is None


def test_mean_class_recall_is_not_plain_recall():
    """One frequent class right, one rare class wrong: per-class mean is 0.5, sample mean would be 0.9."""
    scores = np.array([[1.0, 0.0]] * 10)
    y = np.array([0] * 9 + [1])
    assert M.mean_class_recall_at_k(y, scores, 1) == pytest.approx(0.5)


@pytest.mark.parametrize(("y", "p"), [([0, 1, 1, 0, 1], [0, 1, 0, 0, 1]), ([0, 0, 0], [0, 1, 0]),
                                      ([1, 1], [0, 0]), ([0, 0, 0], [0, 0, 0])])
def test_binary_counts_match_sklearn(y, p):
    got = M.binary_counts(y, p)
    assert got["acc"] == pytest.approx(skm.accuracy_score(y, p))
    assert got["precision"] == pytest.approx(skm.precision_score(y, p, zero_division=0))
    assert got["recall"] == pytest.approx(skm.recall_score(y, p, zero_division=0))
    assert got["f1"] == pytest.approx(skm.f1_score(y, p, zero_division=0))


@pytest.mark.parametrize(("y", "s"), [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]),
    ([0, 1, 0, 1, 1, 0], [0.5, 0.5, 0.2, 0.9, 0.5, 0.1]),   # ties across classes
    ([1, 0, 0, 0, 0, 0, 0, 1], [0.3, 0.3, 0.3, 0.1, 0.9, 0.2, 0.3, 0.95]),
])
def test_auroc_matches_sklearn(y, s):
    assert M.auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s))


def test_auroc_is_none_with_one_class():
    assert M.auroc([0, 0, 0], [0.1, 0.2, 0.3]) is None
    assert M.auroc([1, 1], [0.1, 0.2]) is None


def test_best_threshold_maximises_f1():
    y = np.array([0, 0, 1, 0, 1, 1, 0, 0])
    s = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.15, 0.65])
    thr = M.best_threshold(y, s)
    best = max(skm.f1_score(y, (s >= t).astype(int)) for t in np.unique(s))
    assert skm.f1_score(y, (s >= thr).astype(int)) == pytest.approx(best)
    assert M.best_threshold([0, 0], [0.2, 0.4]) is None


@pytest.mark.parametrize(("y", "s"), [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]),
    ([0, 1, 0, 1, 1, 0], [0.5, 0.5, 0.2, 0.9, 0.5, 0.1]),   # ties across classes
    ([1, 0, 0, 0, 0, 0, 0, 1], [0.3, 0.3, 0.3, 0.1, 0.9, 0.2, 0.3, 0.95]),
])
def test_average_precision_matches_sklearn(y, s):
    assert M.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s))
    assert M.average_precision([0, 0], [0.1, 0.2]) is None


@pytest.mark.parametrize(("y", "p"), CASES)
def test_class_f1_matches_sklearn(y, p):
    for c in range(8):
        want = skm.f1_score(y, p, labels=[c], average=None, zero_division=0)[0]
        assert M.class_f1(y, p, c) == pytest.approx(want)


def test_mae():
    assert M.mae([1.0, 3.0], [2.0, 1.0]) == pytest.approx(skm.mean_absolute_error([1.0, 3.0], [2.0, 1.0]))
    assert M.mae([], []) is None
