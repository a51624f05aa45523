"""A pipeline with dvc.yaml's stage names, foreach groups and graph, whose commands take milliseconds: for tests
of how the flow orchestrates DVC (what it skips, what it hands to DVC, what a failure stops), with real DVC, a
real Prefect server and no ML.

- `make_toy(dest, methods=("scratch", "frozen"), baselines=("raw_pixels",)) -> Path`: a git + DVC repo whose
  params.yaml is the project's schema resolved (the flow validates it), with `toy.py` and the dvc.yaml below.
- Every command is `python toy.py STAGE OUT --dep PATH... --param KEY...`: it writes OUT from the bytes of its deps
  and the values of its params (so a change reaches the stages downstream, as in the real pipeline), appends STAGE
  to `toy-runs.log` (not tracked), and fails with `error: ...` while a file `FAIL_<stage>` exists.
- `dvc(project, *args)`, `ran(project)` (the stage commands that ran, in order), `lock(project)` (dvc.lock's text).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from workspace_data import dvc_env

from surgwm.params import parse_params

TOY = """\
import argparse, hashlib, json, sys
from pathlib import Path

import yaml

ap = argparse.ArgumentParser()
ap.add_argument("stage")
ap.add_argument("out")
ap.add_argument("--dep", action="append", default=[])
ap.add_argument("--param", action="append", default=[])
a = ap.parse_args()
with open("toy-runs.log", "a") as log:
    log.write(a.stage + "\\n")
if Path(f"FAIL_{a.stage}").exists():
    if a.stage == "register":   # like tasks/register.py: a failed record the report can show, then the error
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"status": "failed"}) + "\\n")
    sys.exit(f"error: {a.stage} failed on purpose (FAIL_{a.stage} exists)")
params = yaml.safe_load(open("params.yaml"))
h = hashlib.sha256(a.stage.encode())
for dep in map(Path, a.dep):
    for f in sorted(dep.rglob("*")) if dep.is_dir() else [dep]:
        if f.is_file():
            h.update(str(f).encode() + f.read_bytes())
for key in a.param:
    value = params
    for part in key.split("."):
        value = value[part]
    h.update(json.dumps(value, sort_keys=True).encode())
out = Path(a.out)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"stage": a.stage, "inputs": h.hexdigest()}) + "\\n")
"""


def _stage(name: str, out: str, deps: Sequence[str] = (), params: Sequence[str] = (), cache: bool = True) -> dict:
    cmd = " ".join([f"python toy.py {name} {out}", *(f"--dep {d}" for d in deps), *(f"--param {p}" for p in params)])
    stage: dict = {"cmd": cmd}
    if deps:
        stage["deps"] = list(deps)
    if params:
        stage["params"] = list(params)
    stage["outs"] = [out if cache else {out: {"cache": False}}]
    return stage


# The real dvc.yaml's stages and graph (data paths simplified to one file per stage).
DVC_YAML = {"stages": {
    "synthesize": _stage("synthesize", "data/synthetic.txt", params=["data.synthetic.seed"]),
    "ingest": _stage("ingest", "data/ingest.txt", ["data/synthetic.txt"], ["data.source"]),
    "decode": _stage("decode", "data/cache.txt", ["data/ingest.txt"], ["data.fps"]),
    "weights": _stage("weights", "data/weights.txt", params=["weights.model"]),
    "train": {"foreach": "${train.methods}", "do": _stage(
        "train@${key}", "data/train/${key}.txt", ["data/cache.txt", "data/weights.txt"],
        ["train.methods.${key}", "train.epochs"])},
    "evaluate": {"foreach": "${train.methods}", "do": _stage(
        "evaluate@${key}", "metrics/evaluate_${key}.json", ["data/train/${key}.txt", "data/cache.txt"],
        ["evaluate.probe_epochs"], cache=False)},
    "baseline": {"foreach": "${evaluate.baselines}", "do": _stage(
        "baseline@${item}", "metrics/evaluate_${item}.json", ["data/cache.txt", "data/weights.txt"],
        ["evaluate.probe_epochs"], cache=False)},
    "register": _stage("register", "reports/register.json", ["metrics"], ["register.metric"], cache=False),
    "report": _stage("report", "reports/comparison.md", ["metrics", "reports/register.json"],
                     ["evaluate.gpu_prices"], cache=False),
}}


def make_toy(dest: Path, methods: Sequence[str] = ("scratch", "frozen"),
             baselines: Sequence[str] = ("raw_pixels",)) -> Path:
    dest.mkdir(parents=True)
    params = parse_params({"train": {"methods": {m: {} for m in methods}},
                           "evaluate": {"baselines": list(baselines)}}).model_dump(mode="json")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (dest / "toy.py").write_text(TOY)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    for args in (["init", "-q"], ["config", "core.analytics", "false"]):
        dvc(dest, *args)
    return dest


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=dvc_env(), capture_output=True,
                       text=True)
    assert not check or r.returncode == 0, f"dvc {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return r


def ran(project: Path) -> list[str]:
    log = project / "toy-runs.log"
    return log.read_text().split() if log.exists() else []


def lock(project: Path) -> str:
    return (project / "dvc.lock").read_text()


def set_param(project: Path, dotted: str, value: object) -> None:
    from surgwm.io import set_dotted

    raw = yaml.safe_load((project / "params.yaml").read_text())
    set_dotted(raw, dotted, value)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
