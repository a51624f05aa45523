"""Why a per-run stage failed, kept beside the pipeline so the report can show it while other runs still report.

A failed `train@<run>` or `evaluate@<run>` leaves `.pipeline/failures/<stage>@<run>.json`; the next success of
that stage removes it. Written by the stage itself (its own error message) and, for failures the stage could not
record (a crash), by the Prefect flow from the stage's last error line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tasks.manifest import atomic_write_text
from tasks.paths import RUNTIME


def failure_path(stage: str, name: str, runtime: Path = RUNTIME) -> Path:
    return Path(runtime) / "failures" / f"{stage}@{name}.json"


def record_failure(stage: str, name: str, error: str, runtime: Path = RUNTIME) -> None:
    record = {"stage": stage, "name": name, "error": error, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(failure_path(stage, name, runtime), json.dumps(record, indent=1) + "\n")


def clear_failure(stage: str, name: str, runtime: Path = RUNTIME) -> None:
    failure_path(stage, name, runtime).unlink(missing_ok=True)


def read_failure(stage: str, name: str, runtime: Path = RUNTIME) -> dict[str, Any] | None:
    try:
        return json.loads(failure_path(stage, name, runtime).read_text())
    except (OSError, ValueError):
        return None
