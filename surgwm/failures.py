"""Why a per-run stage failed, kept where DVC sees it, so the report shows it while the other runs still report.

A failed `train@<run>`, `evaluate@<run>` or `baseline@<name>` leaves `metrics/failures/<stage>@<name>.json`; the
next success of that stage removes it. `register` and `report` depend on `metrics/`, so a new or cleared failure
makes them stale. Written by the stage itself (its own error message) and, for failures the stage could not
record (a crash, a kill), by the Prefect flow from the stage's last error line. Git ignores the folder: a failure
is the state of one workspace, not of the code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from surgwm.io import read_json, write_json
from surgwm.paths import METRICS


def failure_path(stage: str, name: str, metrics_dir: Path = METRICS) -> Path:
    return Path(metrics_dir) / "failures" / f"{stage}@{name}.json"


def record_failure(stage: str, name: str, error: str, metrics_dir: Path = METRICS) -> None:
    write_json(failure_path(stage, name, metrics_dir),
               {"stage": stage, "name": name, "error": error, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def clear_failure(stage: str, name: str, metrics_dir: Path = METRICS) -> None:
    path = failure_path(stage, name, metrics_dir)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()   # an empty folder would still change the hash DVC records for metrics/
    except OSError:
        pass


def read_failure(stage: str, name: str, metrics_dir: Path = METRICS) -> dict[str, Any] | None:
    return read_json(failure_path(stage, name, metrics_dir))
