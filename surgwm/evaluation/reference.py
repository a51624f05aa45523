"""Reference rules: what a model must beat before "it beats X" means anything.

For every task, three rules, learned on the probe-TRAINING rows of outputs.npz only (never validation or test) and
scored exactly like a name (the same rows, the same resamples, the same metric code):

  chance    no information: a uniformly random class / ranking / score (`CHANCE_DRAWS` draws, treated like seeds),
            for time to the next step a random training row's value
  majority  the most frequent training class (classes ranked by frequency where a ranking is scored); for the
            rare event: never an event; for time to the next step: the training median
  prior     the label prior given what a clip trivially shows:
              step, motion, event   the class frequencies at this time of the video (clip start time, binned at
                                    the deciles of the training times); event: P(event | time), its threshold
                                    picked on validation like a probe's
              anticipation          the most frequent next step given the current one, then overall frequency
              time_to_next          the median time to the next step given the current step

A method "beats" nothing that its best rule already reaches: the report's winner column requires beating it.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np

from surgwm.evaluation.rows import Outputs, Rows

RULES = ("chance", "majority", "prior")
CHANCE_DRAWS = 20
TIME_BINS = 10
_TIE = 1e-6                 # tie-breaks: overall frequency, then class order, so rankings are deterministic

DESCRIPTIONS = {
    "classes": {"chance": "a uniformly random class",
                "majority": "the most frequent class of the training cases",
                "prior": "the most frequent class at this time of the video in the training cases"},
    "event": {"chance": "a random score (threshold picked on validation)",
              "majority": "never an event",
              "prior": "the event rate at this time of the video in the training cases (threshold picked on "
                       "validation)"},
    "anticipation": {"chance": "a random ranking of the steps",
                     "majority": "steps ranked by how often each is the next step in the training cases",
                     "prior": "the most frequent next step given the current one (training cases)"},
    "time_to_next": {"chance": "a random training clip's time to the next step",
                     "majority": "the median time to the next step (training cases)",
                     "prior": "the median time to the next step given the current step (training cases)"},
}


def family(task: str) -> str:
    if task in ("anticipation", "anticipation_wm"):
        return "anticipation"
    if task in ("event", "time_to_next"):
        return task
    return "classes"


def describe(task: str, rule: str) -> str:
    return DESCRIPTIONS[family(task)][rule]


def _rng(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), *(zlib.crc32(p.encode()) for p in parts)])


def _times(rows: Rows, fps: float) -> np.ndarray:
    return rows.time.astype(np.float64) if rows.time is not None else rows.start.astype(np.float64) / fps


def _time_bins(train_times: np.ndarray) -> np.ndarray:
    return np.unique(np.quantile(train_times, np.linspace(0, 1, TIME_BINS + 1)[1:-1])) if len(train_times) else \
        np.zeros(0)


def _frequencies(labels: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(labels.astype(np.int64), minlength=n)[:n].astype(np.float64)
    return counts / max(1.0, counts.sum())


def _ranking_scores(table: np.ndarray, marginal: np.ndarray) -> np.ndarray:
    """Rows of class frequencies -> scores whose order is: frequency, then overall frequency, then class index."""
    n = table.shape[-1]
    return table + _TIE * marginal + _TIE ** 2 * (n - np.arange(n)) / n


def _conditional(keys_train: np.ndarray, labels: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """P(label | key) estimated on training rows, (len(keys), n); keys never seen fall back to the marginal."""
    marginal = _frequencies(labels, n)
    out = np.tile(marginal, (len(keys), 1))
    for k in np.unique(keys):
        seen = keys_train == k
        if seen.any():
            out[keys == k] = _frequencies(labels[seen], n)
    return _ranking_scores(out, marginal)


def _with_scores(target: Rows, score: np.ndarray | None = None, pred: np.ndarray | None = None,
                 thresholds: np.ndarray | None = None) -> Rows:
    """A rule's Rows: the target's labels with (R, n, C) scores or (R, n) predictions (M axis added)."""
    return replace(target.labels_only(), score=None if score is None else score[None],
                   pred=None if pred is None else pred[None], thresholds=thresholds)


def rules_for(task: str, outputs: Outputs, n_classes: int, fps: float, seed: int,
              splits: tuple[str, ...] = ("val", "test")) -> dict[str, dict[str, Rows]]:
    """{rule: {split: Rows}} for one task; a rule that needs training rows the file lacks is left out."""
    train = outputs.rows(task, "train")
    if task == "step_official":                     # official rows hold no training split: learn from step clips
        train = outputs.rows("step", "train")
    out: dict[str, dict[str, Rows]] = {}
    for split in splits:
        target = outputs.rows(task, split)
        if target is None or not len(target):
            continue
        n, rng = len(target), _rng(seed, task, split)
        rules = _rules(task, train, target, n_classes, fps, rng, n)
        for rule, rows in rules.items():
            out.setdefault(rule, {})[split] = rows
    return out


def _rules(task: str, train: Rows | None, target: Rows, c: int, fps: float, rng: np.random.Generator,
           n: int) -> dict[str, Rows]:
    fam = family(task)
    out: dict[str, Rows] = {}
    if fam == "time_to_next":
        if train is None or not len(train):
            return out
        y = train.true.astype(np.float64)
        out["chance"] = _with_scores(target, pred=rng.choice(y, size=(CHANCE_DRAWS, n)))
        med = float(np.median(y))
        out["majority"] = _with_scores(target, pred=np.full((1, n), med))
        if train.current is not None and target.current is not None:
            by_step = {int(s): float(np.median(y[train.current == s])) for s in np.unique(train.current)}
            out["prior"] = _with_scores(target, pred=np.array([[by_step.get(int(s), med) for s in target.current]]))
        return out
    if task == "step_official":                     # hard predictions at 1 fps over whole videos
        out["chance"] = _with_scores(target, pred=rng.integers(0, c, size=(CHANCE_DRAWS, n)))
        if train is not None and len(train):
            marginal = _frequencies(train.true, c)
            out["majority"] = _with_scores(target, pred=np.full((1, n), int(np.argmax(marginal))))
            edges = _time_bins(_times(train, fps))
            table = _conditional(np.searchsorted(edges, _times(train, fps), side="right"), train.true,
                                 np.searchsorted(edges, _times(target, fps), side="right"), c)
            out["prior"] = _with_scores(target, pred=table.argmax(1)[None])
        return out
    score = rng.random((CHANCE_DRAWS, n, c))
    out["chance"] = _with_scores(target, score=score / score.sum(-1, keepdims=True))
    if train is None or not len(train):
        return out
    marginal = _frequencies(train.true, c)
    if fam == "event":
        rate = float(marginal[1]) if c > 1 else 0.0
        const = np.tile([1 - rate, rate], (1, n, 1))
        never = np.full((1, 1), np.inf if rate <= 0.5 else -np.inf)       # the majority class, whatever the score
        out["majority"] = _with_scores(target, score=const, thresholds=never)
    else:
        out["majority"] = _with_scores(target, score=np.tile(_ranking_scores(marginal, marginal), (1, n, 1)))
    if fam == "anticipation":
        if train.current is not None and target.current is not None:
            out["prior"] = _with_scores(target, score=_conditional(train.current, train.true, target.current, c)[None])
        return out
    edges = _time_bins(_times(train, fps))
    table = _conditional(np.searchsorted(edges, _times(train, fps), side="right"), train.true,
                         np.searchsorted(edges, _times(target, fps), side="right"), c)
    out["prior"] = _with_scores(target, score=table[None])
    return out
