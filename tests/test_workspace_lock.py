"""One DVC writer per workspace: a second run (another process) waits for the first, or fails naming the workspace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.workspace_lock import WorkspaceBusy, workspace_lock

HOLDER = """
import sys, time
from pathlib import Path
from flows.workspace_lock import workspace_lock
ws, log, release = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
def waiting(message):
    with log.open("a") as f:
        f.write(f"{sys.argv[5]} waiting\\n")
with workspace_lock(ws, timeout_s=float(sys.argv[4]), poll_s=0.1, run=sys.argv[5], log=waiting):
    with log.open("a") as f:
        f.write(f"{sys.argv[5]} acquired\\n")
    while not release.exists():
        time.sleep(0.05)
    with log.open("a") as f:
        f.write(f"{sys.argv[5]} released\\n")
"""


def _start(ws: Path, log: Path, release: Path, name: str, timeout: float = 60) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(ws), str(log), str(release), str(timeout), name],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(log: Path, line: str, proc: subprocess.Popen) -> None:
    while line not in (log.read_text().splitlines() if log.exists() else []):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def test_second_process_waits_then_runs(tmp_path):
    log, first_go, second_go = tmp_path / "log", tmp_path / "go1", tmp_path / "go2"
    first = _start(tmp_path, log, first_go, "first")
    _wait_for(log, "first acquired", first)
    second = _start(tmp_path, log, second_go, "second")
    _wait_for(log, "second waiting", second)     # it found the workspace busy and waits
    second_go.touch()
    first_go.touch()
    assert first.wait(60) == 0 and second.wait(60) == 0, (first.communicate(), second.communicate())
    assert log.read_text().splitlines() == ["first acquired", "second waiting", "first released",
                                             "second acquired", "second released"]


def test_busy_workspace_fails_with_clear_message(tmp_path):
    log, go = tmp_path / "log", tmp_path / "go"
    first = _start(tmp_path, log, go, "nightly-retrain")
    _wait_for(log, "nightly-retrain acquired", first)
    with pytest.raises(WorkspaceBusy) as err:
        with workspace_lock(tmp_path, timeout_s=0.3, poll_s=0.1):
            pass
    assert f"workspace {tmp_path.resolve()} is busy" in str(err.value)
    assert "run nightly-retrain" in str(err.value) and f"pid {first.pid}" in str(err.value)
    go.touch()
    assert first.wait(60) == 0


def test_killed_holder_releases_the_workspace(tmp_path):
    log = tmp_path / "log"
    first = _start(tmp_path, log, tmp_path / "never", "doomed")
    _wait_for(log, "doomed acquired", first)
    first.send_signal(signal.SIGKILL)
    first.wait(60)
    with workspace_lock(tmp_path, timeout_s=30, poll_s=0.1) as path:   # the kernel dropped the dead run's lock
        assert path.exists()


def test_reentrant_in_one_process(tmp_path):
    with workspace_lock(tmp_path, timeout_s=0):
        with workspace_lock(tmp_path, timeout_s=0):   # the pipeline as a subflow of a locked run
            pass
        other = subprocess.run([sys.executable, "-c", "from flows.workspace_lock import workspace_lock as w\n"
                                f"with w({str(tmp_path)!r}, timeout_s=0): pass"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        assert other.returncode != 0 and "WorkspaceBusy" in other.stderr   # still held for other processes


def test_other_thread_waits(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def other() -> None:
        with workspace_lock(tmp_path, timeout_s=0.3, poll_s=0.1):
            pass

    with workspace_lock(tmp_path, timeout_s=0), ThreadPoolExecutor(1) as pool:
        with pytest.raises(WorkspaceBusy):            # flows in threads of one process are serialised too
            pool.submit(other).result()
    other()
