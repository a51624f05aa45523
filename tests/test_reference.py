"""The reference rules (surgwm/evaluation/reference.py): learned on the probe-training rows only, scored like a
name; and a method that only reaches the rule is not called a winner."""

from __future__ import annotations

import numpy as np
import pytest
from eval_data import eval_raw

from surgwm.evaluation.compare import MetricDef, Scorer, Unit, estimator, score_row
from surgwm.evaluation import intervals as I
from surgwm.evaluation.reference import rules_for
from surgwm.evaluation.rows import Outputs, Rows
from surgwm.params import parse_params


def labels(case, true, current=None, start=None) -> Rows:
    n = len(true)
    return Rows(case=np.array(case), video=np.array(case), start=np.arange(n) * 4 if start is None else
                np.array(start), true=np.array(true), current=None if current is None else np.array(current))


def outputs(task: str, train: Rows, test: Rows, val: Rows | None = None) -> Outputs:
    return Outputs({task: {"train": train, "test": test, "val": val or test}}, {})


def test_next_step_rule_is_the_most_frequent_next_step_given_the_current_one():
    train = labels(["t"] * 7, true=[1, 1, 1, 2, 3, 3, 4], current=[0, 0, 0, 0, 1, 1, 2])
    test = labels(["x"] * 4, true=[1, 3, 2, 0], current=[0, 1, 0, 7])          # current 7 never seen in training
    rules = rules_for("anticipation", outputs("anticipation", train, test), 8, 4.0, seed=0)
    prior = rules["prior"]["test"].score[0, 0]                                   # (n, C)
    assert list(prior.argmax(1)) == [1, 3, 1, 1]          # unseen current step: the overall most frequent next
    assert list(np.argsort(-prior[0])[:2]) == [1, 2]      # ranking given 0: 1 (3x), then 2 (1x)
    assert list(np.argsort(-prior[3])[:4]) == [1, 3, 2, 4]   # overall frequency, ties by class order
    majority = rules["majority"]["test"].score[0, 0]
    assert (majority.argmax(1) == 1).all()


def test_time_to_next_rule_is_the_per_step_median():
    train = labels(["t"] * 6, true=[1.0, 2.0, 10.0, 4.0, 6.0, 3.0], current=[0, 0, 0, 1, 1, 2])
    test = labels(["x"] * 3, true=[0.0, 0.0, 0.0], current=[0, 1, 5])
    rules = rules_for("time_to_next", outputs("time_to_next", train, test), 8, 4.0, seed=0)
    assert list(rules["prior"]["test"].pred[0, 0]) == [2.0, 5.0, 3.5]          # unseen step: the global median
    assert list(rules["majority"]["test"].pred[0, 0]) == [3.5, 3.5, 3.5]
    chance = rules["chance"]["test"].pred[0]
    assert chance.shape == (20, 3) and set(np.unique(chance)) <= set(train.true)


def test_rules_learn_from_training_rows_only():
    train = labels(["t"] * 6, true=[1, 1, 2, 3, 3, 3], current=[0, 0, 0, 1, 1, 1])
    test = labels(["x"] * 3, true=[5, 5, 5], current=[0, 1, 0])
    flipped = labels(["x"] * 3, true=[2, 6, 7], current=[0, 1, 0])             # other test labels
    a = rules_for("anticipation", outputs("anticipation", train, test), 8, 4.0, seed=0)
    b = rules_for("anticipation", outputs("anticipation", train, flipped), 8, 4.0, seed=0)
    for rule in ("majority", "prior", "chance"):
        assert np.array_equal(a[rule]["test"].score, b[rule]["test"].score), rule


def test_event_majority_never_predicts_the_rare_event():
    train = labels(["t"] * 10, true=[0] * 9 + [1])
    test = labels(["x", "x", "y", "y"], true=[0, 1, 0, 0])
    rules = rules_for("event", outputs("event", train, test), 2, 4.0, seed=0)
    maj = rules["majority"]["test"]
    est = estimator(MetricDef("event.f1", "", "event", "binary:f1"), maj, rules["majority"]["val"], ["x", "y"], 2)
    acc = estimator(MetricDef("event.acc", "", "event", "binary:acc"), maj, rules["majority"]["val"], ["x", "y"], 2)
    assert est.point() == 0.0 and acc.point() == pytest.approx(0.75)


def test_step_prior_is_the_most_frequent_step_at_this_time_of_the_video():
    start = list(range(0, 40, 4)) * 3                                          # three training videos alike
    train = labels(["a"] * 10 + ["b"] * 10 + ["c"] * 10, true=([0] * 5 + [1] * 5) * 3, start=start)
    test = labels(["x"] * 10, true=[0] * 5 + [1] * 5, start=list(range(0, 40, 4)))
    rules = rules_for("step", outputs("step", train, test), 3, 4.0, seed=0)
    assert list(rules["prior"]["test"].score[0, 0].argmax(1)) == [0] * 5 + [1] * 5


def test_a_method_that_only_reaches_the_rule_is_not_a_winner():
    """Steps always in the same order: the next-step rule is perfect, so a model at 0.9 beats nothing."""
    rng = np.random.default_rng(0)
    cases = [f"c{i}" for i in range(6)]
    order = [0, 1, 2, 3, 4]

    def rows_of(case_ids):
        case, cur, nxt = [], [], []
        for c in case_ids:
            for s in order[:-1]:
                case += [c] * 3
                cur += [s] * 3
                nxt += [s + 1] * 3
        return labels(case, true=nxt, current=cur)

    train, test = rows_of([f"t{i}" for i in range(4)]), rows_of(cases)
    n = len(test)
    good = np.eye(6)[test.true] * 0.35 + rng.random((n, 6)) * 0.5               # right most of the time
    worse = np.eye(6)[test.true] * 0.2 + rng.random((n, 6)) * 0.5
    out = {}
    for name, s in (("model", good), ("other", worse)):
        t = Rows(test.case, test.video, test.start, test.true, test.current, score=s[None, None])
        out[name] = Unit(name, "method", [name], Outputs({"anticipation": {"test": t, "val": t, "train": train}}, {}),
                         "k")
    params = parse_params(eval_raw())
    from surgwm.evaluation.compare import _rule_units

    rules = _rule_units(out["model"], params, 0, ("val", "test"))
    sc = Scorer("test", list(out.values()), rules, I.Bootstrap(len(cases), 300, 0), sorted(cases))
    row = score_row(sc, MetricDef("anticipation.recall_at_1_encoder", "r@1", "anticipation", "recall_at", k=1))
    assert row["rules"]["prior"]["point"] == pytest.approx(1.0)
    assert 0.6 < row["values"]["model"]["point"] < 1.0
    assert row["best_rule"] == "prior" and set(row["not_above_rule"]) == {"model", "other"}
    assert row["decision"]["winner"] is None and "does not beat the rule `prior`" in row["decision"]["text"]
