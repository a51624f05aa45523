"""MLflow behind the `register` stage (`python -m tasks.register`): log every run, register the best, gate the champion.

1. One MLflow run per name (each run of `train.methods` and each baseline) in experiment `register.experiment`
   (tagged `mlflow.experimentKind: custom_model_development`, so MLflow's UI opens its model-training view):
   the train stage's resolved config and the evaluate params as params, the per-epoch train history (step =
   epoch) and every evaluation metric as metrics, the metrics files, loss curves, confusion matrices and test
   predictions as artifacts, the data as MLflow dataset inputs (world-model training, probe validation and test
   cases, digest = the decode cache's DVC hash: surgwm/tracking/model_card.py); tags from
   surgwm/tracking/client.py (git commit, DVC hashes, Prefect flow-run id, device). A failed name is logged as a
   FAILED run with its reason. Runs are keyed by the content they log (tag `surgwm.key`): re-running logs only
   what is new, so after an outage a re-run catches up.
2. SELECTION NEVER SEES THE TEST SET. The method with the best `register.metric` in the `validation` block of
   metrics/evaluate_<run>.json (the probe-validation cases; `register.greater_is_better`) becomes a version of
   the registered model `register.model_name`: a models/world_model.py WorldModel (uint8 clip -> embeddings +
   predicted future tokens, one tensor) with signature and input example, pickled (`mlflow.pytorch.load_model`
   returns the class; pyfunc serving works too). Versions carry the tag `weights_sha256`; the same weights
   again reuse their version (no duplicate). That version gets the alias `challenger` and a model card
   (description + `card.*` tags: data, DVC hashes, licence, recipe, test evaluation with intervals, limits).
3. Champion gate, on validation only: the challenger becomes `champion` only if there is none, or it beats the
   champion by MORE THAN THE VALIDATION NOISE: the paired 95 % bootstrap interval of (challenger - champion)
   over the validation cases (surgwm/evaluation/compare.py) lies wholly on the challenger's better side of zero.
   The champion's validation rows come from its version's run (artifact register/validation/<eval_key>.npz,
   stored when a version is registered or re-scored on new data). Without them (other evaluation data), the
   champion is loaded from the registry and re-scored here (`reevaluate`); with only a score, the challenger's
   own validation interval must exclude it. The decision, both scores and the alias move go to the
   challenger's run (artifact register/decision_<time>.json and tags), to version tags (MLflow keeps no alias
   history) and to reports/register.json (the report reads run ids there).

An unreachable tracking store fails within seconds with the reason; nothing is lost (metrics/*.json stay).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from surgwm.evaluation.charts import plot_losses
from surgwm.evaluation.records import Record, collect
from surgwm.io import fingerprint, flatten, get_dotted, read_json, write_json
from surgwm.params import REPO_ROOT, Params
from surgwm.paths import CACHE, DECODED, EVALUATE, METRICS, REGISTER_RECORD, TRAIN
from surgwm.evaluation import compare
from surgwm.evaluation.intervals import Interval, favourable, fmt_diff
from surgwm.evaluation.rows import Outputs, Rows, read_outputs
from surgwm.tracking.client import DVC_LOCK, connect, experiment_id, recorded_uri, run_tags
from surgwm.tracking.model_card import card, data_facts, data_hashes, dataset_inputs
from surgwm.training.runs import load_run, world_model

log = logging.getLogger("surgwm.tracking.registry")
CHALLENGER, CHAMPION = "challenger", "champion"
SECTIONS = ("step", "motion", "event", "anticipation", "future", "convergence", "cost", "efficiency", "validation",
            "sizes")
VALIDATION_ROWS = "register/validation"      # run artifact dir: <eval_key>.npz, a version's validation rows


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
            train_root: Path, evaluate_root: Path, hashes: dict[str, str] | None = None) -> tuple[str, bool]:
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
    if rec.status == "ok":
        client.log_inputs(rid, datasets=dataset_inputs(params, rec, hashes or {}))
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

def validation_score(rec: Record, metric: str) -> float | None:
    """`register.metric` in the record's `validation` block (probe-validation cases), never a test number."""
    v = get_dotted((rec.evaluate or {}).get("validation"), metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def best_method(records: Sequence[Record], metric: str, greater: bool) -> tuple[Record, float]:
    """The method with the best validation score (ties: the first in train.methods order)."""
    ok = [r for r in records if r.kind == "method" and r.status == "ok"]
    scored = [(r, v) for r in ok if (v := validation_score(r, metric)) is not None]
    if not scored:
        have = sorted(numeric_leaves((ok[0].evaluate or {}).get("validation") or {})) if ok else []
        raise RegisterError(
            f"no trained method has a validation score for register.metric '{metric}' (the `validation` block of "
            "metrics/evaluate_<run>.json: selection never reads test scores) "
            + (f"(methods evaluated: {', '.join(r.name for r in ok)}; validation metrics they have: "
               f"{', '.join(have) or 'none: re-run their evaluation'})" if ok else
               "(no method was evaluated successfully: see the failures above)")
            + ". Set register.metric to one of them.")
    best = scored[0]
    for r, v in scored[1:]:
        if (v > best[1]) if greater else (v < best[1]):
            best = (r, v)
    return best


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
    """Version tag of its VALIDATION score on evaluation data `key` (never a test score)."""
    return f"val.{key}.{metric}"


# ------------------------------------------------------------------------------ validation rows of a version

def save_validation_rows(client: Any, run_id: str, key: str, rows: Rows) -> None:
    """The rows `register.metric` is computed from on validation, as an artifact of the version's run."""
    arrays = {k: v for k, v in (("case", rows.case), ("video", rows.video), ("start", rows.start),
                                ("true", rows.true), ("current", rows.current), ("time", rows.time),
                                ("score", rows.score), ("pred", rows.pred)) if v is not None}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{key}.npz"
        np.savez_compressed(path, **arrays)
        client.log_artifact(run_id, str(path), VALIDATION_ROWS)


def load_validation_rows(client: Any, run_id: str, key: str) -> Rows | None:
    """A version's stored validation rows for evaluation data `key`, or None."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, f"{VALIDATION_ROWS}/{key}.npz", tmp)
            with np.load(local, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
    except Exception:  # noqa: BLE001 - absent or unreadable: the gate falls back to a score
        return None
    return Rows(case=a["case"].astype(str), video=a["video"].astype(str), start=a["start"], true=a["true"],
                current=a.get("current"), time=a.get("time"), score=a.get("score"), pred=a.get("pred"))


# ----------------------------------------------------------------------------------------------- the gate

def reevaluate_from_registry(params: Params, cache_dir: Path, manifest_path: Path) -> Callable[[Any], float | None]:
    """Load a registered version and score it with the evaluate stage's protocol on the current data: its
    VALIDATION score of register.metric (None when the protocol gives none)."""

    def run(version: Any) -> float | None:
        import mlflow.pytorch
        import torch

        from surgwm.device import resolve_device
        from surgwm.evaluation.evaluate import prepare, score
        from surgwm.evaluation.sources import world_model_source

        wm = mlflow.pytorch.load_model(f"models:/{version.name}/{version.version}", map_location="cpu")
        d = params.data
        if (wm.clip_frames, wm.size) != (d.clip_frames, d.size):
            raise RegisterError(f"version {version.version} takes {wm.clip_frames}-frame {wm.size}px clips; the data "
                                f"now has {d.clip_frames}-frame {d.size}px clips")
        device = resolve_device(params.evaluate.device, "evaluate.device")
        src = world_model_source(f"{version.name}@{version.version}", wm.encoder, wm.predictor, wm.context_frames,
                                 float(version.tags.get("temperature", 0.1)), device)
        torch.manual_seed(params.evaluate.seed)
        with tempfile.TemporaryDirectory() as tmp:
            metrics, _ = score(src, prepare(params, cache_dir, manifest_path), params, device, Path(tmp) / "features")
        if "validation" not in metrics:
            raise RegisterError("the evaluation protocol returned no `validation` block, and the gate never "
                                "reads test scores")
        value = get_dotted(metrics["validation"], params.register.metric)
        return float(value) if isinstance(value, (int, float)) else None

    return run


@dataclass
class Challenger:
    version: Any
    name: str
    score: float                                  # validation score (metrics JSON)
    rows: Rows | None                             # validation rows of register.metric's task (outputs.npz)
    n_classes: int
    metric: compare.MetricDef | None              # register.metric's definition (None: no per-case form)


def gate(client: Any, params: Params, challenger: Challenger, key: str,
         reevaluate: Callable[[Any], float | None] | None, force: bool = False) -> dict[str, Any]:
    """Move `champion` to the challenger when it beats the champion on the validation cases by more than their
    noise (paired bootstrap interval excluding zero); returns the decision."""
    reg = params.register
    model, metric, greater = reg.model_name, reg.metric, reg.greater_is_better
    better = "high" if greater else "low"
    champ = alias_version(client, model, CHAMPION)
    ch = challenger.version
    decision: dict[str, Any] = {
        "model": model, "metric": metric, "split": "validation", "greater_is_better": greater, "eval_key": key,
        "challenger": {"version": str(ch.version), "score": challenger.score, "run_id": ch.run_id},
        "champion_before": None, "champion_after": None, "moved": False}
    if champ is not None:
        decision["champion_before"] = {"version": str(champ.version), "run_id": champ.run_id, "score": None}
    mdef = challenger.metric
    if champ is None:
        move, reason = True, "no champion yet"
    elif str(champ.version) == str(ch.version):
        move, reason = False, "the challenger already is the champion (same weights)"
    else:
        before = decision["champion_before"]
        rows = load_validation_rows(client, champ.run_id, key)
        tag = champ.tags.get(score_tag(key, metric))
        champ_score, how = (float(tag), "its validation score recorded for the same evaluation data") \
            if tag is not None else (None, "")
        if champ_score is None and rows is None and reevaluate is not None:
            try:
                champ_score, how = reevaluate(champ), "re-evaluated now on the same evaluation data"
                if champ_score is not None:
                    client.set_model_version_tag(model, champ.version, score_tag(key, metric), str(champ_score))
            except Exception as err:  # noqa: BLE001 - any failure means: not comparable
                how = f"could not be re-evaluated on this data ({type(err).__name__}: {err})"
        before["score"], before["score_from"] = champ_score, how or "no score on this evaluation data"
        diff = None
        if rows is not None and challenger.rows is not None and mdef is not None:
            diff = compare.paired_gate(params, mdef, (challenger.name, challenger.rows, challenger.n_classes),
                                       ("champion", rows, challenger.n_classes))
        if diff is not None:
            decision["difference"] = {**diff.as_dict(), "paired": True}
            wins = favourable(diff, better)
            move = wins or force
            reason = (f"challenger − champion {metric} on the validation cases {fmt_diff(diff, 4)}: "
                      + ("beyond the validation noise (the paired 95 % interval excludes zero)" if wins else
                         "within the validation noise (the paired 95 % interval includes zero or favours the "
                         "champion): champion kept") + ("; promoted because --force-champion was given"
                                                        if force and not wins else ""))
        elif champ_score is not None and challenger.rows is not None and mdef is not None:
            own = _own_interval(params, mdef, challenger)
            decision["challenger"]["interval"] = None if own is None else own.as_dict()
            wins = own is not None and ((own.lo > champ_score) if greater else (own.hi < champ_score))
            move = wins or force
            reason = (f"challenger {metric} {challenger.score:.4f} (validation interval "
                      f"{'n/a' if own is None else f'[{own.lo:.4f}, {own.hi:.4f}]'}) vs champion {champ_score:.4f} "
                      f"({how}; no per-case rows to pair): "
                      + ("the champion's score lies outside the challenger's interval, beyond the noise" if wins
                         else "within the challenger's validation noise: champion kept")
                      + ("; promoted because --force-champion was given" if force and not wins else ""))
        else:
            if mdef is None:
                missing = (f"register.metric '{metric}' has no per-case form (surgwm/evaluation/compare.py "
                           "catalogue), so it has no validation interval")
            elif challenger.rows is None:
                missing = "the challenger has no per-case validation scores (data/evaluate/<name>/outputs.npz)"
            else:
                missing = f"the champion has no {metric} on this evaluation data ({how or 'no recorded score'})"
            move = force
            reason = (f"{missing}, so the validation noise cannot be measured; "
                      + ("promoted because --force-champion was given" if force else
                         "champion kept (use --force-champion to promote anyway)"))
    decision["reason"] = reason
    if move:
        client.set_registered_model_alias(model, CHAMPION, ch.version)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        client.set_model_version_tag(model, ch.version, "champion_since", stamp)
        if champ is not None:
            client.set_model_version_tag(model, ch.version, "replaced_champion_version", str(champ.version))
            client.set_model_version_tag(model, champ.version, "champion_until", stamp)
        decision["moved"] = True
    decision["champion_after"] = str(ch.version) if move else (str(champ.version) if champ else None)
    return decision


def _own_interval(params: Params, mdef: compare.MetricDef | None, ch: Challenger) -> Interval | None:
    """The challenger's validation score with its interval over the validation cases."""
    rows = ch.rows
    if rows is None or mdef is None:
        return None
    outputs = Outputs({mdef.task: {"val": rows}}, {})
    return compare.validation_estimate(params, outputs, mdef, ch.name) if ch.n_classes else None


# --------------------------------------------------------------------------------------------- model card

def card_evaluation(params: Params, name: str, outputs: Outputs | None) -> tuple[dict[str, dict[str, Any]],
                                                                                 dict[str, Any]]:
    """The registered run's headline test metrics with intervals and its best rule; and the sizes."""
    if outputs is None:
        return {}, {}
    unit = compare.Unit(name, "method", [name], outputs, "")
    group = compare.build_group(params, [unit])
    out = {}
    for row in group["rows"]:
        if not row["primary"] or name not in row["values"]:
            continue
        v = dict(row["values"][name])
        rule = row.get("best_rule")
        if rule:
            v |= {"rule": rule, "rule_point": row["rules"][rule]["point"],
                  "beats_rule": row["vs_best_rule"].get(name, {}).get("beats")}
        out[row["key"]] = v
    return out, group["sizes"]


# ------------------------------------------------------------------------------------------------- stage

def check_direction(params: Params) -> None:
    """register.greater_is_better must agree with the metric's own direction (an error metric ranked "higher is
    better" would crown the worst run): refused before anything is logged."""
    reg = params.register
    mdef = compare.metric_def(reg.metric, params.evaluate.top_k)
    if mdef is not None and (mdef.better == "high") != reg.greater_is_better:
        raise RegisterError(f"register.metric '{reg.metric}' is {'higher' if mdef.better == 'high' else 'lower'}-is-"
                            f"better, but register.greater_is_better is {str(reg.greater_is_better).lower()}: set it "
                            f"to {str(mdef.better == 'high').lower()}")


def register(params: Params, *, metrics_dir: Path = METRICS, train_root: Path = TRAIN,
             evaluate_root: Path | None = None, cache_dir: Path = CACHE,
             manifest_path: Path = DECODED, tracking_uri: str | None = None, record_path: Path = REGISTER_RECORD,
             reevaluate: Callable[[Any], float | None] | None = None, force_champion: bool = False,
             lock: Path | None = None) -> dict[str, Any]:
    metrics_dir, train_root = Path(metrics_dir), Path(train_root)
    evaluate_root = Path(evaluate_root) if evaluate_root is not None else EVALUATE
    lock = Path(lock) if lock is not None else DVC_LOCK
    reg = params.register
    check_direction(params)
    records = collect(params, metrics_dir, train_root)
    client = connect(tracking_uri)  # raises TrackingUnavailable first: nothing half-logged
    exp_id = experiment_id(client, reg.experiment)
    tags = run_tags(lock=lock)
    hashes = data_hashes(params, lock)
    runs: dict[str, dict[str, Any]] = {}
    for rec in records:
        rid, new = log_run(client, exp_id, rec, params, tags, metrics_dir, train_root, evaluate_root, hashes)
        runs[rec.name] = {"run_id": rid, "status": rec.status, "logged_now": new, **({"error": rec.error}
                                                                                      if rec.error else {})}
        log.info("%s: MLflow run %s (%s%s)", rec.name, rid, rec.status, ", logged now" if new else ", already logged")
    best, score = best_method(records, reg.metric, reg.greater_is_better)
    run_dir = train_root / best.name
    trained = load_run(run_dir, best.name)
    sha = trained.weights_sha256
    key = (best.evaluate or {}).get("eval_key", "")
    outputs = read_outputs(evaluate_root / best.name / compare.OUTPUTS)
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
    mdef = compare.metric_def(reg.metric, params.evaluate.top_k, (outputs.classes.get("step", []) if outputs else []))
    rows = compare.validation_rows(outputs, mdef) if outputs is not None and mdef is not None else None
    n_cls = compare.n_classes(outputs, mdef.task) if outputs is not None and mdef is not None else 0
    challenger = Challenger(version, best.name, score, rows, n_cls, mdef)
    own = _own_interval(params, mdef, challenger)
    selection = {"metric": reg.metric, "text": f"{score:.4f}" + ("" if own is None else
                                                                   f" [{own.lo:.4f}, {own.hi:.4f}]")}
    evaluation, sizes = card_evaluation(params, best.name, outputs)
    description, card_tags = card(params, best, data_facts(params, read_json(manifest_path),
                                                        outputs.classes if outputs else None), hashes, evaluation,
                                  sizes, selection)
    client.update_model_version(reg.model_name, version.version, description=description)
    for k, v in card_tags.items():
        client.set_model_version_tag(reg.model_name, version.version, k, v)
    log.info("best on validation by %s: %s (%.4f) -> %s version %s (%s)", reg.metric, best.name, score,
             reg.model_name, version.version, "new" if created else "same weights already registered: no new version")
    if reevaluate is None:
        reevaluate = reevaluate_from_registry(params, cache_dir, manifest_path)
    decision = gate(client, params, challenger, key, reevaluate, force_champion)
    # the challenger's validation score and rows for this evaluation data, for future gates against it
    client.set_model_version_tag(reg.model_name, version.version, score_tag(key, reg.metric), str(score))
    if rows is not None:                 # replaced on each registration: the rows of its latest evaluation
        save_validation_rows(client, version.run_id, key, rows)
        client.set_model_version_tag(reg.model_name, version.version, f"val_rows.{key}", f"{VALIDATION_ROWS}/{key}.npz")
    client.set_registered_model_alias(reg.model_name, CHALLENGER, version.version)
    version = client.get_model_version(reg.model_name, version.version)
    decision["challenger"] |= {"name": best.name, "weights_sha256": sha, "new_version": created}
    stamp = time.strftime("%Y%m%dT%H%M%S")
    best_run = runs[best.name]["run_id"]
    client.log_dict(best_run, {**decision, "time": stamp}, f"register/decision_{stamp}.json")
    client.set_tag(best_run, "register.decision", ("champion moved: " if decision["moved"] else "champion kept: ")
                   + decision["reason"][:4000])
    log.info("%s: %s", "champion moved" if decision["moved"] else "champion kept", decision["reason"])
    record = {"tracking_uri": recorded_uri(client.tracking_uri), "experiment": reg.experiment, "experiment_id": exp_id,
              "model": reg.model_name, "metric": reg.metric, "selected_on": "validation", "best": best.name,
              "score": score, "version": str(version.version),
              "aliases": {CHALLENGER: str(version.version), CHAMPION: decision["champion_after"]},
              "decision": decision, "model_card": card_tags, "runs": runs}
    write_json(Path(record_path), record)
    return record
