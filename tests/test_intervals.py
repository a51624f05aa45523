"""The case bootstrap (surgwm/evaluation/intervals.py, compare.estimator) against hand computations on tiny tables:
exact enumeration of every resample, a fixed-seed loop, the evaluation's own metric functions on materialised
resamples, paired differences, seeds, and the winner rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from surgwm.evaluation import intervals as I
from surgwm.evaluation import metrics as M
from surgwm.evaluation.compare import MetricDef, estimator
from surgwm.evaluation.rows import Rows

# A tiny table: 3 cases, 9 clips. Case A: 2 of 4 right, case B: 3 of 3, case C: 0 of 2.
CASES = ["A", "B", "C"]
CASE = np.array(["A"] * 4 + ["B"] * 3 + ["C"] * 2)
TRUE = np.array([0, 1, 2, 0, 1, 1, 2, 0, 1])
PRED = np.array([0, 1, 0, 1, 1, 1, 2, 1, 0])          # right: A 2/4, B 3/3, C 0/2
RIGHT = {"A": (2, 4), "B": (3, 3), "C": (0, 2)}


def rows(pred: np.ndarray, true: np.ndarray = TRUE, case: np.ndarray = CASE, video: np.ndarray | None = None,
         n_classes: int = 3) -> Rows:
    """Rows whose probability argmax is `pred`; pred (n,) or (R, n) for several probe seeds."""
    pred = np.atleast_2d(pred)
    score = np.eye(n_classes)[pred] * 0.8 + 0.2 / n_classes          # (R, n, C), argmax = pred
    return Rows(case=case, video=case if video is None else video, start=np.arange(len(case)), true=true,
                score=score[None])


ACC = MetricDef("step.acc", "acc", "step", "accuracy")


def all_resamples(n: int) -> np.ndarray:
    """Every ordered draw of n cases out of n, as case counts (n**n, n): the exact bootstrap distribution."""
    return np.array([np.bincount(d, minlength=n) for d in itertools.product(range(n), repeat=n)])


def test_accuracy_interval_matches_exact_enumeration_by_hand():
    est = estimator(ACC, rows(PRED), None, CASES, 3)
    counts = all_resamples(3)                                           # 27 equally likely resamples
    got = est.values(counts, np.ones((len(counts), 1, 1)))
    by_hand = []
    for draw in itertools.product(CASES, repeat=3):
        right = sum(RIGHT[c][0] for c in draw)
        total = sum(RIGHT[c][1] for c in draw)
        by_hand.append(right / total)
    assert sorted(np.round(got, 12)) == sorted(np.round(by_hand, 12))
    assert est.point() == pytest.approx(5 / 9)
    iv = I.interval(got, est.point())
    assert (iv.lo, iv.hi) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))
    # by hand: of the 27 sorted values the lowest are CCC = 0 and CCA (x3) = 2/8; the highest BBB = 1, then
    # BBA (x3) = 8/10; numpy's linear percentile sits at positions 0.65 and 25.35 of 0..26
    assert iv.lo == pytest.approx(0.65 * 2 / 8) and iv.hi == pytest.approx(0.8 + 0.35 * (1 - 0.8))


def test_fixed_seed_bootstrap_equals_a_plain_loop():
    boot = I.Bootstrap(n_cases=3, resamples=500, seed=7)
    rng = np.random.default_rng(7)
    draws = rng.multinomial(3, [1 / 3] * 3, size=500)                   # the documented draw
    assert np.array_equal(boot.counts, draws)
    loop = []
    for w in draws:
        picked = np.concatenate([np.flatnonzero(CASE == c).repeat(1) for c, k in zip(CASES, w) for _ in range(k)])
        loop.append(M.accuracy(TRUE[picked], PRED[picked]))             # the evaluation's metric, resampled rows
    iv = boot.interval("a", estimator(ACC, rows(PRED), None, CASES, 3))
    assert (iv.lo, iv.hi) == pytest.approx(tuple(np.percentile(loop, [2.5, 97.5])))
    assert iv.covers == ("test cases (3)",)


def _materialise(w: np.ndarray) -> np.ndarray:
    """Row indices of a resample given case counts (each case's rows repeated count times)."""
    return np.concatenate([np.flatnonzero(CASE == c) for c, k in zip(CASES, w) for _ in range(k)])


@pytest.mark.parametrize("kind", ["per_video_f1", "auroc", "recall_at", "binary:f1", "class_f1"])
def test_resampled_metrics_equal_the_evaluation_metrics_on_the_resampled_rows(kind):
    video = np.array(["A1", "A1", "A2", "A2", "B1", "B1", "B1", "C1", "C1"])
    rng = np.random.default_rng(0)
    if kind in ("auroc", "binary:f1"):
        true = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0])
        p = rng.random(9)
        r = Rows(case=CASE, video=video, start=np.arange(9), true=true,
                 score=np.stack([1 - p, p], -1)[None, None], thresholds=np.full((1, 1), 0.5))
        metric = MetricDef("event.x", "x", "event", kind)
        n_classes = 2
    else:
        true, n_classes = TRUE, 3
        s = rng.random((9, 3))
        r = Rows(case=CASE, video=video, start=np.arange(9), true=true, score=s[None, None])
        metric = MetricDef("x", "x", "step", kind, k=2, cls=1)
    est = estimator(metric, r, None, CASES, n_classes)
    counts = all_resamples(3)
    got = est.values(counts, np.ones((len(counts), 1, 1)))
    for w, g in zip(counts, got):
        i = _materialise(w)
        if kind == "per_video_f1":    # a video drawn twice counts twice in the mean over videos
            vids = [v for c, k in zip(CASES, w) for _ in range(k) for v in np.unique(video[CASE == c])]
            want = np.mean([M.f1_weighted(true[video == v], s[video == v].argmax(1)) for v in vids])
        elif kind == "auroc":
            want = M.auroc(true[i], p[i])
        elif kind == "binary:f1":
            want = M.binary_counts(true[i], (p[i] >= 0.5).astype(int))["f1"] if (true[i] == 1).any() else None
        elif kind == "recall_at":
            want = M.mean_class_recall_at_k(true[i], s[i], 2)
        else:
            want = M._prf(true[i], s[i].argmax(1), 1)[2] if ((true[i] == 1) | (s[i].argmax(1) == 1)).any() else None
        if want is None:
            assert np.isnan(g)
        else:
            assert g == pytest.approx(want, abs=1e-12), (w, kind)


def test_paired_difference_uses_the_same_cases_for_both_names():
    better = PRED.copy()
    better[7:] = TRUE[7:]                                               # b also gets case C right
    a, b = estimator(ACC, rows(PRED), None, CASES, 3), estimator(ACC, rows(better), None, CASES, 3)
    boot = I.Bootstrap(3, 400, seed=1)
    d = boot.difference(("b", b), ("a", a))
    per_draw = b.values(boot.counts, np.ones((400, 1, 1))) - a.values(boot.counts, np.ones((400, 1, 1)))
    assert (per_draw >= 0).all()                                        # paired: b is never worse in a draw
    assert d.point == pytest.approx(2 / 9) and d.lo >= 0
    assert (d.lo, d.hi) == pytest.approx(tuple(np.percentile(per_draw, [2.5, 97.5])))
    unpaired = b.values(boot.counts, np.ones((400, 1, 1))) - a.values(I.Bootstrap(3, 400, seed=2).counts,
                                                                     np.ones((400, 1, 1)))
    assert (unpaired < 0).any()                 # unpaired draws would make b look worse in some resamples


def test_seeds_are_averaged_and_resampled_and_reported():
    seed2 = PRED.copy()
    seed2[:4] = TRUE[:4]                                                # the second probe seed gets case A right
    est = estimator(ACC, rows(np.stack([PRED, seed2])), None, CASES, 3)
    assert (est.m, est.r) == (1, 2)
    assert est.point() == pytest.approx((5 / 9 + 7 / 9) / 2)            # mean over seeds, as the metrics JSON
    w = I.seed_weights(1, 2, 1000, np.random.default_rng(0))
    assert w.shape == (1000, 1, 2) and np.allclose(w.sum((1, 2)), 1) and {0.0, 0.5, 1.0} >= set(np.unique(w))
    iv = I.Bootstrap(3, 300, seed=0).interval("a", est)
    assert iv.covers == ("test cases (3)", "probe seeds (2)")
    pooled = Rows(case=CASE, video=CASE, start=np.arange(9), true=TRUE,
                  score=np.concatenate([rows(PRED).score, rows(seed2).score]))     # two world-model seeds
    assert I.Bootstrap(3, 300, seed=0).interval("p", estimator(ACC, pooled, None, CASES, 3)).covers == (
        "test cases (3)", "world-model seeds (2)")


def _fixed(point: float, lo: float, hi: float):
    return lambda *_: I.Interval(point, lo, hi)


def test_winner_only_when_the_difference_from_the_runner_up_excludes_zero():
    clear = I.decide({"a": 0.9, "b": 0.6, "c": 0.5}, "high", _fixed(0.3, 0.1, 0.5), ("prior", 0.4),
                     _fixed(0.5, 0.3, 0.7))
    assert clear["winner"] == "a" and clear["runner_up"] == "b" and clear["text"].startswith("`a`")
    close = I.decide({"a": 0.62, "b": 0.61}, "high", _fixed(0.01, -0.02, 0.04), ("prior", 0.4),
                     _fixed(0.2, 0.1, 0.3))
    assert close["winner"] is None and close["text"].startswith("no clear winner (`a` − `b` +0.010")


def test_no_winner_that_does_not_beat_the_best_rule():
    d = I.decide({"a": 0.99, "b": 0.9}, "high", _fixed(0.09, 0.05, 0.12), ("prior", 0.97), _fixed(0.02, -0.01, 0.06))
    assert d["winner"] is None and "does not beat the rule `prior`" in d["text"]


def test_lower_is_better_winner():
    d = I.decide({"a": 2.0, "b": 3.0}, "low", _fixed(-1.0, -1.5, -0.4), ("prior", 2.5), _fixed(-0.5, -0.9, -0.1))
    assert d["winner"] == "a"
    d = I.decide({"a": 2.0, "b": 3.0}, "low", _fixed(-1.0, -1.5, 0.2), None, None)
    assert d["winner"] is None
