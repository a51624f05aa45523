"""Training checkpoints: written atomically (temp file + fsync + os.replace), so a SIGKILL leaves the last good one.

A checkpoint holds everything a resumed run needs to continue bit-exactly on CPU: model, EMA target, optimizer,
scheduler and grad-scaler states, every RNG (torch, CUDA, numpy, python, the data sampler's), the position in the
run (epoch, step), the running epoch sums and the metric history, plus the architecture (a resume with another
architecture is refused) and a fingerprint of the resolved config and data (a mismatch starts fresh).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"


class ArchitectureMismatch(RuntimeError):
    """The checkpoint was written for another model shape; continuing would silently load nothing useful."""


def rng_state() -> dict[str, Any]:
    """All global RNGs, as tensors / plain values only (so `torch.load(weights_only=True)` reads them)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": _py_state_to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_lists(st: tuple) -> list:
    version, internal, gauss = st
    return [version, list(internal), gauss]


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """torch.save to `.<name>.tmp<pid>` in the same dir, fsync, os.replace: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temps(directory: Path) -> None:
    """Temp files of a run killed while writing: never complete, never read."""
    for tmp in directory.glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint at `path`, or None if there is none (a damaged file is reported and ignored)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - a torn or foreign file: say so and start fresh
        log.warning("checkpoint %s is unreadable (%s); starting fresh", path, err)
        return None
    if state.get("format") != FORMAT:
        log.warning("checkpoint %s has format %s, expected %s; starting fresh", path, state.get("format"), FORMAT)
        return None
    return state


def check_architecture(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to resume across an architecture change, naming every differing key."""
    if saved == current:
        return
    keys = sorted(set(saved) | set(current))
    diff = [f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
            for k in keys if saved.get(k) != current.get(k)]
    raise ArchitectureMismatch(
        f"cannot resume from {path}: it was written for another architecture ({'; '.join(diff)}). "
        f"Restore the model params it was trained with, or delete {path.parent} to start this run from scratch."
    )


def resume_state(path: Path, arch: dict[str, Any], fp: str) -> dict[str, Any] | None:
    """The checkpoint to continue from: None when absent or written for other data/params (logged)."""
    state = load(path)
    if state is None:
        return None
    check_architecture(state["arch"], arch, path)
    if state["fingerprint"] != fp:
        log.warning("checkpoint %s was written for a different config or data (fingerprint %s, now %s); "
                    "starting fresh", path, state["fingerprint"][:12], fp[:12])
        return None
    return state
