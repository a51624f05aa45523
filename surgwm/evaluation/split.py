"""The evaluation split: cases (never clips) into probe training, probe validation and test."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


from surgwm.data.clips import Clip
from surgwm.data.split import split_by_case
from surgwm.params import Params
from surgwm.evaluation.errors import EvaluateError


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
