"""Locate the ffmpeg binary: $FFMPEG_BINARY, else the static build that the imageio-ffmpeg wheel ships."""

from __future__ import annotations

import os
import shutil
from functools import lru_cache


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
