"""Ingest: every source layout, broken files recorded (not fatal), label errors fatal and precise."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

import tasks.ingest as ingest_stage
from surgwm import paths
from surgwm.data.ingest import Found, assign_ids, ingest
from surgwm.data.labels import LabelError
from surgwm.data.manifest import STEP_CLASSES, read_manifest
from surgwm.data.synthetic import MOTION_CLASSES

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_synthetic_source(tiny_synthetic: Path, make_params, tmp_path: Path):
    out = tmp_path / "manifest.json"
    m = ingest(make_params(), root=tiny_synthetic, out=out)
    assert read_manifest(out) == m
    assert m.source == "synthetic" and m.motion_classes == list(MOTION_CLASSES)
    assert [(v.video_id, v.case, v.part) for v in m.videos] == [
        (f"case_00{c}_video_part_00{p}", f"case_00{c}", p) for c in (0, 1) for p in (1, 2)]
    for v in m.videos:
        assert v.error is None and len(v.sha256) == 64
        assert (v.width, v.height, v.fps, v.sar) == (96, 72, 10.0, 1.0)
        assert v.duration_s == pytest.approx(5.0)
        # steps tile each part exactly, even where a step spans the part boundary
        assert v.steps[0].start == 0 and v.steps[-1].stop == pytest.approx(v.duration_s)
        assert all(a.stop == b.start for a, b in zip(v.steps, v.steps[1:]))
        assert v.motion[0].start == 0 and v.motion[-1].stop == pytest.approx(v.duration_s)
        assert {i.label for i in v.motion} <= set(MOTION_CLASSES)
        assert all(e.label == "breach" for e in v.events)


def surgvu_case(root: Path, tiny_video) -> Path:
    for part in (1, 2):
        tiny_video(root / "case_001" / f"case_001_video_part_00{part}.mp4", seconds=3)
    write_csv(root / "labels/case_001/tools.csv", ["x"], [[1]])  # ignored
    return root / "labels/case_001/tasks.csv"


def test_surgvu_source_splits_spanning_intervals(tmp_path: Path, tiny_video, make_params, caplog):
    root = tmp_path / "surgvu"
    # SurgVU's own files: a leading index column, prose step names, an interval spanning parts 1 -> 2,
    # and one on part 3 that this (partial) download lacks
    write_csv(surgvu_case(root, tiny_video), ["", "start_part", "start_time", "stop_part", "stop_time",
                                              "groundtruth_taskname"],
              [[0, 1, 0, 1, 1.5, "Range of motion"], [1, 1, 1.5, 2, 1.0, "Rectal artery/vein"],
               [2, 2, 1.0, 2, 3.2, "Retraction and collision avoidance"], [3, 3, 0, 3, 2, "Suturing"]])
    m = ingest(make_params(source="surgvu", root=str(root)), out=tmp_path / "m.json")
    p1, p2 = m.videos
    assert (p1.video_id, p2.video_id, p1.part, p2.part) == ("case_001_video_part_001", "case_001_video_part_002", 1, 2)
    assert [(i.start, i.stop, i.label) for i in p1.steps] == [(0, 1.5, "range_of_motion"),
                                                              (1.5, 3.0, "rectal_artery_vein")]
    assert [(i.start, i.stop, i.label) for i in p2.steps] == [(0, 1.0, "rectal_artery_vein"),
                                                              (1.0, 3.0, "retraction_collision_avoidance")]
    assert m.motion_classes == [] and p1.motion == [] and m.step_classes == list(STEP_CLASSES)
    assert "part(s) 3 with no video" in caplog.text


def test_folder_source_records_bad_files(tmp_path: Path, tiny_video, make_params, caplog):
    root = tmp_path / "videos"
    tiny_video(root / "a.mp4", seconds=2, size=(64, 48), fps=8)
    tiny_video(root / "sub dir" / "vidéo 1 ünï.mov", seconds=1)
    tiny_video(root / "sub dir" / "clip.webm", seconds=1)
    tiny_video(root / "A.mkv", seconds=1, audio=True)
    (root / "empty.mp4").touch()
    (root / "text.mp4").write_text("this is not a video\n")
    good = tiny_video(tmp_path / "whole.mp4", seconds=2).read_bytes()
    (root / "trunc" / "cut.mp4").parent.mkdir()
    (root / "trunc" / "cut.mp4").write_bytes(good[: len(good) // 2])  # moov atom is at the end: gone
    (root / "notes.txt").write_text("not a video")
    labels = write_csv(tmp_path / "labels.csv", ["video", "start_time", "stop_time", "label"],
                       [["a.mp4", 0, 1.2, "suction"], ["sub dir/vidéo 1 ünï.mov", "0:00.5", 1.0, "cut"]])

    m = ingest(make_params(source="folder", root=str(root), labels_csv=str(labels)), out=tmp_path / "m.json")
    by_name = {Path(v.path).name: v for v in m.videos}
    assert set(by_name) == {"a.mp4", "vidéo 1 ünï.mov", "clip.webm", "A.mkv", "empty.mp4", "text.mp4", "cut.mp4"}
    ids = [v.video_id for v in m.videos]
    assert len(set(i.lower() for i in ids)) == len(ids) and all(SAFE_ID.match(i) for i in ids)
    assert by_name["a.mp4"].video_id.startswith("a-") and by_name["A.mkv"].video_id.startswith("A-")  # case clash
    assert by_name["empty.mp4"].video_id == "empty"
    assert by_name["vidéo 1 ünï.mov"].video_id.startswith("sub_dir__video_1_uni-")
    assert by_name["vidéo 1 ünï.mov"].case == "sub dir" and by_name["a.mp4"].case == "a"

    a = by_name["a.mp4"]
    assert (a.error, a.width, a.height, a.fps, a.duration_s) == (None, 64, 48, 8.0, pytest.approx(2.0))
    assert by_name["clip.webm"].error is None and by_name["A.mkv"].error is None
    assert [(i.start, i.stop, i.label) for i in a.steps] == [(0, 1.2, "suction")]
    assert [(i.start, i.label) for i in by_name["vidéo 1 ünï.mov"].steps] == [(0.5, "cut")]
    assert m.step_classes == ["cut", "suction"]  # custom labels become the class list
    for name in ("empty.mp4", "text.mp4", "cut.mp4"):
        err = by_name[name].error
        assert err and "\n" not in err and len(err) < 250, (name, err)
        assert name in caplog.text
    assert "0 bytes" in by_name["empty.mp4"].error
    assert len(m.usable()) == 4
    again = ingest(make_params(source="folder", root=str(root)), out=tmp_path / "n.json")
    assert ids == [v.video_id for v in again.videos]  # stable


def test_ids_are_unique_safe_and_keep_plain_names():
    pairs = [("x/case_000_video_part_001.mp4", "case_000_video_part_001"), ("x y.mp4", "x y"), ("x_y.mp4", "x_y"),
             ("日本.mp4", "日本")]
    found = [Found(Path(r), r, "c", 1, b) for r, b in pairs]
    ids = assign_ids(found)
    assert ids["x/case_000_video_part_001.mp4"] == "case_000_video_part_001"
    assert ids["x y.mp4"] != ids["x_y.mp4"] and all(SAFE_ID.match(i) for i in ids.values())
    assert ids["日本.mp4"].startswith("video-")


TASK_HEADER = ["start_part", "start_time", "stop_part", "stop_time", "groundtruth_taskname"]


@pytest.mark.parametrize("header, rows, expect", [
    (TASK_HEADER, [[1, 0, 1, 1, "suturing"], [1, 1, 1, 2, "Knitting"]],
     ["data row 2 (line 3)", "'groundtruth_taskname'", "unknown task name 'Knitting'", "allowed: range_of_motion"]),
    (TASK_HEADER[:3] + TASK_HEADER[4:], [[1, 0, 1, "suturing"]],
     ["missing column(s) 'stop_time'", "expected columns: start_part, start_time, stop_part, stop_time"]),
    (TASK_HEADER, [[1, "zero", 1, 1, "suturing"]], ["data row 1 (line 2)", "'start_time'", "not a number: 'zero'"]),
    (TASK_HEADER, [[1, 2, 1, 1, "suturing"]], ["data row 1", "'stop_time'", "before start"]),
    (TASK_HEADER, [[1, 0, 2, 1, "suturing"], [2, 1, 2, 9, "other"]],
     ["data row 2 (line 3)", "'stop_time'", "outside the video", "part 2 lasts 3 s"]),
])
def test_label_errors_name_file_row_and_column(tmp_path, tiny_video, make_params, header, rows, expect):
    root = tmp_path / "surgvu"
    write_csv(surgvu_case(root, tiny_video), header, rows)
    with pytest.raises(LabelError) as err:
        ingest(make_params(source="surgvu", root=str(root)), out=tmp_path / "m.json")
    assert str(root / "labels/case_001/tasks.csv") in str(err.value)
    for text in expect:
        assert text in str(err.value)
    assert not (tmp_path / "m.json").exists()


def test_folder_label_errors_and_cli_exit_code(tmp_path, tiny_video, make_params, monkeypatch, capsys):
    root = tmp_path / "videos"
    tiny_video(root / "a.mp4", seconds=2)
    labels = write_csv(tmp_path / "labels.csv", ["video", "start_time", "stop_time", "label"],
                       [["a.mp4", 0, 1, "x"], ["missing.mp4", 0, 1, "x"]])
    params = make_params(source="folder", root=str(root), labels_csv=str(labels))
    monkeypatch.setattr(ingest_stage, "load_or_exit", lambda: params)
    monkeypatch.setattr(paths, "MANIFEST", tmp_path / "m.json")
    with pytest.raises(SystemExit) as exit_info:
        ingest_stage.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
    assert "labels.csv: data row 2 (line 3), column 'video': no video 'missing.mp4'" in err

    write_csv(labels, ["video", "start_time", "stop_time", "label"], [["a.mp4", 0, 2.4, "x"]])  # within 0.5 s
    shutil.rmtree(tmp_path / "m.json", ignore_errors=True)
    ingest_stage.main()
    assert read_manifest(tmp_path / "m.json").videos[0].steps[0].stop == pytest.approx(2.0)
