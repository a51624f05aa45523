"""A tiny git + DVC project in a temp dir, shaped like ours (a cached out, a resumable `persist` train out,
metrics and plots), for tests of DVC's own machinery: remotes, experiments, plots. Real git, real `dvc` CLI.

- `make_tiny_repo(dest, remote_config=False) -> Path`: the project, committed. With `remote_config`, this
  repository's `.dvc/config` (with its default remote) is used instead of the fresh one `dvc init` writes.
- `dvc(project, *args)` / `git(project, *args)`: run the CLI there; `dvc` fails the test on a non-zero exit.
- `outs_bytes(project)`: every file under data/, path -> bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from surgwm.params import REPO_ROOT

PARAMS = """\
data:
  n: 3
train:
  lr: 0.1
  epochs: 2
"""

PREPARE = """\
import yaml
from pathlib import Path
n = yaml.safe_load(open("params.yaml"))["data"]["n"]
out = Path("data/raw")
out.mkdir(parents=True, exist_ok=True)
for i in range(n):
    (out / f"clip_{i}.bin").write_bytes(bytes(range(256)) * (i + 1))
"""

# Resumes from its checkpoint like tasks/train.py. The log is appended IN PLACE on purpose: the riskiest write for
# a cache linked into the workspace (tasks/train.py itself replaces every file by rename).
TRAIN = """\
import json, os, yaml
from pathlib import Path
p = yaml.safe_load(open("params.yaml"))["train"]
out = Path("data/train/run")
out.mkdir(parents=True, exist_ok=True)
ckpt, log_path = out / "checkpoint.json", out / "log.txt"
state = json.loads(ckpt.read_text()) if ckpt.exists() else None
if state is None or state["lr"] != p["lr"]:
    state = {"epoch": 0, "lr": p["lr"], "history": []}
    log_path.unlink(missing_ok=True)
else:
    print("resuming from epoch", state["epoch"])
raw = sum(len(f.read_bytes()) for f in Path("data/raw").iterdir())
with open(log_path, "a") as log:
    while state["epoch"] < p["epochs"]:
        state["epoch"] += 1
        loss = raw / 1000 / (1 + state["epoch"] * p["lr"] * 10)
        state["history"].append({"epoch": state["epoch"], "loss": loss})
        log.write(f"epoch {state['epoch']} loss {loss}\\n")
        tmp = out / ".checkpoint.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, ckpt)
Path("metrics").mkdir(exist_ok=True)
Path("metrics/train.json").write_text(json.dumps({"loss": state["history"][-1]["loss"], "epochs": state["epoch"]}))
Path("metrics/train_history.json").write_text(json.dumps(state["history"]))
"""

DVC_YAML = """\
stages:
  prepare:
    cmd: python prepare.py
    deps: [prepare.py]
    params: [data.n]
    outs: [data/raw]
  train:
    cmd: python train.py
    deps: [train.py, data/raw]
    params: [train.lr, train.epochs]
    outs:
      - data/train/run:
          persist: true
    metrics:
      - metrics/train.json:
          cache: false
    plots:
      - metrics/train_history.json:
          cache: false
          x: epoch
          y: loss
"""


def env() -> dict[str, str]:
    """Stage commands say `python`: this venv's. Commits need an identity, which a CI box may not have."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e['PATH']}"
    for role in ("AUTHOR", "COMMITTER"):
        e[f"GIT_{role}_NAME"], e[f"GIT_{role}_EMAIL"] = "test", "test@example.invalid"
    return e


def dvc(project: Path, *args: str, check: bool = True) -> str:
    """Run `dvc ARGS` in `project`; returns stdout + stderr."""
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env(), capture_output=True, text=True)
    if check:
        assert r.returncode == 0, f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def git(project: Path, *args: str) -> str:
    r = subprocess.run(["git", *args], cwd=project, env=env(), capture_output=True, text=True)
    assert r.returncode == 0, f"git {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def make_tiny_repo(dest: Path, remote_config: bool = False) -> Path:
    dest.mkdir(parents=True)
    for name, text in {"params.yaml": PARAMS, "prepare.py": PREPARE, "train.py": TRAIN, "dvc.yaml": DVC_YAML,
                       ".gitignore": "/data/\n"}.items():
        (dest / name).write_text(text)
    git(dest, "init", "-q")
    dvc(dest, "init", "-q")
    if remote_config:
        shutil.copy(REPO_ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    else:
        dvc(dest, "config", "core.analytics", "false")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "tiny project")
    return dest


def outs_bytes(project: Path) -> dict[str, bytes]:
    data = project / "data"
    return {str(p.relative_to(project)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


def corrupt_cache_objects(project: Path) -> list[str]:
    """Cache files whose content no longer hashes to their name (DVC 3 keeps them in .dvc/cache/files/md5/)."""
    bad = []
    for f in (project / ".dvc" / "cache" / "files" / "md5").rglob("*"):
        if f.is_file() and not f.name.endswith(".dir"):
            if hashlib.md5(f.read_bytes()).hexdigest() != f.parent.name + f.name:
                bad.append(str(f))
    return bad
