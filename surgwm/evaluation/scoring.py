"""The chosen probe heads on the validation and test clips, and the metrics built from their scores.

Validation clips were extracted with the training clips; test videos are streamed here a batch at a time (encode,
score with every chosen head, keep the scores only), so no test token is ever stored. Metrics are computed per
probe seed and then averaged (`seed_sd` beside the means, surgwm/evaluation/probes.py: seed_stats). The event
threshold of each seed's head comes from its validation scores; on the validation block itself that makes the event
F1 optimistic (said in docs/evaluation.md), the ranking scores (AUROC, step F1) are not affected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from surgwm.data.clips import Clip, ClipReader
from surgwm.evaluation import metrics as M
from surgwm.evaluation.official import Frames, f1_video_official, predict_frames
from surgwm.evaluation.probe_bank import BankFit, Features, Task, predict, to_scores
from surgwm.evaluation.probes import (BankPlan, anticipation_metrics, event_metrics, event_threshold, frac_name,
                                      seed_stats, step_metrics)
from surgwm.evaluation.sources import Source, encode, read_clips
from surgwm.evaluation.table import ClipTable
from surgwm.params import Params

Key = tuple[str, str]            # (bank, task)


@dataclass
class Scored:
    """Per-seed scores of the chosen heads on the validation and test rows, and what produced them."""

    table: ClipTable
    train_rows: np.ndarray
    val_rows: np.ndarray
    test_rows: np.ndarray                        # every video's sampled clips, concatenated in video order
    val: dict[Key, np.ndarray]                   # (R, n_val, C) per (bank, task)
    test: dict[Key, np.ndarray]                  # (R, n_test, C)
    frames: dict[str, Frames | None]             # the official metric's 1-fps frames per split
    fits: dict[int, dict[str, BankFit]]          # seed -> bank -> trained bank
    plans: list[BankPlan]
    events: dict[str, int]                       # video -> event occurrences (labelled intervals)
    official: dict[str, np.ndarray] = field(default_factory=dict)   # split -> (R, n_frames) frame predictions

    def rows(self, split: str) -> np.ndarray:
        return self.val_rows if split == "val" else self.test_rows

    def scores(self, split: str) -> dict[Key, np.ndarray]:
        return self.val if split == "val" else self.test


def _chosen(fits: dict[int, dict[str, BankFit]]) -> dict[tuple[int, str], tuple[Any, list[Task]]]:
    return {(r, bank): fit.chosen_bank() for r, seed in enumerate(fits) for bank, fit in fits[seed].items()}


def _alloc(fits: dict[int, dict[str, BankFit]], n: int) -> dict[Key, np.ndarray]:
    first = next(iter(fits.values()))
    return {(bank, t.name): np.zeros((len(fits), n, t.outputs), dtype=np.float32)
            for bank, fit in first.items() for t in fit.tasks if t.name in fit.chosen}


def score_rows(fits: dict[int, dict[str, BankFit]], feats: Features, feats_wm: Features | None, rows: np.ndarray,
               device: torch.device) -> dict[Key, np.ndarray]:
    """The chosen heads of every seed and bank on extracted rows (validation)."""
    out = _alloc(fits, len(rows))
    for (r, bank), (sub, tasks) in _chosen(fits).items():
        f = feats_wm if sub.num_tokens != feats.shape[0] else feats
        assert f is not None
        s = predict(sub, f, rows, [t.regression for t in tasks], device)      # (H, n, C)
        for i, t in enumerate(tasks):
            out[(bank, t.name)][r] = s[i, :, :t.outputs]
    return out


@torch.no_grad()
def stream_test(src: Source, cache: ClipReader, clips: Sequence[Clip], videos: Sequence[np.ndarray],
                fits: dict[int, dict[str, BankFit]], batch_size: int, rollouts: int,
                device: torch.device) -> dict[Key, np.ndarray]:
    """Every test video a batch at a time: encode, score with every chosen head, keep only the scores."""
    chosen = _chosen(fits)
    for sub, _ in chosen.values():
        sub.eval()
    out = _alloc(fits, sum(len(v) for v in videos))
    lo = 0
    for rows in videos:
        for i in range(0, len(rows), batch_size):
            b = rows[i:i + batch_size]
            tok, rol = encode(src, read_clips(cache, clips, b, device), rollouts)     # (B, N, D), (B, R Nf, D)
            for (r, bank), (sub, tasks) in chosen.items():
                x = tok if sub.num_tokens == tok.shape[1] else torch.cat([tok, rol], dim=1)
                s = to_scores(sub(x), [t.regression for t in tasks])                    # (H, B, C)
                for j, t in enumerate(tasks):
                    out[(bank, t.name)][r, lo:lo + len(b)] = s[j, :, :t.outputs]
            lo += len(b)
    return out


# ------------------------------------------------------------------------------------------------- metrics

def _head_info(fits: dict[int, dict[str, BankFit]], bank: str, task: str) -> dict[str, Any]:
    """Which head each seed chose, on which epoch, with which validation score."""
    per_seed = []
    for seed, banks in fits.items():
        fit = banks[bank]
        h = fit.chosen[task]
        _, lr, wd = fit.heads[h]
        per_seed.append({"seed": seed, "lr": lr, "weight_decay": wd, "best_epoch": fit.best_epoch[h],
                         "val_score": fit.val_score[h]})
    grid = sum(1 for t, _, _ in next(iter(fits.values()))[bank].heads
               if next(iter(fits.values()))[bank].tasks[t].name == task)
    return {"heads_per_seed": grid, "chosen": per_seed}


class _Split:
    """One split's rows and labels, and the scores of one (bank, task) for one seed."""

    def __init__(self, sc: Scored, split: str):
        self.sc, self.split, self.rows, self.arr = sc, split, sc.rows(split), sc.scores(split)

    def get(self, key: Key, r: int, task: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows with a label, their labels, their scores (n, C))."""
        sel = np.flatnonzero(np.isin(self.rows, task.rows(self.rows)))
        return self.rows[sel], task.y[self.rows[sel]], self.arr[key][r][sel]


def seed_metrics(sc: Scored, split: str, r: int, tasks: dict[str, Task], params: Params) -> dict[str, Any]:
    """Every task's metrics for probe seed index r on `split` (val or test)."""
    S, V = _Split(sc, split), _Split(sc, "val")
    t, k, out = sc.table, params.evaluate.top_k, {}
    if ("main", "step") in S.arr:
        rows, y, s = S.get(("main", "step"), r, tasks["step"])
        out["step"] = step_metrics(y, s, t.video[rows], t.step_classes)
        frames = sc.frames.get(split)
        if frames is not None:
            pred = predict_frames(frames, t.video[S.rows], t.start[S.rows], S.arr[("main", "step")][r],
                                  params.data.clip_frames, params.data.fps)
            out["step"]["f1_video_official"] = f1_video_official(frames.true, pred, frames.video)
            out["_official_pred"] = pred
    if ("main", "motion") in S.arr:
        _, y, s = S.get(("main", "motion"), r, tasks["motion"])
        out["motion"] = {"acc": M.accuracy(y, s.argmax(1))}
    for bank in [p.name for p in sc.plans if p.name != "wm"]:
        if (bank, "event") in S.arr:
            _, yv, sv = V.get((bank, "event"), r, tasks["event"])
            thr, _ = event_threshold(yv, sv[:, 1])
            _, y, s = S.get((bank, "event"), r, tasks["event"])
            out[f"{bank}/event"] = event_metrics(y, s[:, 1], thr)
    ant: dict[str, Any] = {}
    for bank, task, label in (("main", "anticipation", "encoder"), ("wm", "anticipation_wm", "world_model")):
        if (bank, task) in S.arr:
            _, y, s = S.get((bank, task), r, tasks[task])
            ant |= anticipation_metrics(y, s, k, label)
    if ("main", "time_to_next") in S.arr:
        _, y, s = S.get(("main", "time_to_next"), r, tasks["time_to_next"])
        ant["time_to_next_mae_s"] = M.mae(y, s[:, 0])
    if ant:
        out["anticipation"] = ant
    for bank in [p.name for p in sc.plans if p.name not in ("main", "wm")]:
        for task in ("step", "motion"):
            if (bank, task) in S.arr:
                rows, y, s = S.get((bank, task), r, tasks[task])
                out[f"{bank}/{task}"] = {"acc": M.accuracy(y, s.argmax(1))} | (
                    {"f1_video": M.per_video_f1(y, s.argmax(1), t.video[rows])} if task == "step" else {})
    return out


def assemble(sc: Scored, tasks: dict[str, Task], why: dict[str, str | None], params: Params) -> dict[str, Any]:
    """The metrics JSON's task sections (test), `validation`, `efficiency` and `sizes`, seed means."""
    t = sc.table
    n = len(sc.fits)
    per = {split: [seed_metrics(sc, split, r, tasks, params) for r in range(n)] for split in ("val", "test")}
    res: dict[str, Any] = {}
    blocks = {split: {sec: seed_stats([m[sec] for m in per[split]]) for sec in per[split][0]
                      if not sec.startswith("_")} for split in per}
    te = sc.test_rows
    sizes = {"test_cases": int(len(np.unique(t.case[te]))), "test_videos": int(len(np.unique(t.video[te]))),
             "test_clips": int(len(te)), "test_events": _events(sc, te),
             "test_event_clips": int((t.event[te] == 1).sum()),
             "val_cases": int(len(np.unique(t.case[sc.val_rows]))), "val_clips": int(len(sc.val_rows)),
             "train_cases": int(len(np.unique(t.case[sc.train_rows]))), "train_clips": int(len(sc.train_rows)),
             "probe_seeds": n}
    for split in ("test", "val"):
        b, rows = blocks[split], sc.rows(split)
        sec: dict[str, Any] = {}
        for task in ("step", "motion"):
            if why.get(task, "") is not None or task not in tasks:
                sec[task] = {"unavailable": why.get(task) or sc.table.missing.get(task, "no labels")}
                continue
            y, tr = tasks[task].y, tasks[task].rows(sc.train_rows)
            lab = tasks[task].rows(rows)
            n_cls = tasks[task].outputs
            majority = int(np.bincount(y[tr], minlength=n_cls).argmax())
            sec[task] = {**b[task], "majority_acc": M.accuracy(y[lab], np.full(len(lab), majority)),
                         "chance": 1 / n_cls, f"{split}_clips": int(len(lab)), "train_clips": int(len(tr)),
                         f"classes_in_{split}": int(len(np.unique(y[lab]))), **_head_info(sc.fits, "main", task)}
            if task == "step":
                sec[task][f"videos_in_{split}"] = int(len(np.unique(t.video[lab])))
                if sc.frames.get(split) is None:
                    sec[task]["f1_video_official"] = None
                    sec[task]["f1_video_official_note"] = "no 'other' class in the step vocabulary"
        if why.get("event", "") is None and "main/event" in b:
            lab = tasks["event"].rows(rows)
            sec["event"] = {**b["main/event"], "threshold_from": "best F1 on the validation cases",
                            f"positives_{split}": int((t.event[lab] == 1).sum()), f"{split}_clips": int(len(lab)),
                            f"positive_rate_{split}": float(t.event[lab].mean()) if len(lab) else None,
                            **_head_info(sc.fits, "main", "event")}
        else:
            sec["event"] = {"unavailable": why.get("event") or sc.table.missing.get("event", "no labels")}
        sec["anticipation"] = _anticipation(sc, b, tasks, why, rows, params, split)
        if split == "test":
            res.update(sec)
            res["efficiency"] = _efficiency(sc, blocks["test"], res, params)
        else:
            res["validation"] = {**sec, "val_clips": int(len(rows)), "val_cases": sizes["val_cases"]}
    res["sizes"] = sizes
    sc.official = {split: np.stack([m["_official_pred"] for m in per[split]]) for split in per
                   if per[split] and "_official_pred" in per[split][0]}
    return res


def _events(sc: Scored, rows: np.ndarray) -> int:
    """Event occurrences (labelled intervals) in the videos of `rows`, not clips (clips overlap)."""
    return int(sum(sc.events.get(v, 0) for v in np.unique(sc.table.video[rows])))


def _anticipation(sc: Scored, b: dict[str, Any], tasks: dict[str, Task], why: dict[str, str | None],
                  rows: np.ndarray, params: Params, split: str) -> dict[str, Any]:
    if "anticipation" not in tasks or why.get("anticipation") is not None:
        return {"unavailable": why.get("anticipation") or sc.table.missing.get("anticipation", "no labels")}
    k, n_cls = params.evaluate.top_k, tasks["anticipation"].outputs
    lab = tasks["anticipation"].rows(rows)
    out = {"k": k, "chance_at_1": 1 / n_cls, "chance": min(1.0, k / n_cls), f"{split}_clips": int(len(lab)),
           f"classes_in_{split}": int(len(np.unique(sc.table.next_step[lab]))), **b.get("anticipation", {}),
           "encoder_head": _head_info(sc.fits, "main", "anticipation")}
    if ("wm", "anticipation_wm") in sc.test:
        out["world_model_head"] = _head_info(sc.fits, "wm", "anticipation_wm")
    else:
        out |= {"recall_at_1_world_model": None, f"recall_at_{k}_world_model": None,
                "world_model_note": "no predictor (baseline): encoder-only"}
    if "time_to_next" in tasks and why.get("time_to_next") is None:
        y = sc.table.time_to_next
        tr, ev_rows = tasks["time_to_next"].rows(sc.train_rows), tasks["time_to_next"].rows(rows)
        out |= {f"time_to_next_{split}_clips": int(len(ev_rows)),
                "time_to_next_mae_s_median_rule": M.mae(y[ev_rows], np.full(len(ev_rows), np.median(y[tr]))),
                "time_to_next_head": _head_info(sc.fits, "main", "time_to_next")}
    else:
        out["time_to_next_mae_s"] = None
        out["time_to_next_note"] = why.get("time_to_next") or "no step transitions in this data"
    return out


def _efficiency(sc: Scored, b: dict[str, Any], full: dict[str, Any], params: Params) -> dict[str, Any]:
    """One record per fraction of the probe's training cases (1.0 = the main probes), seed means and seed_sd."""
    curve = {}
    keys = (("step_f1_video", "step", "f1_video"), ("step_acc", "step", "acc"), ("motion_acc", "motion", "acc"),
            ("event_f1", "event", "f1"), ("event_auroc", "event", "auroc"))
    for frac in sorted(set(params.evaluate.fractions)):
        name = frac_name(frac)
        plan = next((p for p in sc.plans if p.name == name), None)
        src = {task: full.get(task, {}) for task in ("step", "motion", "event")} if plan is None else \
            {task: b.get(f"{name}/{task}", {}) for task in ("step", "motion", "event")}
        rows = sc.train_rows if plan is None else plan.train
        rec: dict[str, Any] = {"fraction": frac, "train_cases": int(len(np.unique(sc.table.case[rows]))),
                               **{k: src[task].get(m) for k, task, m in keys}}
        sd = {k: src[task].get("seed_sd", {}).get(m) for k, task, m in keys
              if src[task].get("seed_sd", {}).get(m) is not None}
        curve[name] = rec | ({"seed_sd": sd} if sd else {})
    return curve
