"""The probe tasks, which banks train them, and the metrics of one probe seed on one split.

Tasks (each where the data has its labels; class tasks are classification, time_to_next is regression):
  step            the clip's surgical step
  motion          the primary instrument's motion class
  event           the rare event shows in the clip (class-weighted loss; picked on validation AUROC)
  anticipation    the next step (the first later step that differs from the clip's own), encoder tokens only
  anticipation_wm the same from the tokens plus the predictor's tokens rolled `evaluate.rollouts` times beyond the
                  clip (methods only: a baseline has no world model)
  time_to_next    seconds from the clip's centre to the start of that next step (L1 on log(1 + s); MAE in s)
Banks, per probe seed: `main` (every task that reads the clip's tokens), `wm` (anticipation_wm: tokens + roll-outs)
and one per data-efficiency fraction below 1 (step, motion, event on that share of the training cases).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from surgwm.evaluation import metrics as M
from surgwm.evaluation.probe_bank import BankFit, Features, Task, fit_bank, resolve_precision
from surgwm.evaluation.split import EvalSplit
from surgwm.evaluation.table import ClipTable
from surgwm.params import Params

MAIN_TASKS = ("step", "motion", "event", "anticipation", "time_to_next")
EFFICIENCY_TASKS = ("step", "motion", "event")
WM_TASK = "anticipation_wm"


def build_tasks(table: ClipTable) -> dict[str, Task]:
    """Every task the data can score (table.missing says why the others cannot)."""
    n_steps, n_motion = len(table.step_classes), len(table.motion_classes)
    tasks = {"step": Task("step", table.step, n_steps), "motion": Task("motion", table.motion, n_motion),
             "event": Task("event", table.event, 2, balanced=True),
             "anticipation": Task("anticipation", table.next_step, n_steps, balanced=True),
             WM_TASK: Task(WM_TASK, table.next_step, n_steps, balanced=True),
             "time_to_next": Task("time_to_next", table.time_to_next, 1, regression=True)}
    gone = {WM_TASK: "anticipation"}
    return {k: t for k, t in tasks.items() if gone.get(k, k) not in table.missing}


def unusable(task: Task, train: np.ndarray, test: np.ndarray) -> str | None:
    """Why a task cannot be probed on these rows (None: it can)."""
    what = {"anticipation": "next-step", WM_TASK: "next-step", "time_to_next": "next-step"}.get(task.name, task.name)
    if not len(task.rows(test)):
        return f"no labelled {what} clips in the test cases"
    if task.regression:
        enough = len(task.rows(train)) >= 2
        return None if enough else f"fewer than 2 labelled {what} clips in the probe's training cases"
    if len(np.unique(task.y[task.rows(train)])) < 2:
        return f"the probe's training cases hold fewer than 2 {what} classes"
    if task.name == "event" and not (task.y[task.rows(test)] == 1).any():
        return "no event clips in the test cases (recall, F1 and AUROC are undefined)"
    return None


@dataclass
class BankPlan:
    """One bank to train per probe seed: its name, tasks, the features it reads and its training rows."""

    name: str
    tasks: list[Task]
    wm: bool                    # reads tokens + roll-outs
    train: np.ndarray


def plan_banks(tasks: dict[str, Task], train: np.ndarray, split: EvalSplit, table: ClipTable, params: Params,
               has_rollouts: bool) -> list[BankPlan]:
    plans = [BankPlan("main", [tasks[t] for t in MAIN_TASKS if t in tasks], False, train)]
    if has_rollouts and WM_TASK in tasks:
        plans.append(BankPlan("wm", [tasks[WM_TASK]], True, train))
    for frac in sorted(set(params.evaluate.fractions)):
        sub = split.subset(frac)
        if sub == tuple(sorted(split.train)):
            continue
        rows = train[np.isin(table.case[train], sub)]
        eff = [tasks[t] for t in EFFICIENCY_TASKS if t in tasks]
        if eff and len(rows):
            plans.append(BankPlan(frac_name(frac), eff, False, rows))
    return [p for p in plans if p.tasks]


def frac_name(frac: float) -> str:
    return f"{round(frac * 100)}pct"


def train_banks(plans: Sequence[BankPlan], feats: Features, feats_wm: Features | None, val: np.ndarray,
                seed: int, params: Params, device: torch.device) -> dict[str, BankFit]:
    """Every bank of one probe seed."""
    ev = params.evaluate
    lag = (params.data.size // 16) ** 2 if ev.probe_deltas else 0     # tokens per token-time-step
    precision = resolve_precision(ev.probe_precision, device, ev.probe_depth)
    out = {}
    for plan in plans:
        f = feats_wm if plan.wm else feats
        assert f is not None
        out[plan.name] = fit_bank(f, plan.tasks, plan.train, val, ev.probe_lrs, ev.probe_weight_decays, seed,
                                  dim=ev.probe_dim, depth=ev.probe_depth, heads=ev.probe_heads, lag=lag,
                                  epochs=ev.probe_epochs, batch_size=ev.probe_batch_size, device=device,
                                  precision=precision)
    return out


# ------------------------------------------------------------------------------------------ metrics, one seed

def step_metrics(y: np.ndarray, s: np.ndarray, videos: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    pred = s.argmax(1)
    present = set(np.unique(y).tolist())
    return {"f1_video": M.per_video_f1(y, pred, videos), "acc": M.accuracy(y, pred),
            "per_class_f1": {c: (M.class_f1(y, pred, i) if i in present else None) for i, c in enumerate(classes)}}


def event_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    return {**M.binary_counts(y, (p >= threshold).astype(int)), "auroc": M.auroc(y, p),
            "ap": M.average_precision(y, p), "threshold": float(threshold)}


def anticipation_metrics(y: np.ndarray, s: np.ndarray, k: int, label: str) -> dict[str, Any]:
    return {f"recall_at_1_{label}": M.mean_class_recall_at_k(y, s, 1),
            f"recall_at_{k}_{label}": M.mean_class_recall_at_k(y, s, k), f"acc_{label}": M.accuracy(y, s.argmax(1))}


def event_threshold(y_val: np.ndarray, p_val: np.ndarray) -> tuple[float, str]:
    thr = M.best_threshold(y_val, p_val) if len(y_val) else None
    if thr is None:
        return 0.5, "0.5 (no event clip in the validation cases)"
    return thr, "best F1 on the validation cases"


def _mean_sd(values: Sequence[Any]) -> tuple[Any, Any]:
    first = values[0]
    if isinstance(first, dict):
        pairs = {k: _mean_sd([v.get(k) for v in values]) for k in first}
        sds = {k: sd for k, (_, sd) in pairs.items() if sd is not None}
        return {k: m for k, (m, _) in pairs.items()}, sds or None
    nums = [x for x in values if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if nums and len(nums) == len(values):
        return float(np.mean(nums)), (float(np.std(nums, ddof=1)) if len(nums) > 1 else None)
    return first, None


def seed_stats(values: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over probe seeds of every number (nested dicts too) and, when seeds > 1, `seed_sd` beside them with
    the same keys (their sample standard deviation); other values from the first seed."""
    mean, sd = _mean_sd(list(values))
    return {**mean, **({"seed_sd": sd} if sd else {})}
