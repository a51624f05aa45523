"""Run one DVC stage as a subprocess, streaming its output to the Prefect log; DVC decides if it is stale."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flows.gpu import gpu_slot

REPO = Path(__file__).resolve().parent.parent
_KILLED = re.compile(r"exited with (-\d+|137|143)\b")


class StageFailed(RuntimeError):
    """The stage's command exited with an error: bad input or a bug, so retrying would fail the same way."""


class StageInterrupted(RuntimeError):
    """The stage was killed (signal, lost worker) or the workspace was busy: worth a retry."""


@dataclass(frozen=True)
class StageResult:
    stage: str
    ran: bool          # False when DVC found the stage up to date and skipped it
    seconds: float     # the `dvc repro` command's wall time (0 when none was started)
    output_tail: str
    # Who found it up to date: "dvc repro" (the stage's own `dvc repro --single-item`), or "dvc status" (the
    # flow's one query before any task, flows/dvc_status.py: no dvc command was started for this stage).
    decided_by: str = "dvc repro"

    @property
    def status(self) -> str:
        if self.ran:
            return "ran"
        return "up to date, skipped" if self.decided_by == "dvc status" else "up to date"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Stage commands say `python -m tasks.<stage>`: make that resolve to this interpreter's venv."""
    env = dict(os.environ) | (extra or {})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TQDM_MININTERVAL", "5")  # progress bars stay readable in a log
    env["PYTHONUNBUFFERED"] = "1"
    api = _prefect_api_url()
    if api:   # a stage that runs a Prefect flow itself (decode.engine: dask) reports to the same server
        env.setdefault("PREFECT_API_URL", api)
    return env


def _prefect_api_url() -> str | None:
    """The API of the Prefect server this process talks to (also a test or ephemeral one), if Prefect is loaded."""
    if "prefect" not in sys.modules:
        return None
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def run_dvc_stage(
    stage: str,
    log: Callable[[str], None] = print,
    poll: Callable[[], None] | None = None,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
) -> StageResult:
    """`dvc repro --single-item STAGE`: reproduces only this stage, and only if DVC says it is stale."""
    with gpu_slot(stage, log):   # flows/gpu.py: GPU stages wait for this machine's GPU slot (Prefect runs only)
        return _run(stage, log, poll, cwd, env)


def _run(stage: str, log: Callable[[str], None], poll: Callable[[], None] | None, cwd: Path,
         env: dict[str, str] | None) -> StageResult:
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            for line in raw.replace("\r", "\n").splitlines():
                if line.strip():
                    lines.append(line)
                    log(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while True:
        if poll is not None:
            poll()
        try:  # returns the moment the stage ends (a 1 s sleep cost up to 1 s per stage); polls progress once a second
            proc.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            pass
    reader.join()
    if poll is not None:
        poll()
    tail = "\n".join(lines[-30:])
    rc = proc.returncode
    if rc != 0:
        busy = any("Unable to acquire lock" in line for line in lines)
        # DVC reports a stage command killed by a signal as "exited with -9"; a negative code of our own
        # child is a signal too; 137/143 are SIGKILL/SIGTERM as a shell reports them.
        killed = any(_KILLED.search(line) for line in lines)
        if busy or killed or rc < 0 or rc in (137, 143):
            raise StageInterrupted(f"stage '{stage}' was interrupted (exit {rc}):\n{tail}")
        raise StageFailed(f"stage '{stage}' failed (exit {rc}):\n{tail}")
    skipped = any("didn't change, skipping" in line or "is cached - skipping" in line for line in lines)
    return StageResult(stage, not skipped, time.monotonic() - start, tail)


def error_line(output: str) -> str:
    """The stage's own one-line reason (`error: ...`), else DVC's, else the last line: what a report can show."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for prefix in ("error: ", "ERROR: "):
        found = [ln for ln in lines if ln.startswith(prefix)]
        if found:
            return found[0][len(prefix):] if prefix == "error: " else found[-1][len(prefix):]
    return lines[-1] if lines else "no output"


