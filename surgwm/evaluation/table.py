"""Per-clip labels as arrays (step, motion, event, next step, seconds to it) and the key that makes two evaluations
comparable."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from surgwm.data.clips import Clip, build_clips, clip_span
from surgwm.data.manifest import Manifest, VideoEntry
from surgwm.io import fingerprint
from surgwm.params import Params
from surgwm.evaluation.errors import EvaluateError
from surgwm.evaluation.split import EvalSplit


@dataclass
class ClipTable:
    """Per-clip labels as arrays aligned with `clips` (-1 = unlabelled)."""

    clips: list[Clip]
    video: np.ndarray
    case: np.ndarray
    step: np.ndarray
    motion: np.ndarray
    event: np.ndarray
    next_step: np.ndarray
    time_to_next: np.ndarray    # seconds from the clip's centre to the start of its next step (nan: none)
    start: np.ndarray           # first frame of each clip in its video's cache
    step_classes: list[str]
    motion_classes: list[str]
    missing: dict[str, str]     # task -> why the data cannot score it

    def rows(self, cases: Sequence[str], labels: np.ndarray | None = None) -> np.ndarray:
        keep = np.isin(self.case, list(cases))
        if labels is not None:
            keep &= labels >= 0
        return np.flatnonzero(keep)


OTHER = "other"


def fill_other(table: ClipTable, manifest: Manifest) -> None:
    """Unlabelled time in a video that has step labels is `other`, as SurgVU's official evaluation counts it (its
    tasks.csv leaves most `other` time out), so the probes learn and score the class the challenge scores. A video
    with no step labels at all stays unlabelled (-1): it is unknown, not `other`."""
    if OTHER not in table.step_classes:
        return
    labelled = [v.video_id for v in manifest.usable() if v.steps]
    fill = (table.step < 0) & np.isin(table.video, labelled)
    table.step[fill] = table.step_classes.index(OTHER)


def clip_table(manifest: Manifest, params: Params) -> ClipTable:
    d = params.data
    clips = build_clips(manifest, d.clip_frames, d.clip_stride, d.fps)
    if not clips:
        raise EvaluateError(f"no clips: no decoded video has >= data.clip_frames ({d.clip_frames}) frames; "
                            "run the decode stage first (`dvc repro decode`)")
    videos = {v.video_id: v for v in manifest.usable()}
    index = {c: i for i, c in enumerate(manifest.step_classes)}
    nxt = np.array([next_transition(videos[c.video_id], c, index, d.clip_frames, d.fps) for c in clips],
                   dtype=np.float64).reshape(-1, 2)
    t = ClipTable(clips, np.array([c.video_id for c in clips]), np.array([c.case for c in clips]),
                  np.array([c.step for c in clips]), np.array([c.motion for c in clips]),
                  np.array([c.event for c in clips]), nxt[:, 0].astype(int), nxt[:, 1],
                  np.array([c.start for c in clips]), list(manifest.step_classes), list(manifest.motion_classes), {})
    fill_other(t, manifest)
    if not (t.step >= 0).any():
        t.missing["step"] = "no step labels in this data"
    if not manifest.motion_classes or not (t.motion >= 0).any():
        t.missing["motion"] = "no motion labels in this data"
    if not any(v.events for v in manifest.usable()):
        t.missing["event"] = "no event labels in this data"
    if "step" in t.missing or not (t.next_step >= 0).any():
        t.missing["anticipation"] = t.missing.get("step", "no clip has a later, different step")
        t.missing["time_to_next"] = t.missing["anticipation"]
    if not any(v.events for v in manifest.usable()):
        t.event[:] = -1
    return t


def next_transition(video: VideoEntry, clip: Clip, index: dict[str, int], clip_frames: int,
                    fps: float) -> tuple[int, float]:
    """The anticipation targets of a clip: the first step after the clip's centre that differs from its own, and
    the seconds from the centre to its start; (-1, nan) when the video has none."""
    t0, t1 = clip_span(clip.start, clip_frames, fps)
    mid = (t0 + t1) / 2
    ordered = sorted(video.steps, key=lambda iv: iv.start)
    for iv in ordered[bisect.bisect_right([iv.start for iv in ordered], mid):]:
        i = index.get(iv.label)
        if i is None:
            raise ValueError(f"{video.video_id}: step label '{iv.label}' is not in the manifest's step_classes")
        if i != clip.step:
            return i, iv.start - mid
    return -1, float("nan")


def eval_key(table: ClipTable, split: EvalSplit, manifest: Manifest, params: Params) -> str:
    """What makes two evaluations comparable: same test clips, labels, video content, probe recipe and split."""
    ev = params.evaluate.model_dump(exclude={"device", "threads", "gpu_prices", "convergence_metric",
                                             "convergence_fraction", "baselines", "feature_dtype",
                                             "bootstrap_resamples"})
    test = table.rows(split.test)
    videos = sorted((v.video_id, v.sha256) for v in manifest.usable() if v.video_id in set(table.video[test]))
    labels = [(table.clips[i].video_id, table.clips[i].start, int(table.step[i]), int(table.motion[i]),
               int(table.event[i]), int(table.next_step[i])) for i in test]
    return fingerprint(ev, params.data.model_dump(mode="json", include={"fps", "size", "clip_frames", "clip_stride"}),
                       [split.train, split.val, split.test], videos, labels, manifest.decode_key)[:16]
