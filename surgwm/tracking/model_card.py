"""The model card of a registered version, and the data every MLflow run was trained and evaluated on.

A registered version explains itself: its description (markdown) and its tags `card.*` say what data it was
trained on (source, DVC hashes from dvc.lock, hours, cases, classes, the licence set in `register.data_license`),
the training recipe, the evaluation with 95 % intervals (test cases; the final measurement, never used to select
it) beside the best reference rule, and known limits. The same facts feed the MLflow dataset inputs of every run
(`dataset_inputs`): the world-model training cases, the probe-validation cases and the test cases, each a
`mlflow.data.meta_dataset.MetaDataset` whose digest is the DVC hash of the decode cache, so the run table's
Dataset column names them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from surgwm.evaluation.records import Record
from surgwm.io import get_dotted
from surgwm.params import Params, resolve_path

DESCRIPTION_MAX = 5000          # MLflow's limit on a model version's description
INPUT_TAG_MAX = 500             # ... on a dataset input tag's value
CARD = "card."


def dvc_paths(lock: Path) -> dict[str, str]:
    """{path: md5} of every out and dep recorded in dvc.lock (what `dvc status` compares)."""
    try:
        stages = (yaml.safe_load(Path(lock).read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, str] = {}
    for stage in stages.values():
        for entry in [*(stage.get("deps") or []), *(stage.get("outs") or [])]:
            if isinstance(entry, dict) and entry.get("md5"):
                out[str(entry["path"]).rstrip("/")] = str(entry["md5"])
    return out


def data_hashes(params: Params, lock: Path) -> dict[str, str]:
    """The DVC hashes that identify the data: the source videos, the labels manifest, the decode cache, the
    pretrained weights (absent from the dict when dvc.lock does not record them)."""
    paths = dvc_paths(lock)
    want = {"source": params.data.root.rstrip("/"), "labels": "data/ingest/manifest.json", "cache": "data/cache",
            "weights": "data/weights"}
    return {k: paths[p] for k, p in want.items() if p in paths}


def data_facts(params: Params, manifest: dict[str, Any] | None,
               classes: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Hours, videos, cases and classes of the usable videos in the decode manifest (classes: from the evaluation
    outputs when there is no manifest)."""
    videos = [v for v in (manifest or {}).get("videos", []) if not v.get("error")]
    seconds = 0.0
    for v in videos:
        if isinstance(v.get("duration_s"), (int, float)):
            seconds += float(v["duration_s"])
        elif isinstance(v.get("frames"), (int, float)):
            seconds += float(v["frames"]) / params.data.fps
    return {"source": params.data.source, "root": params.data.root, "videos": len(videos),
            "cases": len({v.get("case") for v in videos}), "hours": round(seconds / 3600, 3),
            "step_classes": list((manifest or {}).get("step_classes") or (classes or {}).get("step", [])),
            "motion_classes": list((manifest or {}).get("motion_classes") or (classes or {}).get("motion", []))}


def _digest(hashes: dict[str, str], fallback: str) -> str:
    return (hashes.get("cache") or fallback or "unknown")[:36]


def dataset_inputs(params: Params, rec: Record, hashes: dict[str, str]) -> list[Any]:
    """MLflow DatasetInputs of one run: world-model training cases (methods), probe validation and test cases."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    import warnings

    split = (rec.evaluate or {}).get("split") or {}
    key = str((rec.evaluate or {}).get("eval_key", ""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # two local sources claim file:// URIs; either is right
        source = resolve_dataset_source(resolve_path(params.data.root).as_uri())
    parts: list[tuple[str, str, int | None]] = []
    if rec.kind == "method" and rec.train:
        parts.append(("training", "world-model training cases", rec.train.get("train_cases")))
    if split.get("train_cases"):
        parts.append(("probe-training", "probe training cases", len(split["train_cases"])))
    if split.get("val_cases"):
        parts.append(("validation", "probe validation cases (selection)", len(split["val_cases"])))
    if split.get("test_cases"):
        parts.append(("test", "test cases (final measurement)", len(split["test_cases"])))
    out = []
    for context, what, n in parts:
        ds = MetaDataset(source, name=f"{params.data.source} {what}" + (f" ({n})" if n else ""),
                         digest=_digest(hashes, key))
        tags = {"mlflow.data.context": context, "dvc.data_cache": hashes.get("cache", "not in dvc.lock"),
                "dvc.labels": hashes.get("labels", "not in dvc.lock"), "eval_key": key or "n/a",
                **({"cases": ", ".join(split.get({"validation": "val_cases", "test": "test_cases",
                                                  "probe-training": "train_cases"}.get(context, ""), []))}
                   if context != "training" else {})}
        out.append(DatasetInput(ds._to_mlflow_entity(),
                                [InputTag(k, str(v)[:INPUT_TAG_MAX]) for k, v in tags.items() if v]))
    return out


def recipe(params: Params, rec: Record) -> dict[str, Any]:
    cfg = rec.config or {}
    train = cfg.get("train") or {}
    keys = ("seed", "epochs", "batch_size", "lr", "final_lr_fraction", "warmup_fraction", "weight_decay",
            "ema_momentum", "ema_momentum_end", "temporal_weight", "contrastive_weight", "temperature",
            "case_fraction", "augment", "feature_cache", "precision")
    return {"method": cfg.get("method"), **{k: train[k] for k in keys if k in train},
            "weights": params.weights.model if cfg.get("method") in ("frozen", "finetune") else "none (from scratch)",
            "clip": f"{params.data.clip_frames} frames at {params.data.fps:g} fps, {params.data.size} px, "
                    f"context {params.model.context_frames} frames",
            "device": (rec.train or {}).get("device_name") or cfg.get("device"),
            "train_time_s": (rec.train or {}).get("train_time_s")}


def limits(params: Params, rec: Record, evaluation: dict[str, dict[str, Any]], sizes: dict[str, Any]) -> list[str]:
    out = []
    if params.data.source == "synthetic":
        out.append("Trained and evaluated on SYNTHETIC data generated by this pipeline (a demo): it says nothing "
                   "about real surgical video.")
    n = sizes.get("test_cases")
    if n is not None:
        out.append(f"The test set is {n} cases ({sizes.get('test_videos', '?')} videos): intervals are wide; "
                   "differences inside them are noise.")
    out.append("One world-model training run: the intervals cover test cases and probe seeds, not the variance "
               "between training seeds.")
    seen = get_dotted(rec.evaluate, "split.test_cases_seen_by_world_model")
    if seen:
        out.append(f"Its world model saw the (unlabelled) video of test case(s) {', '.join(seen)}.")
    below = [k for k, v in evaluation.items() if v.get("beats_rule") is False]
    if below:
        out.append("Does not clearly beat the best reference rule on: " + ", ".join(below) + ".")
    out.append("Frozen-encoder probes measure what the encoder's tokens hold for these labels, not a deployed "
               "model's accuracy.")
    return out


def card(params: Params, rec: Record, facts: dict[str, Any], hashes: dict[str, str],
         evaluation: dict[str, dict[str, Any]], sizes: dict[str, Any], selection: dict[str, Any]
         ) -> tuple[str, dict[str, str]]:
    """(description markdown, tags) of a registered version. `evaluation`: {metric key: {point, lo, hi, covers,
    rule, rule_point, beats_rule}} on the test cases; `selection`: the validation score it was selected by."""
    rcp = recipe(params, rec)
    lim = limits(params, rec, evaluation, sizes)
    split = (rec.evaluate or {}).get("split") or {}
    cases = (f"world model: {(rec.train or {}).get('train_cases', '?')} training / "
             f"{(rec.train or {}).get('val_cases', '?')} validation cases; probes: "
             f"{len(split.get('train_cases', []))} training / {len(split.get('val_cases', []))} validation / "
             f"{len(split.get('test_cases', []))} test cases")
    evals = {k: _iv_text(v) for k, v in evaluation.items()}
    tags = {f"{CARD}data.source": f"{facts['source']} ({facts['root']})",
            f"{CARD}data.license": params.register.data_license,
            f"{CARD}data.hours": f"{facts['hours']:g}" if facts["videos"] else "unknown (no decode manifest)",
            f"{CARD}data.videos": str(facts["videos"]) if facts["videos"] else "unknown (no decode manifest)",
            f"{CARD}data.cases": cases,
            f"{CARD}data.classes.step": ", ".join(facts["step_classes"]) or "n/a",
            f"{CARD}data.classes.motion": ", ".join(facts["motion_classes"]) or "n/a",
            **{f"{CARD}data.dvc.{k}": v for k, v in hashes.items()},
            f"{CARD}recipe": json.dumps(rcp, default=str),
            f"{CARD}selection": f"{selection.get('metric')} on validation = {selection.get('text')}",
            **{f"{CARD}eval.{k}": v for k, v in evals.items()},
            f"{CARD}eval_key": str((rec.evaluate or {}).get("eval_key", "")),
            f"{CARD}limits": " ".join(lim)}
    lines = [f"**{rec.name}** ({rcp.get('method')}): a V-JEPA-2-style world model (encoder + predictor).", "",
             "**Data**: " + f"{facts['source']} `{facts['root']}`, "
             + (f"{facts['hours']:g} h, {facts['videos']} videos, {facts['cases']} cases" if facts["videos"] else
                "size unknown (no decode manifest)") + f"; {cases}. Licence: {params.register.data_license}. DVC: "
             + (", ".join(f"{k} `{v}`" for k, v in hashes.items()) or "no dvc.lock hashes") + ".",
             "", f"**Classes**: steps {', '.join(facts['step_classes']) or 'n/a'}; motion "
             f"{', '.join(facts['motion_classes']) or 'n/a'}.",
             "", "**Recipe**: " + ", ".join(f"{k} {v}" for k, v in rcp.items() if v is not None) + ".",
             "", f"**Selected** on the validation cases by {selection.get('metric')}: {selection.get('text')} (test "
             "scores were not used).",
             "", f"**Evaluation** (test cases, the final measurement; 95 % bootstrap intervals over "
             f"{sizes.get('test_cases', '?')} cases):"]
    lines += [f"- {k}: {v}" for k, v in evals.items()]
    lines += ["", "**Known limits**:"] + [f"- {x}" for x in lim]
    text = "\n".join(lines)
    if len(text) > DESCRIPTION_MAX:
        text = text[:DESCRIPTION_MAX - 40].rsplit("\n", 1)[0] + "\n(cut: see the card.* tags)"
    return text, tags


def _iv_text(v: dict[str, Any]) -> str:
    def f(x: Any) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    text = f"{f(v.get('point'))} [{f(v.get('lo'))}, {f(v.get('hi'))}]"
    if v.get("covers"):
        text += " (covers " + ", ".join(v["covers"]) + ")"
    if v.get("rule"):
        text += f"; best rule `{v['rule']}` {f(v.get('rule_point'))}" + (
            "" if v.get("beats_rule") else ", not clearly beaten")
    return text
