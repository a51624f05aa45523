"""The whole pipeline as a Prefect flow: each Prefect task runs the DVC stage of the same name.

    .venv/bin/python -m flows.pipeline            # what `make demo` runs (ephemeral local Prefect server)
    .venv/bin/python -m flows.pipeline decode     # one stage (and nothing else)

DVC decides what is stale, so a flow run and `dvc repro` leave the same outputs and the same dvc.lock.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.runtime import flow_run

from flows.workspace_lock import workspace_lock
from flows.dvc_stage import StageFailed, StageInterrupted, StageResult, error_line, run_dvc_stage
from surgwm.io import read_json
from surgwm import paths
from surgwm.failures import read_failure, record_failure
from surgwm.params import DEFAULT_PARAMS, Params, load_params

# Pipeline order; tests check it equals the stages declared in dvc.yaml.
STAGES: tuple[str, ...] = ("synthesize", "ingest", "decode", "weights", "train", "evaluate", "baseline", "register",
                           "report")
# Stages that dvc.yaml expands with `foreach` (one Prefect task per item: train@frozen, ...) -> the params list.
FOREACH = {"train": "train.methods", "evaluate": "train.methods", "baseline": "evaluate.baselines"}
# A failure of one of these is one run's failure: the flow goes on with the others and the report shows it.
PER_RUN = ("train", "evaluate", "baseline")
# Stages that still run after a run failed, so the comparison covers every run that finished.
AFTER_FAILURE = ("register", "report")
REPORT = paths.REPO_ROOT / "reports" / "comparison.md"


class PipelineFailed(RuntimeError):
    """Some stages failed; the others ran and the report shows the failures."""


def _transient_only(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's callback signature
    """Retry a killed stage or a busy workspace, never a stage that failed on its input."""
    try:
        state.result()
    except StageInterrupted:
        return True
    except Exception:  # noqa: BLE001 - any other failure is deterministic
        return False
    return False


def _in(workdir: Path, path: Path) -> Path:
    """The same output path inside another checkout of the pipeline (tests run it in a temp copy)."""
    return workdir / path.relative_to(paths.REPO_ROOT)


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=_transient_only)
def dvc_stage(stage: str, workdir: Path = paths.REPO_ROOT) -> StageResult:
    """Reproduce one stage through DVC; the task is renamed per stage, so the UI shows the stage names."""
    logger = get_run_logger()
    poll, artifact_id = _decode_progress(workdir) if stage == "decode" else (None, None)
    env = {"PREFECT__FLOW_RUN_ID": str(flow_run.id)} if flow_run.id else None  # MLflow runs are tagged with it
    result = run_dvc_stage(stage, log=logger.info, poll=poll, cwd=workdir, env=env)
    logger.info("%s: %s in %.1f s", stage, "ran" if result.ran else "up to date, skipped", result.seconds)
    if stage == "decode":
        if not result.ran:  # nothing to decode: every video was already cached
            update_progress_artifact(artifact_id, 100.0)
        _decode_table(workdir)
    if stage == "report":
        _report_artifact(workdir)
    return result


def _report_artifact(workdir: Path) -> None:
    """The comparison report, readable in the Prefect UI (its charts are PNGs beside reports/comparison.md)."""
    report = _in(workdir, REPORT)
    if report.is_file():
        create_markdown_artifact(report.read_text(), key="comparison-report",
                                 description="Methods and baselines compared (reports/comparison.md)")


def _decode_progress(workdir: Path):
    """Mirror the decode stage's progress file (written by the other process) into a progress artifact."""
    progress_file = _in(workdir, paths.RUNTIME / "progress" / "decode.json")
    progress_file.unlink(missing_ok=True)
    artifact_id = create_progress_artifact(0.0, key="decode-progress", description="Videos decoded")
    last = [-1.0]

    def poll() -> None:
        state = read_json(progress_file)
        if state and state.get("total"):
            pct = 100.0 * state["done"] / state["total"]
            if pct != last[0]:
                update_progress_artifact(artifact_id, pct)
                last[0] = pct

    return poll, artifact_id


def _decode_table(workdir: Path) -> None:
    """One row per video: what was cached, and the one-line reason for each failure."""
    manifest = read_json(_in(workdir, paths.DECODED))
    if not manifest:
        return
    rows = [
        {
            "video": v["video_id"],
            "case": v["case"],
            "duration_s": round(v["duration_s"], 1) if v.get("duration_s") else None,
            "frames_cached": v.get("frames") or 0,
            "status": "ok" if not v.get("error") else f"failed: {v['error']}",
        }
        for v in manifest["videos"]
    ]
    failed = sum(1 for v in manifest["videos"] if v.get("error"))
    create_table_artifact(
        rows, key="decode-manifest", description=f"{len(rows)} videos, {failed} failed (reasons in the status column)"
    )


def _items(params: Params, dotted: str) -> list[str]:
    value: object = params
    for part in dotted.split("."):
        value = getattr(value, part)
    return list(value)  # type: ignore[call-overload]


def expand_stages(params: Params) -> list[str]:
    """The DVC stage names in pipeline order, with `foreach` groups expanded as dvc.yaml does."""
    names = []
    for group in STAGES:
        items = _items(params, FOREACH[group]) if group in FOREACH else None
        names += [f"{group}@{key}" for key in items] if items else [group]
    return names


@flow(name="pipeline", log_prints=True)
def pipeline(stages: Sequence[str] | None = None, workdir: str | None = None) -> list[StageResult]:
    """Validate params.yaml before any work, then run the stages in order (in `workdir`, default this checkout).

    One run's failed train/evaluate does not stop the others: its evaluation is skipped, register and report still
    run (the report shows the failure), and the flow fails at the end naming every failed stage."""
    root = Path(workdir) if workdir else paths.REPO_ROOT
    params = load_params(root / DEFAULT_PARAMS.name)
    wanted = list(stages or STAGES)
    unknown = sorted(w for w in wanted if w.split("@")[0] not in STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; the pipeline's stages are {list(STAGES)}")
    logger = get_run_logger()
    results: list[StageResult] = []
    failed: dict[str, str] = {}
    with workspace_lock(root, run=flow_run.get_name() or "pipeline", log=logger.info):  # one writer per workspace
        for stage in expand_stages(params):
            if not (stage in wanted or stage.split("@")[0] in wanted):
                continue
            group, _, item = stage.partition("@")
            if failed and group not in PER_RUN + AFTER_FAILURE:
                break
            if group == "evaluate" and f"train@{item}" in failed:
                logger.warning("%s skipped: train@%s failed", stage, item)
                continue
            state = dvc_stage.with_options(name=stage)(stage, root, return_state=True)
            if state.is_completed():
                results.append(state.result())
                continue
            try:
                state.result()
            except StageFailed as err:
                failed[stage] = error_line(str(err).partition("\n")[2])
            except Exception as err:  # noqa: BLE001 - interrupted after its retries, or a bug in the flow
                failed[stage] = str(err).splitlines()[0] if str(err) else type(err).__name__
            metrics = _in(root, paths.METRICS)
            if group in PER_RUN and read_failure(group, item, metrics) is None:
                record_failure(group, item, failed[stage], metrics)  # a crash the stage did not record
            logger.error("%s failed: %s", stage, failed[stage])
    if failed:
        raise PipelineFailed("; ".join(f"{s}: {why}" for s, why in failed.items()))
    return results


def _summary(results: list[StageResult]) -> str:
    lines = ["", "Pipeline finished:"]
    lines += [f"  {r.stage:<12} {'ran' if r.ran else 'up to date':<11} {r.seconds:6.1f} s" for r in results]
    lines += [
        "",
        f"Outputs:  {paths.DATA}/  (manifest: {paths.MANIFEST.relative_to(paths.REPO_ROOT)}, "
        f"clip cache: {paths.CACHE.relative_to(paths.REPO_ROOT)}/)",
        "Failures: per-video reasons are in data/cache/manifest.json ('error') and the decode log above.",
        "Training: data/train/<run>/ (checkpoint, encoder/, predictor.safetensors), metrics/train_<run>.json",
        "Evaluation: metrics/evaluate_<run>.json (methods and baselines); comparison: reports/comparison.md",
        "MLflow (runs and the registry):  make mlflow-ui   then open http://127.0.0.1:5000",
        "Prefect UI (run history of this checkout):  make prefect-ui   then open http://127.0.0.1:4200",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    results = pipeline(argv or None)
    print(_summary(results))


if __name__ == "__main__":
    main(sys.argv[1:])
