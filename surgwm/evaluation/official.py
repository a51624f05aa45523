"""The SurgVU 2024 Category 2 metric, `step.f1_video_official`, as the challenge's evaluation script computes it.

The published script (github.com/rgnespolo-intusurg/surgvu24-category-2-eval, `evaluation.py`) takes, per test
video, the ground truth at 1 fps over the whole video, joins the predictions on the frame number (left join on the
ground truth), fills a missing prediction AND a missing ground truth with class 7 (`other`), computes
`sklearn.metrics.f1_score(true, pred, average="weighted")` per video and averages over the videos.

Here: frames at t = 0, 1, 2, ... s while t < the video's decoded duration; truth = the step interval that holds t,
`other` where none does; prediction = the argmax of the mean class probabilities of the scored clips whose span
[start, start + clip_frames) / fps holds t; a frame that no scored clip covers takes the clip whose centre is
nearest (so every frame has a prediction, as the challenge requires of a submission). Weighted F1 as in
surgwm.evaluation.metrics.f1_weighted (== scikit-learn's, tested); the mean over videos.
Where the step vocabulary has no `other`, the metric is unavailable (it has no class for unlabelled time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from surgwm.data.clips import label_at
from surgwm.data.manifest import VideoEntry
from surgwm.evaluation import metrics as M

OTHER = "other"


@dataclass
class Frames:
    """The 1-fps frames of some videos: which video, its case, the time (s) and the true class (other filled in)."""

    video: np.ndarray
    case: np.ndarray
    time: np.ndarray
    true: np.ndarray


def video_frames(video: VideoEntry, step_classes: Sequence[str], fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(times, truth) at 1 fps over the whole decoded video; unlabelled time is `other`."""
    index = {c: i for i, c in enumerate(step_classes)}
    duration = (video.frames or 0) / fps
    times = np.arange(int(math.ceil(duration - 1e-9)), dtype=np.float64)
    truth = np.array([label_at(video.steps, t, index, "step", video.video_id) for t in times], dtype=np.int64)
    return times, np.where(truth < 0, index[OTHER], truth)


def frame_predictions(times: np.ndarray, starts: np.ndarray, scores: np.ndarray, clip_frames: int,
                      fps: float) -> np.ndarray:
    """Per frame time: argmax of the mean scores (n_clips, C) of the clips covering it, else of the nearest clip."""
    t0 = np.asarray(starts, dtype=np.float64) / fps
    t1 = t0 + clip_frames / fps
    centre = (t0 + t1) / 2
    pred = np.empty(len(times), dtype=np.int64)
    for i, t in enumerate(times):
        cover = (t0 <= t) & (t < t1)
        if cover.any():
            pred[i] = int(scores[cover].mean(axis=0).argmax())
        else:
            pred[i] = int(scores[np.argmin(np.abs(centre - t))].argmax())
    return pred


def f1_video_official(true: np.ndarray, pred: np.ndarray, video: np.ndarray) -> float | None:
    """Weighted F1 per video over its 1-fps frames, averaged over videos (the challenge's number)."""
    return M.per_video_f1(true, pred, video)


def official_frames(videos: Sequence[VideoEntry], step_classes: Sequence[str], fps: float) -> Frames | None:
    """The 1-fps frames of `videos` (sorted by video id); None when the vocabulary has no `other`."""
    if OTHER not in step_classes:
        return None
    parts = [(v, *video_frames(v, step_classes, fps)) for v in sorted(videos, key=lambda v: v.video_id)]
    return Frames(np.concatenate([np.full(len(t), v.video_id) for v, t, _ in parts] or [np.zeros(0, str)]),
                  np.concatenate([np.full(len(t), v.case) for v, t, _ in parts] or [np.zeros(0, str)]),
                  np.concatenate([t for _, t, _ in parts] or [np.zeros(0)]),
                  np.concatenate([y for _, _, y in parts] or [np.zeros(0, np.int64)]))


def predict_frames(frames: Frames, clip_video: np.ndarray, clip_start: np.ndarray, scores: np.ndarray,
                   clip_frames: int, fps: float) -> np.ndarray:
    """Predictions for every frame of `frames` from the scored clips (clip_video, clip_start, scores (n, C))."""
    pred = np.empty(len(frames.time), dtype=np.int64)
    for vid in np.unique(frames.video):
        f, c = frames.video == vid, clip_video == vid
        if not c.any():
            raise ValueError(f"video {vid}: no scored clip to predict its frames from")
        pred[f] = frame_predictions(frames.time[f], clip_start[c], scores[c], clip_frames, fps)
    return pred
