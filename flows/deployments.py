"""The deployments a team runs: the full pipeline, the method comparison, retraining, and the nightly new-data sensor.

  python -m flows.deployments serve            # register them on the server in PREFECT_API_URL and run them here
  python -m flows.deployments deploy --pool gpu  # register them on a process work pool; GPU workers run them

`make serve` starts a Prefect server on 127.0.0.1:4200 and then `serve`, so "Run" in the UI works at once.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from flows.gpu import ensure_limit
from flows.retrain import DEFAULT_CRON, data_sensor, retrain
from flows.run import COMPARISON_STAGES, run_pipeline

TAGS = ["surgwm"]


def specs(cron: str = DEFAULT_CRON, workdir: str | None = None) -> list[dict[str, Any]]:
    """One dict per deployment: the flow, its entrypoint for work pools, and its to_deployment arguments."""
    base = {"workdir": workdir} if workdir else {}
    return [
        {"flow": run_pipeline, "entrypoint": "flows/run.py:run_pipeline", "name": "full",
         "parameters": {**base},
         "description": "Every stage; DVC reruns only what is stale. Set data_source/methods/epochs or any "
                        "dotted params.yaml key in `overrides` (validated before any work)."},
        {"flow": run_pipeline, "entrypoint": "flows/run.py:run_pipeline", "name": "comparison",
         "parameters": {**base, "stages": COMPARISON_STAGES},
         "description": "The method comparison: every train.methods run, then the evaluate/report stages. "
                        "`methods` picks the runs, `epochs` their length."},
        {"flow": retrain, "entrypoint": "flows/retrain.py:retrain", "name": "retrain",
         "parameters": {**base},
         "description": "Reproduce on the data as it is now, evaluate, champion/challenger gate."},
        {"flow": data_sensor, "entrypoint": "flows/retrain.py:data_sensor", "name": "nightly",
         "parameters": {**base}, "cron": cron,
         "description": f"Checks the data source by content hash ({cron}); starts `retrain` only on new data."},
    ]


def runner_deployments(cron: str = DEFAULT_CRON, workdir: str | None = None) -> list:
    """The deployments as `serve` runs them (this process executes each run in a subprocess)."""
    out = []
    for s in specs(cron, workdir):
        kw = {"cron": s["cron"]} if "cron" in s else {}
        out.append(s["flow"].to_deployment(name=s["name"], parameters=s["parameters"], tags=TAGS,
                                           description=s["description"], **kw))
    return out


def deploy(pool: str, source: str, cron: str = DEFAULT_CRON, workdir: str | None = None) -> list[str]:
    """Register the deployments on a process work pool (created if missing); returns their ids."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    ids = []
    for s in specs(cron, workdir):
        kw = {"cron": s["cron"]} if "cron" in s else {}
        remote = flow.from_source(source=source, entrypoint=s["entrypoint"])
        ids.append(str(remote.deploy(name=s["name"], work_pool_name=pool, parameters=s["parameters"], tags=TAGS,
                                     description=s["description"], build=False, push=False, print_next_steps=False,
                                     **kw)))
    return ids


def start_server(api_url: str, home: str) -> subprocess.Popen | None:
    """`prefect server start` on the API URL's host and port unless one already answers there; waits until healthy."""
    parts = urllib.parse.urlsplit(api_url)
    health = f"{api_url.rstrip('/')}/health"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(health, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    if healthy():
        print(f"using the Prefect server already at {api_url}")
        return None
    Path(home).mkdir(parents=True, exist_ok=True)
    log = open(Path(home) / "server.log", "ab")   # noqa: SIM115 - the server outlives this function
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                               "--host", parts.hostname or "127.0.0.1", "--port", str(parts.port or 4200)],
                              stdout=log, stderr=subprocess.STDOUT)
    for _ in range(240):                          # ~18 s fresh here (docs/stack-notes.md); allow 120 s
        if healthy():
            print(f"Prefect server up: UI {api_url.removesuffix('/api')}  (log: {log.name})")
            return server
        if server.poll() is not None:
            raise SystemExit(f"prefect server exited ({server.returncode}); see {log.name}")
        time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"prefect server at {api_url} not healthy after 120 s; see {log.name}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["serve", "deploy"])
    ap.add_argument("--cron", default=DEFAULT_CRON, help=f"the sensor's schedule (default '{DEFAULT_CRON}', "
                    "or SURGWM_RETRAIN_CRON)")
    ap.add_argument("--pool", default="gpu", help="deploy: the process work pool (created if missing)")
    ap.add_argument("--source", default=None, help="deploy: the checkout workers load the flows from "
                    "(default: this one)")
    ap.add_argument("--workdir", default=None, help="the workspace runs use (default: the flows' checkout)")
    ap.add_argument("--limit", type=int, default=None, help="serve: runs at once in this process (default: any; "
                    "the workspace lock still allows one pipeline writer per workspace)")
    ap.add_argument("--start-server", action="store_true", help="start `prefect server` at PREFECT_API_URL "
                    "(127.0.0.1) first unless one answers there, and stop it on exit (make serve)")
    args = ap.parse_args(argv)
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    server = None
    if args.start_server:
        if not PREFECT_API_URL.value():
            raise SystemExit("--start-server needs PREFECT_API_URL, e.g. http://127.0.0.1:4200/api (make serve sets it)")
        server = start_server(PREFECT_API_URL.value(), str(PREFECT_HOME.value()))
    try:
        _command(args)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)


def _command(args: argparse.Namespace) -> None:
    print(f"GPU concurrency limit {ensure_limit()!r}: 1 slot (a worker owning only some GPUs sets SURGWM_GPU_LIMIT)")
    if args.command == "deploy":
        from flows.run import workspace

        for dep_id in deploy(args.pool, args.source or str(workspace(None)), args.cron, args.workdir):
            print("deployment", dep_id)
        print(f"start a worker on each GPU machine: prefect worker start --pool {args.pool} --limit 1")
        return
    from prefect import serve

    serve(*runner_deployments(args.cron, args.workdir), limit=args.limit)


if __name__ == "__main__":
    main(sys.argv[1:])
