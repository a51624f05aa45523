"""MLflow helpers: where runs go, the tags every run carries, and a reachability check that fails fast.

Tracking store: `MLFLOW_TRACKING_URI` when set (any MLflow URI: http://host:5000, sqlite:///..., databricks),
else the SQLite file `<repo>/mlflow.db` (an absolute URI, so it does not depend on the working directory) with
artifacts in `<repo>/mlartifacts/<experiment>` (set explicitly on the experiment; MLflow would otherwise use
./mlruns relative to the working directory). Browse it with:

    .venv/bin/mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db     # http://127.0.0.1:5000

Tags on every run: git commit (and whether the tree was dirty), the DVC hashes of the data cache and the
pretrained weights from dvc.lock, the Prefect flow-run id when there is one (PREFECT__FLOW_RUN_ID, or the
active flow-run context), and the device.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from surgwm.params import REPO_ROOT, portable_path, resolve_path

DEFAULT_DB = REPO_ROOT / "mlflow.db"
ARTIFACTS = REPO_ROOT / "mlartifacts"
DVC_LOCK = REPO_ROOT / "dvc.lock"
DVC_TAGS = {"data/cache": "dvc.data_cache", "data/weights": "dvc.weights"}  # dvc.lock out path -> tag
# MLflow's UI shows an experiment as model training (runs, metrics, models) rather than GenAI (traces, prompts)
# when this experiment tag says so (mlflow/server/js reads `mlflow.experimentKind`; values include
# custom_model_development, genai_development, finetuning); without it the UI guesses, and may pick GenAI.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached; nothing was logged (the DVC metrics files keep every number)."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


SQLITE = "sqlite:///"


def recorded_uri(uri: str) -> str:
    """The URI as reports keep it: a SQLite store inside the checkout as `sqlite:///mlflow.db` (relative to the
    checkout), so reports/register.json, which DVC hashes, is the same in every clone; other stores as they are."""
    if uri.startswith(SQLITE) and Path(uri[len(SQLITE):]).is_absolute():
        return SQLITE + portable_path(uri[len(SQLITE):])
    return uri


def absolute_uri(uri: str) -> str:
    """recorded_uri's inverse: a relative SQLite path is relative to the checkout, wherever the caller runs."""
    if uri.startswith(SQLITE) and not Path(uri[len(SQLITE):]).is_absolute():
        return SQLITE + str(resolve_path(uri[len(SQLITE):]))
    return uri


def artifact_location(uri: str, experiment: str) -> str | None:
    """Explicit artifact root for a SQLite store: `mlartifacts/<experiment>` beside the .db file (the default
    store: <repo>/mlartifacts); a tracking server decides its own (None)."""
    if urlparse(uri).scheme != "sqlite":
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / ARTIFACTS.name / experiment).as_uri()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail within `timeout` s with a message that says what to do, instead of MLflow's minutes of retries."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
        except requests.RequestException as err:
            raise TrackingUnavailable(
                f"the MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable: {type(err).__name__}: "
                f"{str(err)[:300]}. Nothing was logged; every number is still in metrics/*.json. Start the server "
                "(or unset MLFLOW_TRACKING_URI for the local SQLite store) and re-run `dvc repro register`; it logs "
                "what is missing.") from None
    elif parsed.scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_absolute():
            raise TrackingUnavailable(f"{uri}: use an absolute sqlite path (sqlite:////abs/path/mlflow.db)")
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingUnavailable(f"{uri}: cannot create {db.parent}: {err}") from None


def connect(uri: str | None = None):
    """An MlflowClient for `uri` (default: tracking_uri()), after the reachability check."""
    uri = absolute_uri(uri or tracking_uri())
    check_reachable(uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")   # a server that dies mid-way fails in seconds
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: Any, name: str) -> str:
    """Get or create the experiment, with an explicit artifact location for local stores, opening in MLflow's
    model-training view (EXPERIMENT_KIND; set on older experiments too)."""
    from mlflow.exceptions import MlflowException

    key, kind = EXPERIMENT_KIND
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri, name),
                                            tags={key: kind})
        except MlflowException:  # created meanwhile by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if key not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, key, kind)
    return exp.experiment_id


def git_commit(repo: Path = REPO_ROOT) -> dict[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git.commit": sha, "git.dirty": str(dirty).lower()} if sha else {}


def dvc_hashes(lock: Path = DVC_LOCK) -> dict[str, str]:
    """md5 of the data cache and weights outs as recorded in dvc.lock (what `dvc status` compares)."""
    try:
        stages = (yaml.safe_load(Path(lock).read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return {}
    out = {}
    for stage in stages.values():
        for o in stage.get("outs", []):
            tag = DVC_TAGS.get(o.get("path", "").rstrip("/"))
            if tag and o.get("md5"):
                out[tag] = o["md5"]
    return out


def flow_run_id() -> str | None:
    rid = os.environ.get("PREFECT__FLOW_RUN_ID")
    if rid:
        return rid
    if "prefect" in sys.modules:  # only when already imported: importing prefect costs seconds
        try:
            from prefect.runtime import flow_run

            return str(flow_run.id) if flow_run.id else None
        except Exception:  # noqa: BLE001 - no context
            return None
    return None


def device() -> str:
    """The device this process would train or evaluate on, named as the cost rows name it (surgwm/device.py)."""
    from surgwm.device import device_name, resolve_device

    return device_name(resolve_device("auto", "device"))


def run_tags(extra: dict[str, Any] | None = None, lock: Path = DVC_LOCK) -> dict[str, str]:
    tags = {**git_commit(), **dvc_hashes(lock), "device": device()}
    rid = flow_run_id()
    if rid:
        tags["prefect.flow_run_id"] = rid
    return {k: str(v) for k, v in {**tags, **(extra or {})}.items() if v is not None}
