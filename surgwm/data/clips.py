"""Labelled clips over the decode cache, and the one way to read them: `open_clips(cache_dir, clip_frames)` returns
the reader the folder needs (ClipCache: raw .npy by mmap; StoreClips: the h264 store, surgwm/data/store.py). Both
have `read(clip) -> (T, S, S, 3) uint8` and `num_frames(video_id)`, and pickle small for DataLoader workers.

A clip is `clip_frames` consecutive cached frames starting at frame `start` of one video; it covers the time
span [start/fps, (start+clip_frames)/fps). Its step and motion labels are the intervals containing the
span's centre (-1 where none does); `event` is 1 if an event shows in the clip: at least half of the event
lies in the span, or the event covers at least half of it (a clip that an event grazes for one frame is not a
positive: it would teach a probe to fire on nothing), or an instantaneous event falls in the span.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from surgwm.data.manifest import Interval, Manifest, VideoEntry


@dataclass(frozen=True)
class Clip:
    video_id: str
    case: str
    start: int                 # first frame index in the video's cache
    step: int                  # index into manifest.step_classes, -1 if unlabelled
    motion: int                # index into manifest.motion_classes, -1 if unlabelled
    event: int                 # 1 if an event overlaps the clip's span


def _index(label: str, index: dict[str, int], kind: str, video_id: str) -> int:
    try:
        return index[label]
    except KeyError:
        raise ValueError(f"{video_id}: {kind} label '{label}' is not in the manifest's {kind}_classes") from None


def label_at(intervals: Iterable[Interval], t: float, index: dict[str, int], kind: str, video_id: str) -> int:
    """Class index of the first interval with start <= t < stop, -1 if none."""
    for iv in intervals:
        if iv.start <= t < iv.stop:
            return _index(iv.label, index, kind, video_id)
    return -1


def shows(iv: Interval, t0: float, t1: float) -> bool:
    """The event is in the clip [t0, t1): overlap >= half the shorter of the two; an instant counts inside."""
    if iv.stop <= iv.start:
        return t0 <= iv.start < t1
    overlap = min(iv.stop, t1) - max(iv.start, t0)
    return overlap > 0 and overlap >= 0.5 * min(iv.stop - iv.start, t1 - t0)


def clip_span(start: int, clip_frames: int, fps: float) -> tuple[float, float]:
    return start / fps, (start + clip_frames) / fps


def video_clips(video: VideoEntry, manifest: Manifest, clip_frames: int, clip_stride: int, fps: float) -> list[Clip]:
    steps = {c: i for i, c in enumerate(manifest.step_classes)}
    motions = {c: i for i, c in enumerate(manifest.motion_classes)}
    clips = []
    for start in range(0, (video.frames or 0) - clip_frames + 1, clip_stride):
        t0, t1 = clip_span(start, clip_frames, fps)
        mid = (t0 + t1) / 2
        clips.append(Clip(
            video_id=video.video_id,
            case=video.case,
            start=start,
            step=label_at(video.steps, mid, steps, "step", video.video_id),
            motion=label_at(video.motion, mid, motions, "motion", video.video_id),
            event=int(any(shows(e, t0, t1) for e in video.events)),
        ))
    return clips


def build_clips(manifest: Manifest, clip_frames: int, clip_stride: int, fps: float) -> list[Clip]:
    """All clips of every usable, decoded video (manifest from the decode stage, with `frames` filled)."""
    return [c for v in manifest.usable() for c in video_clips(v, manifest, clip_frames, clip_stride, fps)]


class ClipCache:
    """Opens each video's .npy once with mmap; reads copy the frames out, so the page cache does the work.

    Picklable for worker processes: the maps are reopened lazily in each process, never pickled.
    """

    def __init__(self, cache_dir: str | Path, clip_frames: int):
        self.cache_dir = Path(cache_dir)
        self.clip_frames = clip_frames
        self._maps: dict[str, np.ndarray] = {}

    def frames(self, video_id: str) -> np.ndarray:
        arr = self._maps.get(video_id)
        if arr is None:
            arr = self._maps[video_id] = np.load(self.cache_dir / f"{video_id}.npy", mmap_mode="r")  # (N, S, S, 3)
        return arr

    def num_frames(self, video_id: str) -> int:
        return int(self.frames(video_id).shape[0])

    def read(self, clip: Clip, frames: int | None = None) -> np.ndarray:
        """(T, S, S, 3) uint8, a private copy."""
        t = frames or self.clip_frames
        arr = self.frames(clip.video_id)                                # (N, S, S, 3)
        if clip.start < 0 or clip.start + t > arr.shape[0]:
            raise IndexError(f"{clip.video_id}: frames [{clip.start}, {clip.start + t}) outside 0..{arr.shape[0]}")
        return np.array(arr[clip.start:clip.start + t])                 # (T, S, S, 3)

    def __getstate__(self) -> dict:
        return {"cache_dir": self.cache_dir, "clip_frames": self.clip_frames, "_maps": {}}


class ClipReader(Protocol):
    """What training, the feature cache, evaluation and the registry read clips through."""

    clip_frames: int

    def read(self, clip: Clip, frames: int | None = None) -> np.ndarray: ...   # (T, S, S, 3) uint8

    def num_frames(self, video_id: str) -> int: ...


def open_clips(cache_dir: str | Path, clip_frames: int) -> ClipReader:
    """The reader for whichever store the decode stage wrote into `cache_dir`: the h264 store when its
    store.json marker is there (decode.store: h264), else the raw .npy cache (every cache before the store)."""
    cache_dir = Path(cache_dir)
    from surgwm.data.store import STORE_MARKER, STORE_NAME, StoreClips

    marker = cache_dir / STORE_MARKER
    if not marker.is_file():
        return ClipCache(cache_dir, clip_frames)
    try:
        kind = json.loads(marker.read_text()).get("store")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != STORE_NAME:
        raise ValueError(f"{marker}: unknown clip store {kind!r} (this code reads '{STORE_NAME}' and raw .npy): "
                         "re-run the decode stage")
    return StoreClips(cache_dir, clip_frames)
