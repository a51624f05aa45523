"""Clip labelling and mmap reads over a hand-made cache (no ffmpeg needed)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from surgwm.data.clips import Clip, ClipCache, build_clips
from surgwm.evaluation.table import next_transition
from surgwm.data.manifest import Interval, Manifest, VideoEntry

STEPS = ["range_of_motion", "suturing", "other"]


def video(vid: str, frames: int | None = 20, **over) -> VideoEntry:
    fields = dict(
        video_id=vid, case=f"case_{vid}", path=f"/x/{vid}.mp4", frames=frames,
        steps=[Interval(start=0, stop=2, label="range_of_motion"), Interval(start=2, stop=4.5, label="suturing"),
               Interval(start=6, stop=9, label="other")],
        motion=[Interval(start=0, stop=1.5, label="idle"), Interval(start=1.5, stop=3.5, label="cut")],
        events=[Interval(start=0.5, stop=0.5, label="bleed"), Interval(start=2.9, stop=3.1, label="bleed")],
    )
    fields.update(over)
    return VideoEntry(**fields)


def manifest(*videos: VideoEntry) -> Manifest:
    return Manifest(source="folder", root="/x", step_classes=STEPS, motion_classes=["idle", "cut"], videos=list(videos))


def test_labels_at_centre_and_event_overlap() -> None:
    clips = build_clips(manifest(video("a")), clip_frames=8, clip_stride=4, fps=4.0)
    # spans [0,2) [1,3) [2,4) [3,5); centres 1, 2, 3, 4
    assert [c.start for c in clips] == [0, 4, 8, 12]
    assert [c.step for c in clips] == [0, 1, 1, 1]                   # centre 2.0 is in [2, 4.5)
    assert [c.motion for c in clips] == [0, 1, 1, -1]                # centre 4.0: no motion label
    assert [c.event for c in clips] == [1, 1, 1, 1]                  # point event at 0.5; half of [2.9,3.1) is in 3 spans
    assert clips[0] == Clip("a", "case_a", 0, 0, 0, 1)


def test_gaps_unusable_and_unknown_labels() -> None:
    gap = video("g", frames=12, steps=[Interval(start=2.5, stop=3, label="suturing")], motion=[],
                events=[Interval(start=2.5, stop=4, label="bleed")])
    m = manifest(gap, video("bad", error="broken"), video("undecoded", frames=None), video("tiny", frames=7))
    clips = build_clips(m, clip_frames=8, clip_stride=2, fps=4.0)
    assert [(c.video_id, c.start, c.step, c.motion, c.event) for c in clips] == [
        ("g", 0, -1, -1, 0), ("g", 2, -1, -1, 0), ("g", 4, -1, -1, 0)]   # spans [0,2) [.5,2.5) [1,3): half-open;
    # [1,3) holds 0.5 s of the 1.5 s event: less than half of the shorter interval, so the event does not show
    weird = video("w", steps=[Interval(start=0, stop=9, label="juggling")])
    with pytest.raises(ValueError, match="juggling"):
        build_clips(manifest(weird), 8, 4, 4.0)


def test_an_event_shows_when_half_of_it_or_half_of_the_clip_is_in_the_span() -> None:
    from surgwm.data.clips import shows

    ev = Interval(start=2.0, stop=3.0, label="breach")           # 1 s event, 2 s clips
    assert shows(ev, 1.5, 3.5) and shows(ev, 2.5, 4.5)           # 1 s and 0.5 s of it inside: half of the event
    assert not shows(ev, 2.6, 4.6) and not shows(ev, 3.0, 5.0)   # 0.4 s (grazed) and 0 s (adjacent)
    long = Interval(start=0.0, stop=10.0, label="breach")
    assert shows(long, 4.0, 6.0) and shows(long, 9.0, 11.0) and not shows(long, 9.1, 11.1)
    assert shows(Interval(start=1.0, stop=1.0, label="breach"), 1.0, 3.0)  # an instant inside the span


def test_next_step() -> None:
    v = video("a", frames=40)
    clips = build_clips(manifest(v), 8, 4, 4.0)
    index = {s: i for i, s in enumerate(STEPS)}
    nxt = {c.start: next_transition(v, c, index, 8, 4.0)[0] for c in clips}
    assert nxt[0] == 1                     # range_of_motion -> suturing
    assert nxt[8] == 2                     # suturing -> other (after the 4.5-6 s gap)
    assert nxt[16] == 2                    # centre 5 s is unlabelled; next is 'other'
    assert nxt[28] == -1                   # inside the last step


def test_clip_cache_reads_copies(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 255, (20, 16, 16, 3), dtype=np.uint8)   # (N, S, S, 3)
    np.save(tmp_path / "a.npy", frames)
    cache = ClipCache(tmp_path, clip_frames=8)
    clips = build_clips(manifest(video("a")), 8, 4, 4.0)
    out = cache.read(clips[2])                                                            # (T, S, S, 3)
    assert out.shape == (8, 16, 16, 3) and out.dtype == np.uint8 and out.flags.writeable
    assert np.array_equal(out, frames[8:16])
    out[:] = 0
    assert np.array_equal(cache.read(clips[2]), frames[8:16])
    assert cache.frames("a") is cache.frames("a")                   # opened once
    assert cache.read(clips[0], frames=2).shape == (2, 16, 16, 3)
    with pytest.raises(IndexError):
        cache.read(Clip("a", "case_a", 16, 0, 0, 0))
    clone = pickle.loads(pickle.dumps(cache))
    assert len(pickle.dumps(cache)) < 1000                          # maps are not pickled
    assert np.array_equal(clone.read(clips[3]), frames[12:20])
