"""Frozen evaluation behind the `evaluate` and `baseline` stages: probes for one trained run or baseline.

<name> is a run of `train.methods` or a baseline (`untrained_encoder`, `raw_pixels`); every name gets the same
split and the same probes.

Protocol (after V-JEPA 2's frozen evaluation): the encoder is frozen; each clip of the decode cache becomes its
tokens once; a small attentive probe (models/probe.py; inputs standardised with training statistics, plus each
token's change over one time step unless `evaluate.probe_deltas: false`) is trained per task on the tokens of
labelled clips (AdamW, warmup + cosine, `evaluate.probe_epochs`; the epoch with the best validation score is kept).
Split BY CASE, never by clip: the test cases are those the train stage held out (`train.val_fraction`,
`train.seed`: no world model saw their video) unless `evaluate.test_fraction` is set; of the other cases
`evaluate.val_fraction` validate the probe (its best epoch, the event threshold), the rest train it.

Tasks, each where the data has the labels (otherwise the metric says why it is missing):
  step          per-video weighted F1 averaged over videos (SurgVU's metric), top-1 accuracy, confusion matrix
  motion        top-1 accuracy over the motion classes
  anticipation  mean class recall@k of the next step; the encoder-only probe vs. the probe that also sees the
                predictor's tokens rolled `evaluate.rollouts` times beyond the clip (methods only)
  event         accuracy, precision, recall, F1 at the threshold with the best validation F1, and AUROC
  future        held-out temporal (L1) and contrastive (InfoNCE) losses of the predictor on the test clips, and
                top-1 retrieval of the true future among `evaluate.batch_size` futures (methods only)
  efficiency    step / motion / event probes trained on `evaluate.fractions` of the probe's training cases
  convergence   first epoch whose `evaluate.convergence_metric` (train history) reaches `convergence_fraction`
                of its final value (for a loss: is within final / fraction)
  cost          train wall time, peak memory and device (from the train stage), USD at `evaluate.gpu_prices`

Baselines: `untrained_encoder` = the pretrained encoder's architecture (data/weights/config.json; model.* when
there are no weights), randomly initialised with `evaluate.seed`; `raw_pixels` = no encoder: each token is its
tubelet's pixels pooled to `evaluate.pixel_pool`^2 (a fixed linear map), then the same probe.

Outputs: metrics/evaluate_<name>.json (DVC metrics), metrics/evaluate_<name>_efficiency.json (DVC plots: one
record per fraction), data/evaluate/<name>/ (confusion matrices as PNG, test predictions as CSV, the split).
A run whose training did not finish gets {"status": "failed", "error": ...} and exit status 1.
"""


from __future__ import annotations

import csv
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from surgwm.data.clips import ClipReader, open_clips
from surgwm.data.manifest import Manifest, read_manifest
from surgwm.device import device_name, resolve_device
from surgwm.evaluation import metrics as M
from surgwm.failures import clear_failure, record_failure
from surgwm.io import read_json, write_json
from surgwm.params import BASELINE_NAMES, Params
from surgwm.paths import CACHE, DECODED, EVALUATE, METRICS, TRAIN, WEIGHTS
from surgwm.evaluation.derived import convergence, cost, held_out_check
from surgwm.evaluation.errors import EvaluateError
from surgwm.evaluation.future import future
from surgwm.evaluation.probes import anticipate, classify, detect_event
from surgwm.evaluation.sources import Source, extract, load_source
from surgwm.evaluation.split import EvalSplit, split_cases
from surgwm.evaluation.table import ClipTable, clip_table, eval_key
from surgwm.evaluation.charts import plot_confusion

log = logging.getLogger("surgwm.evaluation")
CLASSIFY = ("step", "motion")


@dataclass
class Prepared:
    manifest: Manifest
    table: ClipTable
    split: EvalSplit
    key: str
    cache: ClipReader


def prepare(params: Params, cache_dir: Path = CACHE, manifest_path: Path = DECODED) -> Prepared:
    if not Path(manifest_path).is_file():
        raise EvaluateError(f"{manifest_path} not found: run the decode stage first (`dvc repro decode`)")
    manifest = read_manifest(manifest_path)
    table = clip_table(manifest, params)
    split = split_cases(table.clips, params)
    return Prepared(manifest, table, split, eval_key(table, split, manifest, params),
                    open_clips(cache_dir, params.data.clip_frames))


def score(src: Source, prep: Prepared, params: Params, device: torch.device, workdir: Path,
          progress: bool = False) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Every task for one feature source: (metrics, test predictions per task). Used by register too."""
    ev, table, split = params.evaluate, prep.table, prep.split
    tokens, rolled = extract(src, prep.cache, table.clips, ev.batch_size, device, workdir, ev.feature_dtype,
                             ev.rollouts, progress)
    cases = (split.train, split.val, split.test)
    out: dict[str, Any] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    for task in CLASSIFY:
        out[task], preds[task] = ({"unavailable": table.missing[task]}, {}) if task in table.missing else \
            classify(task, table, [tokens], cases, params, device)
    out["event"], preds["event"] = ({"unavailable": table.missing["event"]}, {}) if "event" in table.missing else \
        detect_event(table, [tokens], cases, params, device)
    out["anticipation"] = ({"unavailable": table.missing["anticipation"]} if "anticipation" in table.missing
                           else anticipate(table, tokens, rolled, cases, params, device))
    out["future"] = (future(src, prep.cache, table.clips, table.rows(split.test), ev.batch_size, ev.seed, device)
                     if src.predictor is not None else {"unavailable": "no predictor (baseline)"})
    curve = []
    for frac in sorted(set(ev.fractions)):
        sub = split.subset(frac)
        if sub == tuple(sorted(split.train)):
            res = {t: out[t] for t in (*CLASSIFY, "event")}
        else:
            res = {}
            for task in CLASSIFY:
                res[task] = out[task] if task in table.missing else \
                    classify(task, table, [tokens], (sub, split.val, split.test), params, device)[0]
            res["event"] = out["event"] if "event" in table.missing else \
                detect_event(table, [tokens], (sub, split.val, split.test), params, device)[0]
        curve.append({"fraction": frac, "train_cases": len(sub),
                      "step_f1_video": res["step"].get("f1_video"), "step_acc": res["step"].get("acc"),
                      "motion_acc": res["motion"].get("acc"), "event_f1": res["event"].get("f1"),
                      "event_auroc": res["event"].get("auroc")})
    out["efficiency"] = {f"{round(r['fraction'] * 100)}pct": r for r in curve}
    del tokens, rolled
    shutil.rmtree(workdir, ignore_errors=True)
    return out, preds


def evaluate(name: str, params: Params, *, cache_dir: Path = CACHE, manifest_path: Path = DECODED,
             train_root: Path = TRAIN, weights_dir: Path = WEIGHTS, metrics_dir: Path = METRICS,
             out_root: Path = EVALUATE, progress: bool = True) -> dict[str, Any]:
    """Evaluate `name`, write its metrics, plots and predictions; raises EvaluateError (after writing a
    failed record) when the run has no trained model."""
    ev = params.evaluate
    clash = sorted(set(params.train.methods) & set(BASELINE_NAMES))
    if clash:
        raise EvaluateError(f"train.methods uses the baseline name(s) {', '.join(clash)}: rename those runs")
    if ev.threads:
        torch.set_num_threads(ev.threads)
    device = resolve_device(ev.device, "evaluate.device")
    t0 = time.perf_counter()
    prep = prepare(params, cache_dir, manifest_path)
    kind = "baseline" if name in ev.baselines else "method"
    out_dir, metrics_dir = Path(out_root) / name, Path(metrics_dir)
    head: dict[str, Any] = {"name": name, "kind": kind, "eval_key": prep.key}
    try:
        src = load_source(name, params, Path(train_root), Path(weights_dir), device)
    except (EvaluateError, OSError, ValueError) as err:
        failed = {**head, "status": "failed", "error": str(err)}
        write_json(metrics_dir / f"evaluate_{name}.json", failed)
        write_json(metrics_dir / f"evaluate_{name}_efficiency.json", [])
        record_failure(stage_of(kind), name, str(err), metrics_dir)
        raise EvaluateError(str(err)) from None
    split = prep.split
    log.info("%s: test cases %s (%s); probe val %s; probe train %d cases", name, ", ".join(split.test),
             split.source, ", ".join(split.val), len(split.train))
    torch.manual_seed(ev.seed)
    result, preds = score(src, prep, params, device, out_dir / ".features.tmp", progress)
    curve = list(result["efficiency"].values())
    result["split"] = {"test_cases": list(split.test), "val_cases": list(split.val), "train_cases": sorted(split.train),
                       "test_from": split.source, "test_clips": int(len(prep.table.rows(split.test))),
                       "test_cases_seen_by_world_model": held_out_check(name, params, prep.table.clips, split)}
    if kind == "method":
        tm = read_json(metrics_dir / f"train_{name}.json")
        result["convergence"] = convergence(read_json(metrics_dir / f"train_{name}_history.json"),
                                            ev.convergence_metric, ev.convergence_fraction)
        result["cost"] = cost(tm, read_json(Path(train_root) / name / "config.json"))
    result = {**head, "status": "ok", **result, **src.info, "eval_device": device_name(device),
              "eval_time_s": round(time.perf_counter() - t0, 2)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_outputs(name, result, preds, curve, prep, out_dir)
    write_json(metrics_dir / f"evaluate_{name}_efficiency.json", curve)
    write_json(metrics_dir / f"evaluate_{name}.json", result)
    clear_failure(stage_of(kind), name, metrics_dir)
    log.info("%s: %s", name, summary(result))
    return result


def stage_of(kind: str) -> str:
    """The DVC stage that evaluates a name of this kind: evaluate@<run> or baseline@<name>."""
    return "baseline" if kind == "baseline" else "evaluate"


def summary(r: dict[str, Any]) -> str:
    def g(task: str, key: str) -> str:
        v = (r.get(task) or {}).get(key)
        return f"{task}.{key} {v:.3f}" if isinstance(v, (int, float)) else f"{task}.{key} n/a"

    k = (r.get("anticipation") or {}).get("k", 5)
    return ", ".join([g("step", "f1_video"), g("step", "acc"), g("motion", "acc"), g("event", "f1"),
                      g("event", "auroc"), g("anticipation", f"recall_at_{k}_encoder"),
                      g("anticipation", f"recall_at_{k}_world_model"), g("future", "retrieval_top1")])


def write_outputs(name: str, result: dict[str, Any], preds: dict[str, dict[str, np.ndarray]],
                  curve: list[dict[str, Any]], prep: Prepared, out_dir: Path) -> None:
    """Confusion matrices (PNG), test predictions (CSV), the split (JSON)."""
    table = prep.table
    for task, classes in (("step", table.step_classes), ("motion", table.motion_classes)):
        p = preds.get(task) or {}
        if "true" in p:
            plot_confusion(M.confusion_matrix(p["true"], p["pred"], len(classes)), classes,
                           f"{name}: {task} (test cases {', '.join(prep.split.test)})",
                           out_dir / f"{task}_confusion.png")
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["task", "video", "start", "true", "pred", "score"])
        for task, p in preds.items():
            for j, row in enumerate(p.get("rows", [])):
                c = table.clips[int(row)]
                w.writerow([task, c.video_id, c.start, int(p["true"][j]), int(p["pred"][j]),
                            f"{p['score'][j]:.5f}" if "score" in p else ""])
    write_json(out_dir / "split.json", result["split"])
