"""The plan (`python -m tasks.plan`, surgwm/plan.py), the size estimates behind it (surgwm/sizes.py), and the
storage budget of the frozen feature cache."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from train_data import tiny_raw, train_inputs

import surgwm.training.loop as loop
import tasks.plan as plan_cli
from surgwm.data.manifest import Manifest, VideoEntry, write_manifest
from surgwm.params import REPO_ROOT, ParamsError, parse_params
from surgwm.plan import SURGVU, count, surgvu_manifest
from surgwm.sizes import clip_count, feature_cache_bytes, fmt_bytes, h264_frame_bytes, vit_params


def tiny_manifest(path: Path) -> Path:
    """Two cases: case a has two 30 s parts, case b one 90 s part, one unusable video; 640x480 at 25 fps."""
    vids = [VideoEntry(video_id=v, case=c, path=f"/v/{v}.mp4", duration_s=d, fps=25.0, width=640, height=480)
            for v, c, d in (("a1", "a", 30.0), ("a2", "a", 30.0), ("b1", "b", 90.0))]
    vids.append(VideoEntry(video_id="bad", case="b", path="/v/bad.mp4", error="cannot probe"))
    write_manifest(Manifest(source="folder", root="/v", videos=vids), path)
    return path


def run_plan(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    rc = plan_cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_plan_on_a_tiny_manifest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = tiny_manifest(tmp_path / "manifest.json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"size": 64, "clip_frames": 8, "clip_stride": 4}}))
    rc, out, _ = run_plan(capsys, "--params", str(tmp_path / "params.yaml"), "--manifest", str(m),
                          "--cache", str(tmp_path / "no_cache"), "--metrics", str(tmp_path / "no_metrics"))
    assert rc == 0
    assert "3 usable videos in 2 cases, 2.5 min" in out
    # 30 s at 4 fps = 120 frames -> (120 - 8) // 4 + 1 = 29 clips; 90 s -> 89 clips
    assert "600 cached frames, 147 clips" in out and "1 unusable" in out
    raw = 600 * 64 * 64 * 3 + 3 * (128 + 400)
    assert "decode cache, raw .npy  <- decode.store" in out and fmt_bytes(raw) in out
    assert "feature cache, run frozen" in out and "evaluation working data, raw_pixels" in out
    assert "decode on CPU" in out                        # bench/results/clip_store_cpu.json is tracked
    assert "train finetune" in out and "not measured for these settings" in out      # tiny model: no GPU figure


def test_plan_takes_train_time_from_this_workspaces_last_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A CPU rate is measured by the last train@<run> of these shapes: the plan uses it, naming the device."""
    m = tiny_manifest(tmp_path / "manifest.json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"size": 64, "clip_frames": 8, "clip_stride": 4}}))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train_finetune.json").write_text(json.dumps(
        {"train_clips_per_s": 40.0, "device_name": "cpu (x86_64, 1 threads)"}))
    (tmp_path / "runs" / "finetune").mkdir(parents=True)
    (tmp_path / "runs" / "finetune" / "config.json").write_text(json.dumps({
        "data": {"size": 64, "clip_frames": 8}, "model": {"context_frames": 4}, "train": {"batch_size": 32},
        "arch": {"encoder_dim": 128, "encoder_depth": 3, "predictor_dim": 64, "predictor_depth": 2}}))
    rc, out, _ = run_plan(capsys, "--params", str(tmp_path / "params.yaml"), "--manifest", str(m),
                          "--metrics", str(tmp_path / "metrics"), "--runs", str(tmp_path / "runs"))
    line = next(ln for ln in out.splitlines() if ln.startswith("  train finetune"))
    assert rc == 0 and "on cpu (x86_64, 1 threads) (this workspace's last train@finetune: 40.0 clips/s)" in line
    assert "not measured" in next(ln for ln in out.splitlines() if ln.startswith("  train scratch"))


def test_plan_for_a_source_whose_folders_are_not_here(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--surgvu plans without the data, so examples/surgvu-vitl.yaml's folders need not exist."""
    rc, out, err = run_plan(capsys, "--params", str(REPO_ROOT / "examples" / "surgvu-vitl.yaml"), "--surgvu",
                            "--metrics", str(tmp_path / "none"))
    assert rc == 0 and "280 usable videos in 155 cases, 840.0 h" in out and "h264 store" in out


def test_plan_for_surgvu_at_vitl_settings(capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = run_plan(capsys, "--surgvu", "--set", "data.size=256", "--set", "data.clip_frames=16",
                          "--set", "model.context_frames=8", "--set", "weights.model=facebook/vjepa2-vitl-fpc64-256",
                          "--set", "decode.store=h264", "--set", "model.predictor_dim=384",
                          "--set", "model.predictor_depth=12", "--set", "model.predictor_heads=12")
    assert rc == 0
    assert "280 usable videos in 155 cases, 840.0 h" in out
    assert "3,02" in out.split("clips (")[0]                                       # ~3 M clips at stride 4
    assert "2.38 TB" in out                                                       # raw uint8 at 256 px, 4 fps
    assert "OVER BUDGET: encoder runs on the fly" in out                           # ViT-L feature cache, TBs
    assert "on one NVIDIA H200" in out and "43.5-45 clips/s measured" in out
    assert "evaluate frozen: not measured" in out and "GPU-hours" in out


def test_cost_only_where_a_price_names_the_measured_gpu(capsys: pytest.CaptureFixture) -> None:
    vitl = ["--surgvu", "--set", "data.size=256", "--set", "data.clip_frames=16", "--set", "model.context_frames=8",
            "--set", "weights.model=facebook/vjepa2-vitl-fpc64-256", "--set", "model.predictor_dim=384",
            "--set", "model.predictor_depth=12", "--set", "model.predictor_heads=12"]
    prices = 'evaluate.gpu_prices={"NVIDIA H200": 2.0, "NVIDIA GeForce RTX 3090": 0.5}'
    _, out, _ = run_plan(capsys, *vitl, "--set", prices)
    assert "cost at evaluate.gpu_prices['NVIDIA H200'] = 2 USD per GPU-hour" in out
    assert "cost at evaluate.gpu_prices['NVIDIA GeForce RTX 3090']: n/a" in out
    _, out, _ = run_plan(capsys, *vitl)                                          # the default prices name no H200
    assert "add `NVIDIA H200: <USD per GPU-hour>` to evaluate.gpu_prices" in out


def test_surgvu_manifest_has_surgvus_shape() -> None:
    m = surgvu_manifest()
    assert len(m.videos) == SURGVU["videos"] and len({v.case for v in m.videos}) == SURGVU["cases"]
    assert sum(v.duration_s for v in m.videos) == pytest.approx(840 * 3600)
    assert {(v.width, v.height, v.fps) for v in m.videos} == {(1280, 720, 60.0)}


def test_plan_without_a_manifest_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "folder", "root": str(tmp_path)}}))
    rc, _, err = run_plan(capsys, "--params", str(tmp_path / "params.yaml"), "--manifest", str(tmp_path / "none.json"))
    assert rc == 2 and "run the ingest stage first" in err and "--surgvu" in err


def test_plan_cli_runs_as_a_module() -> None:
    res = subprocess.run([sys.executable, "-m", "tasks.plan", "--surgvu"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and "840.0 h" in res.stdout, res.stderr


# ------------------------------------------------------------------------------------------ sizes

def test_size_formulas() -> None:
    assert clip_count(120, 8, 4) == 29 and clip_count(7, 8, 4) == 0 and clip_count(8, 8, 4) == 1
    assert feature_cache_bytes(10, 1024, 1024, 1024, "float16") == 10 * 2048 * 1024 * 2
    assert 300e6 < vit_params(1024, 24) < 310e6                                   # ViT-L: ~304 M parameters
    assert h264_frame_bytes(256, 26, 8) == pytest.approx(h264_frame_bytes(256, 20, 8) / 2)
    assert h264_frame_bytes(256, 20, 8) < 256 * 256 * 3 / 20                      # the store's size target


def test_counts_follow_the_clip_builder(tmp_path: Path) -> None:
    from surgwm.data.clips import build_clips

    m = Manifest.model_validate_json(tiny_manifest(tmp_path / "m.json").read_text())
    p = parse_params({"data": {"size": 64, "clip_frames": 8, "clip_stride": 4}})
    decoded = m.model_copy(update={"videos": [v.model_copy(update={"frames": round((v.duration_s or 0) * 4)})
                                              for v in m.videos]})
    assert count(m, p).clips == len(build_clips(decoded, 8, 4, 4.0))


@pytest.mark.parametrize("value", [0, -1, "lots"])
def test_budget_param_is_validated(value) -> None:
    with pytest.raises(ParamsError, match="storage.budget_gb"):
        parse_params({"storage": {"budget_gb": value}})


# ------------------------------------------------------------------------------------------ feature cache budget

def test_feature_cache_over_budget_runs_the_encoder_on_the_fly(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    inputs = train_inputs(tmp_path / "inputs")
    params = parse_params({**tiny_raw(epochs=1), "storage": {"budget_gb": 1e-9}})
    metrics = loop.train("frozen", params, out_dir=tmp_path / "run", metrics_dir=tmp_path / "metrics",
                         features_dir=tmp_path / "features", progress=False, **inputs)
    assert metrics["feature_cache"] == "off: over storage.budget_gb"
    written = json.loads((tmp_path / "metrics" / "train_frozen.json").read_text())
    assert written["feature_cache"] == metrics["feature_cache"]
    assert not (tmp_path / "features").exists()                                  # nothing written
    assert "feature cache off" in caplog.text and "storage.budget_gb (1e-09 GB)" in caplog.text
    assert "runs on the fly" in caplog.text


def test_feature_cache_is_float16_by_default(tmp_path: Path) -> None:
    import numpy as np

    inputs = train_inputs(tmp_path / "inputs")
    metrics = loop.train("frozen", parse_params(tiny_raw(epochs=1)), out_dir=tmp_path / "run",
                         metrics_dir=tmp_path / "metrics", features_dir=tmp_path / "features", progress=False, **inputs)
    assert metrics["feature_cache"] == "cached"
    (key,) = (tmp_path / "features").iterdir()
    assert np.load(key / "context.npy", mmap_mode="r").dtype == np.float16
