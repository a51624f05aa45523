"""One DVC writer per workspace: a file lock that a second pipeline run waits on, with a timeout.

DVC's own lock (`.dvc/tmp/lock`) fails at once ("Unable to acquire lock") and only covers one `dvc repro`,
while a pipeline run is several of them plus a params.yaml write. `fcntl.flock` is released by the kernel when
the holder dies (killed worker, SIGKILL), so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = Path(".pipeline") / "workspace.lock"
DEFAULT_TIMEOUT_S = 6 * 3600.0      # a full training run can take hours; a stuck one should not block forever

_held: dict[tuple[str, int], int] = {}   # (lock path, thread) -> nesting depth: a subflow in the same thread re-enters
_guard = threading.Lock()


class WorkspaceBusy(TimeoutError):
    """Another run held the workspace for longer than the timeout; the message names the workspace and holder."""


def lock_path(workdir: Path) -> Path:
    return Path(workdir).resolve() / LOCK_NAME


def holder(workdir: Path) -> dict | None:
    """Who holds (or last held) the workspace lock: pid, host, run, since; None if never locked."""
    try:
        return json.loads(lock_path(workdir).read_text() or "null")
    except (OSError, ValueError):
        return None


@contextmanager
def workspace_lock(workdir: Path, timeout_s: float | None = DEFAULT_TIMEOUT_S, poll_s: float = 1.0,
                   run: str = "", log=print) -> Iterator[Path]:  # noqa: ANN001 - any print-like callable
    """Hold the workspace exclusively; wait up to `timeout_s` (None: forever, 0: fail at once) for another run."""
    path = lock_path(workdir)
    key = (str(path), threading.get_ident())    # another thread opens its own descriptor, so flock makes it wait
    with _guard:
        if _held.get(key):                       # this thread already holds it (the pipeline as a subflow)
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _guard:
                _held[key] -= 1
        return

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if timeout_s is not None and waited >= timeout_s:
                    raise WorkspaceBusy(
                        f"workspace {Path(workdir).resolve()} is busy: another pipeline run holds {path} "
                        f"({_describe(holder(workdir))}); waited {waited:.0f} s (timeout {timeout_s:g} s). "
                        "Wait for it to finish or cancel it; runs in other workspaces are not affected."
                    ) from None
                if not told:
                    log(f"workspace {Path(workdir).resolve()} is busy ({_describe(holder(workdir))}); waiting "
                        f"up to {'forever' if timeout_s is None else f'{timeout_s:g} s'}")
                    told = True
                time.sleep(poll_s)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "run": run,
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        with _guard:
            _held[key] = 1
        try:
            yield path
        finally:
            with _guard:
                _held.pop(key, None)
    finally:
        os.close(fd)                             # closing the descriptor releases the flock


def _describe(info: dict | None) -> str:
    if not info:
        return "holder unknown"
    run = f"run {info['run']}, " if info.get("run") else ""
    return f"{run}pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
