"""Prefect flows that orchestrate the DVC stages; no ML logic lives here.

Importing this package sets Prefect's per-checkout defaults (see ../shared/STACK_NOTES.md) unless the
user already set them, so `python -m flows.pipeline` needs no environment variables.
"""

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("PREFECT_HOME", str(_REPO / ".prefect"))
# The analytics heartbeat locked the SQLite database during start-up migrations here.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral server's first start took ~25 s here; Prefect's default allows 20 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
