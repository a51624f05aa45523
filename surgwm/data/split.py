"""Cases, never clips, on each side of a split: the train stage's train/validation cases (which evaluate takes
as its test cases, so no world model saw the test video) and a run's share of the training cases."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from surgwm.data.clips import Clip


@dataclass
class Split:
    train: list[int]            # indices into the clip list
    val: list[int]
    train_cases: list[str]
    val_cases: list[str]


def split_by_case(clips: Sequence[Clip], val_fraction: float, seed: int) -> Split:
    """Seeded shuffle of the sorted case ids; the first round(fraction * cases) (>= 1 if fraction > 0) are val."""
    cases = sorted({c.case for c in clips})
    random.Random(seed).shuffle(cases)
    n_val = 0 if val_fraction <= 0 or len(cases) < 2 else min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    val_cases = set(cases[:n_val])
    train = [i for i, c in enumerate(clips) if c.case not in val_cases]
    val = [i for i, c in enumerate(clips) if c.case in val_cases]
    return Split(train, val, sorted(set(cases) - val_cases), sorted(val_cases))


def subsample_cases(split: Split, clips: Sequence[Clip], fraction: float, seed: int) -> Split:
    """Keep a seeded share (>= 1) of the training cases; validation cases stay the same, so runs on fewer cases
    are validated and evaluated on exactly the same held-out cases."""
    if fraction >= 1:
        return split
    cases = list(split.train_cases)
    random.Random(f"{seed}-case-fraction").shuffle(cases)
    keep = set(cases[:max(1, round(fraction * len(cases)))])
    train = [i for i in split.train if clips[i].case in keep]
    return Split(train, split.val, sorted(keep), split.val_cases)
