"""The real pipeline in a temp DVC repo: `dvc repro` and the Prefect flow leave the same outputs and dvc.lock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from surgwm.params import REPO_ROOT, parse_params

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
    "train": {"epochs": 2, "batch_size": 4, "threads": 1, "checkpoint_every": 5},
    "evaluate": {"probe_dim": 16, "probe_heads": 2, "probe_epochs": 3, "batch_size": 8, "fractions": [0.5, 1.0],
                 "rollouts": 1, "threads": 1, "baselines": ["raw_pixels"]},   # one baseline: each stage costs ~20 s
    # 3 cases: the step probe gets one training case, so step F1 is unavailable; register ranks on the validation
    # block (never test), and every method has this one there
    "register": {"metric": "motion.acc"},
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def make_project(dest: Path, params: dict) -> Path:
    """A fresh git + DVC checkout of this project's code with the given params."""
    for name in ("surgwm", "tasks", "models", "flows", "assets"):
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "metrics").mkdir()
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


# Outputs that must match byte for byte; train logs and metrics carry wall-clock timings, so they are compared
# by their deterministic content (weights) instead.
TIMED = ("steps.jsonl", "checkpoint.pt")


# Files that record wall-clock times or MLflow run ids: compared by path in dvc.lock, not by hash.
TIMED_PATHS = ("metrics", "reports", "data/train")


def comparable_lock_text(text: str) -> dict:
    """dvc.lock minus the hashes of files that record wall-clock time or run ids (train and evaluate metrics,
    step logs, checkpoints, the MLflow record, the report); everything else must match exactly."""
    lock = yaml.safe_load(text)
    for stage in lock["stages"].values():
        for entry in [*stage.get("outs", []), *stage.get("deps", [])]:
            if entry["path"].startswith(TIMED_PATHS):
                for key in ("md5", "size", "nfiles", "hash"):
                    entry.pop(key, None)
    return lock


def comparable_lock(path: Path) -> dict:
    return comparable_lock_text(path.read_text())


def outputs(project: Path) -> dict[str, bytes]:
    data = project / "data"
    return {
        str(p.relative_to(project)): p.read_bytes()
        for p in sorted(data.rglob("*"))
        if p.is_file() and p.name not in TIMED and "features" not in p.parts
    }


def tiny_pretrained(path: Path) -> Path:
    """A small encoder in HF format for the weights stage (the local-folder path of weights.model)."""
    from models.encoder import VideoEncoder, encoder_config

    torch.manual_seed(0)
    VideoEncoder.from_config(encoder_config(32, 1, 2, crop_size=32, frames_per_clip=8)).save_pretrained(path)
    return path


def test_dvc_repro_and_prefect_flow_agree(tmp_path, prefect_harness):
    from flows.pipeline import expand_stages, pipeline

    params = {**TINY, "weights": {"model": str(tiny_pretrained(tmp_path / "encoder"))}}
    project = make_project(tmp_path / "project", params)
    stages = expand_stages(parse_params(params))
    assert stages[4:7] == ["train@scratch", "train@frozen", "train@finetune"]
    assert stages[-2:] == ["register", "report"]
    first = dvc(project, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    lock = (project / "dvc.lock").read_text()
    files = outputs(project)
    assert any(name.endswith(".npy") for name in files)

    again = dvc(project, "repro")
    assert again.returncode == 0
    for stage in stages:
        assert f"Stage '{stage}' didn't change, skipping" in again.stdout + again.stderr

    # From scratch through Prefect: same outputs byte for byte and the same dvc.lock.
    # (The DVC cache goes too: its run-cache would otherwise restore the outputs instead of running.)
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    (project / "dvc.lock").unlink()
    results = pipeline(workdir=str(project))
    assert [r.stage for r in results] == stages
    assert all(r.ran for r in results)
    assert comparable_lock(project / "dvc.lock") == comparable_lock_text(lock)
    assert outputs(project) == files

    # An up-to-date pipeline: the flow skips every stage, on DVC's one status query (no dvc command started).
    assert {r.status for r in pipeline(workdir=str(project))} == {"up to date, skipped"}

    # The same weights registered again made no new version; the champion loads back and predicts.
    record = json.loads((project / "reports" / "register.json").read_text())
    assert record["version"] == "1" and record["aliases"]["champion"] == "1", record
    report = (project / "reports" / "comparison.md").read_text()
    for name in ("scratch", "frozen", "finetune", "raw_pixels"):
        assert f"`{name}`" in report
    assert record["runs"]["scratch"]["run_id"] in report

    # One run fails to train (a batch larger than its data): the flow goes on with the others, still writes
    # the report, which shows the failure with its reason, and then fails naming the stage.
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"]["methods"]["broken"] = {"method": "scratch", "batch_size": 4096}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(Exception, match="train@broken"):
        pipeline(stages=["train", "evaluate", "register", "report"], workdir=str(project))
    report = (project / "reports" / "comparison.md").read_text()
    failed = [line for line in report.splitlines() if line.startswith("- `broken`")]
    assert failed and "failed" in failed[0] and "clips" in failed[0], report
    assert "`scratch`" in report and (project / "metrics" / "evaluate_scratch.json").is_file()


def test_every_dvc_stage_has_its_task_module():
    """A stage is `python -m tasks.<stage>`; the flow runs dvc.yaml's stages by name (tests/test_flow_dvc_status.py
    checks them against the flow, and the flow fails naming a dvc.yaml stage it does not call)."""
    for stage in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]:
        assert (REPO_ROOT / "tasks" / f"{stage}.py").is_file(), f"dvc stage {stage} has no tasks/{stage}.py"
