"""Locate the ffmpeg binary ($FFMPEG_BINARY, else the static build that the imageio-ffmpeg wheel ships) and the
flags that make its output the same bytes on every x86-64 CPU.

Measured with the pinned imageio-ffmpeg binary (ffmpeg n9.0.2; docs/embedded_encoder.md, section 1):
  * libx264 picks CPU-specific code paths that make different (valid) decisions: the same frames and settings
    gave three different files with its asm limited to SSE2, to SSE4.2/AVX2, and with AVX-512. `cpu-independent=1`
    gives the bytes of `no-asm=1` with every asm subset, at asm speed.
  * libx264 with 2 threads gives different bytes than with 1: the thread count is part of the output.
  * swscale's RGB -> YUV 4:2:0 conversion (the encoder's input) differs between its C path and its SIMD paths
    unless the scaler gets `accurate_rnd` or `bitexact`; with SWS_FLAGS the C and every SIMD subset agree.
  * H.264 decoding and the decode stage's yuv420p -> rgb24 `scale` gave the same bytes with SIMD off (-cpuflags 0),
    with SSE2, AVX2 and AVX-512 subsets, and with 1 or 2 decoder threads: decode needs no flag today; SWS_FLAGS
    on its `scale` filter keeps that true by contract (SWS_BITEXACT) and gave the same bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache

import numpy as np

# swscale flags whose SIMD paths are bit-exact with its C path (bicubic is ffmpeg's default scaler)
SWS_FLAGS = "bicubic+accurate_rnd+bitexact"
# libx264 settings that make the bitstream independent of the CPU, the thread count and the build date
X264_REPRODUCIBLE = ("-x264-params", "cpu-independent=1", "-threads", "1", "-flags:v", "+bitexact",
                     "-fflags", "+bitexact", "-map_metadata", "-1")
# the same work without any SIMD code (ffmpeg's C paths, x264's C paths): what every x86-64 CPU can run; tests
# compare against it
NO_SIMD = ("-cpuflags", "0")
X264_NO_ASM = "no-asm=1"


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The pip-installed static ffmpeg needs no apt-get; a system one is the fallback."""
    env = os.environ.get("FFMPEG_BINARY")
    if env:
        return env
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found:
            return found
    raise RuntimeError("no ffmpeg found: run `make setup` (installs imageio-ffmpeg) or set FFMPEG_BINARY")


def scale_rgb(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 RGB (T, H, W, 3) -> (T, height, width, 3) by ffmpeg's swscale: the bicubic scaler of the decode
    stage's `scale` filter, with SWS_FLAGS (the same bytes on every CPU). For frames drawn in memory (the
    pretraining corpus), so they are resized like the pipeline's, not by a second implementation."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-i", "-", "-filter_threads", "1", "-vf", f"scale={width}:{height}:flags={SWS_FLAGS}",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg scale failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
    out = np.frombuffer(proc.stdout, np.uint8)
    if out.size != t * height * width * 3:
        raise RuntimeError(f"ffmpeg scale returned {out.size} bytes for {t} frames of {width}x{height}")
    return out.reshape(t, height, width, 3)
