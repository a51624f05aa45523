"""Prefect retries a stage that was killed, never one that failed on its input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.dvc_stage import StageFailed, StageInterrupted


def project_with(tmp_path: Path, cmd: str) -> Path:
    """A git + DVC repo whose only stage counts its attempts, then runs `cmd`."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    stage = {"cmd": f"echo attempt >> attempts.txt && {cmd}", "outs": ["out.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"flaky": stage}}))
    return tmp_path


def attempts(project: Path) -> int:
    return len((project / "attempts.txt").read_text().splitlines())


@pytest.mark.parametrize(
    ("cmd", "error", "runs"),
    [
        ("exit 3", StageFailed, 1),                 # deterministic failure: no retry
        ("kill -9 $$", StageInterrupted, 3),        # killed (lost worker, OOM killer): 1 run + 2 retries
    ],
)
def test_retry_only_transient_failures(tmp_path, prefect_harness, cmd, error, runs):
    from prefect import flow

    from flows.pipeline import dvc_stage

    project = project_with(tmp_path, cmd)
    task = dvc_stage.with_options(name="flaky", retry_delay_seconds=0)

    @flow
    def one_stage():
        return task("flaky", project)

    with pytest.raises(error):
        one_stage()
    assert attempts(project) == runs
