"""The manifest that `ingest` writes and later stages read: one entry per video with its labels."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from surgwm.data.classes import STEP_CLASSES
from surgwm.io import atomic_write_text



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


def write_manifest(manifest: Manifest, path: Path) -> None:
    atomic_write_text(path, json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n")


def read_manifest(path: Path) -> Manifest:
    return Manifest.model_validate_json(Path(path).read_text())


