"""The comparison behind the report and the registry: every metric with its 95 % interval, paired differences,
reference rules, the winner rule, and one sentence per headline claim. reports/comparison.json is `build()`'s
result as it is; reports/comparison.md renders it (report.py).

Inputs: metrics/evaluate_<name>.json (status, eval_key, sizes, the points the evaluation reported) and
data/evaluate/<name>/outputs.npz (per-row scores, rows.py). Names with the same eval_key have the same rows, so
they form one group sharing its bootstrap resamples (intervals.py). World-model seeds: runs of `train.methods`
whose resolved settings differ only in `seed` are pooled into one unit named after the first of them.
Reference rules (reference.py) are scored like names in every group.

Test rows are the final measurement only: the registry ranks and gates on the validation split
(`validation_estimator`, `paired_gate`), never on test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surgwm.evaluation import intervals as I
from surgwm.evaluation.records import Record
from surgwm.evaluation.reference import RULES, describe, rules_for
from surgwm.evaluation.rows import Outputs, OutputsError, Rows, read_outputs, same_rows, stack_seeds
from surgwm.io import fingerprint, get_dotted
from surgwm.params import Params
from surgwm.paths import EVALUATE

OUTPUTS = "outputs.npz"
RULE_PREFIX = "rule:"        # rules' names in the resamplers, so no run name can collide with them


@dataclass(frozen=True)
class MetricDef:
    key: str                 # dotted key as in metrics/evaluate_<name>.json (validation.<key> on validation)
    label: str
    task: str                # task of outputs.npz
    kind: str                # per_video_f1 | accuracy | binary:<f1|precision|recall|acc> | auroc | recall_at | mae | class_f1
    better: str = "high"
    k: int = 1
    cls: int = -1
    primary: bool = False    # a headline metric: differences table and a claim sentence


def catalogue(k: int, step_classes: Sequence[str] = ()) -> list[MetricDef]:
    """Every metric the report gives an interval, in report order (per-class F1 last)."""
    out = [
        MetricDef("step.f1_video", "step: per-video weighted F1 (clips)", "step", "per_video_f1", primary=True),
        MetricDef("step.f1_video_official", "step: SurgVU official F1 (1 fps, whole videos, unlabelled = other)",
                  "step_official", "per_video_f1", primary=True),
        MetricDef("step.acc", "step: top-1 accuracy", "step", "accuracy"),
        MetricDef("motion.acc", "motion: top-1 accuracy", "motion", "accuracy", primary=True),
        MetricDef("event.f1", "event: F1 (threshold picked on validation)", "event", "binary:f1", primary=True),
        MetricDef("event.precision", "event: precision", "event", "binary:precision"),
        MetricDef("event.recall", "event: recall", "event", "binary:recall"),
        MetricDef("event.acc", "event: accuracy", "event", "binary:acc"),
        MetricDef("event.auroc", "event: AUROC", "event", "auroc", primary=True),
        MetricDef("anticipation.recall_at_1_encoder", "anticipation: next-step mean class recall@1, encoder only",
                  "anticipation", "recall_at", k=1, primary=True),
        MetricDef(f"anticipation.recall_at_{k}_encoder", f"anticipation: next-step mean class recall@{k}, encoder "
                  "only", "anticipation", "recall_at", k=k, primary=True),
        MetricDef("anticipation.recall_at_1_world_model", "anticipation: recall@1 with the predictor's rolled-out "
                  "future", "anticipation_wm", "recall_at", k=1, primary=True),
        MetricDef(f"anticipation.recall_at_{k}_world_model", f"anticipation: recall@{k} with the predictor's "
                  "rolled-out future", "anticipation_wm", "recall_at", k=k, primary=True),
        MetricDef("anticipation.time_to_next_mae_s", "anticipation: time to the next step, mean absolute error (s)",
                  "time_to_next", "mae", "low", primary=True),
    ]
    out += [MetricDef(f"step.per_class_f1.{c}", f"step F1: {c}", "step", "class_f1", cls=i)
            for i, c in enumerate(step_classes)]
    return out


def metric_def(key: str, k: int, step_classes: Sequence[str] = ()) -> MetricDef | None:
    return next((m for m in catalogue(k, step_classes) if m.key == key), None)


# ------------------------------------------------------------------------------------ per-row statistics

def best_thresholds(y: np.ndarray, p: np.ndarray) -> float | None:
    """The score threshold (positive when score >= it) with the highest F1, the smallest among ties (as
    surgwm/evaluation/metrics.best_threshold, vectorised); None without positives."""
    y = np.asarray(y) == 1
    if not y.any():
        return None
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last = np.r_[ps[1:] != ps[:-1], True]            # the last row of each group of equal scores
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    f1 = 2 * tp / (tp + fp + y.sum())
    thr = ps[last]                                    # descending; argmax picks the first max = largest threshold
    best = np.flatnonzero(f1 == f1.max())
    return float(thr[best[-1]])                       # the smallest threshold reaching the best F1


def hard_predictions(metric: MetricDef, rows: Rows, val: Rows | None) -> np.ndarray:
    """(M, R, n) class predictions (event: thresholded at the best validation F1 per seed)."""
    if rows.pred is not None:
        return rows.pred
    assert rows.score is not None
    if metric.task != "event":
        return rows.score.argmax(-1)
    m, r = rows.score.shape[:2]
    thr = np.full((m, r), 0.5)
    if rows.thresholds is not None:
        thr = np.broadcast_to(rows.thresholds, (m, r))
    elif val is not None and val.score is not None and val.score.shape[:2] == (m, r):
        for a in range(m):
            for b in range(r):
                t = best_thresholds(val.true, val.score[a, b, :, 1])
                thr[a, b] = 0.5 if t is None else t
    return (rows.score[..., 1] >= thr[:, :, None]).astype(np.int64)


def _per_video_f1(true: np.ndarray, pred: np.ndarray, video_idx: np.ndarray, n_videos: int, c: int) -> np.ndarray:
    """(n_videos,) sklearn weighted F1 within each video for one seed's predictions."""
    t, p = true.astype(np.int64), pred.astype(np.int64)
    hit = (t == p).astype(np.float64)
    tp = np.bincount(video_idx * c + t, weights=hit, minlength=n_videos * c).reshape(n_videos, c)
    sup = np.bincount(video_idx * c + t, minlength=n_videos * c).reshape(n_videos, c).astype(np.float64)
    npred = np.bincount(video_idx * c + np.clip(p, 0, c - 1), minlength=n_videos * c).reshape(n_videos, c)
    den = tp + (npred - tp) + tp + (sup - tp)        # 2tp + fp + fn
    f1 = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)
    tot = sup.sum(1)
    return np.where(tot > 0, (f1 * sup).sum(1) / np.where(tot > 0, tot, 1), np.nan)


def estimator(metric: MetricDef, rows: Rows, val: Rows | None, cases: Sequence[str], n_classes: int
              ) -> I.Estimator | None:
    """The metric of these rows as an Estimator over `cases` (rows of other cases are impossible: checked)."""
    if rows.score is None and rows.pred is None:
        return None
    index = {c: i for i, c in enumerate(cases)}
    try:
        case_idx = np.array([index[c] for c in rows.case], dtype=np.int64)
    except KeyError as err:
        raise OutputsError(f"{metric.task}: a row of case {err} outside the resampled cases") from None
    n_cases = len(cases)
    if metric.kind == "auroc":
        if rows.score is None:
            return None
        return I.auroc_estimator(rows.true, rows.score[..., 1], case_idx, n_cases)
    if metric.kind == "mae":
        err = np.abs(rows.pred.astype(np.float64) - rows.true[None, None, :])       # (M, R, n)
        per_row = np.stack([err, np.ones_like(err)], axis=-1)
        return I.stats_estimator(I.by_case(per_row, case_idx, n_cases), I.ratio)
    if metric.kind == "recall_at":
        if rows.score is None:
            return None
        s = rows.score
        kk = min(metric.k, s.shape[-1])
        top = np.argsort(s, axis=-1, kind="mergesort")[..., ::-1][..., :kk]        # (M, R, n, k)
        hit = (top == rows.true[None, None, :, None]).any(-1).astype(np.float64)   # (M, R, n)
        onehot = np.eye(n_classes)[rows.true]                                      # (n, C)
        per_row = np.concatenate([hit[..., None] * onehot, np.broadcast_to(onehot, hit.shape + (n_classes,))], -1)
        return I.stats_estimator(I.by_case(per_row, case_idx, n_cases), I.mean_class_recall(n_classes))
    pred = hard_predictions(metric, rows, val)                                     # (M, R, n)
    t = rows.true[None, None, :]
    if metric.kind == "accuracy":
        hit = (pred == t).astype(np.float64)
        return I.stats_estimator(I.by_case(np.stack([hit, np.ones_like(hit)], -1), case_idx, n_cases), I.ratio)
    if metric.kind.startswith("binary:"):
        pos, yes = pred == 1, t == 1
        per_row = np.stack([pos & yes, pos & ~yes, ~pos & yes, ~pos & ~yes], -1).astype(np.float64)
        return I.stats_estimator(I.by_case(per_row, case_idx, n_cases), I.binary(metric.kind.split(":")[1]))
    if metric.kind == "class_f1":
        pc, tc = pred == metric.cls, t == metric.cls
        per_row = np.stack([pc & tc, pc & ~tc, ~pc & np.broadcast_to(tc, pc.shape)], -1).astype(np.float64)
        return I.stats_estimator(I.by_case(per_row, case_idx, n_cases), I.class_f1)
    if metric.kind == "per_video_f1":
        videos, video_idx = np.unique(rows.video, return_inverse=True)
        case_of_video = np.zeros(len(videos), np.int64)
        case_of_video[video_idx] = case_idx
        m, r = pred.shape[:2]
        stats = np.zeros((m, r, n_cases, 2))
        for a in range(m):
            for b in range(r):
                f1 = _per_video_f1(rows.true, pred[a, b], video_idx, len(videos), n_classes)
                ok = np.isfinite(f1)
                np.add.at(stats[a, b, :, 0], case_of_video[ok], f1[ok])
                np.add.at(stats[a, b, :, 1], case_of_video[ok], 1.0)
        return I.stats_estimator(stats, I.ratio)
    raise ValueError(f"unknown metric kind {metric.kind}")


# ------------------------------------------------------------------------------------------------- units

@dataclass
class Unit:
    """A column of the comparison: one name, or runs pooled over world-model seeds."""

    name: str
    kind: str                                   # method | baseline | rule
    members: list[str]
    outputs: Outputs
    key: str
    records: list[Record] = field(default_factory=list)


def pool_key(params: Params, name: str) -> str:
    """Runs with the same key differ only in `seed`: repeats of one method."""
    t = params.train.resolve(name)
    return fingerprint(params.train.method_of(name), t.model_dump(mode="json", exclude={"seed", "methods"}))


def load_units(params: Params, records: Sequence[Record], evaluate_root: Path = EVALUATE
               ) -> tuple[list[Unit], list[dict[str, str]]]:
    """Units of evaluated names with outputs.npz; and the names left out, each with why."""
    left: list[dict[str, str]] = []
    loaded: list[tuple[Record, Outputs]] = []
    for rec in records:
        if rec.status != "ok":
            continue
        try:
            out = read_outputs(Path(evaluate_root) / rec.name / OUTPUTS)
        except OutputsError as err:
            left.append({"name": rec.name, "why": str(err)})
            continue
        if out is None:
            left.append({"name": rec.name, "why": f"{Path(evaluate_root) / rec.name / OUTPUTS} not found (written by "
                                                  f"the evaluation of `{rec.name}`): no interval for it"})
            continue
        loaded.append((rec, out))
    pools: dict[tuple[str, str], list[tuple[Record, Outputs]]] = {}
    for rec, out in loaded:
        key = str((rec.evaluate or {}).get("eval_key", ""))
        pk = pool_key(params, rec.name) if rec.kind == "method" and rec.name in params.train.methods else rec.name
        pools.setdefault((key, pk), []).append((rec, out))
    units = []
    for (key, _), members in pools.items():
        first_rec, first = members[0]
        if len(members) > 1:
            pooled, why = _pool([o for _, o in members])
            if pooled is None:
                left += [{"name": r.name, "why": why} for r, _ in members[1:]]
                members = members[:1]
            else:
                first = pooled
        units.append(Unit(first_rec.name, first_rec.kind, [r.name for r, _ in members], first, key,
                          [r for r, _ in members]))
    return units, left


def _pool(parts: list[Outputs]) -> tuple[Outputs | None, str]:
    tasks: dict[str, dict[str, Rows]] = {}
    for task, splits in parts[0].tasks.items():
        for split, rows in splits.items():
            others = [p.rows(task, split) for p in parts[1:]]
            if any(o is None or not same_rows(rows, o) for o in others):
                return None, f"not pooled over world-model seeds: its {task}/{split} rows differ from the first run's"
            shapes = {(o.score if o.score is not None else o.pred).shape[1:] if (o.score is not None or o.pred
                      is not None) else () for o in [rows, *others]}
            if len(shapes) > 1:
                return None, f"not pooled over world-model seeds: {task}/{split} has different probe seeds"
            tasks.setdefault(task, {})[split] = stack_seeds([rows, *others])
    return Outputs(tasks, parts[0].classes), ""


def n_classes(outputs: Outputs, task: str) -> int:
    names = outputs.classes.get("motion" if task == "motion" else "step")
    if task == "event":
        return 2
    if names:
        return len(names)
    for split in ("test", "val", "train"):
        rows = outputs.rows(task, split)
        if rows is not None and rows.score is not None:
            return rows.score.shape[-1]
    return 0


def split_cases(units: Sequence[Unit], split: str) -> list[str]:
    cases: set[str] = set()
    for u in units:
        for splits in u.outputs.tasks.values():
            if split in splits:
                cases.update(splits[split].case.tolist())
    return sorted(cases)


# ------------------------------------------------------------------------------------------------ groups

def _rule_units(first: Unit, params: Params, seed: int, splits: tuple[str, ...]) -> list[Unit]:
    tasks: dict[str, dict[str, dict[str, Rows]]] = {rule: {} for rule in RULES}
    for task in first.outputs.tasks:
        c = n_classes(first.outputs, task)
        for rule, by_split in rules_for(task, first.outputs, c, params.data.fps, seed, splits).items():
            tasks[rule][task] = by_split
    return [Unit(rule, "rule", [], Outputs(tasks[rule], first.outputs.classes), first.key) for rule in RULES
            if tasks[rule]]


def _consistent(units: list[Unit]) -> tuple[list[Unit], list[dict[str, str]]]:
    """Units whose rows equal the first unit's for every task and split they share."""
    keep, left = [units[0]], []
    for u in units[1:]:
        bad = [f"{t}/{s}" for t, splits in u.outputs.tasks.items() for s, rows in splits.items()
               if units[0].outputs.rows(t, s) is not None and not same_rows(rows, units[0].outputs.rows(t, s))]
        if bad:
            left.append({"name": u.name, "why": f"same evaluation key as `{units[0].name}` but different rows "
                                                f"({', '.join(bad)}): not compared"})
        else:
            keep.append(u)
    return keep, left


@dataclass
class Scorer:
    """Estimates of one split of one group: every unit and rule on the same case resamples."""

    split: str
    units: list[Unit]
    rules: list[Unit]
    boot: I.Bootstrap
    cases: list[str]

    def estimator(self, unit: Unit, metric: MetricDef) -> I.Estimator | None:
        rows = unit.outputs.rows(metric.task, self.split)
        if rows is None or not len(rows):
            return None
        val = unit.outputs.rows(metric.task, "val")
        return estimator(metric, rows, val, self.cases, n_classes(unit.outputs, metric.task))


def score_row(sc: Scorer, metric: MetricDef, methods_vs_baselines: bool = True) -> dict[str, Any] | None:
    """One metric: every unit's and rule's interval, the winner decision, differences vs baselines and the best
    rule. None when no unit has it."""
    sc.boot.forget()
    ests = {u.name: (u, e) for u in sc.units if (e := sc.estimator(u, metric)) is not None}
    if not ests:
        return None
    rules = {u.name: (u, e) for u in sc.rules if (e := sc.estimator(u, metric)) is not None}
    rkey = {n: RULE_PREFIX + n for n in rules}
    values = {n: sc.boot.interval(n, e) for n, (_, e) in ests.items()}
    rvalues = {n: sc.boot.interval(rkey[n], e) for n, (_, e) in rules.items()}
    finite = {n: iv.point for n, iv in rvalues.items() if math.isfinite(iv.point)}
    best_rule = ((max if metric.better == "high" else min)(finite.items(), key=lambda t: t[1]) if finite else None)

    def diff(a: str, b: str) -> I.Interval:
        return sc.boot.difference((a, ests[a][1]), (b, ests[b][1]))

    def rule_diff(a: str) -> I.Interval:
        assert best_rule is not None
        return sc.boot.difference((a, ests[a][1]), (rkey[best_rule[0]], rules[best_rule[0]][1]))

    decision = I.decide({n: iv.point for n, iv in values.items()}, metric.better, diff, best_rule,
                        rule_diff if best_rule else None)
    vs_rule = {}
    if best_rule:
        for n in ests:
            d = rule_diff(n)
            vs_rule[n] = {**d.as_dict(), "beats": I.favourable(d, metric.better)}
    vs_base: dict[str, dict[str, Any]] = {}
    if methods_vs_baselines:
        bases = [n for n, (u, _) in ests.items() if u.kind == "baseline"]
        for n, (u, _) in ests.items():
            if u.kind == "method":
                vs_base[n] = {b: {**(d := diff(n, b)).as_dict(), "beats": I.favourable(d, metric.better)}
                              for b in bases}
    return {"key": metric.key, "label": metric.label, "task": metric.task, "better": metric.better,
            "primary": metric.primary, "values": {n: iv.as_dict() for n, iv in values.items()},
            "rules": {n: iv.as_dict() for n, iv in rvalues.items()},
            "best_rule": best_rule[0] if best_rule else None, "decision": decision, "vs_best_rule": vs_rule,
            "not_above_rule": [n for n, v in vs_rule.items() if not v["beats"]], "vs_baselines": vs_base}


def _json_points(units: Sequence[Unit], row: dict[str, Any]) -> list[dict[str, Any]]:
    """Where the metrics JSON reports another number than the one recomputed from outputs.npz."""
    out = []
    for u in units:
        got = row["values"].get(u.name, {}).get("point")
        said = [get_dotted(r.evaluate, row["key"]) for r in u.records]
        said = [float(v) for v in said if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if got is not None and said and abs(float(np.mean(said)) - got) > 1e-6:
            out.append({"name": u.name, "metrics_json": float(np.mean(said)), "outputs_npz": got})
    return out


def _sizes(units: Sequence[Unit], cases: dict[str, list[str]], resamples: int) -> dict[str, Any]:
    first = units[0]
    step = first.outputs.rows("step", "test")
    event = first.outputs.rows("event", "test")
    said = next((r.evaluate.get("sizes") for u in units for r in u.records if isinstance((r.evaluate or {})
                 .get("sizes"), dict)), {}) or {}
    videos = set()
    for splits in first.outputs.tasks.values():
        if "test" in splits:
            videos.update(splits["test"].video.tolist())
    probe = sorted({(u.outputs.rows(t, "test").score if u.outputs.rows(t, "test").score is not None
                     else u.outputs.rows(t, "test").pred).shape[1]
                    for u in units for t in u.outputs.tasks if u.outputs.rows(t, "test") is not None
                    and (u.outputs.rows(t, "test").score is not None or u.outputs.rows(t, "test").pred is not None)})
    return {"test_cases": len(cases["test"]), "test_videos": len(videos),
            "test_clips": int(len(step)) if step is not None else said.get("test_clips"),
            "test_events": said.get("test_events", int((event.true == 1).sum()) if event is not None else None),
            "test_event_clips": int((event.true == 1).sum()) if event is not None else said.get("test_event_clips"),
            "val_cases": len(cases["val"]), "train_cases": said.get("train_cases", len(cases["train"]) or None),
            "probe_seeds": probe[0] if len(probe) == 1 else probe,
            "world_model_seeds": {u.name: len(u.members) for u in units if u.kind == "method"},
            "resamples": resamples}


def build_group(params: Params, units: list[Unit]) -> dict[str, Any]:
    ev = params.evaluate
    resamples, seed = ev.bootstrap_resamples, ev.seed
    cases = {s: split_cases(units, s) for s in ("train", "val", "test")}
    out: dict[str, Any] = {"eval_key": units[0].key,
                           "units": [{"name": u.name, "kind": u.kind, "members": u.members} for u in units],
                           "sizes": _sizes(units, cases, resamples), "rows": [], "per_class_f1": [],
                           "rules": {}, "validation": None}
    classes = units[0].outputs.classes.get("step", [])
    metrics = catalogue(ev.top_k, classes)
    if cases["test"]:
        rules = _rule_units(units[0], params, seed, ("val", "test"))
        sc = Scorer("test", units, rules, I.Bootstrap(len(cases["test"]), resamples, seed), cases["test"])
        for m in metrics:
            row = score_row(sc, m, methods_vs_baselines=m.kind != "class_f1")
            if row is None:
                continue
            row["json_mismatch"] = _json_points(units, row)
            out["per_class_f1" if m.kind == "class_f1" else "rows"].append(row)
        out["rules"] = {m.task: {r: describe(m.task, r) for r in RULES} for m in metrics if m.kind != "class_f1"
                        and any(r.name for r in rules if r.outputs.rows(m.task, "test") is not None)}
        out["claims"] = claims(out, units)
        out["wm_vs_encoder"] = _wm_vs_encoder(sc, units, ev.top_k)
    else:
        out["claims"] = []
    reg = metric_def(params.register.metric, ev.top_k, classes)
    if reg is not None and cases["val"]:
        rules = _rule_units(units[0], params, seed, ("val",))
        sc = Scorer("val", units, rules, I.Bootstrap(len(cases["val"]), resamples, seed, "validation cases"),
                    cases["val"])
        row = score_row(sc, reg, methods_vs_baselines=False)
        if row is not None:
            out["validation"] = {"cases": len(cases["val"]), **row}
    return out


def _wm_vs_encoder(sc: Scorer, units: Sequence[Unit], k: int) -> list[dict[str, Any]]:
    """Does the predictor's roll-out help anticipation? Per method: (world model - encoder only), paired."""
    out = []
    for kk in sorted({1, k}):
        sc.boot.forget()
        enc = MetricDef("", "", "anticipation", "recall_at", k=kk)
        wm = MetricDef("", "", "anticipation_wm", "recall_at", k=kk)
        for u in units:
            if u.kind != "method":
                continue
            a, b = sc.estimator(u, wm), sc.estimator(u, enc)
            if a is None or b is None:
                continue
            d = sc.boot.difference((u.name, a), (u.name + "/encoder", b))
            out.append({"name": u.name, "k": kk, **d.as_dict(), "helps": I.favourable(d, "high")})
    return out


def claims(group: dict[str, Any], units: Sequence[Unit]) -> list[dict[str, Any]]:
    """One sentence per headline claim, each saying whether its interval supports it."""
    out = []
    for row in group["rows"]:
        if not row["primary"]:
            continue
        d = row["decision"]
        best = d.get("best")
        if best is None:
            continue
        vs = d.get("vs_runner_up", {})
        text = (f"{row['label']}: `{best}` scores best ({_num(row['values'][best]['point'])}); its lead over "
                f"`{d['runner_up']}` is {_iv(vs)}")
        rule = d.get("vs_best_rule")
        if d.get("winner"):
            text += (", an interval that excludes zero" + (f", and it beats the rule `{rule['rule']}` ({_iv(rule)})"
                                                           if rule else "")
                     + f": the data supports `{best}` as the winner")
        elif rule is not None:
            text += (f", an interval that excludes zero, but it does not clearly beat the rule `{rule['rule']}` "
                     f"({_iv(rule)}): no winner")
        else:
            text += ", an interval that includes zero: the data cannot separate them"
        beaten = [n for n, v in row["vs_best_rule"].items() if not v["beats"]]
        if beaten and row.get("best_rule"):
            text += (f". Not clearly above the rule `{row['best_rule']}` ({_num(row['rules'][row['best_rule']]['point'])}"
                     f"): " + ", ".join(f"`{n}`" for n in beaten))
        out.append({"metric": row["key"], "claim": f"`{best}` is the best on {row['key']}",
                    "supported": bool(d.get("winner")), "sentence": text + "."})
        for m, per in row["vs_baselines"].items():
            above = row["vs_best_rule"].get(m, {}).get("beats", True)
            for b, v in per.items():
                word = "beats" if row["better"] == "high" else "has a lower error than"
                if v["beats"] and above:
                    verdict = "supported (the interval excludes zero)."
                elif v["beats"]:
                    verdict = (f"the interval excludes zero, but `{m}` does not clearly beat the rule "
                               f"`{row['best_rule']}`, so it beats nothing the rule does not reach: not supported.")
                else:
                    verdict = "not supported (the interval includes zero or favours the baseline)."
                out.append({"metric": row["key"], "claim": f"`{m}` {word} `{b}` on {row['key']}",
                            "supported": bool(v["beats"] and above),
                            "sentence": f"`{m}` − `{b}` on {row['label']}: {_iv(v)}: {verdict}"})
    for w in group.get("wm_vs_encoder", []):
        out.append({"metric": f"anticipation.recall_at_{w['k']}", "claim": f"the rolled-out future helps "
                    f"`{w['name']}` anticipate (recall@{w['k']})", "supported": w["helps"],
                    "sentence": f"`{w['name']}` with vs without the predictor's roll-out, next-step recall@{w['k']}: "
                                f"{_iv(w)}: " + ("supported." if w["helps"] else "not supported (the interval "
                                                                                  "includes zero or is negative).")})
    return out


def _interval(d: dict[str, Any]) -> I.Interval:
    return I.Interval(*(float("nan") if d.get(k) is None else d[k] for k in ("point", "lo", "hi")))


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _iv(d: dict[str, Any]) -> str:
    return I.fmt_diff(_interval(d))


def build(params: Params, records: Sequence[Record], evaluate_root: Path = EVALUATE,
          loaded: tuple[list[Unit], list[dict[str, str]]] | None = None) -> dict[str, Any]:
    """The whole comparison (what reports/comparison.json holds); `loaded`: load_units' result, if at hand."""
    units, left = loaded if loaded is not None else load_units(params, records, evaluate_root)
    left = list(left)
    by_key: dict[str, list[Unit]] = {}
    for u in units:
        by_key.setdefault(u.key, []).append(u)
    groups = []
    for key, members in by_key.items():
        members, more = _consistent(members)
        left += more
        groups.append(build_group(params, members))
    return {"level": I.LEVEL, "resamples": params.evaluate.bootstrap_resamples, "seed": params.evaluate.seed,
            "unit_of_resampling": "case", "groups": groups, "left_out": left}


# ------------------------------------------------------------------------------- selection on validation

def validation_rows(outputs: Outputs, metric: MetricDef) -> Rows | None:
    rows = outputs.rows(metric.task, "val")
    return rows if rows is not None and len(rows) and (rows.score is not None or rows.pred is not None) else None


def validation_estimate(params: Params, outputs: Outputs, metric: MetricDef, name: str) -> I.Interval | None:
    """A name's validation score of `metric` with its interval over validation cases."""
    rows = validation_rows(outputs, metric)
    if rows is None:
        return None
    cases = sorted(set(rows.case.tolist()))
    est = estimator(metric, rows, rows, cases, n_classes(outputs, metric.task))
    if est is None:
        return None
    boot = I.Bootstrap(len(cases), params.evaluate.bootstrap_resamples, params.evaluate.seed, "validation cases")
    return boot.interval(name, est)


def paired_gate(params: Params, metric: MetricDef, challenger: tuple[str, Rows, int],
                champion: tuple[str, Rows, int]) -> I.Interval | None:
    """Paired interval of challenger - champion over validation cases; None unless both have the same rows."""
    (na, ra, ca), (nb, rb, cb) = challenger, champion
    if not same_rows(ra, rb):
        return None
    cases = sorted(set(ra.case.tolist()))
    ea, eb = estimator(metric, ra, ra, cases, ca), estimator(metric, rb, rb, cases, cb)
    if ea is None or eb is None:
        return None
    boot = I.Bootstrap(len(cases), params.evaluate.bootstrap_resamples, params.evaluate.seed, "validation cases")
    return boot.difference((na, ea), (nb if nb != na else nb + "/champion", eb))


def event_curves(params: Params, units: Sequence[Unit]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Test labels and seed-mean event scores per unit, plus the time-prior rule: what the PR chart draws."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for u in units:
        rows = u.outputs.rows("event", "test")
        if rows is not None and rows.score is not None and len(rows):
            out[u.name] = (rows.true, rows.score[..., 1].mean(axis=(0, 1)))
    if units:
        prior = _rule_units(units[0], params, params.evaluate.seed, ("val", "test"))
        for r in prior:
            rows = r.outputs.rows("event", "test")
            if r.name == "prior" and rows is not None and rows.score is not None:
                out[f"rule: {r.name}"] = (rows.true, rows.score[..., 1].mean(axis=(0, 1)))
    return out
