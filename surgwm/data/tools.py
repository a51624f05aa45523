"""Tool presence: SurgVU's tools.csv intervals as a tool vocabulary and per-clip multi-hot vectors.

Ingest keys every tool by its normalised `groundtruth_toolname` (surgwm/data/labels.py:normalise_tool) and then
merges spelling variants across the whole dataset (labels.py:canonical_tools), so one tool is one class however
the raw files spell it. The manifest carries the intervals (`VideoEntry.tools`, None where the case has no tools.csv)
and the vocabulary (`Manifest.tool_classes`).

A tool is present in a clip when an interval of it covers the clip's centre, the same rule as the clip's step
label (surgwm/data/clips.py), so a probe sees tool and step targets for the same instant. Several arms carry
tools at once, so presence is multi-label: one 0/1 per tool class, any number of ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from surgwm.data.clips import Clip, clip_span
from surgwm.data.manifest import Manifest, VideoEntry


def tools_at(video: VideoEntry, t: float, index: Mapping[str, int]) -> np.ndarray:
    """(K,) uint8: 1 for each tool of `index` installed at time t of this video (tools outside `index` ignored)."""
    out = np.zeros(len(index), dtype=np.uint8)                      # (K,)
    for iv in video.tools or []:
        k = index.get(iv.label)
        if k is not None and iv.start <= t < iv.stop:
            out[k] = 1
    return out


def clip_tool_presence(manifest: Manifest, clips: Sequence[Clip], clip_frames: int, fps: float,
                       vocabulary: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Multi-hot tool presence per clip, at each clip's centre.

    Returns (presence, known, vocabulary): presence (N, K) uint8 over `vocabulary` (default: the manifest's
    tool_classes); known (N,) bool, False for clips of videos whose case has no tools.csv (or any manifest
    older than schema 2): their rows are all zeros and must be left out of a tool metric, not scored as
    "no tool". A probe over a subset (e.g. the classes SurgVU scores) passes that subset as `vocabulary`.
    """
    vocab = list(manifest.tool_classes if vocabulary is None else vocabulary)
    index = {name: k for k, name in enumerate(vocab)}
    videos = {v.video_id: v for v in manifest.videos}
    presence = np.zeros((len(clips), len(vocab)), dtype=np.uint8)  # (N, K)
    known = np.zeros(len(clips), dtype=bool)                        # (N,)
    for i, clip in enumerate(clips):
        video = videos[clip.video_id]
        if video.tools is None:
            continue
        t0, t1 = clip_span(clip.start, clip_frames, fps)
        presence[i] = tools_at(video, (t0 + t1) / 2, index)
        known[i] = True
    return presence, known, vocab
