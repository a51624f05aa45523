"""The whole pipeline as a Prefect flow: each Prefect task runs the DVC stage of the same name.

    .venv/bin/python -m flows.pipeline            # what `make demo` runs (ephemeral local Prefect server)
    .venv/bin/python -m flows.pipeline decode     # one stage (and nothing else)

DVC decides what is stale, so a flow run and `dvc repro` leave the same outputs and the same dvc.lock. The flow
asks DVC once, before any task, which stages are stale (flows/dvc_status.py); a stage DVC reported up to date,
none of whose upstream stages went to DVC in this run, is shown as a task in state "Skipped" and starts no
`dvc` command. Every other stage runs `dvc repro --single-item STAGE`, and DVC decides as before.

Failure policy (docs/operations.md): a failed stage stops the stages downstream of it, as `dvc repro --keep-going`
does; independent stages go on. `register` and `report` still run after failed train/evaluate/baseline stages, so
the report shows every run, failed ones with their reason. The flow then fails, naming every failed stage.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows.dvc_stage import StageFailed, StageInterrupted, StageResult, error_line, run_dvc_stage
from flows.dvc_status import PipelineStatus, pipeline_status
from flows.workspace_lock import workspace_lock
from surgwm import paths
from surgwm.failures import read_failure, record_failure
from surgwm.io import read_json
from surgwm.params import DEFAULT_PARAMS, Params, load_params

# A failure of one of these is one run's failure (metrics/failures/<stage>@<name>.json): the others go on.
PER_RUN = ("train", "evaluate", "baseline")
REPORT = paths.REPO_ROOT / "reports" / "comparison.md"


class PipelineFailed(RuntimeError):
    """Some stages failed; the others ran and the report shows the failures."""


@flow(name="pipeline", log_prints=True)
def pipeline(stages: Sequence[str] | None = None, workdir: str | None = None) -> list[StageResult]:
    """Validate params.yaml, then run the stages as dvc.yaml draws them (in `workdir`, default this checkout):

        synthesize -> ingest -> decode -> weights -> train@<run> -> evaluate@<run> -> baseline@<name> -> register
        -> report

    `stages` picks some: group names (`train`) or stage names (`train@frozen`); the others are left alone."""
    root = Path(workdir) if workdir else paths.REPO_ROOT
    params = load_params(root / DEFAULT_PARAMS.name)
    with workspace_lock(root, run=flow_run.get_name() or "pipeline", log=get_run_logger().info):
        stage = StageRunner(root, stages)                # asks DVC once which stages are stale
        stage("synthesize")
        stage("ingest")
        stage("decode")
        stage("weights")
        for run in params.train.methods:                 # dvc.yaml: foreach ${train.methods}
            stage("train", run)
        for run in params.train.methods:                 # not started when train@<run> failed
            stage("evaluate", run)
        for name in params.evaluate.baselines:           # foreach ${evaluate.baselines}
            stage("baseline", name)
        stage("register", despite=PER_RUN)               # logs every run, failed ones as failed
        stage("report", despite=(*PER_RUN, "register"))  # the comparison, failed runs (and a failed register) with why
    return stage.finish()


class StageRunner:
    """One call per stage: start its task, or skip it when DVC already said it is up to date; record the outcome.

    A stage DVC reported up to date is skipped (no `dvc` command) only while none of its upstream stages has gone
    to DVC in this run: once one ran (or failed, or was restored from DVC's run-cache), the files it reads may
    have changed, and `dvc repro --single-item` decides as it always did."""

    def __init__(self, root: Path, wanted: Sequence[str] | None) -> None:
        self.root = root
        self.logger = get_run_logger()
        self.dvc: PipelineStatus = pipeline_status(root, log=self.logger.info)
        self.wanted = set(wanted or self.dvc.groups())
        unknown = sorted(w for w in self.wanted if w not in self.dvc.groups() and w not in self.dvc.stages)
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; the pipeline's stages are {self.dvc.groups()} "
                             f"({', '.join(self.dvc.stages)})")
        stale = [s for s in self.dvc.stages if s in self.dvc.stale]
        self.logger.info("DVC status (%.1f s): %d of %d stages stale%s", self.dvc.seconds, len(stale),
                         len(self.dvc.stages), f": {', '.join(stale)}" if stale else "")
        self.called: list[str] = []
        self.handed_to_dvc: set[str] = set()
        self.failed: dict[str, str] = {}
        self.results: list[StageResult] = []
        self.rows: list[dict[str, object]] = []

    def selected(self, stage: str) -> bool:
        return stage in self.wanted or stage.split("@")[0] in self.wanted

    def __call__(self, group: str, item: str | None = None, despite: tuple[str, ...] = ()) -> None:
        """Run stage `group@item` (or `group`); `despite`: stage groups whose failure upstream does not stop this
        one (it reports them); any other upstream failure does."""
        stage = f"{group}@{item}" if item is not None else group
        self.called.append(stage)
        if not self.selected(stage):
            return
        failed_upstream = sorted(self.dvc.upstream.get(stage, frozenset()) & self.failed.keys())
        if failed_upstream and not all(s.split("@")[0] in despite for s in failed_upstream):
            why = f"not started: {', '.join(failed_upstream)} failed"
            self.logger.warning("%s %s", stage, why)
            self.rows.append({"stage": stage, "status": why, "seconds": None})
            return
        skip = self.dvc.up_to_date(stage) and not (self.dvc.upstream[stage] & self.handed_to_dvc)
        if not skip:
            self.handed_to_dvc.add(stage)
        state = dvc_stage.with_options(name=stage)(stage, self.root, up_to_date=skip, return_state=True)
        if state.is_completed():
            result: StageResult = state.result()
            self.results.append(result)
            self.rows.append({"stage": stage, "status": result.status, "seconds": round(result.seconds, 1)})
            return
        try:
            state.result()
        except StageFailed as err:
            self.failed[stage] = error_line(str(err).partition("\n")[2])
        except Exception as err:  # noqa: BLE001 - interrupted after its retries, or a bug in the flow
            self.failed[stage] = str(err).splitlines()[0] if str(err) else type(err).__name__
        metrics = _in(self.root, paths.METRICS)
        if group in PER_RUN and read_failure(group, item, metrics) is None:
            record_failure(group, item, self.failed[stage], metrics)  # a crash the stage did not record
        self.logger.error("%s failed: %s", stage, self.failed[stage])
        self.rows.append({"stage": stage, "status": f"failed: {self.failed[stage]}", "seconds": None})

    def finish(self) -> list[StageResult]:
        """The `pipeline-stages` table (one row per stage), then fail naming every failed stage, if any."""
        for stage in self.dvc.stages:
            if self.selected(stage) and stage not in self.called:   # dvc.yaml has a stage this flow does not call
                self.failed[stage] = "in dvc.yaml but not called by flows/pipeline.py: add it there"
                self.rows.append({"stage": stage, "status": f"failed: {self.failed[stage]}", "seconds": None})
        counts = {label: sum(1 for r in self.results if r.status == label)
                  for label in ("ran", "up to date", "up to date, skipped")}
        create_table_artifact(
            self.rows, key="pipeline-stages",
            description=(f"{counts['ran']} ran, {counts['up to date, skipped']} up to date by one DVC status query "
                         f"({self.dvc.seconds:.1f} s; no dvc command started for them), {counts['up to date']} "
                         f"found up to date by `dvc repro`, {len(self.failed)} failed"))
        if self.failed:
            raise PipelineFailed("; ".join(f"{s}: {why}" for s, why in self.failed.items()))
        return self.results


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
def dvc_stage(stage: str, workdir: Path = paths.REPO_ROOT, up_to_date: bool = False) -> StageResult | State:
    """Reproduce one stage through DVC; the task is renamed per stage, so the UI shows the stage names.

    `up_to_date`: DVC's status already said so (flows/dvc_status.py): start no command, end in state "Skipped"."""
    logger = get_run_logger()
    if up_to_date:
        result = StageResult(stage, ran=False, seconds=0.0, output_tail="", decided_by="dvc status")
        logger.info("%s: up to date (DVC status before the run), skipped: no dvc command started", stage)
        if stage == "decode":
            create_progress_artifact(100.0, key="decode-progress", description="Videos decoded (all cached)")
    else:
        poll, artifact_id = _decode_progress(workdir) if stage == "decode" else (None, None)
        env = {"PREFECT__FLOW_RUN_ID": str(flow_run.id)} if flow_run.id else None  # MLflow runs are tagged with it
        result = run_dvc_stage(stage, log=logger.info, poll=poll, cwd=workdir, env=env)
        logger.info("%s: %s in %.1f s", stage, "ran" if result.ran else "up to date, skipped", result.seconds)
        if stage == "decode" and not result.ran:  # nothing to decode: every video was already cached
            update_progress_artifact(artifact_id, 100.0)
    if stage == "decode":
        _decode_table(workdir)
    if stage == "report":
        _report_artifact(workdir)
    if up_to_date:
        return Completed(data=result, name="Skipped", message="up to date (DVC status); no dvc command started")
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


def expand_stages(params: Params) -> list[str]:
    """The stage names dvc.yaml expands for `params` (foreach groups included), in its order: asked of DVC, which
    reads this checkout's dvc.yaml with `params` as params.yaml (tests compare the flow's stages with it)."""
    import tempfile

    import yaml
    from dvc.repo import Repo

    with tempfile.TemporaryDirectory(prefix="surgwm-stages-") as tmp:
        (Path(tmp) / "dvc.yaml").write_text((paths.REPO_ROOT / "dvc.yaml").read_text())
        (Path(tmp) / DEFAULT_PARAMS.name).write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
        with Repo(tmp, uninitialized=True) as repo:
            return [s.name for s in repo.index.stages]


def _summary(results: list[StageResult]) -> str:
    lines = ["", "Pipeline finished:"]
    lines += [f"  {r.stage:<28} {r.status:<20} {r.seconds:6.1f} s" for r in results]
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
