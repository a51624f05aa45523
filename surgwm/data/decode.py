"""DVC stage `decode`: decode every usable video ONCE into a uint8 frame cache, because random clip reads
from a `.npy` via mmap are ~3,000x faster than seeking in the source mp4 (see docs/stack-notes.md).

Frames are sampled at `data.fps` (ffmpeg's `fps` filter, placed before `scale` so only kept frames are
scaled) and made `data.size` x `data.size` RGB by the aspect policy below.

Aspect policy (version ASPECT_POLICY, part of the decode key; the filters live in surgwm/data/geometry.py):
  0. `data.border` crops fixed bands (fractions of height/width, even pixels) first, e.g. SurgVU's banner;
     a zero border adds no filter and no key entry, so default caches keep their bytes and keys;
  1. the display size honours the sample aspect ratio: display width = width * sar, display height = height;
  2. ONE `scale` filter maps the stored frame to exact dims whose SHORT display side is `size` and whose
     long side keeps the display aspect (rounded), so output pixels are square;
  3. a centre `crop` keeps size x size. Nothing is padded or stretched; the long side loses its edges.
Rotation metadata is ignored (-noautorotate): frames keep their stored orientation, never a distorted one.

Cache format, all in `cache_dir` (`decode.store: npy`, the default; `decode.store: h264` writes the compressed
store of surgwm/data/store.py instead, from the same rgb24 stream, with the same sidecar and temp-file rules):
  <video_id>.npy   a standard .npy (v1.0, uint8, C order) of shape (N, size, size, 3) with a fixed
                   128-byte header, so `np.load(path, mmap_mode="r")` works and frames are 64-byte aligned
  <video_id>.json  sidecar {"sha256", "decode_key", "frames", "fps", "size", "aspect_policy"}: a rerun skips
                   a video when sha256 and decode_key match and the .npy has exactly the shape it names
  manifest.json    the ingest manifest with `frames` (cached frame count) and `error` filled per video
Frames stream from ffmpeg's stdout in `decode.chunk_frames` chunks (memory flat in video length) into
`.<video_id>.npy.tmp<pid>`; the header is rewritten with the true N, fsynced and os.replace'd into place,
then the sidecar is written atomically. Before anything is written, the cache's estimated size
(surgwm/sizes.py) is checked against `storage.budget_gb`. A rerun deletes leftover temp files unread, and the cache
files of videos that are no longer in the manifest or no longer decode.

Run: `python -m tasks.decode` (exit 1 only if no video is usable; reasons are in the output manifest).
"""

from __future__ import annotations

import ast
import collections
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from surgwm.data.ffmpeg import ffmpeg_exe
from surgwm.data.geometry import Border, Geometry, apply_geometry, output_dims, plan_geometry  # noqa: F401
from surgwm.data.manifest import Manifest, VideoEntry, read_manifest, write_manifest
from surgwm.data.store import STORE_MARKER, STORE_NAME, STORE_VERSION, SUFFIX as STORE_SUFFIX, StoreWriter, store_spec
from surgwm.io import atomic_write_text, file_sha256
from surgwm.params import Params, resolve_path
from surgwm.paths import CACHE, MANIFEST, RUNTIME
from surgwm.sizes import check_budget, decode_cache_bytes, decode_knobs

log = logging.getLogger(__name__)

ASPECT_POLICY = 1                 # bump when the frame geometry changes: every cached video re-decodes
HEADER_BYTES = 128                # fixed .npy header length (magic + version + len + dict + padding)
MIN_DURATION_RATIO = 0.9          # fewer frames than this share of duration_s * fps = truncated stream
PROGRESS = RUNTIME / "progress" / "decode.json"
ProgressFn = Callable[[int, int, str], None]
# (videos to decode as (index, entry), params, cache dir, callback per finished video) -> None
Mapper = Callable[[list[tuple[int, "VideoEntry"]], "Params", Path, Callable[[int, "Result"], None]], None]


# ---------------------------------------------------------------- .npy with a header rewritten at the end

def npy_header(shape: tuple[int, ...]) -> bytes:
    """A v1.0 header padded to HEADER_BYTES whatever N is, so it can be rewritten in place after streaming."""
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (tuple(shape),)
    pad = HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte .npy header")
    body = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


def npy_shape(path: Path) -> tuple[int, ...] | None:
    """Shape of a complete uint8 .npy (header parsed, file size checked), None if missing or damaged."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
            size = os.fstat(f.fileno()).st_size
        if len(head) < 10 or head[:8] != b"\x93NUMPY\x01\x00":
            return None
        hlen = int.from_bytes(head[8:10], "little")
        meta = ast.literal_eval(head[10:10 + hlen].decode("latin1"))
        shape = tuple(meta["shape"])
        if meta["descr"] != "|u1" or meta["fortran_order"] or 10 + hlen != HEADER_BYTES:
            return None
        n = 1
        for d in shape:
            n *= d
        return shape if size == HEADER_BYTES + n else None
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- geometry and keys

def decode_key(fps: float, size: int, border: Border | None = None, store: dict[str, Any] | None = None) -> str:
    """Everything besides the source bytes that changes the cached frames (a zero border is not in it; `store`:
    the h264 store's spec, absent for .npy so npy caches keep their keys)."""
    spec = {"fps": float(fps), "size": size, "aspect_policy": ASPECT_POLICY, "pix_fmt": "rgb24", **(store or {})}
    if border is not None and not border.is_zero():
        spec["border"] = border.key()
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def params_key(params: Params) -> str:
    """decode_key of these params."""
    dp = params.decode
    spec = store_spec(dp.crf, dp.gop) if dp.store == STORE_NAME else None
    return decode_key(params.data.fps, params.data.size, Border.of(params.data), spec)


def cache_suffix(params: Params) -> str:
    return STORE_SUFFIX if params.decode.store == STORE_NAME else ".npy"


def ffmpeg_command(path: str, fps: float, geometry: Geometry, threads: int) -> ffmpeg.nodes.OutputStream:
    stream = ffmpeg.input(path, threads=threads, noautorotate=None)["v:0"]   # geometry was computed unrotated
    return (
        apply_geometry(stream.filter("fps", fps=fps), geometry)
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", an=None, sn=None, dn=None)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
    )


# ---------------------------------------------------------------- one video

class DecodeError(Exception):
    """A one-line reason the video cannot be used."""


@dataclass
class Result:
    video_id: str
    frames: int | None
    error: str | None
    status: str                    # decoded | cached | error


def _drain(stream, lines: collections.deque[str]) -> None:
    """Read ffmpeg's stderr on a thread so a chatty decoder can never block on a full pipe."""
    for raw in iter(stream.readline, b""):
        line = re.sub(r"^(\[[^\]]*\]\s*)+", "", raw.decode("utf-8", "replace").strip())
        if line:
            lines.append(line)


def _ffmpeg_reason(lines: collections.deque[str], rc: int | None) -> str:
    msgs = list(dict.fromkeys(lines))           # unique, in order
    text = "; ".join(msgs[:1] + msgs[-1:] if len(msgs) > 1 else msgs) or "no message"
    return (f"ffmpeg exit {rc}: " if rc else "") + text[:300]


def _stream_frames(entry: VideoEntry, params: Params, tmp: Path) -> tuple[int, dict[str, Any]]:
    """Run ffmpeg into `tmp` (a .npy whose header is fixed up at the end, or the h264 store); returns the frames
    written and what the sidecar must add (the store's packet index)."""
    size, fps = params.data.size, params.data.fps
    frame_bytes = size * size * 3
    try:
        geometry = plan_geometry(entry.width, entry.height, entry.sar, size, Border.of(params.data))
    except ValueError as err:
        raise DecodeError(str(err)) from None
    cmd = ffmpeg_command(str(resolve_path(entry.path)), fps, geometry, params.decode.threads)
    buf = bytearray(params.decode.chunk_frames * frame_bytes)   # (chunk, S, S, 3) reused for every chunk
    view = memoryview(buf)
    lines: collections.deque[str] = collections.deque(maxlen=20)
    total = 0
    with open(tmp, "wb") as out:
        store = StoreWriter(out, size, params.decode.crf, params.decode.gop, fps) \
            if params.decode.store == STORE_NAME else None
        if store is None:
            out.write(npy_header((0, size, size, 3)))
        proc = cmd.run_async(cmd=ffmpeg_exe(), pipe_stdout=True, pipe_stderr=True)
        drain = threading.Thread(target=_drain, args=(proc.stderr, lines), daemon=True)
        drain.start()
        try:
            while True:
                got = 0
                while got < len(buf) and (n := proc.stdout.readinto(view[got:])):
                    got += n
                if not got:
                    break
                if store is None:
                    out.write(view[:got])
                else:                                            # whole frames only; a torn tail fails below
                    whole = got - got % frame_bytes
                    store.write(np.frombuffer(view[:whole], np.uint8).reshape(-1, size, size, 3))
                total += got
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            drain.join(timeout=5)
            proc.stdout.close()
            proc.stderr.close()
        if rc != 0:
            raise DecodeError(_ffmpeg_reason(lines, rc))
        cut = [line for line in lines if "partial file" in line or "ended prematurely" in line]
        if cut:
            raise DecodeError(f"truncated file: ffmpeg says '{cut[0]}'")
        if total % frame_bytes:
            raise DecodeError(f"truncated output: {total} bytes is not a whole number of frames")
        frames = total // frame_bytes
        extra: dict[str, Any] = {}
        if store is None:
            out.seek(0)
            header = npy_header((frames, size, size, 3))
            assert len(header) == HEADER_BYTES
            out.write(header)
        else:
            store.close()
            extra = {"store": STORE_NAME, "store_version": STORE_VERSION, "crf": params.decode.crf,
                     "gop": params.decode.gop, "packet_bytes": store.packet_bytes}
        out.flush()
        os.fsync(out.fileno())
    return frames, extra


def _check_frames(entry: VideoEntry, frames: int, params: Params) -> None:
    fps, need = params.data.fps, params.data.clip_frames
    if frames == 0:
        raise DecodeError("no video frames decoded")
    if entry.duration_s and frames < MIN_DURATION_RATIO * entry.duration_s * fps - 1:
        raise DecodeError(
            f"truncated stream: {frames} frames at {fps:g} fps, expected ~{entry.duration_s * fps:.0f} "
            f"from its {entry.duration_s:.1f} s duration"
        )
    if frames < need:
        raise DecodeError(f"shorter than one clip: {frames} frames at {fps:g} fps, data.clip_frames is {need}")


def _fill_probe(entry: VideoEntry) -> VideoEntry:
    """Ingest normally records width/height/sar; probe with PyAV only when it did not."""
    if entry.width and entry.height:
        return entry
    import av

    try:
        with av.open(str(resolve_path(entry.path))) as c:
            s = c.streams.video[0]
            sar = float(s.sample_aspect_ratio) if s.sample_aspect_ratio else 1.0
            return entry.model_copy(update={"width": s.width, "height": s.height, "sar": sar or 1.0})
    except (av.FFmpegError, IndexError, OSError) as err:
        raise DecodeError(f"cannot probe: {getattr(err, 'strerror', None) or err or type(err).__name__}") from None


def remove_cached(cache_dir: Path, video_id: str) -> None:
    for suffix in (".json", ".npy", STORE_SUFFIX):   # sidecar first: a data file without one is never trusted
        (cache_dir / f"{video_id}{suffix}").unlink(missing_ok=True)


def cached_frames(cache_dir: Path, video_id: str, sha256: str, key: str, size: int, suffix: str = ".npy") -> int | None:
    """Frames of a valid cache entry for exactly this content and decode key, else None."""
    try:
        side = json.loads((cache_dir / f"{video_id}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(side, dict) or side.get("sha256") != sha256 or side.get("decode_key") != key:
        return None
    frames = side.get("frames")
    if suffix == STORE_SUFFIX:                       # the index must describe exactly the file that is there
        sizes = side.get("packet_bytes")
        path = cache_dir / f"{video_id}{STORE_SUFFIX}"
        if not isinstance(sizes, list) or len(sizes) != frames or not path.is_file() \
                or path.stat().st_size != sum(sizes):
            return None
        return frames
    if npy_shape(cache_dir / f"{video_id}.npy") != (frames, size, size, 3):
        return None
    return frames


def decode_video(entry: VideoEntry, params: Params, cache_dir: Path) -> Result:
    """Skip if cached for this content and key, else decode; failures become a Result with a reason."""
    vid, size, key, suffix = entry.video_id, params.data.size, params_key(params), cache_suffix(params)
    tmp = cache_dir / f".{vid}{suffix}.tmp{os.getpid()}"
    try:
        if not resolve_path(entry.path).is_file():
            raise DecodeError("file not found")
        if resolve_path(entry.path).stat().st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        sha = entry.sha256 or file_sha256(resolve_path(entry.path))
        frames = cached_frames(cache_dir, vid, sha, key, size, suffix)
        if frames is not None:
            _check_frames(entry, frames, params)
            return Result(vid, frames, None, "cached")
        remove_cached(cache_dir, vid)
        frames, extra = _stream_frames(_fill_probe(entry), params, tmp)
        _check_frames(entry, frames, params)
        os.replace(tmp, cache_dir / f"{vid}{suffix}")
        side = {"sha256": sha, "decode_key": key, "frames": frames, "fps": params.data.fps,
                "size": size, "aspect_policy": ASPECT_POLICY, **extra}
        atomic_write_text(cache_dir / f"{vid}.json", json.dumps(side, indent=1) + "\n")
        return Result(vid, frames, None, "decoded")
    except Exception as err:                         # noqa: BLE001 - any failure is one video's reason
        reason = str(err).replace("\n", " ") if isinstance(err, DecodeError) else f"{type(err).__name__}: {err}"
        remove_cached(cache_dir, vid)
        return Result(vid, None, f"{reason} ({entry.path})", "error")
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- the stage

RESERVED = ("manifest.json", STORE_MARKER)         # cache-level files, never a video's


def mark_store(cache_dir: Path, params: Params) -> None:
    """store.json names the reader an h264 cache needs (surgwm/data/clips.py open_clips); an npy cache has none."""
    marker = cache_dir / STORE_MARKER
    if params.decode.store == STORE_NAME:
        atomic_write_text(marker, json.dumps({"store": STORE_NAME, "store_version": STORE_VERSION}) + "\n")
    else:
        marker.unlink(missing_ok=True)


def clean_cache(cache_dir: Path, keep_ids: set[str]) -> None:
    """Delete temp files of killed runs (never read) and the cache files of videos not in the manifest."""
    for p in cache_dir.iterdir():
        if not p.is_file():
            continue
        if p.name.startswith(".") and ".tmp" in p.name:
            p.unlink(missing_ok=True)
        elif p.suffix in (".npy", ".json", STORE_SUFFIX) and p.name not in RESERVED and p.stem not in keep_ids:
            p.unlink(missing_ok=True)


def thread_map(todo: list[tuple[int, VideoEntry]], params: Params, cache_dir: Path,
               finished: Callable[[int, Result], None]) -> None:
    """decode.engine 'local': `decode.workers` videos at a time in this process (each is its own ffmpeg)."""
    with ThreadPoolExecutor(max_workers=params.decode.workers) as pool:
        futures = {pool.submit(decode_video, v, params, cache_dir): i for i, v in todo}
        for fut in as_completed(futures):
            finished(futures[fut], fut.result())


def decode(
    params: Params,
    manifest_path: Path = MANIFEST,
    cache_dir: Path = CACHE,
    on_progress: ProgressFn | None = None,
    statuses: dict[str, str] | None = None,
    mapper: Mapper | None = None,
) -> Manifest:
    """Bring the cache in line with the manifest; returns (and writes) the manifest with frames/error filled.

    `statuses`, if given, receives video_id -> decoded | cached | error. `mapper` runs decode_video over the
    videos to do (default: a thread pool; `decode.engine: dask` uses surgwm/data/fanout.py).
    """
    manifest = read_manifest(Path(manifest_path))
    cache_dir = Path(cache_dir)
    # before anything is written: the whole cache must fit storage.budget_gb (BudgetError names the knobs)
    check_budget("the decode cache", decode_cache_bytes(params, [v.duration_s for v in manifest.usable()]),
                 params.storage.budget_gb, decode_knobs(params))
    cache_dir.mkdir(parents=True, exist_ok=True)
    clean_cache(cache_dir, {v.video_id for v in manifest.videos})
    mark_store(cache_dir, params)

    results: dict[int, Result] = {}
    todo: list[tuple[int, VideoEntry]] = []
    seen: set[str] = set()
    for i, v in enumerate(manifest.videos):
        if v.error is not None:
            results[i] = Result(v.video_id, None, v.error, "error")
        elif v.video_id in seen or f"{v.video_id}.json" in RESERVED:
            reason = f"video_id '{v.video_id}' is duplicated or reserved ({v.path})"
            results[i] = Result(v.video_id, None, reason, "error")
        else:
            todo.append((i, v))
        seen.add(v.video_id)
    todo_ids = {v.video_id for _, v in todo}
    for r in results.values():
        if r.video_id not in todo_ids:               # an unusable video keeps no stale cache
            remove_cached(cache_dir, r.video_id)

    total, done = len(manifest.videos), len(results)
    with logging_redirect_tqdm(), tqdm(total=total, initial=done, desc="decode", unit="video", disable=None) as bar:
        for r in results.values():
            log.warning("decode: %s: %s", r.video_id, r.error)
        if on_progress:
            on_progress(done, total, "")

        def finished(i: int, r: Result) -> None:
            nonlocal done
            results[i] = r
            if r.error:
                log.warning("decode: %s: %s", r.video_id, r.error)
            done += 1
            bar.update(1)
            if on_progress:
                on_progress(done, total, r.video_id)

        (mapper or thread_map)(todo, params, cache_dir, finished)

    videos = [v.model_copy(update={"frames": results[i].frames, "error": results[i].error})
              for i, v in enumerate(manifest.videos)]
    out = manifest.model_copy(update={"videos": videos, "decode_key": params_key(params)})
    write_manifest(out, cache_dir / "manifest.json")
    if statuses is not None:
        statuses.update({r.video_id: r.status for r in results.values()})
    return out


# ---------------------------------------------------------------- CLI

def summary(manifest: Manifest, statuses: dict[str, str]) -> str:
    rows = [("video", "duration", "frames", "status")]
    for v in manifest.videos:
        dur = f"{v.duration_s:.1f}s" if v.duration_s is not None else "?"
        status = f"error: {v.error}" if v.error else statuses.get(v.video_id, "ok")
        rows.append((v.video_id, dur, str(v.frames) if v.frames is not None else "-", status))
    w = [max(len(r[c]) for r in rows) for c in range(3)]
    return "\n".join(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]}" for r in rows)


def progress_writer(path: Path) -> ProgressFn:
    """Progress as a file, so an orchestrator in another process can show it."""
    def write(done: int, total: int, current: str) -> None:
        atomic_write_text(path, json.dumps({"done": done, "total": total, "current": current}) + "\n")
    return write
