"""The shipped DVC remote config: `dvc push`/`dvc pull` move data and train checkpoints between checkouts, and a
resumable `persist` out that is cached (as `train@<run>` is) resumes without altering what the cache holds."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from surgwm.params import REPO_ROOT
from tests.dvc_repo import corrupt_cache_objects, dvc, git, make_tiny_repo, outs_bytes


def _run_and_push(project: Path) -> dict[str, bytes]:
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "pipeline run")
    dvc(project, "push")
    return outs_bytes(project)


def test_shipped_config_has_a_default_local_remote_outside_the_repo(tmp_path):
    project = make_tiny_repo(tmp_path / "project", remote_config=True)
    listed = dvc(project, "remote", "list").split()
    name, url = listed[0], Path(listed[1])
    assert dvc(project, "config", "core.remote").strip() == name
    assert url == tmp_path / "surgwm-dvc-remote"  # beside the checkout, so clones side by side share it


def test_train_outs_are_cached_so_push_ships_checkpoints():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    (out,) = [o for o in stages["train"]["do"]["outs"] if "data/train/${key}" in o]
    opts = out["data/train/${key}"]
    assert opts["persist"] is True and opts.get("cache", True) is True


def test_push_delete_pull_gives_the_same_bytes(tmp_path):
    project = make_tiny_repo(tmp_path / "project", remote_config=True)
    before = _run_and_push(project)
    assert {"data/raw/clip_0.bin", "data/train/run/checkpoint.json", "data/train/run/log.txt"} <= set(before)
    assert any(p.is_file() for p in (tmp_path / "surgwm-dvc-remote").rglob("*"))

    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "data")
    dvc(project, "pull")
    assert outs_bytes(project) == before
    assert "Data and pipelines are up to date" in dvc(project, "status")


def test_a_clone_pulls_the_checkpoint_resumes_from_it_and_the_cache_stays_intact(tmp_path):
    project = make_tiny_repo(tmp_path / "project", remote_config=True)
    before = _run_and_push(project)

    clone = tmp_path / "worker2"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    dvc(clone, "pull")
    assert outs_bytes(clone) == before
    # The risky layout: workspace files hard-linked to the cache (writable: tests run as root here).
    dvc(clone, "config", "--local", "cache.type", "hardlink")
    dvc(clone, "checkout", "--relink")
    assert (clone / "data/train/run/log.txt").stat().st_nlink > 1

    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["train"]["epochs"] = 4
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    out = dvc(clone, "repro")
    assert "resuming from epoch 2" in out
    log = (clone / "data/train/run/log.txt").read_bytes()
    assert log.startswith(before["data/train/run/log.txt"]) and log.count(b"\n") == 4
    assert corrupt_cache_objects(clone) == []

    # The pushed epoch-2 version is still intact in the cache: checking out the old commit restores it.
    git(clone, "checkout", "-q", "--", "params.yaml", "dvc.lock")
    dvc(clone, "checkout", "--force")
    assert outs_bytes(clone) == before
