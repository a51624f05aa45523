"""Reads data/evaluate/<name>/outputs.npz (the evaluation's per-row scores) into `Rows`, one task and split each.

The file's layout is the evaluation's contract (written by the evaluate and baseline stages): per task T and split
S in {train, val, test}: `T/S/case`, `T/S/video`, `T/S/start`, `T/S/true`, `T/S/current` (anticipation and
time_to_next), `T/S/score` (R, n, C) class probabilities per probe seed (val and test), or `T/S/pred` (R, n) for
time_to_next (seconds) and step_official (class indices; its rows also carry `time`). Class names: `step_classes`,
`motion_classes`. Train rows carry labels only: the reference rules (reference.py) learn from them.

Statistics need every name of one evaluation key to have the same rows; `same_rows` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

TASKS = ("step", "step_official", "motion", "event", "anticipation", "anticipation_wm", "time_to_next")
SPLITS = ("train", "val", "test")
REGRESSION = ("time_to_next",)
HARD = ("step_official",)                  # hard predictions (pred) instead of class probabilities


class OutputsError(ValueError):
    """outputs.npz is missing or does not follow the evaluation's contract; the message names the file."""


@dataclass
class Rows:
    """The rows of one task and split. Scores carry a world-model seed axis M (1 unless seeds are pooled)."""

    case: np.ndarray                       # (n,) str
    video: np.ndarray                      # (n,) str
    start: np.ndarray                      # (n,) int: first frame of the clip in the decode cache
    true: np.ndarray                       # (n,) int class (float seconds for time_to_next)
    current: np.ndarray | None = None      # (n,) int: the clip's own step (anticipation, time_to_next)
    time: np.ndarray | None = None         # (n,) float seconds (step_official)
    score: np.ndarray | None = None        # (M, R, n, C) float
    pred: np.ndarray | None = None         # (M, R, n) int class or float seconds
    thresholds: np.ndarray | None = None   # (M, R) fixed decision thresholds (event rules); None: from validation

    def __len__(self) -> int:
        return len(self.case)

    @property
    def seeds(self) -> tuple[int, int]:
        arr = self.score if self.score is not None else self.pred
        return (1, 1) if arr is None else (arr.shape[0], arr.shape[1])

    def labels_only(self) -> "Rows":
        return replace(self, score=None, pred=None, thresholds=None)


def _arr(z: dict[str, np.ndarray], key: str) -> np.ndarray | None:
    return z[key] if key in z else None


@dataclass
class Outputs:
    """One name's outputs.npz: {task: {split: Rows}} and the class names."""

    tasks: dict[str, dict[str, Rows]]
    classes: dict[str, list[str]]

    def rows(self, task: str, split: str) -> Rows | None:
        return self.tasks.get(task, {}).get(split)


def read_outputs(path: Path) -> Outputs | None:
    """One outputs.npz (scores get the world-model seed axis M = 1); None if the file is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            z = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise OutputsError(f"{path}: not a readable outputs.npz ({err}); re-run the evaluation of this name") from None
    out: dict[str, dict[str, Rows]] = {}
    for task in TASKS:
        for split in SPLITS:
            p = f"{task}/{split}/"
            if p + "true" not in z:
                continue
            missing = [k for k in ("case", "video") if p + k not in z]
            if missing:
                raise OutputsError(f"{path}: {p}true without {', '.join(p + k for k in missing)}")
            true = z[p + "true"].astype(np.float64 if task in REGRESSION else np.int64)
            score, pred = _arr(z, p + "score"), _arr(z, p + "pred")
            n = len(true)
            for key, arr, axis in ((p + "score", score, 1), (p + "pred", pred, 1)):
                if arr is not None and (arr.ndim < 2 or arr.shape[axis] != n):
                    raise OutputsError(f"{path}: {key} has shape {arr.shape}; the contract wants (seeds, {n}, ...)")
            rows = Rows(case=z[p + "case"].astype(str), video=z[p + "video"].astype(str),
                        start=(z[p + "start"].astype(np.int64) if p + "start" in z else np.zeros(n, np.int64)),
                        true=true, current=_arr(z, p + "current"), time=_arr(z, p + "time"),
                        score=None if score is None else score[None].astype(np.float64),
                        pred=None if pred is None else pred[None])
            keep = np.isfinite(true) if task in REGRESSION else true >= 0      # unlabelled rows never score
            out.setdefault(task, {})[split] = select(rows, keep) if not keep.all() else rows
    return Outputs(out, {k.removesuffix("_classes"): [str(c) for c in z[k]]
                         for k in ("step_classes", "motion_classes") if k in z})


def select(rows: Rows, keep: np.ndarray) -> Rows:
    """The rows where `keep` is true (scores and predictions along their row axis)."""
    return replace(rows, case=rows.case[keep], video=rows.video[keep], start=rows.start[keep], true=rows.true[keep],
                   current=None if rows.current is None else rows.current[keep],
                   time=None if rows.time is None else rows.time[keep],
                   score=None if rows.score is None else rows.score[:, :, keep],
                   pred=None if rows.pred is None else rows.pred[:, :, keep])


def same_rows(a: Rows, b: Rows) -> bool:
    """Identical cases, videos, clip starts and labels, in the same order: what pairing needs."""
    return (len(a) == len(b) and np.array_equal(a.case, b.case) and np.array_equal(a.video, b.video)
            and np.array_equal(a.start, b.start) and np.array_equal(a.true, b.true))


def stack_seeds(parts: list[Rows]) -> Rows:
    """World-model seeds pooled: the runs' scores stacked along the M axis (rows must be the same)."""
    first = parts[0]
    if first.score is not None:
        return replace(first, score=np.concatenate([p.score for p in parts], axis=0))
    if first.pred is not None:
        return replace(first, pred=np.concatenate([p.pred for p in parts], axis=0))
    return first
