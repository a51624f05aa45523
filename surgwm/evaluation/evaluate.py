"""Frozen evaluation behind the `evaluate` and `baseline` stages: probes for one trained run or baseline.

<name> is a run of `train.methods` or a baseline (`untrained_encoder`, `raw_pixels`); every name gets the same
split, the same clips and the same probes. docs/evaluation.md describes the protocol; in short:

Split BY CASE, never by clip: the test cases are those the train stage held out (`train.val_fraction`,
`train.seed`: no world model saw their video) unless `evaluate.test_fraction` is set; of the other cases
`evaluate.val_fraction` validate the probes (each head's best epoch, each task's head, the event threshold), the
rest train them. The encoder is frozen; a capped, class-balanced sample of the training clips and a capped sample of
the validation clips become tokens once (surgwm/evaluation/sampling.py); the test videos are streamed and their
tokens never stored. For each probe seed (`evaluate.seeds`) banks of probe heads (surgwm/evaluation/probe_bank.py)
train every task over the grid `evaluate.probe_lrs` x `evaluate.probe_weight_decays`; each task's head is picked on
validation and only it scores the test clips. Reported numbers are means over the probe seeds, `seed_sd` beside them.

Tasks (surgwm/evaluation/probes.py), each where the data has the labels (otherwise the section says why not):
  step          per-video weighted F1 over clips, SurgVU's official metric over 1-fps frames
                (surgwm/evaluation/official.py), accuracy, per-class F1
  motion        accuracy over the motion classes
  event         accuracy, precision, recall, F1 at the threshold with the best validation F1, AUROC, average
                precision (the scores are in outputs.npz for a precision-recall chart)
  anticipation  mean class recall@1 and @k of the next step: encoder tokens alone, and (methods) with the
                predictor's roll-outs; seconds to the next step (MAE)
  future        the predictor's held-out losses and top-1 retrieval (each run in its own encoder's space: no winner)
  efficiency    step / motion / event probes on `evaluate.fractions` of the probe's training cases
  convergence, cost   from the train stage's records (methods)
`validation` holds the same task metrics on the probe-validation cases: what `register` ranks and gates on.

Outputs: metrics/evaluate_<name>.json (DVC metrics), metrics/evaluate_<name>_efficiency.json (DVC plots),
data/evaluate/<name>/ (outputs.npz: per-clip labels and per-seed scores, see docs/evaluation.md; confusion matrices;
the split). A run whose training did not finish gets {"status": "failed", "error": ...} and exit status 1.
"""

from __future__ import annotations

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
from surgwm.evaluation.derived import convergence, cost, held_out_check
from surgwm.evaluation.errors import EvaluateError
from surgwm.evaluation.future import future
from surgwm.evaluation.official import official_frames
from surgwm.evaluation.outputs import write_outputs
from surgwm.evaluation.probe_bank import Features, resolve_precision
from surgwm.evaluation.probes import build_tasks, plan_banks, train_banks, unusable
from surgwm.evaluation.sampling import sample_test, sample_train, sample_val
from surgwm.evaluation.scoring import Scored, assemble, score_rows, stream_test
from surgwm.evaluation.sources import Source, extract, load_source, token_shapes, world_model_source
from surgwm.evaluation.split import EvalSplit, split_cases
from surgwm.evaluation.table import ClipTable, clip_table, eval_key
from surgwm.failures import clear_failure, record_failure
from surgwm.io import read_json, write_json
from surgwm.params import BASELINE_NAMES, Params
from surgwm.paths import CACHE, DECODED, EVALUATE, METRICS, TRAIN, WEIGHTS
from surgwm.sizes import BudgetError, check_budget, token_bytes

log = logging.getLogger("surgwm.evaluation")
__all__ = ["evaluate", "prepare", "resolve_device", "score", "world_model_source"]   # register re-scores champions
FUTURE_NO_WINNER = ("each run's predictions are scored against its own encoder's targets, so its losses and retrieval "
                    "live in its own space: a run whose encoder makes futures easy to tell apart scores well without "
                    "predicting better; the retrieval candidates are the same clips for every run, but the spaces "
                    "are not, so these rows name no winner (anticipation with roll-outs compares world models in "
                    "label space instead)")


@dataclass
class Prepared:
    manifest: Manifest
    table: ClipTable
    split: EvalSplit
    key: str
    cache: ClipReader
    train: np.ndarray               # the probe's training clips (table rows), capped and balanced
    val: np.ndarray                 # probe-validation clips, capped
    test: list[np.ndarray]          # test clips per video, capped; streamed


def prepare(params: Params, cache_dir: Path = CACHE, manifest_path: Path = DECODED) -> Prepared:
    if not Path(manifest_path).is_file():
        raise EvaluateError(f"{manifest_path} not found: run the decode stage first (`dvc repro decode`)")
    ev = params.evaluate
    manifest = read_manifest(manifest_path)
    table = clip_table(manifest, params)
    split = split_cases(table.clips, params)
    return Prepared(manifest, table, split, eval_key(table, split, manifest, params),
                    open_clips(cache_dir, params.data.clip_frames),
                    sample_train(table, table.rows(split.train), ev.max_train_clips, ev.seed),
                    sample_val(table, table.rows(split.val), ev.max_val_clips),
                    sample_test(table, table.rows(split.test), ev.max_test_clips_per_video))


def storage_estimate(src: Source, prep: Prepared, params: Params, device: torch.device) -> dict[str, Any]:
    """What evaluate writes to disk, before it writes it: the training and validation clips' tokens (and roll-outs;
    test videos are streamed). `score` checks `bytes` against storage.budget_gb."""
    ev = params.evaluate
    shapes = token_shapes(src, prep.cache, prep.table.clips[int(prep.train[0])], ev.rollouts, device)
    clips = len(prep.train) + len(prep.val)
    return {"bytes": token_bytes(clips, shapes, ev.feature_dtype), "clips": clips, "shapes": shapes,
            "dtype": ev.feature_dtype,
            "knobs": [f"evaluate.max_train_clips ({ev.max_train_clips})",
                      f"evaluate.max_val_clips ({ev.max_val_clips})", f"evaluate.feature_dtype ({ev.feature_dtype})"]}


def score(src: Source, prep: Prepared, params: Params, device: torch.device, workdir: Path,
          progress: bool = False) -> tuple[dict[str, Any], Scored]:
    """Every task for one feature source: (metrics with the `validation` block, the scored rows). Used by register
    too."""
    ev, table, split = params.evaluate, prep.table, prep.split
    t0, c0 = time.perf_counter(), time.process_time()
    need = storage_estimate(src, prep, params, device)
    log.info("%s: tokens of %d training + validation clips, %.1f MB on disk (bounded by %s)", src.name,
             need["clips"], need["bytes"] / 1e6, ", ".join(need["knobs"]))
    check_budget(f"evaluating {src.name} (the probe clips' tokens)", need["bytes"], params.storage.budget_gb,
                 need["knobs"])                                  # BudgetError before anything is written
    rows = np.union1d(prep.train, prep.val)
    tokens, rolled = extract(src, prep.cache, table.clips, rows, ev.batch_size, device, workdir, ev.feature_dtype,
                             ev.rollouts, progress)
    feats = Features(rows, [tokens])
    feats_wm = Features(rows, [tokens, rolled]) if rolled is not None else None
    test_rows = np.concatenate(prep.test) if prep.test else np.zeros(0, int)
    tasks = build_tasks(table)
    why = {name: unusable(t, prep.train, test_rows) for name, t in tasks.items()}
    usable = {name: t for name, t in tasks.items() if why[name] is None}
    plans = plan_banks(usable, prep.train, split, table, params, rolled is not None)
    t1, c1 = time.perf_counter(), time.process_time()
    fits = {seed: train_banks(plans, feats, feats_wm, prep.val, seed, params, device) for seed in ev.seeds}
    t2, c2 = time.perf_counter(), time.process_time()
    val = score_rows(fits, feats, feats_wm, prep.val, device)
    test = stream_test(src, prep.cache, table.clips, prep.test, fits, ev.batch_size, ev.rollouts, device)
    t3, c3 = time.perf_counter(), time.process_time()
    videos = {v.video_id: v for v in prep.manifest.usable()}
    frames = {s: official_frames([videos[v] for v in np.unique(table.video[r])], table.step_classes, params.data.fps)
              for s, r in (("val", prep.val), ("test", test_rows))}
    scored = Scored(table, prep.train, prep.val, test_rows, val, test, frames, fits, plans,
                    {v: len(e.events) for v, e in videos.items()})
    out = assemble(scored, tasks, why, params)
    out["future"] = (future(src, prep.cache, table.clips, test_rows, ev.batch_size, ev.seed, device)
                     if src.predictor is not None else {"unavailable": "no predictor (baseline)"})
    if src.predictor is not None and "unavailable" not in out["future"]:
        out["future"] |= {"comparable_across_runs": False, "no_winner_reason": FUTURE_NO_WINNER}
    n_heads = sum(len(f.heads) for per_seed in fits.values() for f in per_seed.values())
    phases = {"extract": (t0, t1, c0, c1), "train": (t1, t2, c1, c2), "score": (t2, t3, c2, c3)}
    out["probe_fits"] = {"heads": n_heads, "banks": sum(len(v) for v in fits.values()), "seeds": list(ev.seeds),
                         "grid": {"lr": list(ev.probe_lrs), "weight_decay": list(ev.probe_weight_decays)},
                         "precision": resolve_precision(ev.probe_precision, device, ev.probe_depth),
                         "feature_bytes": need["bytes"],
                         "wall_s": {k: round(b - a, 2) for k, (a, b, _, _) in phases.items()},
                         "cpu_s": {k: round(d - c, 2) for k, (_, _, c, d) in phases.items()}}
    del tokens, rolled, feats, feats_wm
    shutil.rmtree(workdir, ignore_errors=True)
    return out, scored


def evaluate(name: str, params: Params, *, cache_dir: Path = CACHE, manifest_path: Path = DECODED,
             train_root: Path = TRAIN, weights_dir: Path = WEIGHTS, metrics_dir: Path = METRICS,
             out_root: Path = EVALUATE, progress: bool = True) -> dict[str, Any]:
    """Evaluate `name`, write its metrics, plots and outputs; raises EvaluateError (after writing a failed record)
    when the run has no trained model."""
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
    try:
        result, scored = score(src, prep, params, device, out_dir / ".features.tmp", progress)
    except BudgetError as err:
        write_json(metrics_dir / f"evaluate_{name}.json", {**head, "status": "failed", "error": str(err)})
        write_json(metrics_dir / f"evaluate_{name}_efficiency.json", [])
        record_failure(stage_of(kind), name, str(err), metrics_dir)
        raise EvaluateError(str(err)) from None
    curve = list(result["efficiency"].values())
    result["split"] = {"test_cases": list(split.test), "val_cases": list(split.val), "train_cases": sorted(split.train),
                       "test_from": split.source, "test_clips": int(len(scored.test_rows)),
                       "test_cases_seen_by_world_model": held_out_check(name, params, prep.table.clips, split)}
    if kind == "method":
        tm = read_json(metrics_dir / f"train_{name}.json")
        result["convergence"] = convergence(read_json(metrics_dir / f"train_{name}_history.json"),
                                            ev.convergence_metric, ev.convergence_fraction)
        result["cost"] = cost(tm, read_json(Path(train_root) / name / "config.json"))
    result = {**head, "status": "ok", **result, **src.info, "eval_device": device_name(device),
              "eval_time_s": round(time.perf_counter() - t0, 2)}
    write_outputs(name, result, scored, prep.split, out_dir)
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
    fits = r.get("probe_fits", {})
    return ", ".join([g("step", "f1_video"), g("step", "f1_video_official"), g("step", "acc"), g("motion", "acc"),
                      g("event", "f1"), g("event", "auroc"), g("anticipation", "recall_at_1_encoder"),
                      g("anticipation", f"recall_at_{k}_encoder"), g("anticipation", "recall_at_1_world_model"),
                      g("anticipation", "time_to_next_mae_s"), g("future", "retrieval_top1"),
                      f"{fits.get('heads', '?')} probe heads in {r.get('eval_time_s', '?')} s"])



def run_stage(name: str, params_path: str | Path, kind: str, progress: bool = True) -> int:
    """The evaluate and baseline stages' shared command line: the exit status, the error on stderr (2: params,
    1: the evaluation itself, after its failed record is written)."""
    import sys

    from surgwm.device import DeviceError
    from surgwm.params import ParamsError, load_params

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(params_path)
        if kind == "method" and name not in params.train.methods:
            raise EvaluateError(f"'{name}' is not a run of train.methods ({', '.join(params.train.methods)}); "
                                "baselines are evaluated by `python -m tasks.baseline <name>`")
        evaluate(name, params, progress=progress)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (EvaluateError, DeviceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
