"""Benchmark the h264 clip store against the raw .npy cache ON THE SAME FRAMES: size, PSNR, random clip reads
(in-process and through torch DataLoader workers), decode-stage CPU, and writer memory at two video lengths.

    .venv/bin/python bench/clip_store.py [--seconds 60] [--reads-s 4] [--long-factor 4] [--save]

Content (generated once into bench/out/):
  surgical   1280x720 at 30 fps from surgwm/data/synthetic.py's renderer (tissue texture, vessels, instruments,
             camera drift) plus Gaussian sensor noise (sigma 5 per channel, new every frame), H.264 at 15 Mbit/s
  testsrc2   ffmpeg's testsrc2 at 720p30 with strong temporal grain (bench/decode.py's video): the worst case
Both are decoded by the decode stage itself (surgwm/data/decode.py, in a child process) at data.fps 4,
data.size 256, once with decode.store npy and once with h264 (crf/gop from the defaults), and compared frame by
frame. Reads: random 16-frame clips, starts uniform over every frame (not only clip_stride multiples).
Rates are given per wall second AND per CPU second of the reading processes: this box has 2 cores shared with
other jobs, so wall rates undercount what a core does; CPU rates are the per-core figure.
--save writes the CPU figures the plan uses (bench/results/clip_store_cpu.json).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from decode import PeakRss, generate as testsrc_video, loop, probe_entry, run_child  # noqa: E402  bench/decode.py
from surgwm.data.clips import Clip, open_clips  # noqa: E402
from surgwm.data.decode import decode  # noqa: E402
from surgwm.data.ffmpeg import ffmpeg_exe  # noqa: E402
from surgwm.data.manifest import Manifest, write_manifest  # noqa: E402
from surgwm.data.store import StoreWriter  # noqa: E402
from surgwm.params import parse_params  # noqa: E402

OUT = REPO / "bench" / "out"
RESULTS = REPO / "bench" / "results" / "clip_store_cpu.json"
FPS, SIZE, CLIP = 4, 256, 16


def surgical_video(path: Path, seconds: int, noise: float = 5.0) -> Path:
    """Surgical-like 720p30: the synthetic renderer at 1280x720 plus per-frame sensor noise, 15 Mbit/s H.264."""
    if path.exists():
        return path
    from surgwm.data.synthetic import plan_case, render_case

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.mp4")
    cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "1280x720",
           "-framerate", "30", "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "15M", "-maxrate", "15M",
           "-bufsize", "30M", "-g", "60", "-pix_fmt", "yuv420p", str(tmp)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    rng = np.random.default_rng(0)
    for frame in render_case(plan_case(0, 3, float(seconds), 16 / 9), 1280, 720, 30.0):   # (720, 1280, 3)
        grain = rng.standard_normal(frame.shape, dtype=np.float32) * noise
        proc.stdin.write(np.clip(frame + grain, 0, 255).astype(np.uint8).tobytes())
    proc.stdin.close()
    if proc.wait():
        raise SystemExit(f"ffmpeg failed writing {tmp}")
    tmp.rename(path)
    return path


def decode_params(store: str):
    return parse_params({"data": {"fps": FPS, "size": SIZE, "clip_frames": CLIP},
                         "decode": {"workers": 1, "threads": 2, "chunk_frames": 32, "store": store}})


def child(work: Path, store: str, sample: bool) -> None:
    """In the measured process: one decode-stage run into work/<store>, CPU split and (sampling) peak RSS."""
    peak = PeakRss() if sample else None
    out = decode(decode_params(store), work / "manifest.json", work / store)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    info = {"frames": out.videos[0].frames, "error": out.videos[0].error,
            "cpu_python_s": me.ru_utime + me.ru_stime, "cpu_ffmpeg_s": kids.ru_utime + kids.ru_stime}
    if peak:
        peak.stop()
        info.update(rss_python_mb=peak.python / 1024, rss_ffmpeg_mb=peak.ffmpeg / 1024, rss_total_mb=peak.total / 1024)
    print(json.dumps(info))


def run_decode(video: Path, work: Path, store: str, sample: bool = False) -> tuple[float, float, dict]:
    """(cpu s, wall s, child info) of a fresh decode-stage process; its cache folder is emptied first."""
    import shutil

    shutil.rmtree(work / store, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    write_manifest(Manifest(source="folder", root=str(video.parent), videos=[probe_entry(video, "bench")]),
                   work / "manifest.json")
    cmd = [sys.executable, __file__, "--child", str(work), "--store", store] + (["--sample"] if sample else [])
    cpu, wall, out = run_child(cmd)
    info = json.loads(out.strip().splitlines()[-1])
    if info["error"]:
        raise SystemExit(f"decode failed: {info['error']}")
    return cpu, wall, info


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name.startswith("bench"))


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of (N, S, S, 3) uint8 arrays."""
    mse = ((a.astype(np.float32) - b.astype(np.float32)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def clip(start: int) -> Clip:
    return Clip("bench", "bench", int(start), -1, -1, 0)


def reads(reader, n_frames: int, seconds: float, seed: int = 0) -> tuple[float, float, int]:
    """(clips per wall s, clips per CPU s, clips) of random 16-frame reads in this process."""
    rng = np.random.default_rng(seed)
    n, w0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < seconds:
        for s in rng.integers(0, n_frames - CLIP + 1, 16):
            x = reader.read(clip(s))                                   # (16, 256, 256, 3)
            n += 1
    assert x.shape == (CLIP, SIZE, SIZE, 3)
    return n / (time.perf_counter() - w0), n / (time.process_time() - c0), n


def loader_reads(reader, n_frames: int, workers: int, clips: int, batch: int = 16) -> tuple[float, float]:
    """(clips per wall s, clips per CPU s of workers + main) through a torch DataLoader with `workers` workers."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    starts = np.random.default_rng(workers).integers(0, n_frames - CLIP + 1, clips)

    class Clips(Dataset):
        def __len__(self) -> int:
            return len(starts)

        def __getitem__(self, i: int):
            return torch.from_numpy(reader.read(clip(starts[i])))      # (T, S, S, 3) uint8

    def kids() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    loader = DataLoader(Clips(), batch_size=batch, num_workers=workers, shuffle=False)
    n, w0, c0, k0 = 0, time.perf_counter(), time.process_time(), kids()
    for b in loader:                                                   # (B, T, S, S, 3)
        n += b.shape[0]
    del loader
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0 + kids() - k0
    return n / wall, n / cpu


def image_codec(frames: np.ndarray, fmt: str, **kw) -> tuple[int, np.ndarray, float]:
    """(bytes, decoded frames, frames decoded per CPU-second) of one image per frame with Pillow."""
    from PIL import Image

    blobs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, fmt, **kw)
        blobs.append(buf.getvalue())
    c0 = time.process_time()
    out = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])   # (N, S, S, 3)
    return sum(map(len, blobs)), out, len(frames) / (time.process_time() - c0)


def alternatives(frames: np.ndarray, reads_s: float) -> None:
    """The candidates the store was chosen from, on the same frames: per-frame images vs H.264 settings."""
    import tempfile

    import av
    from av.video.reformatter import VideoReformatter

    from surgwm.data.store import StoreClips

    raw = frames.nbytes
    print(f"{'candidate (surgical frames)':<34} {'ratio':>6} {'PSNR mean':>9} {'min':>6} {'clips per CPU-s':>15}")
    for name, fmt, kw in (("JPEG q90 4:2:0 (Pillow)", "JPEG", {"quality": 90}),
                          ("JPEG q95 4:4:4 (Pillow)", "JPEG", {"quality": 95, "subsampling": 0}),
                          ("WebP q90 (Pillow)", "WEBP", {"quality": 90}),
                          ("WebP q95 (Pillow)", "WEBP", {"quality": 95})):
        size, out, fps = image_codec(frames, fmt, **kw)
        q = psnr(frames, out)
        print(f"{name:<34} {raw / size:>5.1f}x {q.mean():>9.2f} {q.min():>6.2f} {fps / CLIP:>15.1f}")
    rf = VideoReformatter()
    back = np.stack([rf.reformat(rf.reformat(av.VideoFrame.from_ndarray(f, format="rgb24"), format="yuv420p"),
                                 format="rgb24").to_ndarray() for f in frames])
    print(f"{'4:2:0 conversion alone (ceiling)':<34} {'-':>6} {psnr(frames, back).mean():>9.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for crf, gop in ((18, 8), (20, 8), (20, 16), (23, 8)):
            folder = Path(tmp) / f"{crf}_{gop}"
            folder.mkdir()
            with open(folder / "bench.h264", "wb") as f:
                w = StoreWriter(f, SIZE, crf, gop, FPS)
                w.write(frames)
                w.close()
            (folder / "bench.json").write_text(json.dumps({"frames": len(frames), "size": SIZE, "store": "h264",
                                                       "gop": gop, "crf": crf, "packet_bytes": w.packet_bytes}))
            r = StoreClips(folder, CLIP)
            q = psnr(frames, r.read_frames("bench", 0, len(frames)))
            _, cpu, _ = reads(r, len(frames), reads_s / 2)
            tag = " (default)" if (crf, gop) == (20, 8) else ""
            print(f"{f'h264 store crf {crf} gop {gop}{tag}':<34} {raw / sum(w.packet_bytes):>5.1f}x {q.mean():>9.2f} "
                  f"{q.min():>6.2f} {cpu:>15.1f}")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60, help="length of each generated video")
    ap.add_argument("--reads-s", type=float, default=4.0, help="seconds of in-process random reads per store")
    ap.add_argument("--loader-clips", type=int, default=320, help="clips read through each DataLoader setting")
    ap.add_argument("--long-factor", type=int, default=4, help="memory check: also the surgical video looped N times")
    ap.add_argument("--save", action="store_true", help=f"write the CPU figures the plan uses to {RESULTS}")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--sample", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.store, args.sample)

    import torch

    torch.set_num_threads(1)
    p = decode_params("h264").decode
    print(f"box: {os.cpu_count()} CPU cores (shared with other jobs: wall rates vary, CPU-second rates much less); "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"frames: data.fps {FPS}, data.size {SIZE}; clips of {CLIP} frames; h264 store crf {p.crf}, gop {p.gop}\n")
    videos = {"surgical": surgical_video(OUT / f"surgical_720p30_{args.seconds}s.mp4", args.seconds),
              "testsrc2": testsrc_video(OUT / f"bench_720p30_{args.seconds}s.mp4", args.seconds)}
    figures: dict = {}
    print(f"{'content':<10} {'frames':>6} {'raw .npy':>10} {'h264':>9} {'ratio':>6} {'PSNR mean':>9} {'min':>6}"
          f" {'key B/px':>8} {'P B/px':>7} | decode CPU s: npy  h264")
    for name, video in videos.items():
        work = OUT / f"store_{name}"
        cn, _, _ = run_decode(video, work, "npy")
        ch, _, _ = run_decode(video, work, "h264")
        raw_r, st_r = open_clips(work / "npy", CLIP), open_clips(work / "h264", CLIP)
        n = raw_r.num_frames("bench")
        raw = raw_r.read(clip(0), n)                                   # (N, S, S, 3)
        got = st_r.read_frames("bench", 0, n)                          # (N, S, S, 3)
        q = psnr(raw, got)
        side = json.loads((work / "h264" / "bench.json").read_text())
        pk = np.array(side["packet_bytes"])
        key, delta = pk[:: side["gop"]].mean() / SIZE**2, np.delete(pk, np.s_[:: side["gop"]]).mean() / SIZE**2
        rb, sb = folder_bytes(work / "npy"), folder_bytes(work / "h264")
        print(f"{name:<10} {n:>6} {rb / 1e6:>8.1f}MB {sb / 1e6:>7.2f}MB {rb / sb:>5.1f}x {q.mean():>8.2f}  "
              f"{q.min():>6.2f} {key:>8.4f} {delta:>7.4f} | {cn:>16.2f} {ch:5.2f}")
        figures[name] = {"frames": n, "raw_bytes": rb, "store_bytes": sb, "ratio": rb / sb,
                         "psnr_mean": float(q.mean()), "psnr_min": float(q.min()),
                         "key_bytes_per_px": float(key), "delta_bytes_per_px": float(delta),
                         "decode_cpu_s_npy": cn, "decode_cpu_s_h264": ch,
                         "source_frames": round(probe_entry(video, "bench").duration_s * 30)}
    print("(targets: ratio >= 20x with mean PSNR >= 38 dB on the surgical content; testsrc2 is the worst case)")
    raw = open_clips(OUT / "store_surgical" / "npy", CLIP)
    frames = raw.read(clip(0), raw.num_frames("bench"))                # (N, S, S, 3)
    c0 = time.process_time()
    enc = StoreWriter(io.BytesIO(), SIZE, p.crf, p.gop, FPS)
    enc.write(frames)
    enc.close()
    figures["encode_frames_per_cpu_s"] = len(frames) / (time.process_time() - c0)
    print(f"store encoding alone (x264 in-process, one thread): {figures['encode_frames_per_cpu_s']:.0f} frames per "
          "CPU-second\n")
    alternatives(frames, args.reads_s)

    work = OUT / "store_surgical"
    readers = {"npy": open_clips(work / "npy", CLIP), "h264": open_clips(work / "h264", CLIP)}
    n = readers["npy"].num_frames("bench")
    print(f"random {CLIP}-frame clip reads at {SIZE}^2 over {n} frames, one process (box load "
          f"{os.getloadavg()[0]:.1f}):")
    for store, r in readers.items():
        wall, cpu, k = reads(r, n, args.reads_s)
        figures.setdefault("reads", {})[store] = {"clips_per_s": wall, "clips_per_cpu_s": cpu}
        print(f"  {store:<5} {wall:8.1f} clips/s wall   {cpu:8.1f} clips per CPU-second  ({k} clips)")
    print("  (target: h264 >= 60 clips per CPU core per second)\n")
    print(f"through torch DataLoader (batch 16, {args.loader_clips} clips; the box has 2 cores, shared):")
    for store, r in readers.items():
        for workers in (1, 2):
            wall, cpu = loader_reads(r, n, workers, args.loader_clips)
            figures.setdefault("loader", {})[f"{store}_{workers}"] = {"clips_per_s": wall, "clips_per_cpu_s": cpu}
            print(f"  {store:<5} {workers} worker{'s' if workers > 1 else ' '}  {wall:8.1f} clips/s wall   "
                  f"{cpu:8.1f} clips per CPU-second (workers + main)")
    print()

    print("decode-stage peak RSS writing the h264 store (python + its ffmpeg, sampled every 20 ms):")
    surg = videos["surgical"]
    for tag, path in (("short", surg), ("long", loop(surg, args.long_factor))):
        _, _, m = run_decode(path, OUT / f"store_mem_{tag}", "h264", sample=True)
        d = probe_entry(path, "bench").duration_s
        figures.setdefault("rss", {})[tag] = {"seconds": d, **m}
        print(f"  {d:6.0f} s video ({m['frames']:5d} frames): python {m['rss_python_mb']:6.1f} MB + ffmpeg "
              f"{m['rss_ffmpeg_mb']:6.1f} MB; together at once {m['rss_total_mb']:6.1f} MB")
    print("  (target: flat in video length)")

    if args.save:
        s = figures["surgical"]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({
            "provenance": {"command": "bench/clip_store.py --save", "date": datetime.date.today().isoformat(),
                           "machine": f"{os.cpu_count()}-core shared CPU box ({platform.machine()})",
                           "content": "surgical-like 1280x720 30 fps, 15 Mbit/s H.264 (bench/clip_store.py)"},
            "data": {"fps": FPS, "size": SIZE, "clip_frames": CLIP, "crf": p.crf, "gop": p.gop},
            "decode_source_frames_per_cpu_s": s["source_frames"] / s["decode_cpu_s_npy"],
            "store_encode_frames_per_cpu_s": figures["encode_frames_per_cpu_s"],
            "store_ratio": s["ratio"], "store_psnr_mean": s["psnr_mean"],
            "store_key_bytes_per_px": s["key_bytes_per_px"], "store_delta_bytes_per_px": s["delta_bytes_per_px"],
            "reads_clips_per_cpu_s": {k: v["clips_per_cpu_s"] for k, v in figures["reads"].items()},
        }, indent=1) + "\n")
        print(f"\nsaved {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
