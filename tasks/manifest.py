"""The manifest that `ingest` writes and later stages read: one entry per video with its labels."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tasks.classes import STEP_CLASSES



class Interval(BaseModel):
    """A labelled span of one video, in seconds from the start of that video file."""

    model_config = ConfigDict(extra="forbid")
    start: float = Field(ge=0)
    stop: float = Field(ge=0)
    label: str


class VideoEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video_id: str                       # unique and filesystem-safe; names the cache file
    case: str                           # split unit: clips of one case never straddle train/test
    part: int = 1
    path: str                           # absolute path of the video file
    sha256: str | None = None           # content hash; decode re-runs when it changes
    duration_s: float | None = None
    fps: float | None = None            # average frame rate of the source
    width: int | None = None
    height: int | None = None
    sar: float = 1.0                    # sample aspect ratio (non-square pixels when != 1)
    steps: list[Interval] = []
    motion: list[Interval] = []
    events: list[Interval] = []
    error: str | None = None            # one-line reason the video cannot be used (set by ingest or decode)
    frames: int | None = None           # frames cached by decode at data.fps


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    root: str
    step_classes: list[str] = list(STEP_CLASSES)
    motion_classes: list[str] = []
    videos: list[VideoEntry] = []

    def usable(self) -> list[VideoEntry]:
        return [v for v in self.videos if v.error is None]


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp name in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_manifest(manifest: Manifest, path: Path) -> None:
    atomic_write_text(path, json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n")


def read_manifest(path: Path) -> Manifest:
    return Manifest.model_validate_json(Path(path).read_text())


def file_sha256(path: str | Path) -> str:
    """Content hash of a file (videos, weights): what makes cached outputs safe to reuse."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
