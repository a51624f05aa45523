"""`step.f1_video_official` against a plain re-implementation of the SurgVU 2024 Category 2 evaluation script
(github.com/rgnespolo-intusurg/surgvu24-category-2-eval, evaluation.py): per video, ground truth at 1 fps joined
with the predictions on the frame number (left join on the ground truth), missing prediction and missing truth
filled with class 7 (`other`), sklearn weighted F1 per video, mean over videos. Hand-made cases: gaps in the labels,
a class absent from one video, frames no clip covers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from surgwm.data.classes import STEP_CLASSES
from surgwm.data.manifest import Interval, VideoEntry
from surgwm.evaluation.official import f1_video_official, frame_predictions, official_frames, predict_frames

OTHER = STEP_CLASSES.index("other")   # 7, as the script hard-codes


def script_f1(gt: dict[str, list[tuple[int, int | None]]], pred: dict[str, list[tuple[int, int]]]) -> float:
    """The published script's logic: pandas merge on frame_nr (how="left"), fillna(7) on both, weighted F1 per
    video, mean over videos (unmatched videos are skipped there; every video has predictions here)."""
    scores = []
    for video, rows in gt.items():
        g = pd.DataFrame([{"frame_nr": f, "surgical_step": s} for f, s in rows])
        p = pd.DataFrame([{"frame_nr": f, "surgical_step": s} for f, s in pred[video]])
        c = pd.merge(g, p, on="frame_nr", how="left")
        c["true"] = c["surgical_step_x"].fillna(OTHER)
        c["pred"] = c["surgical_step_y"].fillna(OTHER)
        scores.append(f1_score(c["true"], c["pred"], average="weighted"))
    return float(pd.Series(scores).mean())


def video(vid: str, seconds: int, steps: list[tuple[float, float, str]], fps: float = 4.0) -> VideoEntry:
    return VideoEntry(video_id=vid, case=vid.split("_")[0], path=f"/{vid}.mp4", frames=int(seconds * fps), fps=fps,
                      steps=[Interval(start=a, stop=b, label=lab) for a, b, lab in steps])


VIDEOS = [
    # a gap (4-7 s unlabelled -> other) and a labelled `other`
    video("a_1", 12, [(0, 4, "suturing"), (7, 10, "range_of_motion"), (10, 12, "other")]),
    # suturing absent from this video; labels stop before the end (10-11 s -> other)
    video("b_1", 11, [(0, 5.5, "uterine_horn"), (5.5, 10, "range_of_motion")]),
    # a single class and a fractional duration (8.5 s: frames at 0..8)
    video("c_1", 8.5, [(0, 8.5, "skills_application")], fps=2.0),
]


def test_frames_cover_whole_videos_and_fill_unlabelled_time_with_other():
    f = official_frames(VIDEOS, STEP_CLASSES, 4.0)
    assert f is not None
    a = f.video == "a_1"
    assert list(f.time[a]) == list(range(12))
    s, r = STEP_CLASSES.index("suturing"), STEP_CLASSES.index("range_of_motion")
    assert list(f.true[a]) == [s] * 4 + [OTHER] * 3 + [r] * 3 + [OTHER] * 2
    assert list(f.true[f.video == "b_1"])[-1] == OTHER
    assert official_frames(VIDEOS, [c for c in STEP_CLASSES if c != "other"], 4.0) is None


@pytest.mark.parametrize("seed", range(5))
def test_f1_matches_the_published_script(seed):
    """Random frame predictions (including classes absent from a video's truth) and gaps in the truth."""
    rng = np.random.default_rng(seed)
    f = official_frames(VIDEOS, STEP_CLASSES, 4.0)
    pred = rng.choice([0, 2, 3, 5, 6, 7], size=len(f.time))
    index = {c: i for i, c in enumerate(STEP_CLASSES)}
    gt, pr = {}, {}
    for v in VIDEOS:
        frames = range(len(f.time[f.video == v.video_id]))
        label = {k: next((index[iv.label] for iv in v.steps if iv.start <= k < iv.stop), None) for k in frames}
        gt[v.video_id] = [(k, label[k]) for k in frames]            # None: no label (the script's NaN)
        pr[v.video_id] = [(k, int(p)) for k, p in zip(frames, pred[f.video == v.video_id])]
    assert f1_video_official(f.true, pred, f.video) == pytest.approx(script_f1(gt, pr))


def test_missing_predictions_count_as_other_like_the_script():
    """The script fills a frame without a prediction with `other`; ours predicts every frame, so the same frames
    predicted `other` explicitly give the script's number."""
    f = official_frames(VIDEOS[:1], STEP_CLASSES, 4.0)
    gt = {"a_1": [(int(k), int(y) if y != OTHER else None) for k, y in zip(f.time, f.true)]}
    partial = {"a_1": [(k, 0) for k in range(0, 12, 2)]}           # every other frame predicted
    ours = np.array([0 if k % 2 == 0 else OTHER for k in range(12)])
    assert f1_video_official(f.true, ours, f.video) == pytest.approx(script_f1(gt, partial))


def test_frame_prediction_is_the_mean_of_covering_clips_else_the_nearest():
    # clips of 8 frames at 4 fps (2 s): [0, 2), [1, 3) and [6, 8) s
    starts, clip, fps = np.array([0, 4, 24]), 8, 4.0
    scores = np.array([[0.6, 0.4, 0.0],     # clip 0 says class 0
                       [0.0, 0.9, 0.1],     # clip 1 says class 1
                       [0.0, 0.2, 0.8]])    # clip 2 says class 2
    pred = frame_predictions(np.arange(10.0), starts, scores, clip, fps)
    # t=0: clip 0 only; t=1: clips 0+1 -> mean (0.3, 0.65, 0.05) -> 1; t=2: clip 1; t=3..5: nobody covers ->
    # nearest centre (clip 1 at 2 s for t=3; clip 2 at 7 s for t=5; t=4 ties 2 s vs 7 s? no: |4-2|=2 < |4-7|=3)
    assert list(pred) == [0, 1, 1, 1, 1, 2, 2, 2, 2, 2]


def test_every_frame_of_every_video_gets_a_prediction_from_its_own_clips():
    f = official_frames(VIDEOS, STEP_CLASSES, 4.0)
    vids = np.array(["a_1", "a_1", "b_1", "c_1"])
    starts = np.array([0, 20, 8, 0])
    scores = np.eye(8)[[1, 2, 3, 4]]
    pred = predict_frames(f, vids, starts, scores, 8, 4.0)
    assert len(pred) == len(f.time)
    assert set(pred[f.video == "b_1"]) == {3} and set(pred[f.video == "c_1"]) == {4}
    with pytest.raises(ValueError, match="no scored clip"):
        predict_frames(f, vids[:2], starts[:2], scores[:2], 8, 4.0)
