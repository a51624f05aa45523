"""Retraining on new data: a scheduled sensor flow compares the data source's videos by CONTENT hash with what the
last retraining (or, before the first one, the last ingest) saw, and starts the retraining flow when they differ.

The retraining flow is the pipeline itself (as a subflow), so DVC decides what is stale: a new or changed video
changes `data.root` (a dep of ingest, so dvc.lock records the new data version), decode decodes only videos not
yet in its cache, the train stages resume or retrain, and the evaluate/register stages run the champion/challenger
gate where this checkout has them. Self-hosted Prefect has no webhooks, hence a polling sensor (docs/stack-notes.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run

from flows.pipeline import pipeline
from flows.run import workspace
from flows.workspace_lock import DEFAULT_TIMEOUT_S, workspace_lock
from surgwm.data.ingest import discover_folder, discover_surgvu
from surgwm.io import atomic_write_text, file_sha256, read_json
from surgwm.params import DEFAULT_PARAMS, SYNTHETIC_ROOT, Params, load_params

STATE = Path(".pipeline") / "sensor"
SEEN = STATE / "seen.json"          # path -> sha256 of the videos the last successful retraining ran on
HASHES = STATE / "hashes.json"      # path -> [size, mtime_ns, sha256]: skips re-hashing files whose stat is unchanged
DEFAULT_CRON = os.environ.get("SURGWM_RETRAIN_CRON", "0 2 * * *")   # nightly at 02:00 (server time zone: UTC)


def source_root(params: Params, root: Path) -> Path:
    """The folder ingest reads, in this workspace."""
    where = Path(SYNTHETIC_ROOT if params.data.source == "synthetic" else params.data.root).expanduser()
    return where if where.is_absolute() else root / where


def content_snapshot(params: Params, root: Path) -> tuple[dict[str, str], int]:
    """Every video ingest would find -> its sha256; a file is re-hashed only if its size or mtime moved.

    Returns (snapshot, files hashed this time). A touched file is re-hashed and, same bytes, not a change.
    """
    src = source_root(params, root)
    found = [] if not src.is_dir() else discover_folder(src) if params.data.source == "folder" else discover_surgvu(src)
    cache = read_json(root / HASHES) or {}
    snap, fresh, hashed = {}, {}, 0
    for f in found:
        key, st = str(f.path.resolve()), f.path.stat()
        old = cache.get(key)
        if old and old[0] == st.st_size and old[1] == st.st_mtime_ns:
            digest = old[2]
        else:
            digest, hashed = file_sha256(f.path), hashed + 1
        snap[key], fresh[key] = digest, [st.st_size, st.st_mtime_ns, digest]
    atomic_write_text(root / HASHES, json.dumps(fresh, indent=0) + "\n")
    return snap, hashed


def seen_snapshot(root: Path) -> dict[str, str]:
    """What the last retraining used; before the first, what the last ingest recorded (nothing: all is new)."""
    seen = read_json(root / SEEN)
    if seen is not None:
        return seen
    manifest = read_json(root / "data" / "ingest" / "manifest.json") or {"videos": []}
    out = {}
    for v in manifest["videos"]:
        if v.get("sha256"):
            p = Path(v["path"])
            out[str((p if p.is_absolute() else root / p).resolve())] = v["sha256"]
    return out


def compare(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    return {"added": sorted(new.keys() - old.keys()), "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(k for k in new.keys() & old.keys() if new[k] != old[k])}


@flow(name="retrain", log_prints=True)
def retrain(workdir: str | None = None, stages: list[str] | None = None,
            lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Reproduce the pipeline on the data as it is now (DVC reruns only stale stages); then remember that data."""
    logger = get_run_logger()
    root = workspace(workdir)
    with workspace_lock(root, lock_timeout_s, run=flow_run.get_name() or "retrain", log=logger.info):
        snap, _ = content_snapshot(load_params(root / DEFAULT_PARAMS.name), root)
        results = pipeline(stages, str(root))
        atomic_write_text(root / SEEN, json.dumps(snap, indent=0) + "\n")   # only after the pipeline succeeded
    rows = [{"stage": r.stage, "ran": r.ran, "status": r.status, "seconds": round(r.seconds, 1)} for r in results]
    table = "\n".join(f"| {r['stage']} | {r['status']} | {r['seconds']} |" for r in rows)
    create_markdown_artifact(f"Retrained on {len(snap)} videos.\n\n| stage | | s |\n|---|---|---|\n{table}\n",
                             key="retrain-summary", description="stages DVC reran for the new data")
    return {"videos": len(snap), "stages": rows}


@flow(name="new-data-sensor", log_prints=True)
def data_sensor(workdir: str | None = None, retrain_on_change: bool = True, stages: list[str] | None = None,
                lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Scheduled: look for new, changed or removed videos by content hash; retrain if any, else end saying so."""
    logger = get_run_logger()
    root = workspace(workdir)
    params = load_params(root / DEFAULT_PARAMS.name)
    snap, hashed = content_snapshot(params, root)
    diff = compare(seen_snapshot(root), snap)
    n_changed = sum(map(len, diff.values()))
    report: dict[str, Any] = {"new_data": bool(n_changed), "videos": len(snap), "hashed": hashed, **diff}
    if not n_changed:
        report["message"] = (f"no new data: {len(snap)} videos in {source_root(params, root)} unchanged by content "
                             f"hash ({hashed} re-hashed); nothing to retrain")
        logger.info(report["message"])
        return report
    report["message"] = (f"new data in {source_root(params, root)}: {len(diff['added'])} added, "
                         f"{len(diff['changed'])} changed, {len(diff['removed'])} removed")
    logger.info(report["message"])
    for kind, files in diff.items():
        for f in files:
            logger.info("%s: %s", kind, f)
    emit_event("surgwm.data.changed", resource={"prefect.resource.id": f"surgwm.workspace.{root}"},
               payload={k: len(v) for k, v in diff.items()})
    if retrain_on_change:
        report["retrain"] = retrain(str(root), stages, lock_timeout_s)
    return report
