"""The comparison workflow the README documents: `dvc exp run -S`, `dvc exp show`, `dvc metrics diff` and
`dvc plots diff` in a tiny temp git + DVC repo, and every param our dvc.yaml lists exists in params.yaml."""

from __future__ import annotations

import json

import pytest
import yaml

from surgwm.params import REPO_ROOT
from tests.dvc_repo import dvc, git, make_tiny_repo


def _flat(d: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in d.items():
        keys.add(prefix + k)
        if isinstance(v, dict):
            keys |= _flat(v, f"{prefix}{k}.")
    return keys


def test_every_param_dvc_yaml_lists_exists_in_params_yaml():
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    keys = _flat(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()))
    with Repo(str(REPO_ROOT)) as repo:
        listed = {(s.addressing, p) for s in repo.index.stages for d in s.deps
                  if isinstance(d, ParamsDependency) for p in d.params}
    assert ("train@frozen", "train.lr") in listed
    missing = sorted((stage, p) for stage, p in listed if p not in keys)
    assert missing == [], f"dvc.yaml lists params that params.yaml lacks: {missing}"


@pytest.fixture
def committed_run(tmp_path):
    project = make_tiny_repo(tmp_path / "project")
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "baseline run")
    return project


def test_exp_run_with_a_param_override_then_exp_show(committed_run):
    project = committed_run
    out = dvc(project, "exp", "run", "-S", "train.lr=0.3", "-n", "lr03")
    assert "Running stage 'train'" in out and "Running stage 'prepare'" not in out  # only what the param feeds
    shown = json.loads(dvc(project, "exp", "show", "--json"))
    exps = {e["name"]: e for row in shown for e in row.get("experiments") or [] for e in e["revs"]}
    data = exps["lr03"]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 0.3
    baseline = json.loads((project / "metrics" / "train.json").read_text())  # the workspace now holds the exp
    assert data["metrics"]["metrics/train.json"]["data"]["loss"] == baseline["loss"]
    assert "lr03" in dvc(project, "exp", "show", "--md")


def test_metrics_and_plots_diff_across_commits(committed_run):
    project = committed_run
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["lr"] = 0.3
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "lr 0.3")

    diff = json.loads(dvc(project, "metrics", "diff", "HEAD~1", "HEAD", "--json"))
    loss = diff["metrics/train.json"]["loss"]
    assert loss["new"] < loss["old"] and loss["diff"] == pytest.approx(loss["new"] - loss["old"])
    lr = json.loads(dvc(project, "params", "diff", "HEAD~1", "HEAD", "--json"))["params.yaml"]["train.lr"]
    assert (lr["old"], lr["new"]) == (0.1, 0.3)

    plots = json.loads(dvc(project, "plots", "diff", "HEAD~1", "HEAD", "--json"))
    (entry,) = plots["data"]["metrics/train_history.json"]
    assert sorted(entry["revisions"]) == ["HEAD", "HEAD~1"]
    assert {v["rev"] for v in entry["content"]["data"]["values"]} == {"HEAD", "HEAD~1"}
