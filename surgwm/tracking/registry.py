"""MLflow behind the `register` stage (`python -m tasks.register`): log every run, register the best, gate the champion.

1. One MLflow run per name (each run of `train.methods` and each baseline) in experiment `register.experiment`:
   the train stage's resolved config and the evaluate params as params, the per-epoch train history (step =
   epoch) and every evaluation metric as metrics, the metrics files, loss curves, confusion matrices and test
   predictions as artifacts; tags from surgwm/tracking/client.py (git commit, DVC hashes, Prefect flow-run id, device).
   A failed name is logged as a FAILED run with its reason. Runs are keyed by the content they log
   (tag `surgwm.key`): re-running logs only what is new, so after an outage a re-run catches up.
2. The method with the best `register.metric` (dotted key of metrics/evaluate_<run>.json, e.g. step.f1_video;
   `register.greater_is_better`) becomes a version of the registered model `register.model_name`: a
   models/world_model.py WorldModel (uint8 clip -> embeddings + predicted future tokens, one tensor) with signature
   and input example, pickled (`mlflow.pytorch.load_model` returns the class; pyfunc serving works too).
   Versions carry the tag `weights_sha256`; the same weights again reuse their version (no duplicate). That
   version gets the alias `challenger`.
3. Champion gate: the challenger becomes `champion` only if there is none, or it beats the champion on the same
   evaluation data: the champion's score is read from its version tag `eval.<eval_key>.<metric>` when it was
   scored on this data, else the champion is loaded from the registry and re-evaluated here. The decision, both
   scores and the alias move go to the challenger's run (artifact register/decision_<time>.json and tags), to
   version tags (MLflow keeps no alias history) and to reports/register.json (the report reads run ids there).

An unreachable tracking store fails within seconds with the reason; nothing is lost (metrics/*.json stay).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from surgwm.evaluation.charts import plot_losses
from surgwm.evaluation.records import Record, collect
from surgwm.io import fingerprint, flatten, get_dotted, write_json
from surgwm.params import REPO_ROOT, Params
from surgwm.paths import CACHE, DECODED, EVALUATE, METRICS, REGISTER_RECORD, TRAIN
from surgwm.tracking.client import connect, experiment_id, run_tags
from surgwm.training.runs import load_run, world_model

log = logging.getLogger("surgwm.tracking.registry")
CHALLENGER, CHAMPION = "challenger", "champion"
SECTIONS = ("step", "motion", "event", "anticipation", "future", "convergence", "cost", "efficiency")


class RegisterError(RuntimeError):
    """Registration cannot proceed; the message says why and what to change."""


def numeric_leaves(d: Any, prefix: str = "") -> dict[str, float]:
    """Dotted keys of the finite numbers only (bools and strings left out): what MLflow takes as metrics."""
    return {k: float(v) for k, v in flatten(d, prefix).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def leaves(d: Any) -> dict[str, str]:
    """Dotted keys of every leaf as text: what MLflow takes as params."""
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flatten(d).items()}


# ------------------------------------------------------------------------------------------------ MLflow runs

def content_key(rec: Record) -> str:
    return fingerprint(rec.status, rec.error, rec.evaluate, rec.train, rec.history, rec.config)[:20]


def log_run(client: Any, exp_id: str, rec: Record, params: Params, tags: dict[str, str], metrics_dir: Path,
            train_root: Path, evaluate_root: Path) -> tuple[str, bool]:
    """(run id, logged now): an existing run with the same content is reused."""
    from mlflow.entities import Metric, Param

    key = content_key(rec)
    found = client.search_runs([exp_id], f"tags.`surgwm.key` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id, False
    note = f"{rec.kind} `{rec.name}`: " + ("evaluated" if rec.status == "ok" else f"{rec.status}: {rec.error}")
    run = client.create_run(exp_id, run_name=rec.name, tags={
        **tags, "surgwm.key": key, "surgwm.name": rec.name, "surgwm.kind": rec.kind, "surgwm.status": rec.status,
        **({"surgwm.error": rec.error[:4000]} if rec.error else {}), "mlflow.note.content": note})
    rid, now = run.info.run_id, int(time.time() * 1000)
    p = {f"run.{k}": v for k, v in leaves(rec.config or {}).items() if k not in ("arch", "fingerprint")}
    p |= {f"evaluate.{k}": v for k, v in leaves(params.evaluate.model_dump(mode="json")).items()}
    p = {k: v[:6000] for k, v in p.items() if not k.startswith(("run.arch.", "run.fingerprint"))}
    items = [Param(k, v) for k, v in sorted(p.items())]
    for i in range(0, len(items), 100):
        client.log_batch(rid, params=items[i:i + 100])
    ms = [Metric(k, v, now, int(h.get("epoch", 0))) for h in rec.history or []
          for k, v in numeric_leaves({k: v for k, v in h.items() if k not in ("epoch", "step")}).items()]
    if rec.status == "ok":
        ms += [Metric(k, v, now, 0) for s in SECTIONS
               for k, v in numeric_leaves((rec.evaluate or {}).get(s), f"{s}.").items()]
        ms += [Metric(f"train.{k}", v, now, 0) for k, v in numeric_leaves(rec.train or {}).items()
               if not k.startswith(("train_", "val_"))]
    for i in range(0, len(ms), 900):
        client.log_batch(rid, metrics=ms[i:i + 900])
    files = [metrics_dir / f"evaluate_{rec.name}.json", metrics_dir / f"evaluate_{rec.name}_efficiency.json",
             metrics_dir / f"train_{rec.name}.json", metrics_dir / f"train_{rec.name}_history.json"]
    for f in files:
        if f.is_file():
            client.log_artifact(rid, str(f), "metrics")
    if (train_root / rec.name / "config.json").is_file() and rec.kind == "method":
        client.log_artifact(rid, str(train_root / rec.name / "config.json"), "config")
    ev_dir = evaluate_root / rec.name
    if rec.status == "ok" and ev_dir.is_dir():
        for f in sorted(ev_dir.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                client.log_artifact(rid, str(f), "evaluate")
    if rec.history:
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "loss_curves.png"
            plot_losses({rec.name: rec.history}, png)
            client.log_artifact(rid, str(png), "plots")
    client.set_terminated(rid, "FINISHED" if rec.status == "ok" else "FAILED")
    return rid, True


# --------------------------------------------------------------------------------------------- the registry

def best_method(records: Sequence[Record], metric: str, greater: bool) -> tuple[Record, float]:
    scored = [(r, get_dotted(r.evaluate, metric)) for r in records if r.kind == "method" and r.status == "ok"]
    scored = [(r, float(v)) for r, v in scored if isinstance(v, (int, float)) and math.isfinite(v)]
    if not scored:
        ok = [r for r in records if r.kind == "method" and r.status == "ok"]
        have = sorted(numeric_leaves({s: (ok[0].evaluate or {}).get(s) for s in SECTIONS[:5]})) if ok else []
        raise RegisterError(
            f"no trained method has a value for register.metric '{metric}' "
            + (f"(methods evaluated: {', '.join(r.name for r in ok)}; metrics they have: {', '.join(have)})"
               if ok else "(no method was evaluated successfully: see the failures above)")
            + ". Set register.metric to one of them.")
    return (max if greater else min)(scored, key=lambda rv: rv[1])


def example_clip(params: Params, cache_dir: Path, manifest_path: Path) -> np.ndarray:
    """uint8 (1, T, S, S, 3): a real clip when the decode cache is there, else a grey one."""
    d = params.data
    try:
        from surgwm.data.clips import build_clips, open_clips
        from surgwm.data.manifest import read_manifest

        clip = build_clips(read_manifest(manifest_path), d.clip_frames, d.clip_stride, d.fps)[0]
        return open_clips(cache_dir, d.clip_frames).read(clip)[None]
    except (OSError, IndexError, ValueError):
        return np.full((1, d.clip_frames, d.size, d.size, 3), 128, np.uint8)


def requirements() -> list[str]:
    import safetensors
    import torch
    import transformers

    return [f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}",
            f"safetensors=={safetensors.__version__}", f"numpy=={np.__version__}"]


def find_version(client: Any, model: str, sha: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{model}' and tags.weights_sha256 = '{sha}'")
    except MlflowException:
        return None
    return min(found, key=lambda v: int(v.version)) if found else None


def log_version(client: Any, model: str, run_id: str, wm: Any, example: np.ndarray) -> str:
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    with torch.no_grad():
        out = wm(torch.from_numpy(example)).numpy()  # (1, N + Nf, D): embeddings, then predicted future tokens
    signature = infer_signature(example, out)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(wm, name="model", serialization_format="pickle", signature=signature,
                                        input_example=example, pip_requirements=requirements(),
                                        code_paths=[str(REPO_ROOT / "models")], registered_model_name=model)
    return str(info.registered_model_version)


def alias_version(client: Any, model: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def score_tag(key: str, metric: str) -> str:
    return f"eval.{key}.{metric}"


def reevaluate_from_registry(params: Params, cache_dir: Path, manifest_path: Path) -> Callable[[Any], float | None]:
    """Load a registered version and score it with the evaluate stage's protocol on the current data."""

    def run(version: Any) -> float | None:
        import mlflow.pytorch
        import torch

        from surgwm.evaluation.evaluate import prepare, resolve_device, score, world_model_source

        wm = mlflow.pytorch.load_model(f"models:/{version.name}/{version.version}", map_location="cpu")
        d = params.data
        if (wm.clip_frames, wm.size) != (d.clip_frames, d.size):
            raise RegisterError(f"version {version.version} takes {wm.clip_frames}-frame {wm.size}px clips; the data "
                                f"now has {d.clip_frames}-frame {d.size}px clips")
        device = resolve_device(params.evaluate.device)
        src = world_model_source(f"{version.name}@{version.version}", wm.encoder, wm.predictor, wm.context_frames,
                                 float(version.tags.get("temperature", 0.1)), device)
        torch.manual_seed(params.evaluate.seed)
        with tempfile.TemporaryDirectory() as tmp:
            metrics, _ = score(src, prepare(params, cache_dir, manifest_path), params, device, Path(tmp) / "features")
        value = get_dotted(metrics, params.register.metric)
        return float(value) if isinstance(value, (int, float)) else None

    return run


def gate(client: Any, model: str, challenger: Any, score: float, key: str, metric: str, greater: bool,
         reevaluate: Callable[[Any], float | None] | None, force: bool = False) -> dict[str, Any]:
    """Move `champion` to the challenger when it wins on the same evaluation data; returns the decision."""
    champ = alias_version(client, model, CHAMPION)
    decision: dict[str, Any] = {
        "model": model, "metric": metric, "greater_is_better": greater, "eval_key": key,
        "challenger": {"version": str(challenger.version), "score": score, "run_id": challenger.run_id},
        "champion_before": None, "champion_after": None, "moved": False}
    if champ is not None:
        decision["champion_before"] = {"version": str(champ.version), "run_id": champ.run_id, "score": None}
    if champ is None:
        move, reason = True, "no champion yet"
    elif str(champ.version) == str(challenger.version):
        move, reason = False, "the challenger already is the champion (same weights)"
    else:
        tag = champ.tags.get(score_tag(key, metric))
        champ_score, how = (float(tag), "its score recorded for the same evaluation data") if tag is not None \
            else (None, "")
        if champ_score is None and reevaluate is not None:
            try:
                champ_score, how = reevaluate(champ), "re-evaluated now on the same evaluation data"
                if champ_score is not None:
                    client.set_model_version_tag(model, champ.version, score_tag(key, metric), str(champ_score))
            except Exception as err:  # noqa: BLE001 - any failure means: not comparable
                how = f"could not be re-evaluated on this data ({type(err).__name__}: {err})"
        decision["champion_before"]["score"] = champ_score
        decision["champion_before"]["score_from"] = how or "no score on this evaluation data"
        if champ_score is None:
            move = force
            reason = (f"the champion has no {metric} on this evaluation data ({how or 'no recorded score'}); "
                      + ("promoted because --force-champion was given" if force else
                         "kept (use --force-champion to promote anyway)"))
        else:
            wins = score > champ_score if greater else score < champ_score
            move = wins or force
            reason = (f"challenger {metric} {score:.4f} {'beats' if wins else 'does not beat'} champion "
                      f"{champ_score:.4f} ({'higher' if greater else 'lower'} is better)"
                      + ("; promoted because --force-champion was given" if force and not wins else ""))
    decision["reason"] = reason
    if move:
        client.set_registered_model_alias(model, CHAMPION, challenger.version)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        client.set_model_version_tag(model, challenger.version, "champion_since", stamp)
        if champ is not None:
            client.set_model_version_tag(model, challenger.version, "replaced_champion_version", str(champ.version))
            client.set_model_version_tag(model, champ.version, "champion_until", stamp)
        decision["moved"] = True
    decision["champion_after"] = str(challenger.version) if move else (str(champ.version) if champ else None)
    return decision


# ------------------------------------------------------------------------------------------------- stage

def register(params: Params, *, metrics_dir: Path = METRICS, train_root: Path = TRAIN,
             evaluate_root: Path | None = None, cache_dir: Path = CACHE,
             manifest_path: Path = DECODED, tracking_uri: str | None = None, record_path: Path = REGISTER_RECORD,
             reevaluate: Callable[[Any], float | None] | None = None, force_champion: bool = False,
             lock: Path | None = None) -> dict[str, Any]:
    metrics_dir, train_root = Path(metrics_dir), Path(train_root)
    evaluate_root = Path(evaluate_root) if evaluate_root is not None else EVALUATE
    reg = params.register
    records = collect(params, metrics_dir, train_root)
    client = connect(tracking_uri)  # raises TrackingUnavailable first: nothing half-logged
    exp_id = experiment_id(client, reg.experiment)
    tags = run_tags(lock=lock) if lock is not None else run_tags()
    runs: dict[str, dict[str, Any]] = {}
    for rec in records:
        rid, new = log_run(client, exp_id, rec, params, tags, metrics_dir, train_root, evaluate_root)
        runs[rec.name] = {"run_id": rid, "status": rec.status, "logged_now": new, **({"error": rec.error}
                                                                                      if rec.error else {})}
        log.info("%s: MLflow run %s (%s%s)", rec.name, rid, rec.status, ", logged now" if new else ", already logged")
    best, score = best_method(records, reg.metric, reg.greater_is_better)
    run_dir = train_root / best.name
    trained = load_run(run_dir, best.name)
    sha = trained.weights_sha256
    key = (best.evaluate or {}).get("eval_key", "")
    version = find_version(client, reg.model_name, sha)
    created = version is None
    if created:
        wm = world_model(trained, params.data.clip_frames, params.data.size)
        number = log_version(client, reg.model_name, runs[best.name]["run_id"], wm,
                             example_clip(params, cache_dir, manifest_path))
        for k, v in {"weights_sha256": sha, "run_name": best.name, "method": (best.config or {}).get("method", ""),
                     "temperature": get_dotted(best.config, "train.temperature") or 0.1,
                     "context_frames": wm.context_frames}.items():
            client.set_model_version_tag(reg.model_name, number, k, str(v))
        version = client.get_model_version(reg.model_name, number)
    client.set_model_version_tag(reg.model_name, version.version, score_tag(key, reg.metric), str(score))
    client.set_registered_model_alias(reg.model_name, CHALLENGER, version.version)
    version = client.get_model_version(reg.model_name, version.version)
    log.info("best by %s: %s (%.4f) -> %s version %s (%s)", reg.metric, best.name, score, reg.model_name,
             version.version, "new" if created else "same weights already registered: no new version")
    if reevaluate is None:
        reevaluate = reevaluate_from_registry(params, cache_dir, manifest_path)
    decision = gate(client, reg.model_name, version, score, key, reg.metric, reg.greater_is_better, reevaluate,
                    force_champion)
    decision["challenger"] |= {"name": best.name, "weights_sha256": sha, "new_version": created}
    stamp = time.strftime("%Y%m%dT%H%M%S")
    best_run = runs[best.name]["run_id"]
    client.log_dict(best_run, {**decision, "time": stamp}, f"register/decision_{stamp}.json")
    client.set_tag(best_run, "register.decision", ("champion moved: " if decision["moved"] else "champion kept: ")
                   + decision["reason"][:4000])
    log.info("%s: %s", "champion moved" if decision["moved"] else "champion kept", decision["reason"])
    record = {"tracking_uri": client.tracking_uri, "experiment": reg.experiment, "experiment_id": exp_id,
              "model": reg.model_name, "metric": reg.metric, "best": best.name, "score": score,
              "version": str(version.version), "aliases": {CHALLENGER: str(version.version),
                                                           CHAMPION: decision["champion_after"]},
              "decision": decision, "runs": runs}
    write_json(Path(record_path), record)
    return record


