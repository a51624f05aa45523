"""The decode stage against real ffmpeg on tiny videos: counts, geometry, bad inputs, reruns, kills, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

import surgwm.data.decode as dec
import tasks.decode as decode_stage
from surgwm.data.clips import ClipCache, build_clips
from surgwm.data.ffmpeg import ffmpeg_exe
from surgwm.data.manifest import Manifest, VideoEntry, read_manifest, write_manifest
from surgwm.io import file_sha256
from surgwm.params import REPO_ROOT, Params, parse_params

STRIPES = "format=yuv444p,geq=lum='30*floor(X*8/W)':cb=128:cr=128"   # 8 grey bars, level 30*k


def make_video(path: Path, seconds: float = 5, size: str = "160x120", rate: int = 30,
               vf: str | None = None, src: str = "testsrc2", audio: bool = False, extra: tuple[str, ...] = ()) -> Path:
    """A tiny H.264 mp4 from lavfi sources."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i", f"{src}=s={size}:r={rate}:d={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", "-shortest"]
    if vf:
        cmd += ["-vf", vf]
    pix = "yuv444p" if vf and "yuv444p" in vf else "yuv420p"
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-qp", "0" if pix == "yuv444p" else "23",
            "-pix_fmt", pix, *extra, str(path)]
    subprocess.run(cmd, check=True)
    return path


def entry(path: Path, video_id: str, **over) -> VideoEntry:
    """What ingest would record: probe with PyAV; a file that does not probe gets no geometry."""
    fields: dict = {"video_id": video_id, "case": video_id, "path": str(path), "sha256": file_sha256(path)
                    if path.is_file() else None}
    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            fields.update(duration_s=c.duration / 1e6, fps=float(s.average_rate), width=s.width, height=s.height,
                          sar=float(s.sample_aspect_ratio) if s.sample_aspect_ratio else 1.0)
    except (av.FFmpegError, IndexError, OSError):
        pass
    fields.update(over)
    return VideoEntry(**fields)


def write(tmp: Path, videos: list[VideoEntry]) -> Path:
    path = tmp / "ingest" / "manifest.json"
    write_manifest(Manifest(source="folder", root=str(tmp), videos=videos), path)
    return path


def params(fps: float = 4, size: int = 32, clip_frames: int = 8, workers: int = 2, chunk: int = 8) -> Params:
    return parse_params({"data": {"fps": fps, "size": size, "clip_frames": clip_frames, "clip_stride": 4},
                         "decode": {"workers": workers, "threads": 1, "chunk_frames": chunk}})


def by_id(m: Manifest) -> dict[str, VideoEntry]:
    return {v.video_id: v for v in m.videos}


# ------------------------------------------------------------------ pure helpers

def test_npy_header_is_fixed_length_and_standard(tmp_path: Path) -> None:
    for n in (0, 7, 10**9):
        assert len(dec.npy_header((n, 256, 256, 3))) == dec.HEADER_BYTES
    p = tmp_path / "x.npy"
    data = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    p.write_bytes(dec.npy_header(data.shape) + data.tobytes())
    assert np.array_equal(np.load(p, mmap_mode="r"), data)
    assert dec.npy_shape(p) == (2, 4, 4, 3)
    p.write_bytes(dec.npy_header(data.shape) + data.tobytes()[:-1])    # short file: not trusted
    assert dec.npy_shape(p) is None


def test_output_dims_scale_short_display_side() -> None:
    assert dec.output_dims(160, 120, 1.0, 32) == (43, 32)
    assert dec.output_dims(120, 160, 1.0, 32) == (32, 43)
    assert dec.output_dims(160, 90, 4 / 3, 48) == (114, 48)              # display 213.3x90
    assert dec.output_dims(97, 61, 1.0, 32) == (51, 32)
    assert dec.output_dims(720, 480, 8 / 9, 64) == (85, 64)             # NTSC 4:3 stored as 3:2


# ------------------------------------------------------------------ good videos

def test_frames_shape_and_clip_reads(tmp_path: Path) -> None:
    m = write(tmp_path, [entry(make_video(tmp_path / "v.mp4", 5), "v")])
    seen: list[tuple[int, int, str]] = []
    out = dec.decode(params(), m, tmp_path / "cache", on_progress=lambda *a: seen.append(a))
    assert out.videos[0].frames == 20 and out.videos[0].error is None     # 5 s at 30 fps -> 4 fps
    arr = np.load(tmp_path / "cache" / "v.npy", mmap_mode="r")
    assert arr.shape == (20, 32, 32, 3) and arr.dtype == np.uint8 and arr.std() > 10
    assert seen[0] == (0, 1, "") and seen[-1] == (1, 1, "v")
    assert read_manifest(tmp_path / "cache" / "manifest.json") == out
    side = json.loads((tmp_path / "cache" / "v.json").read_text())
    assert side["frames"] == 20 and side["sha256"] == out.videos[0].sha256
    assert out.decode_key == side["decode_key"] == dec.params_key(params())   # what train/evaluate key on
    clips = build_clips(out, 8, 4, 4.0)
    assert [c.start for c in clips] == [0, 4, 8, 12]
    assert np.array_equal(ClipCache(tmp_path / "cache", 8).read(clips[1]), arr[4:12])


def _stripe_index(row: np.ndarray) -> np.ndarray:
    return np.rint(row.astype(float) / 30).astype(int)               # grey level 30*k -> k


@pytest.mark.parametrize("size,sar,out", [("160x90", 4 / 3, 48), ("97x61", 1.0, 32)])
def test_aspect_policy_pixels(tmp_path: Path, size: str, sar: float, out: int) -> None:
    """Bars of known position land where 'short display side -> size, centre crop' puts them."""
    w, h = map(int, size.split("x"))
    vf = STRIPES + (f",setsar={sar}" if sar != 1 else "")
    v = entry(make_video(tmp_path / "s.mp4", 3, size, src="color", vf=vf), "s")
    assert v.sar == pytest.approx(sar)
    res = dec.decode(params(size=out), write(tmp_path, [v]), tmp_path / "cache")
    frame = np.load(tmp_path / "cache" / "s.npy")[0]                  # (S, S, 3)
    assert res.videos[0].frames == 12 and frame.shape == (out, out, 3)
    sw, _ = dec.output_dims(w, h, sar, out)
    x0 = (sw - out) / 2
    cols = np.arange(out) + 0.5 + x0                                  # pixel centres in the scaled frame
    expect = np.floor(cols * 8 / sw).astype(int)
    near_edge = np.abs(cols * 8 / sw - np.rint(cols * 8 / sw)) * sw / 8 < 1.5
    got = _stripe_index(frame[out // 2, :, 0])
    assert np.array_equal(got[~near_edge], expect[~near_edge]), (got, expect)
    if sar != 1:                                                      # ignoring the SAR would crop elsewhere
        sw_bad = dec.output_dims(w, h, 1.0, out)[0]
        wrong = np.floor((np.arange(out) + 0.5 + (sw_bad - out) / 2) * 8 / sw_bad).astype(int)
        assert not np.array_equal(got[~near_edge], wrong[~near_edge])


def test_rotation_metadata_is_ignored(tmp_path: Path) -> None:
    """Dims are computed from the stored size, so ffmpeg must not autorotate: same frames as unrotated."""
    src = make_video(tmp_path / "s.mp4", 3, "160x90", src="color", vf=STRIPES)
    rot = tmp_path / "rot.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-display_rotation:v:0", "90", "-i", str(src), "-c", "copy",
                    str(rot)], check=True)
    out = dec.decode(params(size=32), write(tmp_path, [entry(src, "s"), entry(rot, "rot")]), tmp_path / "cache")
    assert [v.frames for v in out.videos] == [12, 12]
    assert np.array_equal(np.load(tmp_path / "cache" / "s.npy"), np.load(tmp_path / "cache" / "rot.npy"))


# ------------------------------------------------------------------ bad and odd inputs, one decode run

@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, dict[str, VideoEntry]]:
    tmp = tmp_path_factory.mktemp("mixed")
    good = make_video(tmp / "good.mp4", 3, "64x48")
    full = make_video(tmp / "fast.mp4", 4, "64x48", extra=("-movflags", "+faststart"))
    data = good.read_bytes()
    (tmp / "trunc.mp4").write_bytes(data[: len(data) // 2])                     # moov atom at the end: lost
    fdata = full.read_bytes()
    (tmp / "trunc_fast.mp4").write_bytes(fdata[: len(fdata) // 2])              # index intact, data cut
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "text.mp4").write_text("this is not a video\n" * 50)
    odd_dir = tmp / "dir with spaces" / "vidéo ü"
    videos = [
        entry(good, "good"),
        entry(tmp / "trunc.mp4", "trunc", width=64, height=48, duration_s=3.0),  # as ingested before the cut
        entry(tmp / "trunc_fast.mp4", "trunc_fast"),
        entry(tmp / "empty.mp4", "empty"),
        entry(tmp / "text.mp4", "text", width=64, height=48),            # passed ingest, then overwritten
        entry(tmp / "text.mp4", "noprobe"),                               # decode has to probe it itself
        entry(make_video(tmp / "short.mp4", 1, "64x48"), "short"),
        entry(make_video(tmp / "audio.mp4", 3, "64x48", audio=True), "audio"),
        entry(make_video(tmp / "vfr.mp4", 4, "64x48", vf="settb=1/1000,setpts='if(lt(N,60),N/30,2+(N-60)/10)/TB'",
                         extra=("-fps_mode", "vfr")), "vfr"),
        entry(make_video(odd_dir / "clip ñ 1.mp4", 3, "64x48"), "unicode"),
        entry(good, "ingest_failed", error="ingest: no labels for this video"),
        entry(tmp / "gone.mp4", "gone", width=64, height=48),
    ]
    cache = tmp / "cache"
    out = dec.decode(params(), write(tmp, videos), cache)
    return cache, out, by_id(out)


def test_good_videos_still_cached(mixed) -> None:
    cache, out, v = mixed
    assert {e.video_id for e in out.usable()} == {"good", "audio", "vfr", "unicode"}
    assert (v["good"].frames, v["audio"].frames, v["unicode"].frames) == (12, 12, 12)
    for vid in ("good", "audio", "vfr", "unicode"):
        assert np.load(cache / f"{vid}.npy", mmap_mode="r").shape == (v[vid].frames, 32, 32, 3)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        ["manifest.json"] + [f"{i}.{s}" for i in ("good", "audio", "vfr", "unicode") for s in ("npy", "json")])


def test_variable_frame_rate(mixed) -> None:
    _, _, v = mixed
    assert v["vfr"].fps != 30 and v["vfr"].duration_s == pytest.approx(8, abs=0.2)
    assert v["vfr"].frames == 32                                       # 2 s at 30 fps + 6 s at 10 fps, at 4 fps


@pytest.mark.parametrize("vid,words", [
    ("trunc", ["moov atom not found"]),
    ("trunc_fast", ["truncated"]),
    ("empty", ["empty file"]),
    ("noprobe", ["cannot probe", "Invalid data"]),
    ("text", ["ffmpeg exit", "Invalid data"]),
    ("short", ["shorter than one clip", "4 frames", "clip_frames is 8"]),
    ("ingest_failed", ["ingest: no labels"]),
    ("gone", ["file not found"]),
])
def test_bad_input_reason(mixed, vid: str, words: list[str]) -> None:
    cache, _, v = mixed
    reason = v[vid].error
    assert reason and "\n" not in reason and v[vid].frames is None
    for w in words:
        assert w in reason, reason
    if vid != "ingest_failed":
        assert Path(v[vid].path).name in reason
    assert not (cache / f"{vid}.npy").exists() and not (cache / f"{vid}.json").exists()


# ------------------------------------------------------------------ reruns

def test_rerun_skips_then_redecodes_on_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = make_video(tmp_path / "a.mp4", 3, "64x48"), make_video(tmp_path / "b.mp4", 3, "64x48", src="testsrc")
    m, cache = write(tmp_path, [entry(a, "a"), entry(b, "b")]), tmp_path / "cache"
    dec.decode(params(), m, cache)
    runs: list[str] = []
    real = dec._stream_frames
    monkeypatch.setattr(dec, "_stream_frames", lambda e, p, t: runs.append(e.video_id) or real(e, p, t))
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")}

    st: dict[str, str] = {}
    dec.decode(params(), m, cache, statuses=st)
    assert runs == [] and st == {"a": "cached", "b": "cached"}
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")}

    out = dec.decode(params(size=48), m, cache)                       # decode params changed: everything
    assert sorted(runs) == ["a", "b"] and np.load(cache / "a.npy").shape == (12, 48, 48, 3)
    assert out.videos[0].frames == 12

    runs.clear()
    make_video(a, 3, "64x48", src="smptebars")                        # content changed: only that video
    write(tmp_path, [entry(a, "a"), entry(b, "b")])
    dec.decode(params(size=48), m, cache)
    assert runs == ["a"]

    runs.clear()                                                      # a damaged .npy is redone, not read
    with open(cache / "b.npy", "r+b") as f:
        f.truncate(1000)
    write(tmp_path, [entry(b, "b")])                                  # and 'a' left the manifest
    (cache / ".b.npy.tmp999").write_bytes(b"half")
    dec.decode(params(size=48), m, cache)
    assert runs == ["b"] and np.load(cache / "b.npy").shape == (12, 48, 48, 3)
    assert sorted(p.name for p in cache.iterdir()) == ["b.json", "b.npy", "manifest.json"]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:                                         # renamed into place meanwhile
        return -1


def test_killed_decode_recovers(tmp_path: Path) -> None:
    """SIGKILL the CLI mid-write: the temp file it leaves is removed unread and the rerun equals a clean run."""
    vids = [entry(make_video(tmp_path / f"k{i}.mp4", 8, "160x120"), f"k{i}") for i in range(3)]
    m, cache = write(tmp_path, vids), tmp_path / "cache"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"data": {"fps": 30, "size": 64}, "decode": {"workers": 1, "threads": 1, "chunk_frames": 1}}))
    cmd = [sys.executable, "-m", "tasks.decode", "--params", str(tmp_path / "params.yaml"), "--manifest", str(m),
           "--cache", str(cache), "--progress", str(tmp_path / "progress.json")]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, tmp_files, full = time.monotonic() + 30, [], dec.HEADER_BYTES + 240 * 64 * 64 * 3
    while time.monotonic() < deadline and proc.poll() is None:
        sizes = {p: _size(p) for p in cache.glob(".*.tmp*")} if cache.is_dir() else {}
        tmp_files = [p for p, n in sizes.items() if dec.HEADER_BYTES < n < full // 2]    # well before the end
        if tmp_files:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)                               # the CLI and its ffmpeg, mid-chunk
    proc.wait()
    assert tmp_files and any(p.exists() for p in tmp_files), "decode finished before it could be killed"
    assert not (cache / "manifest.json").exists()

    p = params(fps=30, size=64, workers=1, chunk=1)
    out = dec.decode(p, m, cache)
    clean = dec.decode(p, m, tmp_path / "clean")
    assert not list(cache.glob(".*"))
    assert [v.frames for v in out.videos] == [v.frames for v in clean.videos] == [240] * 3
    for v in vids:
        assert np.array_equal(np.load(cache / f"{v.video_id}.npy"), np.load(tmp_path / "clean" / f"{v.video_id}.npy"))
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["total"] == 3 and progress["done"] < 3


# ------------------------------------------------------------------ CLI

def _cli(tmp_path: Path, videos: list[VideoEntry], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"size": 32}}))
    rc = decode_stage.main(["--params", str(tmp_path / "params.yaml"), "--manifest", str(write(tmp_path, videos)),
                   "--cache", str(tmp_path / "cache"), "--progress", str(tmp_path / "p.json")])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_fails_only_when_nothing_is_usable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "bad.mp4").write_text("nope")
    bad = entry(tmp_path / "bad.mp4", "bad")
    rc, out, err = _cli(tmp_path, [bad], capsys)
    assert rc == 1 and "no video could be used" in err and "manifest.json" in err
    assert "bad" in out and "error" in out

    good = entry(make_video(tmp_path / "good.mp4", 3, "64x48"), "good")
    rc, out, err = _cli(tmp_path, [bad, good], capsys)
    assert rc == 0 and "1/2 videos cached" in out
    progress = json.loads((tmp_path / "p.json").read_text())
    assert (progress["done"], progress["total"]) == (2, 2) and progress["current"] in ("good", "bad")
    header = out.splitlines()[0].split()
    assert header == ["video", "duration", "frames", "status"]
