"""The UIs as a person uses them: a Prefect server and an MLflow server on loopback, the pipeline run through its
deployment (what pressing Run does), then headless Chromium reads the pages a person would open.

Screenshots and DOM dumps land in `$SURGWM_TEST_ARTIFACTS/ui/` (default `<repo>/test-artifacts/ui/`, git-ignored).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from test_pipeline import TINY, make_project, tiny_pretrained
from ui_browser import (CHROMIUM, Browser, background, distinct_colours, free_port, page_text, screenshot, stop,
                        wait_healthy)

from surgwm.params import REPO_ROOT, parse_params

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ui,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: `apt-get install chromium` "
                                                "(Debian; .ci/run installs it before `make test`)"),
]

# Every stage still runs, at the smallest size that trains and evaluates: one method, one baseline. TINY's data
# (3 short cases) leaves the probe one training case, too few step classes for `step.f1_video`, so `register`
# ranks by motion accuracy, which it has.
UI_PARAMS = {
    **TINY,
    "train": {**TINY["train"], "methods": {"scratch": {}}},
    "evaluate": {**TINY["evaluate"], "probe_epochs": 2, "baselines": ["raw_pixels"]},
    "register": {"metric": "motion.acc"},
}
MODEL = "surgical-world-model"


def artifacts_dir() -> Path:
    """Where a CI job picks the pictures up: $SURGWM_TEST_ARTIFACTS/ui, else <repo>/test-artifacts/ui."""
    root = Path(os.environ.get("SURGWM_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    out = root / "ui"
    out.mkdir(parents=True, exist_ok=True)
    return out


def server_env(project: Path, home: Path, api: str, mlflow_uri: str) -> dict[str, str]:
    """This venv first on PATH; Prefect and MLflow settings only from here (none leak in from the test process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(project),
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",        # the served runner picks a new run up within 2 s
        "MLFLOW_TRACKING_URI": mlflow_uri,           # `register` logs to the MLflow server below
    })
    return env


def wait_until_served(name: str, serve: subprocess.Popen, log: Path) -> None:
    """`flows.deployments serve` registers its deployments a few seconds after the server is healthy."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + 180               # a hang guard, not a timing check
    with get_client(sync_client=True) as client:
        while True:
            assert serve.poll() is None, log.read_text()[-3000:]
            try:
                client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                assert time.monotonic() < deadline, f"{name} never registered:\n{log.read_text()[-3000:]}"
                time.sleep(1)


def test_prefect_and_mlflow_uis_show_the_run(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey,
                                                FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId)
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import expand_stages

    shots = artifacts_dir()
    params = {**UI_PARAMS, "weights": {"model": str(tiny_pretrained(tmp_path / "encoder"))}}
    project = make_project(tmp_path / "project", params)
    stages = expand_stages(parse_params(params))
    prefect_ui, mlflow_ui = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    env = server_env(project, tmp_path / "prefect-home", f"{prefect_ui}/api", mlflow_ui)
    mlflow_log, serve_log = tmp_path / "mlflow.log", tmp_path / "serve.log"
    bindir = Path(sys.executable).parent

    with ExitStack() as servers:
        # Both start at once (each takes ~20 s here). `serve --start-server` is what `make serve` runs.
        mlflow = servers.enter_context(background(
            [str(bindir / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
             "--default-artifact-root", (tmp_path / "mlartifacts").as_uri(),
             "--host", "127.0.0.1", "--port", mlflow_ui.rsplit(":", 1)[1]], env, mlflow_log))
        serve = servers.enter_context(background(
            [sys.executable, "-m", "flows.deployments", "serve", "--start-server"], env, serve_log, cwd=project))
        wait_healthy(mlflow, f"{mlflow_ui}/health", mlflow_log)
        wait_healthy(serve, f"{prefect_ui}/api/health", serve_log)

        with temporary_settings(updates={PREFECT_API_URL: f"{prefect_ui}/api"}):
            wait_until_served("pipeline-run/full", serve, serve_log)
            # Run, with one field of the form filled in (epochs: a validated params.yaml override).
            run = run_deployment("pipeline-run/full", parameters={"epochs": 1}, timeout=900, poll_interval=1)
            assert run.state.is_completed(), (run.state, serve_log.read_text()[-5000:])
            with get_client(sync_client=True) as client:
                children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
                (sub,) = [c for c in children if client.read_flow(c.flow_id).name == "pipeline"]
                task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[sub.id])))
                (report,) = client.read_artifacts(artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["comparison-report"]), flow_run_id=ArtifactFilterFlowRunId(any_=[sub.id])))
        assert sorted(t.name.rsplit("-", 1)[0] for t in task_runs) == sorted(stages)   # the API agrees first

        def look(path: str, name: str, base: str = prefect_ui) -> str:
            """Open one page by its URL with the Chromium CLI: its text (DOM saved beside) and a screenshot."""
            url = base + path
            text = page_text(url, tmp_path, save=shots / f"{name}.html")
            png = screenshot(url, shots / f"{name}.png", tmp_path)
            assert distinct_colours(png) > 16, f"{png} looks blank"
            return text

        def shot(browser: Browser, name: str) -> None:
            (shots / f"{name}.html").write_text(browser.dom())
            png = browser.screenshot(shots / f"{name}.png")
            assert distinct_colours(png) > 16, f"{png} looks blank"

        # The run a person started, from its deployment: completed (the graph in the picture shows its subflow).
        text = look(f"/runs/flow-run/{run.id}", "prefect-flow-run")
        assert run.name in text and "Completed" in text and "pipeline-run" in text, text[:3000]

        # Tabs need a click (see ui_browser.Browser): Subflow Runs on the run, then the subflow's Task Runs and
        # Artifacts tabs.
        browser = Browser(tmp_path)
        try:
            browser.goto(f"{prefect_ui}/runs/flow-run/{run.id}")
            browser.wait_for("Subflow Runs")
            assert browser.click("Subflow Runs")
            text = browser.wait_for(sub.name)
            shot(browser, "prefect-flow-run-subflows")
            assert sub.name in text and "pipeline" in text, text[:3000]

            browser.goto(f"{prefect_ui}/runs/flow-run/{sub.id}")
            browser.wait_for("Task Runs")
            assert browser.click("Task Runs")
            text = browser.wait_for(*(f"{s}-" for s in stages))
            shot(browser, "prefect-pipeline-task-runs")
            # Task runs are named <stage>-<3 hex> (Prefect adds the suffix).
            missing = [s for s in stages if not re.search(rf"(^|\s){re.escape(s)}-[0-9a-f]{{3}}(\s|$)", text)]
            assert not missing, (missing, text[:3000])
            # One "Completed" for the subflow's own state, one per stage.
            assert text.count("Completed") >= len(stages) + 1, text[:3000]

            assert browser.click("Artifacts")
            text = browser.wait_for("comparison-report")
            shot(browser, "prefect-pipeline-artifacts")
            assert "comparison-report" in text, text[:3000]
        finally:
            browser.close()

        # The report artifact's own page renders the markdown.
        text = look(f"/artifacts/artifact/{report.id}", "prefect-report-artifact")
        assert "Comparison of training methods and baselines" in text and "scratch" in text, text[:3000]

        # MLflow's registry: the model, with its version under the alias `champion`.
        text = look(f"/#/models/{MODEL}", "mlflow-model-champion", base=mlflow_ui)
        # The alias tag reads "@ champion" (not the `champion_since` tag beside it).
        assert MODEL in text and "Version 1" in text and re.search(r"@\s*champion\b", text), text[:3000]
        stop(serve, mlflow)     # both shut down at once (the ExitStack would stop them one after the other)
