"""Prefect's per-checkout defaults, set before Prefect is imported (flows/ and the Dask decode fan-out use them).

Each is set only when the user has not set it, so `python -m flows.pipeline` needs no environment variables.
Why each: docs/stack-notes.md.
"""

import os

from surgwm.params import REPO_ROOT


def apply() -> None:
    os.environ.setdefault("PREFECT_HOME", str(REPO_ROOT / ".prefect"))
    # The analytics heartbeat locked the SQLite database during start-up migrations here.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The ephemeral server's first start took ~25 s here; Prefect's default allows 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
