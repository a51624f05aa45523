"""The `report` stage: a failed method shown as failed with its reason while the others are reported, n/a rows with
their reasons, winners per row, charts, run ids."""

from __future__ import annotations

import json

import pytest
from eval_data import eval_raw

from surgwm.params import parse_params
from surgwm.evaluation.report import comparison_markdown, report_markdown, write_report


def evaluation(name, kind, step_f1, motion, event=None, eff=None, cost=None):
    rec = {"name": name, "kind": kind, "status": "ok", "eval_key": "abc123", "eval_device": "cpu (test)",
           "step": {"f1_video": step_f1, "acc": step_f1 - 0.05},
           "motion": {"acc": motion},
           "event": event or {"unavailable": "no event clips in the test cases (recall, F1 and AUROC are undefined)"},
           "anticipation": {"k": 5, "recall_at_5_encoder": 0.7, "recall_at_5_world_model": 0.75 if kind == "method"
                            else None},
           "future": {"temporal": 0.5, "contrastive": 1.2, "retrieval_top1": 0.4} if kind == "method"
           else {"unavailable": "no predictor (baseline)"},
           "efficiency": eff or {"50pct": {"fraction": 0.5, "train_cases": 2, "step_f1_video": step_f1 - 0.1,
                                           "motion_acc": motion},
                                 "100pct": {"fraction": 1.0, "train_cases": 4, "step_f1_video": step_f1,
                                            "motion_acc": motion}},
           "split": {"test_cases": ["case_001", "case_009"], "val_cases": ["case_003"], "train_cases": ["case_000"],
                     "test_from": "the cases the train stage held out", "test_clips": 116,
                     "test_cases_seen_by_world_model": []}}
    if kind == "method":
        rec["convergence"] = {"epoch": 4, "epochs": 10}
        rec["cost"] = cost or {"train_time_s": 360.0, "device": "cpu", "peak_memory_mb": None,
                               "usd": {"A100 80GB": 0.25, "RTX 3090": 0.05}}
    return rec


@pytest.fixture
def workspace(tmp_path):
    m = tmp_path / "metrics"
    m.mkdir()
    history = [{"epoch": e, "train_temporal": 1 / e, "train_contrastive": 2 / e, "train_loss": 1.5 / e,
                "val_temporal": 1.1 / e, "val_contrastive": 2.1 / e, "val_loss": 1.6 / e} for e in (1, 2, 3)]
    for name, f1, motion in (("scratch", 0.55, 0.30), ("finetune", 0.62, 0.35)):
        (m / f"evaluate_{name}.json").write_text(json.dumps(evaluation(name, "method", f1, motion)))
        (m / f"train_{name}.json").write_text(json.dumps({"epochs": 3, "train_clips": 400, "train_cases": 8,
                                                          **history[-1]}))
        (m / f"train_{name}_history.json").write_text(json.dumps(history))
    for name, f1, motion in (("untrained_encoder", 0.50, 0.35), ("raw_pixels", 0.58, 0.28)):
        (m / f"evaluate_{name}.json").write_text(json.dumps(evaluation(name, "baseline", f1, motion)))
    failures = tmp_path / "metrics" / "failures"
    failures.mkdir(parents=True)
    (failures / "train@frozen.json").write_text(json.dumps(
        {"stage": "train", "error": "CUDA out of memory during training step 3; reduce train.batch_size"}))
    raw = eval_raw()
    raw["train"]["methods"] = {"scratch": {}, "frozen": {}, "finetune": {}}
    raw["evaluate"]["baselines"] = ["untrained_encoder", "raw_pixels"]
    return tmp_path, parse_params(raw)


def test_report_with_one_failed_method(workspace):
    root, params = workspace
    path = write_report(params, metrics_dir=root / "metrics", train_root=root / "train", 
                        manifest_path=root / "none.json", register_path=root / "none.json", out_dir=root / "reports")
    md = path.read_text()
    assert "`frozen` (method) **failed**: train: CUDA out of memory" in md
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}
    f1 = lines["step: per-video weighted F1 (SurgVU)"]
    assert "0.550" in f1 and "**failed**" in f1 and "0.620" in f1 and "0.580" in f1 and f1.endswith("`finetune` |")
    assert lines["motion: top-1 accuracy"].endswith("tie: `finetune`, `untrained_encoder` |")
    assert lines["train wall time (s)"].count("360.0") == 2 and "—" in lines["train wall time (s)"]
    assert "n/a [" in lines["event: F1"] and "no event clips in the test cases" in md
    assert "n/a [" in lines["peak memory (MB)"] and "did not record peak memory" in md
    assert "future: top-1 retrieval among 16" in md and "no predictor (baseline)" in md
    assert "step F1 @ 50% of training cases" in lines and "only meaningful for the device" in md
    assert "Not logged: reports/register.json is missing" in md
    for png in ("loss_curves.png", "data_efficiency.png", "metrics.png"):
        assert (root / "reports" / "charts" / png).stat().st_size > 5000 and f"](charts/{png})" in md


def test_report_lists_run_ids_and_registry_decision(workspace):
    root, params = workspace
    (root / "register.json").write_text(json.dumps({
        "tracking_uri": "sqlite:///x/mlflow.db", "experiment": "surgical-world-model", "experiment_id": "1",
        "model": "surgical-world-model", "metric": "step.f1_video", "best": "finetune", "score": 0.62,
        "version": "3", "aliases": {"challenger": "3", "champion": "2"},
        "decision": {"reason": "challenger step.f1_video 0.6200 does not beat champion 0.6500"},
        "runs": {"scratch": {"run_id": "r-scratch"}, "finetune": {"run_id": "r-finetune"}}}))
    md = report_markdown(params, metrics_dir=root / "metrics", train_root=root / "train", 
                         manifest_path=root / "none.json", register_path=root / "register.json")
    assert "| `scratch` | ok | `r-scratch` |" in md and "| `frozen` | failed | `not logged` |" in md
    assert "version 3 (alias `challenger`)" in md and "Champion: version 2" in md and "does not beat" in md
    assert "1. `finetune` (method): 0.620" in md and "Methods beating every baseline on it: `finetune`" in md


def test_report_without_any_evaluation_says_so(tmp_path):
    params = parse_params(eval_raw())
    md = comparison_markdown(params, [], None)
    assert "was not measured for any run" in md
