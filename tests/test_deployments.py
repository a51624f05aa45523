"""Deployments: registered on a process work pool for GPU workers, and served so "Run" in the UI works with
parameters that become validated params.yaml overrides."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml
from workspace_data import TINY_SYNTHETIC, dvc_env, make_workspace

from surgwm.params import REPO_ROOT


def test_deploy_registers_on_a_process_pool(prefect_harness):
    from prefect.client.orchestration import get_client

    from flows.deployments import deploy

    ids = deploy("gpu-test", source=str(REPO_ROOT), cron="30 3 * * *")
    with get_client(sync_client=True) as client:
        deps = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in map(client.read_deployment, ids)}
        pool = client.read_work_pool("gpu-test")
        for d in ids:           # the served test below registers the same names without a pool
            client.delete_deployment(d)
    assert pool.type == "process"
    assert sorted(deps) == ["new-data-sensor/nightly", "pipeline-run/comparison", "pipeline-run/full", "retrain/retrain"]
    assert all(d.work_pool_name == "gpu-test" for d in deps.values())
    assert [s.schedule.cron for s in deps["new-data-sensor/nightly"].schedules] == ["30 3 * * *"]
    assert deps["pipeline-run/comparison"].parameters["stages"][0] == "train"
    assert {"data_source", "methods", "epochs", "overrides"} <= set(
        deps["pipeline-run/full"].parameter_openapi_schema["properties"])    # the fields the UI's Run form shows


def _wait_until_served(name: str, server: subprocess.Popen) -> None:
    """The serve process registers its deployments a few seconds after it starts."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                dep = client.read_deployment_by_name(name)
                if dep.work_pool_name is None:          # the served one, not a work-pool deployment of that name
                    return
            except ObjectNotFound:
                pass
            time.sleep(1)


@pytest.mark.slow
def test_served_deployment_runs_with_overrides(tmp_path, prefect_harness):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    ws = make_workspace(tmp_path / "ws", {"data": {"synthetic": TINY_SYNTHETIC}})
    env = {**dvc_env(), "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "PYTHONPATH": str(ws)}
    server = subprocess.Popen([sys.executable, "-m", "flows.deployments", "serve"], cwd=ws, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_until_served("pipeline-run/full", server)
        bad = run_deployment("pipeline-run/full", parameters={"epochs": 0, "stages": ["synthesize"]}, timeout=240)
        good = run_deployment("pipeline-run/full", timeout=240,
                              parameters={"stages": ["synthesize"], "overrides": {"data.synthetic.seed": 5}})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        log = server.communicate(timeout=60)[0]
    assert bad.state.is_failed() and "train.epochs" in bad.state.message, (bad.state, log[-3000:])
    assert good.state.is_completed(), (good.state, log[-3000:])
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert lock["stages"]["synthesize"]["params"]["params.yaml"]["data.synthetic.seed"] == 5   # dvc.yaml lists keys
