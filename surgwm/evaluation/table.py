"""Per-clip labels as arrays (step, motion, event, next step) and the key that makes two evaluations comparable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from surgwm.data.clips import Clip, build_clips, next_step
from surgwm.data.manifest import Manifest
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
    step_classes: list[str]
    motion_classes: list[str]
    missing: dict[str, str]     # task -> why the data cannot score it

    def rows(self, cases: Sequence[str], labels: np.ndarray | None = None) -> np.ndarray:
        keep = np.isin(self.case, list(cases))
        if labels is not None:
            keep &= labels >= 0
        return np.flatnonzero(keep)


def clip_table(manifest: Manifest, params: Params) -> ClipTable:
    d = params.data
    clips = build_clips(manifest, d.clip_frames, d.clip_stride, d.fps)
    if not clips:
        raise EvaluateError(f"no clips: no decoded video has >= data.clip_frames ({d.clip_frames}) frames; "
                            "run the decode stage first (`dvc repro decode`)")
    videos = {v.video_id: v for v in manifest.usable()}
    nxt = [next_step(videos[c.video_id], c, manifest.step_classes, d.clip_frames, d.fps) for c in clips]
    t = ClipTable(clips, np.array([c.video_id for c in clips]), np.array([c.case for c in clips]),
                  np.array([c.step for c in clips]), np.array([c.motion for c in clips]),
                  np.array([c.event for c in clips]), np.array(nxt), list(manifest.step_classes),
                  list(manifest.motion_classes), {})
    if not (t.step >= 0).any():
        t.missing["step"] = "no step labels in this data"
    if not manifest.motion_classes or not (t.motion >= 0).any():
        t.missing["motion"] = "no motion labels in this data"
    if not any(v.events for v in manifest.usable()):
        t.missing["event"] = "no event labels in this data"
    if "step" in t.missing or not (t.next_step >= 0).any():
        t.missing["anticipation"] = t.missing.get("step", "no clip has a later, different step")
    if not any(v.events for v in manifest.usable()):
        t.event[:] = -1
    return t


def eval_key(table: ClipTable, split: EvalSplit, manifest: Manifest, params: Params) -> str:
    """What makes two evaluations comparable: same test clips, labels, video content, probe recipe and split."""
    ev = params.evaluate.model_dump(exclude={"device", "threads", "gpu_prices", "convergence_metric",
                                             "convergence_fraction", "baselines", "feature_dtype"})
    test = table.rows(split.test)
    videos = sorted((v.video_id, v.sha256) for v in manifest.usable() if v.video_id in set(table.video[test]))
    labels = [(table.clips[i].video_id, table.clips[i].start, int(table.step[i]), int(table.motion[i]),
               int(table.event[i]), int(table.next_step[i])) for i in test]
    return fingerprint(ev, params.data.model_dump(mode="json", include={"fps", "size", "clip_frames", "clip_stride"}),
                       [split.train, split.val, split.test], videos, labels)[:16]
