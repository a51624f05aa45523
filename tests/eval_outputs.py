"""Realistic evaluation outputs in the evaluation's contract format, for the report / register / statistics tests.

- `make_world(seed, ...)`: labels of a synthetic study (cases split train/val/test, two videos per case, steps whose
  order varies between cases, motion segments, a rare event, next step and time to it, 1-fps official rows).
- `write_name(root, world, name, quality, ...)`: data/evaluate/<name>/outputs.npz (np.savez_compressed, no pickle)
  and metrics/evaluate_<name>.json, as the evaluate / baseline stages write them: test metrics at the top level
  (seed means, computed here with surgwm/evaluation/metrics.py, independently of the statistics code), a
  `validation` block, `sizes`, `split`, `eval_key`; methods also get `cost` / `convergence`. Scores are noisy
  class probabilities whose separation grows with `quality` (0: chance-like, 1: strong), per probe seed.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surgwm.data.classes import MOTION_CLASSES, STEP_CLASSES
from surgwm.evaluation import metrics as M

STEPS = list(STEP_CLASSES)           # the last one is `other`
MOTIONS = list(MOTION_CLASSES)
OTHER = STEPS.index("other")
FPS, STRIDE = 4, 4


@dataclass
class World:
    split: dict[str, list[str]]
    rows: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)   # task -> split -> arrays


def _rng(*parts: Any) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(p).encode()) for p in parts])


def make_world(seed: int = 0, cases: int = 24, test: int = 5, val: int = 4, clips_per_video: int = 28) -> World:
    rng = _rng("world", seed)
    ids = [f"case_{i:03d}" for i in range(cases)]
    order = list(rng.permutation(ids))
    split = {"test": sorted(order[:test]), "val": sorted(order[test:test + val]), "train": sorted(order[test + val:])}
    per: dict[str, dict[str, list[Any]]] = {}
    for case in ids:
        steps = list(range(7))
        for _ in range(3):                                 # the order varies between cases
            i = int(rng.integers(0, 6))
            steps[i], steps[i + 1] = steps[i + 1], steps[i]
        s = "train" if case in split["train"] else "val" if case in split["val"] else "test"
        for part, seq in ((1, steps[:4]), (2, steps[4:])):
            video = f"{case}_part{part}"
            lengths = rng.multinomial(clips_per_video - 3 * len(seq), np.full(len(seq), 1 / len(seq))) + 3
            step = np.repeat(seq, lengths)
            change = np.r_[np.flatnonzero(np.diff(step)) + 1, len(step)]
            motion = np.repeat(rng.integers(0, len(MOTIONS), size=clips_per_video // 4 + 1), 4)[:clips_per_video]
            event = np.zeros(clips_per_video, np.int64)
            for _ in range(int(rng.integers(0, 3))):
                a = int(rng.integers(0, clips_per_video - 3))
                event[a:a + int(rng.integers(2, 4))] = 1
            for i in range(clips_per_video):
                nxt_at = change[np.searchsorted(change, i, side="right")] if i < change[-1] else len(step)
                row = {"case": case, "video": video, "start": i * STRIDE, "step": int(step[i]),
                       "motion": int(motion[i]), "event": int(event[i]),
                       "next": int(step[nxt_at]) if nxt_at < len(step) else -1,
                       "ttn": (nxt_at - i) * STRIDE / FPS}
                for k, v in row.items():
                    per.setdefault(s, {}).setdefault(k, []).append(v)
            seconds = clips_per_video * STRIDE // FPS
            for t in range(seconds):
                label = OTHER if t < 2 else int(step[min(len(step) - 1, t * FPS // STRIDE)])
                for k, v in {"ocase": case, "ovideo": video, "otime": float(t), "otrue": label}.items():
                    per.setdefault(s, {}).setdefault(k, []).append(v)
    world = World(split)
    for s, cols in per.items():
        a = {k: np.array(v) for k, v in cols.items()}
        base = {"case": a["case"], "video": a["video"], "start": a["start"].astype(np.int64)}
        has_next = a["next"] >= 0
        world.rows.setdefault("step", {})[s] = {**base, "true": a["step"]}
        world.rows.setdefault("motion", {})[s] = {**base, "true": a["motion"]}
        world.rows.setdefault("event", {})[s] = {**base, "true": a["event"]}
        for task in ("anticipation", "anticipation_wm"):
            world.rows.setdefault(task, {})[s] = {**{k: v[has_next] for k, v in base.items()},
                                                  "true": a["next"][has_next], "current": a["step"][has_next]}
        world.rows.setdefault("time_to_next", {})[s] = {**{k: v[has_next] for k, v in base.items()},
                                                        "true": a["ttn"][has_next], "current": a["step"][has_next]}
        if s != "train":
            world.rows.setdefault("step_official", {})[s] = {
                "case": a["ocase"], "video": a["ovideo"], "start": np.zeros(len(a["ocase"]), np.int64),
                "time": a["otime"], "true": a["otrue"]}
    return world


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _scores(true: np.ndarray, c: int, quality: float, rng: np.random.Generator, seeds: int) -> np.ndarray:
    logits = 4.0 * quality * np.eye(c)[true][None] + rng.normal(size=(seeds, len(true), c))
    return _softmax(logits).astype(np.float32)                               # (R, n, C)


def outputs_for(world: World, name: str, quality: float, seeds: int = 3, wm_gain: float = 0.0,
                variant: int = 0) -> dict[str, np.ndarray]:
    """The arrays of one outputs.npz; `variant` changes the noise only (another world-model seed)."""
    z: dict[str, np.ndarray] = {"step_classes": np.array(STEPS), "motion_classes": np.array(MOTIONS)}
    for task, splits in world.rows.items():
        c = {"motion": len(MOTIONS), "event": 2}.get(task, len(STEPS))
        q = min(1.0, quality + wm_gain) if task == "anticipation_wm" else quality
        for s, cols in splits.items():
            for k, v in cols.items():
                z[f"{task}/{s}/{k}"] = v
            if s == "train":
                continue
            rng = _rng(name, variant, task, s)
            if task == "time_to_next":
                z[f"{task}/{s}/pred"] = (cols["true"][None] + rng.normal(0, 0.5 + 6 * (1 - q), (seeds, len(
                    cols["true"])))).astype(np.float32)
            elif task == "step_official":
                z[f"{task}/{s}/pred"] = _scores(cols["true"], c, q, rng, seeds).argmax(-1)
            elif task == "event":
                y = cols["true"]
                logit = 3.0 * q * (2 * y - 1)[None] - 1.0 + rng.normal(size=(seeds, len(y)))
                p = 1 / (1 + np.exp(-logit))
                z[f"{task}/{s}/score"] = np.stack([1 - p, p], -1).astype(np.float32)
            else:
                z[f"{task}/{s}/score"] = _scores(cols["true"], c, q, rng, seeds)
    return z


def metrics_of(z: dict[str, np.ndarray], split: str, k: int = 5) -> dict[str, Any]:
    """The task metrics of one split, seed means, with surgwm/evaluation/metrics.py (the evaluation's own code)."""
    def mean(vals: list[float | None]) -> float | None:
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    p = lambda task, key: z[f"{task}/{split}/{key}"]   # noqa: E731
    out: dict[str, Any] = {}
    s = p("step", "score")
    out["step"] = {"f1_video": mean([M.per_video_f1(p("step", "true"), x.argmax(1), p("step", "video")) for x in s]),
                   "acc": mean([M.accuracy(p("step", "true"), x.argmax(1)) for x in s]),
                   "f1_video_official": mean([M.per_video_f1(p("step_official", "true"), x,
                                                             p("step_official", "video"))
                                              for x in p("step_official", "pred")]),
                   "per_class_f1": {c: mean([M._prf(p("step", "true"), x.argmax(1), i)[2] for x in s])
                                    for i, c in enumerate(STEPS)}}
    out["motion"] = {"acc": mean([M.accuracy(p("motion", "true"), x.argmax(1)) for x in p("motion", "score")])}
    ev, yv = [], z["event/val/true"]
    for r, x in enumerate(p("event", "score")):
        thr = M.best_threshold(yv, z["event/val/score"][r][:, 1])
        ev.append({**M.binary_counts(p("event", "true"), (x[:, 1] >= thr).astype(int)),
                   "auroc": M.auroc(p("event", "true"), x[:, 1])})
    out["event"] = {key: mean([e[key] for e in ev]) for key in ("acc", "precision", "recall", "f1", "auroc")}
    ant = {"k": k}
    for label, task in (("encoder", "anticipation"), ("world_model", "anticipation_wm")):
        if f"{task}/{split}/score" in z:
            for kk in (1, k):
                ant[f"recall_at_{kk}_{label}"] = mean([M.mean_class_recall_at_k(p(task, "true"), x, kk)
                                                       for x in p(task, "score")])
    ant["time_to_next_mae_s"] = mean([float(np.abs(x - p("time_to_next", "true")).mean())
                                      for x in p("time_to_next", "pred")])
    out["anticipation"] = ant
    return out


def write_name(root: Path, world: World, name: str, quality: float, kind: str = "method", seeds: int = 3,
               eval_key: str = "k1", wm_gain: float = 0.0, variant: int = 0, train_time_s: float = 12.5,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write data/evaluate/<name>/outputs.npz and metrics/evaluate_<name>.json under `root`; returns the JSON."""
    z = outputs_for(world, name, quality, seeds, wm_gain if kind == "method" else 0.0, variant)
    if kind != "method":
        z = {k: v for k, v in z.items() if not k.startswith("anticipation_wm/")}
    return write_outputs(root, world, name, z, kind, eval_key, train_time_s, extra, quality)


def write_outputs(root: Path, world: World, name: str, z: dict[str, np.ndarray], kind: str = "method",
                  eval_key: str = "k1", train_time_s: float = 12.5, extra: dict[str, Any] | None = None,
                  quality: float = 0.5) -> dict[str, Any]:
    """Write given outputs.npz arrays and the metrics JSON computed from them (as the evaluation would)."""
    out_dir = Path(root) / "evaluate" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "outputs.npz", **z)
    seeds = int(z["step/test/score"].shape[0])
    ev = z["event/test/true"]
    rec: dict[str, Any] = {
        "name": name, "kind": kind, "status": "ok", "eval_key": eval_key, "eval_device": "cpu (test)",
        **metrics_of(z, "test"), "validation": metrics_of(z, "val"),
        "future": ({"temporal": 0.5, "contrastive": 1.2, "retrieval_top1": 0.3 + 0.1 * quality,
                    "space": f"{name}'s own target encoder"} if kind == "method"
                   else {"unavailable": "no predictor (baseline)"}),
        "efficiency": {"100pct": {"fraction": 1.0, "train_cases": len(world.split["train"]),
                                  "step_f1_video": None}},
        "sizes": {"test_cases": len(world.split["test"]), "test_videos": 2 * len(world.split["test"]),
                  "test_clips": int(len(z["step/test/true"])), "test_events": int(np.sum(np.diff(np.r_[0, ev]) == 1)),
                  "val_cases": len(world.split["val"]), "train_cases": len(world.split["train"]),
                  "probe_seeds": seeds},
        "split": {"test_cases": world.split["test"], "val_cases": world.split["val"],
                  "train_cases": world.split["train"], "test_from": "the cases the train stage held out",
                  "test_clips": int(len(z["step/test/true"])), "test_cases_seen_by_world_model": []}}
    rec["efficiency"]["100pct"]["step_f1_video"] = rec["step"]["f1_video"]
    if kind == "method":
        rec["convergence"] = {"epoch": 2, "epochs": 3}
        rec["cost"] = {"train_time_s": train_time_s, "device": "cpu (test)", "peak_memory_mb": 100.0}
    rec |= extra or {}
    metrics = Path(root) / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / f"evaluate_{name}.json").write_text(json.dumps(rec))
    return rec


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
