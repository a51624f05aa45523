"""The compressed clip store (`decode.store: h264`): one short-GOP H.264 stream per video plus a packet index,
read a clip at a time with PyAV. docs/clip_store.md has the measurements behind every choice below.

Why this format: the raw `.npy` cache costs S*S*3 bytes per frame (2.4 TB for SurgVU at 256 px, 4 fps). JPEG or
WebP per frame cannot use the next frame's likeness; H.264 can, and a short closed GOP keeps random reads cheap:
a clip [s, s+T) decodes from the keyframe at or before s, at most T + gop - 1 frames.

Files, in the decode cache folder (written by surgwm/data/decode.py from the same ffmpeg rgb24 stream as `.npy`):
  <video_id>.h264  H.264 Annex B elementary stream, one packet (access unit) per cached frame, in frame order
                   (no B-frames), an IDR keyframe with its SPS/PPS every `gop` frames, so every GOP decodes on its
                   own; `ffplay <video_id>.h264` plays it
  <video_id>.json  the decode sidecar, plus "store": "h264", "gop", "crf" and "packet_bytes" (the size of every
                   frame's packet; their running sum is the byte index a reader seeks with)
  store.json       {"store": "h264", ...}: tells `open_clips` (surgwm/data/clips.py) which reader the folder needs

Encoding (fixed, part of the decode key): yuv444p (4:2:0 alone caps the PSNR of these frames near 40 dB),
BT.601 limited range by swscale with BITEXACT|ACCURATE_RND, x264 preset `medium`, tune `fastdecode` (CAVLC, no
deblocking: ~1.5-2x faster decoding, a few % larger), `crf` and `gop` from params, no scene cuts, one thread and
`cpu-independent=1` (x264's own output otherwise depends on the CPU it runs on), so the bytes are the same on any
x86-64 machine with the same PyAV wheel. The reader converts back with the same swscale flags.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

STORE_NAME = "h264"
STORE_VERSION = 1                   # bump when the encoding below changes: every stored video re-encodes
STORE_MARKER = "store.json"         # in a cache folder written with decode.store: h264
SUFFIX = ".h264"
PIX_FMT = "yuv444p"
PRESET, TUNE = "medium", "fastdecode"
COLOUR = {"colorspace": "ITU601", "color_range": "MPEG"}
SWS_FLAGS = Interpolation.POINT | Interpolation.BITEXACT | Interpolation.ACCURATE_RND  # no scaling happens


class StoreError(ValueError):
    """A stored video cannot be written or read; the message names the file."""


def x264_params(gop: int, extra: str = "") -> str:
    """Closed GOPs of exactly `gop` frames, no B-frames, in-band headers, CPU-independent output."""
    opts = (f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:open-gop=0:repeat-headers=1:annexb=1:"
            "cpu-independent=1:threads=1:lookahead-threads=1:sliced-threads=0:"
            "colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m:range=tv")
    return opts + (":" + extra if extra else "")


def store_spec(crf: int, gop: int) -> dict[str, object]:
    """What the stored bytes depend on besides the frames: goes into the decode key."""
    return {"store": STORE_NAME, "store_version": STORE_VERSION, "crf": crf, "gop": gop, "pix_fmt": PIX_FMT,
            "preset": PRESET, "tune": TUNE}


# ---------------------------------------------------------------- writing

class StoreWriter:
    """Encodes (n, S, S, 3) uint8 chunks into `out` as they arrive: memory is one chunk plus x264's lookahead.

    `packet_bytes` grows by one int per frame (the index the sidecar keeps). `close()` flushes the encoder and
    returns the frames written; the caller fsyncs and renames the file.
    """

    def __init__(self, out: BinaryIO, size: int, crf: int, gop: int, fps: float = 4.0, x264_extra: str = ""):
        self.out, self.size, self.gop = out, size, gop
        self.packet_bytes: list[int] = []
        self._frames_in = 0
        cc = av.CodecContext.create("libx264", "w")
        cc.width = cc.height = size
        cc.pix_fmt = PIX_FMT
        cc.time_base = Fraction(1, 1000)
        cc.framerate = Fraction(fps).limit_denominator(1000)
        cc.thread_count = 1
        cc.options = {"preset": PRESET, "tune": TUNE, "crf": str(crf), "x264-params": x264_params(gop, x264_extra)}
        self._cc = cc
        self._rf = VideoReformatter()
        self._tick = Fraction(1000) / cc.framerate        # pts step in time_base units

    def _take(self, packets: list[av.Packet]) -> None:
        for p in packets:
            i = len(self.packet_bytes)
            if p.is_keyframe != (i % self.gop == 0):
                raise StoreError(f"x264 put a keyframe where none was asked for (frame {i}, gop {self.gop})")
            data = bytes(p)
            self.out.write(data)
            self.packet_bytes.append(len(data))

    def write(self, frames: np.ndarray) -> None:
        """frames: (n, S, S, 3) uint8 RGB."""
        for rgb in frames:                                                       # (S, S, 3)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            yuv = self._rf.reformat(vf, format=PIX_FMT, dst_colorspace=COLOUR["colorspace"],
                                    dst_color_range=COLOUR["color_range"], interpolation=SWS_FLAGS, threads=1)
            yuv.pts = int(self._frames_in * self._tick)
            self._frames_in += 1
            self._take(self._cc.encode(yuv))

    def close(self) -> int:
        """Flush the encoder; frames written (every input frame became exactly one packet)."""
        self._take(self._cc.encode(None))
        if len(self.packet_bytes) != self._frames_in:
            raise StoreError(f"x264 returned {len(self.packet_bytes)} packets for {self._frames_in} frames")
        return self._frames_in


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class VideoIndex:
    frames: int
    size: int
    gop: int
    offsets: np.ndarray             # (frames + 1,) int64: frame i is bytes [offsets[i], offsets[i+1])


def load_index(cache_dir: Path, video_id: str) -> VideoIndex:
    """The sidecar's packet index, checked against the file it describes."""
    side_path = cache_dir / f"{video_id}.json"
    try:
        side = json.loads(side_path.read_text())
    except (OSError, ValueError) as err:
        raise StoreError(f"{side_path}: cannot read the store sidecar ({err}): re-run the decode stage") from None
    sizes = side.get("packet_bytes") if isinstance(side, dict) else None
    if side.get("store") != STORE_NAME or not isinstance(sizes, list) or len(sizes) != side.get("frames"):
        raise StoreError(f"{side_path}: not an h264 store sidecar with one packet size per frame: re-run decode")
    offsets = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(np.asarray(sizes, np.int64), out=offsets[1:])
    data = cache_dir / f"{video_id}{SUFFIX}"
    try:
        n = data.stat().st_size
    except OSError:
        raise StoreError(f"{data}: missing: re-run the decode stage") from None
    if n != offsets[-1]:
        raise StoreError(f"{data}: {n} bytes, its index says {offsets[-1]}: re-run the decode stage")
    return VideoIndex(int(side["frames"]), int(side["size"]), int(side["gop"]), offsets)


class StoreClips:
    """Clip reads from the h264 store; the same interface as ClipCache (surgwm/data/clips.py).

    Per process: one open file per video (pread, no shared offset), one H.264 decoder, one swscale context, so
    one reader per thread. Picklable for DataLoader workers: handles are reopened lazily in each process, never
    pickled or shared across a fork.
    """

    def __init__(self, cache_dir: str | Path, clip_frames: int):
        self.cache_dir = Path(cache_dir)
        self.clip_frames = clip_frames
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._index: dict[str, VideoIndex] = {}
        self._fds: dict[str, int] = {}
        self._dec: av.CodecContext | None = None
        self._rf: VideoReformatter | None = None

    def _mine(self) -> None:
        if self._pid != os.getpid():          # forked (DataLoader worker): the parent's handles are not ours
            self._reset()

    def index(self, video_id: str) -> VideoIndex:
        self._mine()
        idx = self._index.get(video_id)
        if idx is None:
            idx = self._index[video_id] = load_index(self.cache_dir, video_id)
        return idx

    def num_frames(self, video_id: str) -> int:
        return self.index(video_id).frames

    def _fd(self, video_id: str) -> int:
        fd = self._fds.get(video_id)
        if fd is None:
            fd = self._fds[video_id] = os.open(self.cache_dir / f"{video_id}{SUFFIX}", os.O_RDONLY)
        return fd

    def _decoder(self) -> av.CodecContext:
        if self._dec is None:
            self._dec = av.CodecContext.create("h264", "r")
            self._dec.thread_count = 1
            self._rf = VideoReformatter()
        return self._dec

    def read_frames(self, video_id: str, start: int, count: int) -> np.ndarray:
        """(count, S, S, 3) uint8 frames [start, start + count) of one video."""
        idx = self.index(video_id)
        if start < 0 or count < 1 or start + count > idx.frames:
            raise IndexError(f"{video_id}: frames [{start}, {start + count}) outside 0..{idx.frames}")
        first = start - start % idx.gop                        # the keyframe this clip decodes from
        lo, hi = int(idx.offsets[first]), int(idx.offsets[start + count])
        fd = self._fd(video_id)
        buf = os.pread(fd, hi - lo, lo)
        while len(buf) < hi - lo:                               # pread may return short on some filesystems
            more = os.pread(fd, hi - lo - len(buf), lo + len(buf))
            if not more:
                raise StoreError(f"{self.cache_dir / (video_id + SUFFIX)}: ends before byte {hi}")
            buf += more
        dec, rf = self._decoder(), self._rf
        out = np.empty((count, idx.size, idx.size, 3), np.uint8)    # (T, S, S, 3)
        pos, k = first, 0

        def take(frames: list[av.VideoFrame]) -> None:
            nonlocal pos, k
            for f in frames:
                if pos >= start and k < count:
                    out[k] = rf.reformat(f, format="rgb24", src_colorspace=COLOUR["colorspace"],
                                         src_color_range=COLOUR["color_range"], interpolation=SWS_FLAGS,
                                         threads=1).to_ndarray()
                    k += 1
                pos += 1

        try:
            for j in range(first, start + count):
                a, b = int(idx.offsets[j]) - lo, int(idx.offsets[j + 1]) - lo
                take(dec.decode(av.Packet(buf[a:b])))
            take(dec.decode(None))
        except av.FFmpegError as err:
            raise StoreError(f"{self.cache_dir / (video_id + SUFFIX)}: frames {first}..{start + count}: {err}") \
                from None
        finally:
            dec.flush_buffers()                                 # ready for the next clip, whatever happened
        if k != count:
            raise StoreError(f"{self.cache_dir / (video_id + SUFFIX)}: decoded {k} of {count} frames from {start}")
        return out

    def read(self, clip, frames: int | None = None) -> np.ndarray:
        """(T, S, S, 3) uint8 of a Clip (surgwm/data/clips.py), a private copy."""
        return self.read_frames(clip.video_id, clip.start, frames or self.clip_frames)

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._reset()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self) -> dict:
        return {"cache_dir": self.cache_dir, "clip_frames": self.clip_frames}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()
