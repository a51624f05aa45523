"""Which clips evaluation reads, so its disk and memory are bounded by params, not by the dataset's size.

- probe training: at most `evaluate.max_train_clips` clips of the training cases, seeded (`evaluate.seed`): first
  one clip of every case (so no case drops out), then the rest balanced over the step classes (the motion classes
  when there are no step labels; unlabelled clips are one more group), each group shuffled.
- probe validation: at most `evaluate.max_val_clips` clips, evenly spaced along the validation videos (a
  validation score should see the classes as they occur), and every case keeps at least one.
- test: every test video is streamed a batch at a time (its tokens never reach the disk), at most
  `evaluate.max_test_clips_per_video` clips per video, evenly spaced.
Only the training and validation clips' tokens are kept, in memory-mapped files: `surgwm.sizes.token_bytes` is their size,
checked before anything is written. The demo's caps are above its size, so it keeps every clip.
"""

from __future__ import annotations

import numpy as np

from surgwm.evaluation.errors import EvaluateError
from surgwm.evaluation.table import ClipTable


def _share(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Water-filling: how many to take from each group so the groups are as equal as their sizes allow."""
    take = np.zeros_like(sizes)
    left, open_ = budget, np.flatnonzero(sizes > 0)
    while left > 0 and len(open_):
        room = sizes[open_] - take[open_]
        each = max(1, left // len(open_))
        add = np.minimum(room, each)
        if add.sum() > left:                       # fewer left than groups: one each to the first groups
            add = np.zeros_like(add)
            add[:left] = 1
        take[open_] += add
        left -= int(add.sum())
        open_ = open_[take[open_] < sizes[open_]]
    return take


def balance_labels(table: ClipTable) -> np.ndarray:
    """What the training sample balances: step classes, else motion classes, else nothing (-1 everywhere)."""
    if "step" not in table.missing:
        return table.step
    if "motion" not in table.missing:
        return table.motion
    return np.full(len(table.clips), -1)


def sample_train(table: ClipTable, rows: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """At most `cap` of `rows` (sorted): one per case, the rest balanced over classes; all rows when they fit."""
    rows = np.sort(np.asarray(rows))
    if cap is None or len(rows) <= cap:
        return rows
    cases = np.unique(table.case[rows])
    if cap < len(cases):
        raise EvaluateError(f"evaluate.max_train_clips ({cap}) is below the number of probe training cases "
                            f"({len(cases)}): every case keeps at least one clip; raise it to >= {len(cases)}")
    rng = np.random.default_rng(seed)
    first = np.array([rng.choice(rows[table.case[rows] == c]) for c in cases])
    rest = np.setdiff1d(rows, first)
    labels = balance_labels(table)[rest]
    groups = [rng.permutation(rest[labels == g]) for g in np.unique(labels)]
    take = _share(np.array([len(g) for g in groups]), cap - len(first))
    return np.sort(np.concatenate([first, *[g[:k] for g, k in zip(groups, take)]]))


def evenly_spaced(n: int, cap: int | None) -> np.ndarray:
    """Indices of at most `cap` evenly spaced items of n (first and last included)."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(int))


def by_video(table: ClipTable, rows: np.ndarray) -> list[np.ndarray]:
    """`rows` grouped per video (videos in sorted order), each in frame order."""
    rows = np.asarray(rows)
    order = rows[np.lexsort((table.start[rows], table.video[rows]))]
    vids = table.video[order]
    cuts = np.flatnonzero(vids[1:] != vids[:-1]) + 1
    return [g for g in np.split(order, cuts) if len(g)]


def sample_val(table: ClipTable, rows: np.ndarray, cap: int | None) -> np.ndarray:
    """At most `cap` rows evenly spaced along the videos (in proportion to their length); every case keeps one."""
    ordered = np.concatenate(by_video(table, rows)) if len(rows) else np.asarray(rows)
    keep = ordered[evenly_spaced(len(ordered), cap)]
    for case in np.setdiff1d(np.unique(table.case[ordered]), table.case[keep]):
        mine = ordered[table.case[ordered] == case]
        keep = np.append(keep, mine[len(mine) // 2])
    return np.sort(keep)


def sample_test(table: ClipTable, rows: np.ndarray, cap_per_video: int | None) -> list[np.ndarray]:
    """Per test video (sorted), at most `cap_per_video` of its clips, evenly spaced, in frame order."""
    return [g[evenly_spaced(len(g), cap_per_video)] for g in by_video(table, rows)]


