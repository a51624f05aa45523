"""Benchmark the decode stage against plain ffmpeg, cached-clip reads, and decode memory at two lengths.

    .venv/bin/python bench/decode.py [--video PATH] [--seconds 60] [--long-factor 4] [--threads 2] [--repeat 2]
                                     [--store npy|h264]

Without --video it generates a 720p30 H.264 test video (testsrc2 + temporal noise, ~15 Mbit/s) into bench/out/.
The long video is the same file looped with stream copy, so only its length differs. --store h264 measures the
decode stage writing the compressed clip store instead of raw .npy (bench/clip_store.py compares the two).
CPU = user+sys of child processes (getrusage RUSAGE_CHILDREN deltas), measured side by side and alternated;
timing noise on shared 2-core machines is large, CPU time much less so.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from surgwm.data.decode import decode  # noqa: E402
from surgwm.io import file_sha256
from surgwm.data.ffmpeg import ffmpeg_exe  # noqa: E402
from surgwm.data.manifest import Manifest, VideoEntry, read_manifest, write_manifest  # noqa: E402
from surgwm.params import parse_params  # noqa: E402

OUT = REPO / "bench" / "out"
FPS, SIZE, CLIP = 4, 256, 16


def generate(path: Path, seconds: int) -> Path:
    """720p30 testsrc2 with temporal noise so x264 cannot compress it to nothing."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.mp4")
    subprocess.run([
        ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=s=1280x720:r=30:d={seconds}",
        "-vf", "noise=alls=14:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "15M",
        "-maxrate", "15M", "-bufsize", "30M", "-g", "60", "-pix_fmt", "yuv420p", str(tmp)], check=True)
    tmp.rename(path)
    return path


def loop(src: Path, times: int) -> Path:
    dst = src.with_name(f"{src.stem}_x{times}.mp4")
    if not dst.exists():
        subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-stream_loop", str(times - 1), "-i", str(src),
                        "-c", "copy", str(dst)], check=True)
    return dst


def probe_entry(path: Path, video_id: str) -> VideoEntry:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        sar = float(s.sample_aspect_ratio) if s.sample_aspect_ratio else 1.0
        return VideoEntry(video_id=video_id, case=video_id, path=str(path), sha256=file_sha256(path),
                          duration_s=c.duration / 1e6, fps=float(s.average_rate), width=s.width, height=s.height,
                          sar=sar)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_child(cmd: list[str]) -> tuple[float, float, str]:
    """(cpu s, wall s, stdout) of one child process tree."""
    c0, t0 = children_cpu(), time.perf_counter()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return children_cpu() - c0, time.perf_counter() - t0, out


STORE = "npy"


def ours(video: Path, threads: int, tag: str, sample: bool = False) -> tuple[float, float, dict]:
    """The decode stage's own code in a fresh process (imports included), cache emptied first."""
    work = OUT / f"run_{tag}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_manifest(Manifest(source="folder", root=str(video.parent), videos=[probe_entry(video, "bench")]),
                   work / "manifest.json")
    cmd = [sys.executable, __file__, "--child", str(work), "--threads", str(threads), "--store", STORE] + \
        (["--sample"] if sample else [])
    cpu, wall, out = run_child(cmd)
    return cpu, wall, json.loads(out.strip().splitlines()[-1])


def reference(video: Path, threads: int) -> tuple[float, float]:
    cpu, wall, _ = run_child([ffmpeg_exe(), "-v", "error", "-nostdin", "-threads", str(threads), "-i", str(video),
                              "-vf", f"fps={FPS},scale={SIZE}:{SIZE}", "-pix_fmt", "rgb24", "-f", "null", "-"])
    return cpu, wall


def _rss_kb(pid: int | str, key: str = "VmRSS") -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children() -> list[str]:
    kids = []
    for task in Path("/proc/self/task").iterdir():     # ffmpeg is spawned from a worker thread
        try:
            kids += (task / "children").read_text().split()
        except OSError:
            pass
    return kids


class PeakRss:
    """Samples VmRSS of this process + its ffmpeg children every 20 ms. ru_maxrss is not usable here:
    Linux carries a parent's RSS at fork() into the child's ru_maxrss across exec."""

    def __init__(self) -> None:
        self.python = self.ffmpeg = self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            me, kids = _rss_kb("self"), sum(_rss_kb(k) for k in _children())
            self.python, self.ffmpeg = max(self.python, me), max(self.ffmpeg, kids)
            self.total = max(self.total, me + kids)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def child(work: Path, threads: int, sample: bool, store: str = "npy") -> None:
    """Runs inside the measured process: decode one video, report CPU split and (if sampling) peak RSS."""
    params = parse_params({"data": {"fps": FPS, "size": SIZE, "clip_frames": CLIP},
                           "decode": {"workers": 1, "threads": threads, "chunk_frames": 32, "store": store}})
    peak = PeakRss() if sample else None           # sampling only in the memory runs: it costs a little CPU
    out = decode(params, work / "manifest.json", work / "cache")
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    info = {"frames": out.videos[0].frames, "error": out.videos[0].error,
            "cpu_python_s": me.ru_utime + me.ru_stime, "cpu_ffmpeg_s": kids.ru_utime + kids.ru_stime}
    if peak:
        peak.stop()
        info.update(rss_python_mb=peak.python / 1024, rss_ffmpeg_mb=peak.ffmpeg / 1024,
                    rss_total_mb=peak.total / 1024, hwm_python_mb=_rss_kb("self", "VmHWM") / 1024)
    print(json.dumps(info))


def clip_throughput(cache_dir: Path, seconds: float = 3.0) -> tuple[float, int]:
    import numpy as np

    from surgwm.data.clips import Clip, open_clips

    cache = open_clips(cache_dir, CLIP)                                  # whichever store the decode wrote
    n = cache.num_frames("bench")
    rng = np.random.default_rng(0)
    reads, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for start in rng.integers(0, n - CLIP + 1, 256):
            clip = cache.read(Clip("bench", "bench", int(start), -1, -1, 0))  # (16, 256, 256, 3)
            reads += 1
    assert clip.shape == (CLIP, SIZE, SIZE, 3)
    return reads / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, help="use this video instead of generating one")
    ap.add_argument("--seconds", type=int, default=60, help="length of the generated video")
    ap.add_argument("--long-factor", type=int, default=4, help="the memory check also decodes the video looped N times")
    ap.add_argument("--threads", type=int, default=2, help="ffmpeg -threads for BOTH sides")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--store", choices=("npy", "h264"), default="npy", help="decode.store of the decode stage")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--sample", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.threads, args.sample, args.store)
    global STORE
    STORE = args.store

    video = args.video.resolve() if args.video else generate(OUT / f"bench_720p30_{args.seconds}s.mp4", args.seconds)
    e = probe_entry(video, "bench")
    print(f"video: {video} ({e.width}x{e.height} @ {e.fps:.2f} fps, {e.duration_s:.1f} s, "
          f"{video.stat().st_size * 8 / e.duration_s / 1e6:.1f} Mbit/s)")
    print(f"decode: fps={FPS} size={SIZE}, decode.store {args.store}, -threads {args.threads} on both sides\n")

    ref_cpu, our_cpu = [], []
    for i in range(args.repeat):                                         # alternate so drift hits both
        rc, rw = reference(video, args.threads)
        oc, ow, info = ours(video, args.threads, "short")
        ref_cpu.append(rc)
        our_cpu.append(oc)
        print(f"run {i + 1}: ffmpeg -f null  cpu {rc:6.2f} s  wall {rw:6.2f} s | decode stage  cpu {oc:6.2f} s "
              f"(python {info['cpu_python_s']:.2f} + ffmpeg {info['cpu_ffmpeg_s']:.2f})  wall {ow:6.2f} s  "
              f"frames {info['frames']}")
    ratio = statistics.median(our_cpu) / statistics.median(ref_cpu)
    print(f"CPU ratio decode stage / ffmpeg null (median of {args.repeat}): {ratio:.3f}  (target <= 1.10)")
    print(f"realtime factor (decode stage, CPU): {e.duration_s / statistics.median(our_cpu):.2f}x per CPU-second\n")

    rate, n = clip_throughput(OUT / "run_short" / "cache")
    print(f"cached clip reads ({args.store}): {rate:,.0f} clips/s ({CLIP} frames at {SIZE}^2, random starts over "
          f"{n} frames) (target >= 1,000 for npy; h264: bench/clip_store.py)\n")

    for tag, path in (("short", video), ("long", loop(video, args.long_factor))):
        _, _, m = ours(path, args.threads, tag, sample=True)
        d = read_manifest(OUT / f"run_{tag}" / "manifest.json").videos[0].duration_s
        print(f"peak RSS, {d:6.0f} s video: python {m['rss_python_mb']:5.1f} MB (VmHWM {m['hwm_python_mb']:.1f})"
              f" + ffmpeg {m['rss_ffmpeg_mb']:5.1f} MB; together at once {m['rss_total_mb']:5.1f} MB"
              f"  ({m['frames']} frames)")
    print("(target: flat in video length, < 300 MB for a one-hour video)")


if __name__ == "__main__":
    main()
