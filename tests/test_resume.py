"""Resumable training: a SIGKILLed run continues from its last checkpoint to bit-identical weights and metrics."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_data import make_cache, tiny_params, train_inputs, write_params

import surgwm.training.loop as stage
from surgwm.training.checkpoint import ArchitectureMismatch, save_atomic
from surgwm.params import REPO_ROOT

TIMES = ("train_time_s", "epoch_time_s", "train_clips_per_s")
OUTPUTS = ("encoder/model.safetensors", "predictor.safetensors")



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_data")
    return train_inputs(root)


def untimed(obj):
    """Metrics without wall-clock fields (those legitimately differ between runs)."""
    if isinstance(obj, list):
        return [untimed(x) for x in obj]
    return {k: v for k, v in obj.items() if k not in TIMES}


def outputs(out: Path, metrics: Path, name: str) -> dict:
    res = {p: (out / p).read_bytes() for p in OUTPUTS}
    res["metrics"] = untimed(json.loads((metrics / f"train_{name}.json").read_text()))
    res["history"] = untimed(json.loads((metrics / f"train_{name}_history.json").read_text()))
    res["steps"] = (out / "steps.jsonl").read_text()
    return res


def cli(name: str, params: Path, data: dict, out: Path, metrics: Path) -> list[str]:
    return [sys.executable, "-m", "tasks.train", name, "--params", str(params), "--cache", str(data["cache_dir"]),
            "--manifest", str(data["manifest_path"]), "--weights", str(data["weights_dir"]), "--out", str(out),
            "--metrics", str(metrics), "--features", str(out.parent / "features"), "--no-progress"]


def test_sigkill_mid_epoch_then_rerun_is_bit_exact(data, tmp_path):
    """Uninterrupted vs killed (SIGKILL right after a checkpoint) + rerun: identical safetensors and metrics."""
    train = {"epochs": 2, "batch_size": 4, "checkpoint_every": 2}  # 9 steps/epoch, checkpoint at step 2, 4, ...
    params = write_params(tmp_path / "params.yaml", **train)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    a, b = tmp_path / "a", tmp_path / "b"
    subprocess.run(cli("scratch", params, data, a / "run", a / "metrics"), env=env, check=True, cwd=REPO_ROOT,
                   capture_output=True)

    proc = subprocess.Popen(cli("scratch", params, data, b / "run", b / "metrics"), env=env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = b / "run" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, f"run ended before it could be killed:\n{err[-2000:]}"
    state = torch.load(ckpt, weights_only=True)
    assert 0 < state["step"] < 18
    assert not (b / "metrics" / "train_scratch.json").exists()

    rerun = subprocess.run(cli("scratch", params, data, b / "run", b / "metrics"), env=env, cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True)
    assert f"resuming scratch from {ckpt} at step {state['step']}/18" in rerun.stderr
    assert outputs(a / "run", a / "metrics", "scratch") == outputs(b / "run", b / "metrics", "scratch")


def test_interrupted_frozen_run_resumes_exactly(data, tmp_path, monkeypatch):
    """Same property in-process for `frozen` on its feature cache, stopped mid-epoch after step 7."""
    params = tiny_params(epochs=2, batch_size=4, checkpoint_every=3)
    kw = dict(progress=False, metrics_dir=tmp_path / "m", features_dir=tmp_path / "features", **data)
    stage.train("frozen", params, out_dir=tmp_path / "a", **{**kw, "metrics_dir": tmp_path / "ma"})
    real = stage.train_step

    def crash_after_7(run, context, target):
        if run.step == 7:
            raise KeyboardInterrupt
        return real(run, context, target)

    monkeypatch.setattr(stage, "train_step", crash_after_7)
    with pytest.raises(KeyboardInterrupt):
        stage.train("frozen", params, out_dir=tmp_path / "b", **kw)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["epoch_step"]) == (6, 0, 6)  # mid-epoch checkpoint
    monkeypatch.setattr(stage, "train_step", real)
    stage.train("frozen", params, out_dir=tmp_path / "b", **kw)
    assert outputs(tmp_path / "a", tmp_path / "ma", "frozen") == outputs(tmp_path / "b", tmp_path / "m", "frozen")


def test_architecture_change_is_refused(data, tmp_path):
    kw = dict(out_dir=tmp_path / "run", metrics_dir=tmp_path / "m", progress=False, **data)
    stage.train("scratch", tiny_params(epochs=1), **kw)
    from surgwm.params import parse_params
    from train_data import tiny_raw

    raw = tiny_raw(epochs=1)
    raw["model"]["encoder_dim"] = 48
    with pytest.raises(ArchitectureMismatch) as err:
        stage.train("scratch", parse_params(raw), **kw)
    msg = str(err.value)
    assert "another architecture" in msg and "encoder_dim: checkpoint 32 vs now 48" in msg and str(tmp_path) in msg


def test_changed_params_or_data_start_fresh(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    kw = dict(out_dir=tmp_path / "run", metrics_dir=tmp_path / "m", progress=False, **data)
    first = stage.train("scratch", tiny_params(epochs=1), **kw)
    caplog.clear()
    again = stage.train("scratch", tiny_params(epochs=1), **kw)
    assert "already complete" in caplog.text and untimed(again) == untimed(first)
    caplog.clear()
    changed = stage.train("scratch", tiny_params(epochs=1, lr=1e-3), **kw)
    assert "different config or data" in caplog.text and "starting fresh" in caplog.text
    assert changed["steps"] == 4 and changed["train_loss"] != first["train_loss"]
    caplog.clear()
    cache2, manifest2 = make_cache(tmp_path / "more", cases=7)
    stage.train("scratch", tiny_params(epochs=1, lr=1e-3), **{**kw, "cache_dir": cache2, "manifest_path": manifest2})
    assert "starting fresh" in caplog.text


def test_torn_checkpoint_and_temp_files_are_survivable(data, tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (out / ".checkpoint.pt.tmp123").write_bytes(b"half written")
    caplog.set_level(logging.INFO)
    stage.train("scratch", tiny_params(epochs=1), out_dir=out, metrics_dir=tmp_path / "m", progress=False, **data)
    assert "unreadable" in caplog.text and not (out / ".checkpoint.pt.tmp123").exists()
    save_atomic({"x": torch.zeros(2)}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["format"] == 1
    assert not list(tmp_path.glob(".c.pt.tmp*"))
