"""The real pipeline in a temp DVC repo: `dvc repro` and the Prefect flow leave the same outputs and dvc.lock."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.params import REPO_ROOT, parse_params

pytestmark = pytest.mark.slow

TINY = {
    "data": {
        "source": "synthetic",
        "root": "data/synthetic",
        "fps": 4,
        "size": 32,
        "clip_frames": 8,
        "clip_stride": 4,
        "synthetic": {"seed": 3, "cases": 3, "parts_per_case": 1, "part_seconds": 6, "width": 96, "height": 72},
    },
    "decode": {"workers": 2, "chunk_frames": 16},
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def make_project(dest: Path, params: dict) -> Path:
    """A fresh git + DVC checkout of this project's code with the given params."""
    for name in ("tasks", "models", "flows"):
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, dest / name)
    # DVC reads the params each stage lists straight from the file, so write every key, defaults included.
    resolved = parse_params(params).model_dump(mode="json")
    (dest / "params.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=dest, check=True, env=_env())
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=dest, check=True, env=_env())
    return dest


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=_env(), capture_output=True, text=True
    )


def outputs(project: Path) -> dict[str, bytes]:
    data = project / "data"
    return {str(p.relative_to(project)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


def test_dvc_repro_and_prefect_flow_agree(tmp_path, prefect_harness):
    from flows.pipeline import STAGES, pipeline

    project = make_project(tmp_path / "project", TINY)
    first = dvc(project, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    lock = (project / "dvc.lock").read_text()
    files = outputs(project)
    assert any(name.endswith(".npy") for name in files)

    again = dvc(project, "repro")
    assert again.returncode == 0
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again.stdout + again.stderr

    # From scratch through Prefect: same outputs byte for byte and the same dvc.lock.
    # (The DVC cache goes too: its run-cache would otherwise restore the outputs instead of running.)
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    (project / "dvc.lock").unlink()
    results = pipeline(workdir=str(project))
    assert [r.stage for r in results] == list(STAGES)
    assert all(r.ran for r in results)
    assert (project / "dvc.lock").read_text() == lock
    assert outputs(project) == files

    # An up-to-date pipeline: the flow skips every stage.
    assert not any(r.ran for r in pipeline(workdir=str(project)))


def test_flow_stages_match_dvc_yaml():
    from flows.pipeline import STAGES

    declared = list(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"])
    assert list(STAGES) == declared
    for stage in declared:
        assert (REPO_ROOT / "tasks" / f"{stage}.py").is_file(), f"dvc stage {stage} has no tasks/{stage}.py"
