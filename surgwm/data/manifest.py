"""The manifest that `ingest` writes and later stages read: one entry per video with its labels.

Schema versions (`schema_version`; a file without the field is version 1 and still reads):
  1  steps / motion / events per video
  2  + `tools` per video (tool presence intervals from SurgVU's tools.csv; None = the case has no tools.csv),
     `label_files` per video (the label files read for it; None = not recorded), and per manifest
     `tool_classes` (the tool vocabulary) and `labels_root` (where the labels were read).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from surgwm.data.classes import STEP_CLASSES
from surgwm.io import atomic_write_text

MANIFEST_SCHEMA = 2                 # what this code writes; bump when a field changes meaning


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
    tools: list[Interval] | None = None  # tool installed over [start, stop) (label = tool class); None: unknown
    label_files: list[str] | None = None  # label files read for this video's case, e.g. ["tasks.csv", "tools.csv"]
    error: str | None = None            # one-line reason the video cannot be used (set by ingest or decode)
    frames: int | None = None           # frames cached by decode at data.fps


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1             # absent in version-1 files; ingest writes MANIFEST_SCHEMA
    source: str
    root: str
    labels_root: str | None = None      # the folder <case>/tasks.csv were read from (surgvu and synthetic)
    step_classes: list[str] = list(STEP_CLASSES)
    motion_classes: list[str] = []
    tool_classes: list[str] = []        # the tool vocabulary: every tool class in `tools`, sorted
    decode_key: str | None = None       # set by decode: the settings (fps, size, border, store) its frames came from
    videos: list[VideoEntry] = []

    def usable(self) -> list[VideoEntry]:
        return [v for v in self.videos if v.error is None]


def write_manifest(manifest: Manifest, path: Path) -> None:
    atomic_write_text(path, json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n")


def read_manifest(path: Path) -> Manifest:
    """Any version up to MANIFEST_SCHEMA (older files get the new fields' defaults); a newer one is refused first,
    with its version, rather than with pydantic's complaint about fields it does not know."""
    raw = json.loads(Path(path).read_text())
    version = raw.get("schema_version", 1) if isinstance(raw, dict) else 1
    if isinstance(version, int) and version > MANIFEST_SCHEMA:
        raise ValueError(f"{path}: manifest schema version {version} is newer than this code reads "
                         f"({MANIFEST_SCHEMA}); update the code or re-run ingest")
    return Manifest.model_validate(raw)


