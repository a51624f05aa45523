"""The decode stage writing the h264 store (decode.store: h264): real ffmpeg + x264 on generated videos, the CLI,
a SIGKILL mid-write, the storage budget, and `dvc repro decode` in a temp repo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_decode import entry, make_video, write

import surgwm.data.decode as dec
import tasks.decode as decode_stage
from surgwm.data.clips import ClipCache, build_clips, open_clips
from surgwm.data.store import StoreClips, StoreError
from surgwm.params import REPO_ROOT, Params, parse_params
from surgwm.sizes import BudgetError, decode_cache_bytes


def params(store: str = "h264", size: int = 64, fps: float = 4, workers: int = 2, chunk: int = 8,
           budget: float = 200, **decode) -> Params:
    return parse_params({"data": {"fps": fps, "size": size, "clip_frames": 8, "clip_stride": 4},
                         "decode": {"workers": workers, "threads": 1, "chunk_frames": chunk, "store": store, **decode},
                         "storage": {"budget_gb": budget}})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory):
    """One manifest of two videos decoded into an npy cache and an h264 store."""
    tmp = tmp_path_factory.mktemp("both")
    vids = [entry(make_video(tmp / "a.mp4", 6, "320x240"), "a"),
            entry(make_video(tmp / "b.mp4", 5, "160x120", src="testsrc"), "b")]
    m = write(tmp, vids)
    return tmp, m, dec.decode(params("npy"), m, tmp / "npy"), dec.decode(params("h264"), m, tmp / "h264")


def test_store_files_and_frame_counts_match_npy(both) -> None:
    tmp, _, raw, st = both
    assert [v.frames for v in st.videos] == [v.frames for v in raw.videos] == [24, 20]
    assert sorted(p.name for p in (tmp / "h264").iterdir()) == ["a.h264", "a.json", "b.h264", "b.json",
                                                                 "manifest.json", "store.json"]
    side = json.loads((tmp / "h264" / "a.json").read_text())
    assert side["store"] == "h264" and len(side["packet_bytes"]) == 24 and side["gop"] == 8
    assert sum(side["packet_bytes"]) == (tmp / "h264" / "a.h264").stat().st_size
    assert side["decode_key"] != json.loads((tmp / "npy" / "a.json").read_text())["decode_key"]


def test_reader_gives_the_npy_frames_in_the_same_order(both) -> None:
    tmp, _, raw, st = both
    npy, h264 = open_clips(tmp / "npy", 8), open_clips(tmp / "h264", 8)
    assert isinstance(npy, ClipCache) and isinstance(h264, StoreClips)
    clips = build_clips(st, 8, 4, 4.0)
    assert clips == build_clips(raw, 8, 4, 4.0)
    for c in clips:
        a, b = npy.read(c), h264.read(c)                                        # (T, S, S, 3) each
        assert a.shape == b.shape == (8, 64, 64, 3) and b.dtype == np.uint8
        assert psnr(a, b) > 30, c
        for i in range(8):                                                      # frame i matches frame i best
            assert int(np.argmax([psnr(a[j], b[i]) for j in range(8)])) == i, (c, i)


def test_rerun_skips_and_changes_reencode(both, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp, m, _, _ = both
    cache = tmp / "rerun"
    shutil.copytree(tmp / "h264", cache)
    runs: list[str] = []
    real = dec._stream_frames
    monkeypatch.setattr(dec, "_stream_frames", lambda e, p, t: runs.append(e.video_id) or real(e, p, t))
    st: dict[str, str] = {}
    dec.decode(params("h264"), m, cache, statuses=st)
    assert runs == [] and st == {"a": "cached", "b": "cached"}
    dec.decode(params("h264", crf=30), m, cache)                                # a store param: re-encode
    assert sorted(runs) == ["a", "b"]
    runs.clear()
    dec.decode(params("npy"), m, cache)                                          # back to npy: no store left
    assert sorted(runs) == ["a", "b"]
    assert sorted(p.name for p in cache.iterdir()) == ["a.json", "a.npy", "b.json", "b.npy", "manifest.json"]
    assert isinstance(open_clips(cache, 8), ClipCache)


def test_damaged_store_file_is_redone_not_read(both, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp, m, _, _ = both
    cache = tmp / "damaged"
    shutil.copytree(tmp / "h264", cache)
    with open(cache / "b.h264", "r+b") as f:
        f.truncate(100)
    with pytest.raises(StoreError, match="b.h264"):
        open_clips(cache, 8).read(build_clips(dec.read_manifest(cache / "manifest.json"), 8, 4, 4.0)[-1])
    runs: list[str] = []
    real = dec._stream_frames
    monkeypatch.setattr(dec, "_stream_frames", lambda e, p, t: runs.append(e.video_id) or real(e, p, t))
    dec.decode(params("h264"), m, cache)
    assert runs == ["b"]
    assert (cache / "b.h264").read_bytes() == (tmp / "h264" / "b.h264").read_bytes()   # reproducible bytes


def test_killed_store_decode_resumes_and_nothing_half_written_is_read(tmp_path: Path) -> None:
    """SIGKILL the CLI while it writes the store: every data file present is complete (a temp name until then),
    the reader refuses the unfinished video, and the rerun gives exactly the bytes of a clean run."""
    vids = [entry(make_video(tmp_path / f"k{i}.mp4", 12, "320x240"), f"k{i}") for i in range(3)]
    m, cache = write(tmp_path, vids), tmp_path / "cache"
    raw = {"data": {"fps": 30, "size": 64}, "decode": {"workers": 1, "threads": 1, "chunk_frames": 1, "store": "h264"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "tasks.decode", "--params", str(tmp_path / "params.yaml"), "--manifest", str(m),
           "--cache", str(cache), "--progress", str(tmp_path / "progress.json")]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, tmp_files = time.monotonic() + 60, []
    while time.monotonic() < deadline and proc.poll() is None:
        tmp_files = [p for p in cache.glob(".*.h264.tmp*") if p.exists() and p.stat().st_size > 2000] \
            if cache.is_dir() else []
        if tmp_files and (cache / "k0.json").exists():                          # one video done, one mid-write
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)                                         # the CLI and its ffmpeg
    proc.wait()
    assert tmp_files and any(p.exists() for p in tmp_files), "decode finished before it could be killed"
    assert not (cache / "manifest.json").exists()
    for data in cache.glob("*.h264"):                                           # renamed into place = complete
        side = json.loads((cache / f"{data.stem}.json").read_text())
        assert sum(side["packet_bytes"]) == data.stat().st_size
    unfinished = tmp_files[0].name.split(".")[1]                                # .k1.h264.tmp123 -> k1
    with pytest.raises(StoreError, match=unfinished):
        StoreClips(cache, 8).read_frames(unfinished, 0, 8)

    p = parse_params(raw)
    out = dec.decode(p, m, cache)
    clean = dec.decode(p, m, tmp_path / "clean")
    assert not list(cache.glob(".*"))
    assert [v.frames for v in out.videos] == [v.frames for v in clean.videos] == [360] * 3
    for v in vids:
        assert (cache / f"{v.video_id}.h264").read_bytes() == (tmp_path / "clean" / f"{v.video_id}.h264").read_bytes()


# ------------------------------------------------------------------ storage budget

def test_budget_refusal_before_any_write(both, capsys: pytest.CaptureFixture) -> None:
    tmp, m, _, _ = both
    cache = tmp / "refused"
    with pytest.raises(BudgetError) as err:
        dec.decode(params("npy", budget=1e-4), m, cache)                        # 100 kB; the npy cache is ~1 MB
    text = str(err.value)
    for words in ("the decode cache needs an estimated", "storage.budget_gb (0.0001 GB)", "decode.store: h264",
                  "data.size (now 64", "data.fps"):
        assert words in text, text
    assert not cache.exists()
    (tmp / "params.yaml").write_text(yaml.safe_dump({"data": {"size": 64}, "storage": {"budget_gb": 1e-5}}))
    rc = decode_stage.main(["--params", str(tmp / "params.yaml"), "--manifest", str(m), "--cache", str(cache),
                            "--progress", str(tmp / "p.json")])
    assert rc == 2 and "storage.budget_gb" in capsys.readouterr().err and not cache.exists()


def test_npy_estimate_is_the_real_size(both) -> None:
    tmp, _, raw, _ = both
    have = sum((tmp / "npy" / f"{v.video_id}.npy").stat().st_size for v in raw.videos)
    est = decode_cache_bytes(params("npy"), [v.duration_s for v in raw.videos])
    side = sum((tmp / "npy" / f"{v.video_id}.json").stat().st_size for v in raw.videos)
    assert have <= est <= have + side + 1000


def test_dvc_repro_decode_refuses_over_budget(tmp_path: Path) -> None:
    """The real stage under `dvc repro` in a temp repo: fails before it writes, naming the key."""
    from dvc_repo import dvc, git

    proj = tmp_path / "proj"
    proj.mkdir()
    vid = make_video(tmp_path / "v.mp4", 3, "160x120")
    (proj / "data" / "ingest").mkdir(parents=True)
    write(proj / "data", [entry(vid, "v")])
    for sub in ("surgwm", "tasks", "models"):
        shutil.copytree(REPO_ROOT / sub, proj / sub, ignore=shutil.ignore_patterns("__pycache__"))
    (proj / "params.yaml").write_text(yaml.safe_dump({"data": {"size": 64}, "decode": {"store": "h264"},
                                                      "storage": {"budget_gb": 1e-6}}))
    (proj / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"decode": {
        "cmd": f"{sys.executable} -m tasks.decode", "deps": ["surgwm", "tasks/decode.py", "data/ingest/manifest.json"],
        "params": ["decode.store", "storage.budget_gb"], "outs": [{"data/cache": {"persist": True}}]}}}))
    git(proj, "init", "-q")
    dvc(proj, "init", "-q")
    text = dvc(proj, "repro", "decode", check=False)
    assert "failed to reproduce 'decode'" in text
    assert "storage.budget_gb (1e-06 GB)" in text and "decode.crf" in text
    assert not (proj / "data" / "cache").exists()
