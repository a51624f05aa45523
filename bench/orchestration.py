"""Orchestration speed, side by side: a no-op `dvc repro`, a no-op Prefect pipeline run and its split, Prefect's
overhead on the demo.

    .venv/bin/python bench/orchestration.py [--workdir DIR | --copy-of DIR] [--repeat 3] [--single-items]
                                            [--skip-server] [--skip-demo] [--keep]

  no-op dvc      `dvc repro` on the up-to-date pipeline in --workdir (default: this checkout, after `make demo`)
  no-op Prefect  the flow (flows.pipeline) on the same pipeline in its own process, as `make demo` runs it when
                 nothing changed, split into: interpreter start/exit (with the server's stop), imports, the
                 ephemeral Prefect server's start, the flow's one DVC status query, the `dvc repro` commands it
                 started (none when nothing is stale), and the rest (Prefect: the flow run, one task run per stage,
                 artifacts)
  --single-items also the `dvc repro --single-item STAGE` commands for every stage, back to back without Prefect:
                 what each task of the flow started before it asked DVC once (flows/dvc_status.py)
  no-op, server  the same flow against a dedicated `prefect server start` on loopback that the bench starts first
                 (how deployments and workers run it): no ephemeral server to start per run
  demo           the demo from an empty data/ in a temp git + DVC copy of --workdir's code and params, through
                 the flow. Prefect's overhead = the flow process's wall time minus the time of the
                 `dvc repro --single-item` commands its tasks ran (what `dvc repro` alone would also spend),
                 as a share of the flow process's wall time

--copy-of DIR runs everything against a temp copy of DIR's workspace (data/, metrics/, reports/, dvc.lock, the DVC
cache) with this checkout's code, dvc.yaml and params.yaml, so DIR is never written. When the copy is stale because
these differ from those that produced DIR's outputs, the bench records them in the copy's dvc.lock with
`dvc commit -f` (outputs as they are; it prints the stages), so that the no-op runs have nothing to do.

It measures only (no pass/fail); the issue's targets are printed beside the figures. It refuses to run when the
pipeline is not up to date, so the "no-op" runs never start a stage there. Every Prefect process uses
PREFECT_HOME=bench/out/prefect (the first one pays the database migrations: reported as run 1). Timings on a
shared machine are noisy: compare figures from the same run. Results: bench/out/orchestration.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
TARGETS = {"noop_dvc_s": 5.0, "noop_prefect_s": 20.0, "demo_overhead_fraction": 0.10}

# Runs the flow in a child process (its cwd decides which checkout's `flows` is imported) and reports its own split.
# The Prefect server is started (ephemeral) or reached (the dedicated one) before the flow call, so its start is timed
# on its own; the flow's client then finds it running, as the flow would have started it first thing. The DVC status
# query is timed by the flow itself (PipelineStatus.seconds); the bench only keeps the object the flow got.
FLOW_CHILD = """\
import json, sys, time
t0 = time.monotonic()
import flows.pipeline as fp
from prefect.client.orchestration import get_client
t1 = time.monotonic()
with get_client(sync_client=True) as client:
    client.api_healthcheck()
t2 = time.monotonic()
asked, ask = [], fp.pipeline_status
fp.pipeline_status = lambda *a, **k: asked.append(ask(*a, **k)) or asked[-1]
results = fp.pipeline(workdir=sys.argv[1])
t3 = time.monotonic()
json.dump({"import_s": t1 - t0, "server_s": t2 - t1, "flow_s": t3 - t2, "child_s": t3 - t0,
           "status_s": sum(a.seconds for a in asked),
           "stages": [{"stage": r.stage, "ran": r.ran, "seconds": r.seconds, "decided_by": r.decided_by}
                      for r in results]}, open(sys.argv[2], "w"))
"""


@contextmanager
def prefect_server() -> Iterator[tuple[str, float]]:
    """A dedicated Prefect server on a free loopback port (same PREFECT_HOME): (API URL, seconds until healthy)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    log = open(OUT / "prefect-server.log", "w")
    start = time.monotonic()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None or time.monotonic() - start > 180:
                raise SystemExit(f"the Prefect server did not become healthy; its log: {OUT / 'prefect-server.log'}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url, time.monotonic() - start
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _env() -> dict[str, str]:
    """This venv's `python`/`dvc` first on PATH (stage commands say `python -m tasks.<stage>`); a bench Prefect home."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_HOME"] = str(OUT / "prefect")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    env.pop("PYTHONPATH", None)  # the child's cwd picks the checkout whose code runs
    return env


def _dvc(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workdir, env=_env(), capture_output=True,
                          text=True)


def stale_stages(workdir: Path) -> dict[str, Any]:
    """`dvc status --json`: {} when every stage is up to date."""
    r = _dvc(workdir, "status", "--json")
    if r.returncode != 0:
        raise SystemExit(f"dvc status failed in {workdir}:\n{r.stderr}")
    return json.loads(r.stdout or "{}")


def time_noop_dvc(workdir: Path) -> float:
    start = time.monotonic()
    r = _dvc(workdir, "repro")
    seconds = time.monotonic() - start
    if r.returncode != 0 or "Running stage" in r.stdout:
        raise SystemExit(f"`dvc repro` in {workdir} was not a no-op:\n{r.stdout}\n{r.stderr}")
    return seconds


def time_single_items(workdir: Path, stages: list[str]) -> float:
    """The same `dvc repro --single-item STAGE` commands the flow's tasks run, back to back without Prefect."""
    start = time.monotonic()
    for stage in stages:
        r = _dvc(workdir, "repro", "--single-item", stage)
        if r.returncode != 0 or "Running stage" in r.stdout:
            raise SystemExit(f"`dvc repro --single-item {stage}` was not a no-op:\n{r.stdout}\n{r.stderr}")
    return time.monotonic() - start


def time_flow(workdir: Path, code_dir: Path, api_url: str | None = None) -> dict[str, Any]:
    """One flow process over `workdir` with `code_dir`'s flows (against `api_url`, else an ephemeral server)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        report = Path(f.name)
    log = OUT / f"flow-{int(time.time())}.log"
    start = time.monotonic()
    with open(log, "w") as out:
        env = _env() | ({"PREFECT_API_URL": api_url} if api_url else {})
        r = subprocess.run([sys.executable, "-c", FLOW_CHILD, str(workdir), str(report)], cwd=code_dir, env=env,
                           stdout=out, stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    if r.returncode != 0:
        raise SystemExit(f"the flow failed (exit {r.returncode}); its log: {log}")
    got = json.loads(report.read_text())
    report.unlink()
    got["wall_s"] = wall
    got["dvc_commands_s"] = sum(s["seconds"] for s in got["stages"])
    got["dvc_started"] = sum(1 for s in got["stages"] if s["decided_by"] == "dvc repro")
    got["prefect_s"] = wall - got["dvc_commands_s"]
    got["interpreter_s"] = wall - got["child_s"]               # start-up, exit, atexit: the ephemeral server's stop
    got["flow_prefect_s"] = got["flow_s"] - got["status_s"] - got["dvc_commands_s"]
    got["log"] = str(log)
    return got


def copy_workspace(src: Path, dest: Path) -> Path:
    """A git + DVC checkout at dest with this checkout's code, dvc.yaml and params.yaml, and src's outputs, dvc.lock
    and DVC cache; `dvc commit -f` when it is stale (prints the stages), so a no-op has nothing to do. src is only
    read."""
    for name in ("surgwm", "tasks", "models", "flows", "assets"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, dest / name)
    for name in ("data", "metrics", "reports"):
        if (src / name).exists():
            shutil.copytree(src / name, dest / name, symlinks=True)
    shutil.copy(src / "dvc.lock", dest / "dvc.lock")
    (dest / ".dvc").mkdir()
    shutil.copy(src / ".dvc" / "config", dest / ".dvc" / "config")
    if (src / ".dvc" / "cache").exists():
        shutil.copytree(src / ".dvc" / "cache", dest / ".dvc" / "cache")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    stale = stale_stages(dest)
    if stale:
        print(f"the copy is stale for {len(stale)} stages ({', '.join(stale)}): this checkout's code, dvc.yaml or "
              f"params.yaml differ from those that produced {src}'s outputs; recorded with `dvc commit -f` (outputs "
              "unchanged)")
        r = _dvc(dest, "commit", "-f")
        if r.returncode != 0:   # e.g. an output this dvc.yaml declares that src's run did not write
            raise SystemExit(f"dvc commit -f failed in {dest}: {src}'s outputs do not fit this checkout's dvc.yaml "
                             f"(run the demo there again):\n{r.stdout}\n{r.stderr}")
    return dest


def copy_project(src: Path, dest: Path) -> Path:
    """A fresh git + DVC checkout of src's code and params, with no data and an empty DVC cache (nothing to reuse)."""
    for name in ("surgwm", "tasks", "models", "flows", "assets"):
        shutil.copytree(src / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        if (src / name).exists():
            shutil.copy(src / name, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    for args in (["init", "-q"], ["config", "core.analytics", "false"]):
        r = _dvc(dest, *args)
        if r.returncode != 0:
            raise SystemExit(f"dvc {' '.join(args)} failed in {dest}:\n{r.stderr}")
    return dest


def _row(name: str, values: list[float], target: float | None, unit: str = "s") -> str:
    runs = "  ".join(f"{v:7.2f}" for v in values)
    med = statistics.median(values)
    mark = "" if target is None else f"target < {target:g} {unit}: {'met' if med < target else 'NOT met'}"
    return f"  {name:<40} {runs}   median {med:7.2f} {unit}   {mark}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--workdir", type=Path, default=REPO, help="an up-to-date pipeline checkout (default: this one)")
    where.add_argument("--copy-of", type=Path,
                       help="measure on a temp copy of this workspace's outputs (it is never written)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each no-op measurement")
    ap.add_argument("--single-items", action="store_true",
                    help="also time `dvc repro --single-item` for every stage (what the flow's tasks used to start)")
    ap.add_argument("--skip-server", action="store_true", help="skip the no-op runs against a dedicated server")
    ap.add_argument("--skip-demo", action="store_true", help="only the no-op measurements (the demo takes minutes)")
    ap.add_argument("--keep", action="store_true", help="keep the temp copies")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    copy_root = Path(tempfile.mkdtemp(prefix="surgwm-bench-copy-")) if args.copy_of else None
    try:
        workdir = copy_workspace(args.copy_of.resolve(), copy_root / "ws") if copy_root else args.workdir.resolve()
        return measure(args, workdir)
    finally:
        if copy_root and args.keep:
            print(f"  kept {copy_root}")
        elif copy_root:
            shutil.rmtree(copy_root, ignore_errors=True)


def measure(args: argparse.Namespace, workdir: Path) -> int:
    stale = stale_stages(workdir)
    if stale:
        raise SystemExit(f"the pipeline in {workdir} is not up to date (run `make demo` there first): {sorted(stale)}")
    load = os.getloadavg()
    results: dict[str, Any] = {"workdir": str(workdir), "copy_of": str(args.copy_of) if args.copy_of else None,
                               "cpus": os.cpu_count(), "load_before": load, "targets": TARGETS}

    print(f"no-op runs on the up-to-date pipeline in {workdir} ({args.repeat} runs each, alternated; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} before)")
    dvc_times: list[float] = []
    single: list[float] = []
    flows: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        dvc_times.append(time_noop_dvc(workdir))
        flows.append(time_flow(workdir, REPO))
        if any(s["ran"] for s in flows[-1]["stages"]):
            raise SystemExit(f"the no-op flow ran a stage: {flows[-1]['stages']}")
        if args.single_items:
            single.append(time_single_items(workdir, [s["stage"] for s in flows[-1]["stages"]]))
    n = len(flows[0]["stages"])
    results["noop_dvc_s"] = dvc_times
    results["noop_prefect"] = flows
    print(_row("no-op `dvc repro`", dvc_times, TARGETS["noop_dvc_s"]))
    print(_row("no-op Prefect flow, ephemeral server", [f["wall_s"] for f in flows], TARGETS["noop_prefect_s"]))
    print(_row("  interpreter start/exit + server stop", [f["interpreter_s"] for f in flows], None))
    print(_row("  imports (flows.pipeline, prefect)", [f["import_s"] for f in flows], None))
    print(_row("  ephemeral Prefect server start", [f["server_s"] for f in flows], None))
    print(_row("  the flow's one DVC status query", [f["status_s"] for f in flows], None))
    print(_row(f"  dvc repro commands ({flows[0]['dvc_started']} of {n} stages)", [f["dvc_commands_s"] for f in flows],
               None))
    print(_row(f"  Prefect: flow run, {n} task runs, artifacts", [f["flow_prefect_s"] for f in flows], None))
    if single:
        results["noop_single_items_s"] = single
        print(_row(f"{n} x `dvc repro --single-item`, no Prefect", single, None))

    if not args.skip_server:
        with prefect_server() as (url, startup):
            served = [time_flow(workdir, REPO, url) for _ in range(args.repeat)]
        results["server_startup_s"] = startup
        results["noop_prefect_server"] = served
        print(f"\nthe same no-op flow against a dedicated Prefect server (started once, healthy after {startup:.1f} s)")
        print(_row("no-op Prefect flow (process wall)", [f["wall_s"] for f in served], TARGETS["noop_prefect_s"]))
        print(_row("  the flow's one DVC status query", [f["status_s"] for f in served], None))
        print(_row(f"  Prefect: flow run, {n} task runs, artifacts", [f["flow_prefect_s"] for f in served], None))

    if not args.skip_demo:
        tmp = Path(tempfile.mkdtemp(prefix="surgwm-bench-demo-"))
        try:
            project = copy_project(workdir, tmp / "project")
            print(f"\ndemo from empty data/ through the flow in {project} (takes minutes)...", flush=True)
            demo = time_flow(project, project)
            fraction = demo["prefect_s"] / demo["wall_s"]
            demo["overhead_fraction"] = fraction
            results["demo"] = demo
            print("  stage                       dvc command (s)")
            for s in demo["stages"]:
                print(f"  {s['stage']:<27} {s['seconds']:9.1f}   {'ran' if s['ran'] else 'skipped'}")
            # A task times its command by polling every 1 s (flows/dvc_stage.py), so up to 1 s per stage of what
            # the tasks report as command time is the wrapper's: the upper bound counts it as overhead.
            upper = (demo["prefect_s"] + len(demo["stages"])) / demo["wall_s"]
            demo["overhead_fraction_upper"] = upper
            verdict = "met" if upper < TARGETS["demo_overhead_fraction"] else "NOT met"
            print(f"  flow process wall {demo['wall_s']:.1f} s = dvc commands {demo['dvc_commands_s']:.1f} s + "
                  f"Prefect {demo['prefect_s']:.1f} s (imports {demo['import_s']:.1f} s)")
            print(f"  Prefect overhead: {100 * fraction:.1f} % of the demo's time ({100 * upper:.1f} % counting the "
                  f"tasks' 1 s polling)   target < {100 * TARGETS['demo_overhead_fraction']:g} %: {verdict}")
        finally:
            if args.keep:
                print(f"  kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)

    (OUT / "orchestration.json").write_text(json.dumps(results, indent=1))
    print(f"\nresults: {OUT / 'orchestration.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
