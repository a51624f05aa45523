"""The flow asks DVC once what is stale: up-to-date stages start no `dvc repro` yet show in the run; a stale stage
and everything downstream of it go to DVC, leaving the dvc.lock `dvc repro` writes; a failure stops only what
depends on it. On a toy pipeline with the real one's stage names and graph (tests/toy_pipeline.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from toy_pipeline import DVC_YAML, dvc, lock, make_toy, ran, set_param

STAGES = ["synthesize", "ingest", "decode", "weights", "train@scratch", "train@frozen", "evaluate@scratch",
          "evaluate@frozen", "baseline@raw_pixels", "register", "report"]


@pytest.fixture
def dvc_repros(monkeypatch) -> list[str]:
    """The stages for which a `dvc repro` process was started (a spy on subprocess.Popen; the process still runs)."""
    started: list[str] = []
    real = subprocess.Popen

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, args, *rest, **kw):
            if isinstance(args, list) and "repro" in args:
                started.append(args[-1])
            super().__init__(args, *rest, **kw)

    monkeypatch.setattr(subprocess, "Popen", Spy)
    return started


@pytest.fixture
def up_to_date_toy(tmp_path: Path) -> Path:
    project = make_toy(tmp_path / "toy")
    dvc(project, "repro")
    assert ran(project) == STAGES
    return project


def run_flow(project: Path):
    """(flow state, the pipeline-stages table rows, {task name: state name}) of one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey,
                                                FlowRunFilter, FlowRunFilterId)

    from flows.pipeline import pipeline

    state = pipeline(workdir=str(project), return_state=True)
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        (table,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["pipeline-stages"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    return state, rows, {t.name.rsplit("-", 1)[0]: t.state.name for t in tasks}


def test_noop_run_starts_no_dvc_repro_and_shows_every_stage(up_to_date_toy, prefect_harness, dvc_repros):
    before = lock(up_to_date_toy)
    state, rows, tasks = run_flow(up_to_date_toy)
    assert dvc_repros == []
    results = state.result()
    assert [r.stage for r in results] == STAGES and not any(r.ran for r in results)
    assert rows == [{"stage": s, "status": "up to date, skipped", "seconds": 0.0} for s in STAGES]
    assert tasks == {s: "Skipped" for s in STAGES}          # the UI lists every stage, each saying it skipped
    assert ran(up_to_date_toy) == STAGES and lock(up_to_date_toy) == before


def _touch_weights(project: Path) -> None:
    (project / "data" / "weights.txt").write_text("edited by hand\n")


DOWNSTREAM_OF_DECODE = ["decode", "train@scratch", "train@frozen", "evaluate@scratch", "evaluate@frozen",
                        "baseline@raw_pixels", "register", "report"]


@pytest.mark.parametrize(("change", "to_dvc"), [
    # an upstream param: DVC reports only decode stale, yet everything downstream of it must rerun
    (lambda p: set_param(p, "data.fps", 2), DOWNSTREAM_OF_DECODE),
    # one run's param: that run's chain, then register and report; the other run is skipped without DVC
    (lambda p: set_param(p, "train.methods.frozen", {"lr": 3.0e-4}),
     ["train@frozen", "evaluate@frozen", "register", "report"]),
    # an output changed by hand: DVC restores it (run-cache); what depends on it still goes to DVC, which decides
    (_touch_weights, ["weights", "train@scratch", "train@frozen", "evaluate@scratch", "evaluate@frozen",
                      "baseline@raw_pixels", "register", "report"]),
], ids=["upstream-param", "one-run-param", "changed-output"])
def test_stale_stage_and_its_downstream_go_to_dvc(up_to_date_toy, tmp_path, prefect_harness, dvc_repros, change,
                                                 to_dvc):
    change(up_to_date_toy)
    by_dvc = Path(shutil.copytree(up_to_date_toy, tmp_path / "by-dvc-repro", symlinks=True))
    dvc(by_dvc, "repro")
    dvc_repros.clear()
    state, rows, tasks = run_flow(up_to_date_toy)

    assert state.is_completed()
    assert dvc_repros == to_dvc
    assert {r["stage"] for r in rows if r["status"] == "up to date, skipped"} == set(STAGES) - set(to_dvc)
    assert ran(up_to_date_toy) == ran(by_dvc)              # the same stage commands ran
    assert lock(up_to_date_toy) == lock(by_dvc)
    report = Path("reports") / "comparison.md"
    assert (up_to_date_toy / report).read_text() == (by_dvc / report).read_text()


@pytest.mark.parametrize(("fails", "not_started", "ran_after"), [
    # one run: its evaluation waits; the other run, the baseline, register and report go on
    ("train@frozen", ["evaluate@frozen"], ["decode", "weights", "train@scratch", "train@frozen", "evaluate@scratch",
                                           "baseline@raw_pixels", "register", "report"]),
    # a shared stage: everything downstream of it stops, register and report too; weights does not depend on it
    ("decode", ["train@scratch", "train@frozen", "evaluate@scratch", "evaluate@frozen", "baseline@raw_pixels",
                "register", "report"], ["decode", "weights"]),
    # the tracking server is down: register fails, the report still says what was measured (and that nothing was logged)
    ("register", [], ["decode", "weights", "train@scratch", "train@frozen", "evaluate@scratch", "evaluate@frozen",
                      "baseline@raw_pixels", "register", "report"]),
])
def test_failure_stops_only_what_depends_on_it(tmp_path, prefect_harness, fails, not_started, ran_after):
    """The flow's policy: `dvc repro --keep-going`, except that register and report run after failed runs (and
    report after a failed register)."""
    project = make_toy(tmp_path / "toy")
    (project / f"FAIL_{fails}").touch()
    state, rows, _ = run_flow(project)

    assert state.is_failed() and fails in state.message
    assert ran(project) == ["synthesize", "ingest", *ran_after]
    status = {r["stage"]: r["status"] for r in rows}
    assert status[fails] == f"failed: {fails} failed on purpose (FAIL_{fails} exists)"
    assert {s for s, why in status.items() if why.startswith("not started")} == set(not_started)
    group, _, name = fails.partition("@")
    if name:   # a crashed run the stage did not record itself: the flow records it for register and report
        record = json.loads((project / "metrics" / "failures" / f"{fails}.json").read_text())
        assert record["error"] == f"{fails} failed on purpose (FAIL_{fails} exists)"


def test_stage_missing_from_the_flow_fails_the_run(up_to_date_toy, prefect_harness):
    spec = dict(DVC_YAML["stages"])
    spec["export"] = {"cmd": "cp reports/comparison.md export.md", "deps": ["reports/comparison.md"],
                      "outs": ["export.md"]}
    (up_to_date_toy / "dvc.yaml").write_text(yaml.safe_dump({"stages": spec}, sort_keys=False))
    state, rows, _ = run_flow(up_to_date_toy)
    assert state.is_failed() and "export: in dvc.yaml but not called by flows/pipeline.py" in state.message
    assert rows[-1]["stage"] == "export"


def test_unknown_stage_is_refused_before_any_work(up_to_date_toy, prefect_harness, dvc_repros):
    from flows.pipeline import pipeline

    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['trian'\].*'train'"):
        pipeline(stages=["trian"], workdir=str(up_to_date_toy))
    assert dvc_repros == []


def test_toy_has_the_real_pipelines_stages(tmp_path):
    from flows.dvc_status import pipeline_status
    from flows.pipeline import expand_stages
    from surgwm.params import load_params

    toy = make_toy(tmp_path / "toy")
    assert expand_stages(load_params(toy / "params.yaml")) == pipeline_status(toy).stages == STAGES
