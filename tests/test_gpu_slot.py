"""Two trainings never share one GPU: train stages of concurrent runs (separate workspaces) take turns on the
machine's global concurrency slot; other stages do not wait for it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml


def project(path: Path, log: Path, stage: str) -> Path:
    """A git + DVC repo whose one stage logs its start and end to a file shared by both projects."""
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    cmd = f"echo start {path.name} >> {log} && sleep 2 && echo end {path.name} >> {log} && touch out.txt"
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {stage: {"cmd": cmd, "outs": ["out.txt"]}}}))
    return path


def run_two(tmp_path: Path, stage: str, monkeypatch) -> list[str]:
    from prefect import flow

    from flows.pipeline import dvc_stage

    monkeypatch.setenv("SURGWM_GPU_LIMIT", f"gpu-test-{uuid.uuid4().hex[:8]}")
    log = tmp_path / "log"
    a, b = project(tmp_path / "a", log, stage), project(tmp_path / "b", log, stage)

    @flow
    def one(where: str) -> bool:
        return dvc_stage.with_options(name=stage)(stage, Path(where)).ran

    with ThreadPoolExecutor(2) as pool:
        assert all(pool.map(one, [str(a), str(b)]))
    return [line.split()[0] for line in log.read_text().splitlines()]


def test_two_trainings_take_turns(tmp_path, prefect_harness, monkeypatch):
    assert run_two(tmp_path, "train", monkeypatch) == ["start", "end", "start", "end"]


def test_limit_is_created_once_with_one_slot(prefect_harness, monkeypatch):
    from prefect.client.orchestration import get_client

    from flows.gpu import ensure_limit

    monkeypatch.setenv("SURGWM_GPU_LIMIT", "gpu-admin-set")
    with get_client(sync_client=True) as client:
        assert ensure_limit() == "gpu-admin-set"
        limit_id = client.read_global_concurrency_limit_by_name("gpu-admin-set").id
        assert ensure_limit() == "gpu-admin-set"            # idempotent: the same limit, not a second one
        got = client.read_global_concurrency_limit_by_name("gpu-admin-set")
    assert got.id == limit_id and got.limit == 1
