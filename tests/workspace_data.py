"""A throwaway checkout of this project (code + dvc.yaml + params.yaml, git + DVC initialised) for flow tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from surgwm.params import REPO_ROOT, parse_params

TINY_SYNTHETIC = {"seed": 3, "cases": 2, "parts_per_case": 1, "part_seconds": 3, "width": 96, "height": 72,
                  "fps": 10}


def dvc_env() -> dict[str, str]:
    """`python -m tasks.x` in the stage commands must resolve to this venv; the checkout's own code comes first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def make_workspace(dest: Path, params: dict[str, Any] | None = None, commented: bool = False) -> Path:
    """Copy the code and dvc.yaml; params.yaml is this repo's (comments kept) if `commented`, else `params` resolved."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("surgwm", "tasks", "models", "flows", "assets"):
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, dest / name)
    if commented:
        shutil.copy(REPO_ROOT / "params.yaml", dest / "params.yaml")
    else:   # DVC reads the params each stage lists straight from the file: write every key
        resolved = parse_params(params or {}).model_dump(mode="json")
        (dest / "params.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    for args in (["init", "-q"], ["config", "core.analytics", "false"]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=dest, check=True, env=dvc_env())
    return dest
