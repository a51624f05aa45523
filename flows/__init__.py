"""Prefect flows that orchestrate the DVC stages; no ML logic lives here.

Importing this package sets Prefect's per-checkout defaults (surgwm/prefect_defaults.py) unless the user already
set them, so `python -m flows.pipeline` needs no environment variables.
"""

from surgwm import prefect_defaults

prefect_defaults.apply()
