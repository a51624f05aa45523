"""The flow that deployments run: validate the UI's overrides, take the workspace, write params.yaml, run the pipeline.

The pipeline flow (flows/pipeline.py) runs as a subflow, so the stages, logs and artifacts are the pipeline's own;
this flow only adds what a shared deployment needs around it: validation before any work, one DVC writer per
workspace (flows/workspace_lock.py) and a record of the params it changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.overrides import apply_overrides, edited_text, ui_overrides
from flows.pipeline import pipeline
from flows.workspace_lock import DEFAULT_TIMEOUT_S, workspace_lock
from surgwm import paths
from surgwm.params import DEFAULT_PARAMS, load_params

# The method comparison: every training run, then the evaluation and report stages (the flow checks the names
# against dvc.yaml before any work).
COMPARISON_STAGES: list[str] = ["train", "evaluate", "baseline", "register", "report"]


def workspace(workdir: str | None) -> Path:
    return Path(workdir).resolve() if workdir else paths.REPO_ROOT


@flow(name="pipeline-run", log_prints=True)
def run_pipeline(
    stages: list[str] | None = None,
    data_source: Literal["synthetic", "surgvu", "folder"] | None = None,
    data_root: str | None = None,
    methods: list[str] | None = None,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    workdir: str | None = None,
    lock_timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Run the pipeline with params.yaml overrides (e.g. {"train.lr": 3e-4}); DVC reruns only what they make stale."""
    logger = get_run_logger()
    root = workspace(workdir)
    params_path = root / DEFAULT_PARAMS.name
    wanted = ui_overrides(data_source, data_root, methods, epochs, overrides, load_params(params_path))
    edited_text(params_path, wanted)             # fail now, naming the key, before waiting for the workspace
    run_name = flow_run.get_name() or "run"
    with workspace_lock(root, lock_timeout_s, run=run_name, log=logger.info):
        change = apply_overrides(params_path, wanted, run=run_name)
        for key, before, after in change.changed:
            logger.info("params.yaml: %s: %r -> %r", key, before, after)
        create_markdown_artifact(change.markdown(), key="params-overrides",
                                 description="params.yaml keys this run changed")
        results = pipeline(stages, str(root))
    return [{"stage": r.stage, "ran": r.ran, "status": r.status, "seconds": round(r.seconds, 1)} for r in results]
