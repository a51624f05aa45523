"""The `report` stage on evaluation outputs in the contract's format (tests/eval_outputs.py): it opens with the
sizes and a sentence per claim, every test metric carries an interval, reference rules sit beside the names, the
winner column follows the interval rule, world-model seeds pool, cost prices only the exact device, a failed
method is shown with its reason while the others are reported; charts and reports/comparison.json."""

from __future__ import annotations

import json

import pytest
from eval_data import eval_raw
from eval_outputs import make_world, write_name

from surgwm.evaluation.report import comparison_markdown, report_markdown, write_report
from surgwm.params import parse_params

WORLD = make_world(0)


def history(n: int = 3) -> list[dict]:
    return [{"epoch": e, "train_temporal": 1 / e, "train_contrastive": 2 / e, "train_loss": 1.5 / e,
             "val_temporal": 1.1 / e, "val_contrastive": 2.1 / e, "val_loss": 1.6 / e} for e in range(1, n + 1)]


def train_metrics(root, name, device="cpu (x86_64, 1 threads)", **extra):
    m = root / "metrics"
    (m / f"train_{name}.json").write_text(json.dumps({"epochs": 3, "train_clips": 400, "train_cases": 8,
                                                      "train_time_s": 360.0, "device_name": device,
                                                      "peak_memory_mb": 512.0, **history()[-1], **extra}))
    (m / f"train_{name}_history.json").write_text(json.dumps(history()))


@pytest.fixture
def workspace(tmp_path):
    """scratch, finetune, frozen + frozen_s1 (two world-model seeds), two baselines, one failed method."""
    for name, q, gain in (("scratch", 0.3, 0.0), ("finetune", 0.55, 0.05), ("frozen", 0.56, 0.1)):
        write_name(tmp_path, WORLD, name, q, wm_gain=gain)
    write_name(tmp_path, WORLD, "frozen_s1", 0.56, wm_gain=0.1, variant=1)
    write_name(tmp_path, WORLD, "raw_pixels", 0.35, kind="baseline")
    write_name(tmp_path, WORLD, "untrained_encoder", 0.2, kind="baseline")
    for name in ("scratch", "finetune"):
        train_metrics(tmp_path, name)
    for name in ("frozen", "frozen_s1"):
        train_metrics(tmp_path, name, device="NVIDIA GeForce RTX 3090", feature_cache_s=40.0)
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "config.json").write_text(json.dumps(
            {"method": "frozen", "train": {"feature_cache": True}, "world_size": 1}))
    failures = tmp_path / "metrics" / "failures"
    failures.mkdir(parents=True)
    (failures / "train@broken.json").write_text(json.dumps(
        {"stage": "train", "error": "CUDA out of memory during training step 3; reduce train.batch_size"}))
    raw = eval_raw(bootstrap_resamples=500)
    raw["train"]["methods"] = {"scratch": {}, "broken": {"method": "scratch"}, "finetune": {}, "frozen": {},
                               "frozen_s1": {"method": "frozen", "seed": 1}}
    raw["evaluate"]["baselines"] = ["untrained_encoder", "raw_pixels"]
    raw["evaluate"]["gpu_prices"] = {"NVIDIA GeForce RTX 3090": 0.5, "NVIDIA GeForce RTX 4090": 0.7}
    return tmp_path, parse_params(raw)


def report(root, params, register="none.json"):
    path = write_report(params, metrics_dir=root / "metrics", train_root=root / "train",
                        evaluate_root=root / "evaluate", manifest_path=root / "none.json",
                        register_path=root / register, out_dir=root / "reports")
    return path.read_text(), json.loads((root / "reports" / "comparison.json").read_text())


def table_rows(md: str) -> dict[str, str]:
    return {ln.split(" | ")[0].lstrip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}


def test_report_opens_with_the_sizes_and_a_sentence_per_claim(workspace):
    md, comp = report(*workspace)
    first = md.split("\n## ")[1]
    assert first.startswith("What this comparison can and cannot tell")
    assert "**5 test cases** (10 videos, 280 clips" in first and "3 probe seed(s)" in first
    assert "world-model seeds: `frozen` 2" in first and "500 bootstrap resamples" in first
    claims = comp["groups"][0]["claims"]
    assert claims and all(c["sentence"] and isinstance(c["supported"], bool) for c in claims)
    for c in claims:
        assert f"**{'supported' if c['supported'] else 'not supported'}**: {c['sentence']}" in first


def test_every_test_metric_has_an_interval_and_the_rules_beside_it(workspace):
    md, comp = report(*workspace)
    rows = table_rows(md)
    f1 = rows["step: per-video weighted F1 (clips)"]
    cells = f1.split(" | ")[1:-2]                        # names, then chance, majority, label prior
    assert len(cells) == 5 + 3 and all("[" in c and "]" in c for c in cells)
    g = comp["groups"][0]
    assert {u["name"] for u in g["units"]} == {"scratch", "finetune", "frozen", "raw_pixels", "untrained_encoder"}
    for row in g["rows"]:
        for v in row["values"].values():
            assert v["lo"] <= v["point"] <= v["hi"]
        assert set(row["rules"]) == {"chance", "majority", "prior"}
        assert row["json_mismatch"] == []                # the same numbers the evaluation's metrics.py gives
    mae = next(r for r in g["rows"] if r["key"] == "anticipation.time_to_next_mae_s")
    assert mae["better"] == "low" and "covers" in mae["values"]["frozen"]
    assert "world-model seeds (2)" in " ".join(mae["values"]["frozen"]["covers"])
    assert "probe seeds (3)" in " ".join(mae["values"]["scratch"]["covers"])


def test_winner_column_names_a_winner_only_when_the_interval_allows(workspace):
    md, comp = report(*workspace)
    rows = {r["key"]: r for r in comp["groups"][0]["rows"]}
    close = rows["step.f1_video"]                         # frozen (0.56) vs finetune (0.55): noise
    assert close["decision"]["winner"] is None and close["decision"]["text"].startswith("no clear winner")
    assert table_rows(md)["step: per-video weighted F1 (clips)"].split(" | ")[-2].startswith("no clear winner")
    diffs = close["vs_baselines"]["frozen"]
    assert diffs["untrained_encoder"]["beats"] and diffs["untrained_encoder"]["lo"] > 0
    for row in rows.values():                             # a named winner always has a one-sided interval
        d = row["decision"]
        if d["winner"]:
            iv = d["vs_runner_up"]
            assert (iv["lo"] > 0) if row["better"] == "high" else (iv["hi"] < 0)


def test_world_model_seeds_pool_into_one_column(workspace):
    md, comp = report(*workspace)
    assert "`frozen` ×2" in md and "`frozen` = `frozen`, `frozen_s1`" in md
    assert "`frozen` ×2: test cases (5), probe seeds (3), world-model seeds (2)" in md
    assert comp["groups"][0]["sizes"]["world_model_seeds"]["frozen"] == 2


def test_cost_includes_the_feature_cache_and_prices_only_the_exact_device(workspace):
    md, comp = report(*workspace)
    cost = comp["cost"]["frozen"]
    assert cost["total_time_s"] == 400.0 and cost["feature_cache_s"] == 40.0
    assert cost["usd"]["NVIDIA GeForce RTX 3090"] == pytest.approx(400 / 3600 * 0.5, abs=1e-4)
    assert "unavailable" in cost["usd"]["NVIDIA GeForce RTX 4090"]          # an RTX, but not this one
    assert "unavailable" in comp["cost"]["scratch"]["usd"]["NVIDIA GeForce RTX 3090"]   # a CPU run
    rows = table_rows(md)
    assert rows["total time (s)"].count("400.0") == 2 and "360.0" in rows["total time (s)"]
    assert rows["device-hours (GPU-hours on a GPU; x devices)"].count("0.1111") == 2
    assert "n/a [" in rows["cost at NVIDIA GeForce RTX 4090 $0.70/h (USD)"] and "exactly" in md


def test_report_with_one_failed_method(workspace):
    md, _ = report(*workspace)
    assert "`broken` (method) **failed**: train: CUDA out of memory" in md
    assert "**failed**" in table_rows(md)["train wall time (s)"]
    assert "Not logged: reports/register.json is missing" in md
    for png in ("loss_curves.png", "data_efficiency.png", "metrics.png", "event_pr.png"):
        assert (workspace[0] / "reports" / "charts" / png).stat().st_size > 5000 and f"](charts/{png})" in md


def test_future_rows_in_different_spaces_name_no_winner(workspace):
    md, _ = report(*workspace)
    section = md.split("## Future prediction")[1].split("\n## ")[0]
    assert "own encoder's targets" in section and "no winner" in section


def test_per_class_step_f1_table(workspace):
    md, comp = report(*workspace)
    assert "### Per-class step F1" in md and "| range_of_motion | " in md
    assert len(comp["groups"][0]["per_class_f1"]) == 8


def test_selection_section_shows_validation_only(workspace):
    md, comp = report(*workspace)
    v = comp["groups"][0]["validation"]
    assert v["key"] == "step.f1_video" and "validation cases (4)" in v["values"]["scratch"]["covers"]
    assert "## Selection (probe-validation cases, never test)" in md


def test_report_lists_run_ids_and_registry_decision(workspace):
    root, params = workspace
    (root / "register.json").write_text(json.dumps({
        "tracking_uri": "sqlite:///x/mlflow.db", "experiment": "surgical-world-model", "experiment_id": "1",
        "model": "surgical-world-model", "metric": "step.f1_video", "best": "finetune", "score": 0.62,
        "version": "3", "aliases": {"challenger": "3", "champion": "2"},
        "decision": {"reason": "challenger − champion step.f1_video on the validation cases +0.01 [-0.02, +0.04]: "
                               "within the validation noise"},
        "runs": {"scratch": {"run_id": "r-scratch"}, "finetune": {"run_id": "r-finetune"}}}))
    md = report_markdown(params, metrics_dir=root / "metrics", train_root=root / "train",
                         evaluate_root=root / "evaluate", manifest_path=root / "none.json",
                         register_path=root / "register.json")
    assert "| `scratch` | ok | `r-scratch` |" in md and "| `broken` | failed | `not logged` |" in md
    assert "version 3 (alias `challenger`)" in md and "Champion: version 2" in md
    assert "within the validation noise" in md


def test_a_name_without_outputs_keeps_its_point_and_says_why(workspace):
    root, params = workspace
    (root / "evaluate" / "untrained_encoder" / "outputs.npz").unlink()
    md, comp = report(root, params)
    assert "untrained_encoder" in {x["name"] for x in comp["left_out"]}
    assert "outputs.npz is missing (point from its metrics JSON)" in md


def test_report_without_any_evaluation_says_so(tmp_path):
    params = parse_params(eval_raw())
    md = comparison_markdown(params, [], None, evaluate_root=tmp_path)
    assert "was not measured for any run" in md and "nothing below carries an interval" in md


def test_sizes_line_never_prints_none_for_a_count_the_data_lacks():
    from surgwm.evaluation.report import _events

    assert _events({"test_events": 3, "test_event_clips": 7}) == "3 events in 7 clips"
    assert _events({"test_events": 1, "test_event_clips": None}) == "1 event"
    assert _events({}) == "events: not in this data"
