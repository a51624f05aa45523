"""95 % bootstrap intervals over CASES, paired across names, with probe and world-model seeds resampled too.

Why cases: clips of one case are strongly correlated (same video, same anatomy, same surgeon), so the case is the
unit a new measurement would sample; resampling clips would make intervals far too narrow.

How (vectorised): every metric is computed from per-case sufficient statistics `stats` of shape
(M, R, n_cases, K) (M world-model seeds, R probe seeds, K numbers per case, e.g. correct and total), so a resample
is a matrix product: W (B, n_cases) holds how often each case was drawn in each of B resamples (a multinomial
draw of n_cases out of n_cases), `W @ stats` gives the resampled sums and `value(sums)` the metric. AUROC has no
such statistics; it is computed per resample from row weights (`auroc_values`).

Seeds: a metric of one name is the mean over its seeds (the metrics JSON does the same). Each resample also
draws the seeds with replacement (probe seeds among R, world-model seeds among M, where there is more than one),
so the interval covers those sources of variance too: `covers()` says which ones it does.

Pairing: every name with the same evaluation key has the same rows, so they share W (the same cases drawn in the
same resample); the difference of two names in each resample gives the paired interval of the difference.
Seed draws are independent per name (a probe seed of one name has nothing in common with the same number of
another's).

`percentile` intervals (2.5 and 97.5 % of the resampled values, NaNs, i.e. resamples where the metric is
undefined, left out and counted).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEVEL = 0.95
ValueFn = Callable[[np.ndarray], np.ndarray]   # (..., K) summed statistics -> (...) metric


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95 % interval; `undefined` = resamples where the metric had no value."""

    point: float
    lo: float
    hi: float
    undefined: int = 0
    covers: tuple[str, ...] = ()

    def excludes_zero(self) -> bool:
        return bool(np.isfinite(self.lo) and np.isfinite(self.hi) and (self.lo > 0 or self.hi < 0))

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"point": _f(self.point), "lo": _f(self.lo), "hi": _f(self.hi)}
        if self.undefined:
            d["undefined_resamples"] = self.undefined
        if self.covers:
            d["covers"] = list(self.covers)
        return d


def _f(v: float) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def case_counts(n_cases: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n_cases) int: how often each case is drawn in each resample (n_cases draws with replacement)."""
    if n_cases < 1:
        raise ValueError("a bootstrap over cases needs at least one case")
    return rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=resamples)


def seed_weights(m: int, r: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, M, R) weights summing to 1 per resample: world-model seeds drawn among M and probe seeds among R with
    replacement (a weight 1/(M R) each when there is one of a kind: nothing to resample)."""
    wm = rng.multinomial(m, np.full(m, 1.0 / m), size=resamples) if m > 1 else np.ones((resamples, 1), np.int64)
    pr = rng.multinomial(r, np.full(r, 1.0 / r), size=resamples) if r > 1 else np.ones((resamples, 1), np.int64)
    return (wm[:, :, None] * pr[:, None, :]) / float(m * r)   # (B, M, R)


def name_rng(seed: int, name: str) -> np.random.Generator:
    """An RNG for one name's seed draws: reproducible and independent of the other names."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def covers(m: int, r: int, n_cases: int, what: str = "test cases") -> tuple[str, ...]:
    """The sources of variance an interval covers."""
    out = [f"{what} ({n_cases})"]
    if r > 1:
        out.append(f"probe seeds ({r})")
    if m > 1:
        out.append(f"world-model seeds ({m})")
    return tuple(out)


def by_case(values: np.ndarray, case_idx: np.ndarray, n_cases: int) -> np.ndarray:
    """Per-row numbers (M, R, n, K) -> per-case sums (M, R, n_cases, K)."""
    onehot = np.zeros((len(case_idx), n_cases))
    onehot[np.arange(len(case_idx)), case_idx] = 1.0
    return np.einsum("mrnk,nc->mrck", values, onehot)


def _seed_mean(vals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over the seed axes (-2, -1), ignoring seeds where the metric is undefined (NaN)."""
    ok = np.isfinite(vals)
    w = np.where(ok, weights, 0.0)
    tot = w.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (np.where(ok, vals, 0.0) * w).sum(axis=(-2, -1)) / np.where(tot > 0, tot, 1), np.nan)


@dataclass
class Estimator:
    """One metric of one name on one split: its point estimate and its values under given resamples."""

    m: int
    r: int
    _point: Callable[[], float]
    _values: Callable[[np.ndarray, np.ndarray], np.ndarray]    # (W (B, C), V (B, M, R)) -> (B,)
    extra: dict[str, Any] = field(default_factory=dict)

    def point(self) -> float:
        return self._point()

    def values(self, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self._values(counts, weights)


def stats_estimator(stats: np.ndarray, value: ValueFn) -> Estimator:
    """From per-case statistics (M, R, n_cases, K) and the metric of their sums."""
    stats = np.asarray(stats, dtype=np.float64)
    m, r = stats.shape[:2]

    def point() -> float:
        return float(_seed_mean(value(stats.sum(axis=2)), np.full((m, r), 1.0 / (m * r))))

    def values(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        out = []
        step = max(1, 4_000_000 // max(1, stats[0, 0].size * m * r))       # bounds memory for large tables
        for i in range(0, len(counts), step):
            summed = np.einsum("bc,mrck->bmrk", counts[i:i + step].astype(np.float64), stats)
            out.append(_seed_mean(value(summed), weights[i:i + step]))
        return np.concatenate(out) if out else np.zeros(0)

    return Estimator(m, r, point, values)


def auroc_pairs(y: np.ndarray, scores: np.ndarray, case_idx: np.ndarray, n_cases: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROC's per-case statistics for one seed: A (C, C) with A[c, d] = pairs (positive of case c, negative of
    case d) ranked right, ties 1/2; positives and negatives per case (C,). A resample with case counts w then has
    AUROC = w A w / ((w . pos) (w . neg)): a quadratic form, so no resample touches the rows."""
    y = np.asarray(y) == 1
    s = np.asarray(scores, dtype=np.float64)
    pos_s, pos_case = s[y], case_idx[y]
    a = np.zeros((n_cases, n_cases))
    for d in range(n_cases):
        neg = np.sort(s[~y & (case_idx == d)])
        if not len(neg) or not len(pos_s):
            continue
        lt = np.searchsorted(neg, pos_s, side="left")               # negatives below each positive
        le = np.searchsorted(neg, pos_s, side="right")              # ... at or below
        a[:, d] = np.bincount(pos_case, weights=lt + 0.5 * (le - lt), minlength=n_cases)
    return (a, np.bincount(case_idx[y], minlength=n_cases).astype(np.float64),
            np.bincount(case_idx[~y], minlength=n_cases).astype(np.float64))


def auroc_values(y: np.ndarray, scores: np.ndarray, case_idx: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC of scores (M, R, n) for labels y (n,) under case counts (B, n_cases): (B, M, R); ties count 1/2;
    NaN where a resample has no positive or no negative."""
    counts = np.asarray(counts, dtype=np.float64)
    m, r, _ = scores.shape
    out = np.full((len(counts), m, r), np.nan)
    for a in range(m):
        for b in range(r):
            pairs, pos, neg = auroc_pairs(y, scores[a, b], case_idx, counts.shape[1])
            num = np.einsum("bc,cd,bd->b", counts, pairs, counts)
            den = (counts @ pos) * (counts @ neg)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, a, b] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    return out


def auroc_estimator(y: np.ndarray, scores: np.ndarray, case_idx: np.ndarray, n_cases: int) -> Estimator:
    scores = np.asarray(scores, dtype=np.float64)
    m, r = scores.shape[:2]

    def point() -> float:
        return float(_seed_mean(auroc_values(y, scores, case_idx, np.ones((1, n_cases)))[0],
                                np.full((m, r), 1.0 / (m * r))))

    def values(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return _seed_mean(auroc_values(y, scores, case_idx, counts), weights)

    return Estimator(m, r, point, values)


def interval(values: np.ndarray, point: float, cover: tuple[str, ...] = ()) -> Interval:
    """Percentile interval of resampled values (NaN resamples left out and counted)."""
    v = np.asarray(values, dtype=np.float64)
    ok = v[np.isfinite(v)]
    if not len(ok):
        return Interval(point, float("nan"), float("nan"), int(len(v)), cover)
    lo, hi = np.percentile(ok, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return Interval(point, float(lo), float(hi), int(len(v) - len(ok)), cover)


# ------------------------------------------------------------------------------------ metric value functions
# Each takes summed statistics (..., K) and returns the metric (...); NaN where it is undefined.

def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def ratio(s: np.ndarray) -> np.ndarray:
    """K = 2: (sum, count) -> mean (accuracy, mean absolute error, mean of per-video F1)."""
    return _div(s[..., 0], s[..., 1])


def binary(which: str) -> ValueFn:
    """K = 4: (tp, fp, fn, tn) -> precision | recall | f1 | acc (0 where sklearn's zero_division=0 gives 0)."""

    def f(s: np.ndarray) -> np.ndarray:
        tp, fp, fn, tn = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
        if which == "precision":
            return np.where(tp + fp > 0, _div(tp, tp + fp), 0.0)
        if which == "recall":
            return np.where(tp + fn > 0, _div(tp, tp + fn), np.nan)
        if which == "f1":
            return np.where(tp + fn > 0, np.where(2 * tp + fp + fn > 0, _div(2 * tp, 2 * tp + fp + fn), 0.0), np.nan)
        return _div(tp + tn, tp + fp + fn + tn)

    return f


def class_f1(s: np.ndarray) -> np.ndarray:
    """K = 3: (tp, fp, fn) of one class -> its F1; NaN where the class neither occurs nor is predicted."""
    tp, fp, fn = s[..., 0], s[..., 1], s[..., 2]
    return _div(2 * tp, 2 * tp + fp + fn)


def mean_class_recall(n_classes: int) -> ValueFn:
    """K = 2C: (hits per class, rows per class) -> mean over the classes present of hits / rows."""

    def f(s: np.ndarray) -> np.ndarray:
        hits, rows = s[..., :n_classes], s[..., n_classes:]
        present = rows > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            rec = np.where(present, hits / np.where(present, rows, 1), 0.0)
            n = present.sum(-1)
            return np.where(n > 0, rec.sum(-1) / np.where(n > 0, n, 1), np.nan)

    return f


# -------------------------------------------------------------------------------------------- comparisons

@dataclass
class Bootstrap:
    """Shared resamples of one group of names (same rows): case counts W, and seed weights per name."""

    n_cases: int
    resamples: int
    seed: int
    what: str = "test cases"             # the resampled unit, as the intervals' `covers` names it
    counts: np.ndarray = field(init=False)
    _weights: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict, init=False)
    _values: dict[tuple[str, int], tuple[Estimator, np.ndarray]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.counts = case_counts(self.n_cases, self.resamples, np.random.default_rng(self.seed))

    def weights(self, name: str, m: int, r: int) -> np.ndarray:
        key = (name, m, r)
        if key not in self._weights:
            self._weights[key] = seed_weights(m, r, self.resamples, name_rng(self.seed, name))
        return self._weights[key]

    def values(self, name: str, est: Estimator) -> np.ndarray:
        """The estimator's values under these resamples (kept until `forget`: one metric is read by its interval
        and by every difference it takes part in)."""
        key = (name, id(est))
        if key not in self._values:       # the estimator is kept with its values, so its id is not reused
            self._values[key] = (est, est.values(self.counts, self.weights(name, est.m, est.r)))
        return self._values[key][1]

    def forget(self) -> None:
        self._values.clear()

    def interval(self, name: str, est: Estimator) -> Interval:
        return interval(self.values(name, est), est.point(), covers(est.m, est.r, self.n_cases, self.what))

    def difference(self, a: tuple[str, Estimator], b: tuple[str, Estimator]) -> Interval:
        """Paired interval of metric(a) - metric(b): the same case draws, each name's own seed draws."""
        (na, ea), (nb, eb) = a, b
        cover = tuple(dict.fromkeys(covers(ea.m, ea.r, self.n_cases, self.what)
                                    + covers(eb.m, eb.r, self.n_cases, self.what)))
        return interval(self.values(na, ea) - self.values(nb, eb), ea.point() - eb.point(), cover)


def favourable(diff: Interval, better: str) -> bool:
    """The interval of a - b lies wholly on a's better side of zero."""
    return diff.excludes_zero() and ((diff.lo > 0) if better == "high" else (diff.hi < 0))


def decide(points: dict[str, float], better: str, diff: Callable[[str, str], Interval],
           best_rule: tuple[str, float] | None, rule_diff: Callable[[str], Interval] | None) -> dict[str, Any]:
    """The winner rule: the best point estimate wins only when the paired interval of its difference from the
    runner-up lies wholly on its side of zero, AND its difference from the best reference rule does too.
    Returns {"winner": name | None, "text": ..., and the intervals behind it}."""
    ranked = sorted(((v, n) for n, v in points.items() if v is not None and np.isfinite(v)),
                    key=lambda t: t[0], reverse=(better == "high"))
    if len(ranked) < 2:
        return {"winner": None, "text": "—" if not ranked else "no clear winner (one name only)"}
    best, runner = ranked[0][1], ranked[1][1]
    d = diff(best, runner)
    out: dict[str, Any] = {"best": best, "runner_up": runner, "vs_runner_up": d.as_dict()}
    if not favourable(d, better):
        out |= {"winner": None, "text": f"no clear winner (`{best}` − `{runner}` {fmt_diff(d)})"}
        return out
    if best_rule is not None and rule_diff is not None:
        rd = rule_diff(best)
        out["vs_best_rule"] = {"rule": best_rule[0], **rd.as_dict()}
        if not favourable(rd, better):
            out |= {"winner": None, "text": f"no clear winner: `{best}` does not beat the rule `{best_rule[0]}` "
                                            f"({fmt_diff(rd)})"}
            return out
    out |= {"winner": best, "text": f"`{best}` (vs `{runner}` {fmt_diff(d)})"}
    return out


def fmt_diff(d: Interval, digits: int = 3) -> str:
    if not np.isfinite(d.point):
        return "n/a"
    lo = f"{d.lo:+.{digits}f}" if np.isfinite(d.lo) else "n/a"
    hi = f"{d.hi:+.{digits}f}" if np.isfinite(d.hi) else "n/a"
    return f"{d.point:+.{digits}f} [{lo}, {hi}]"
