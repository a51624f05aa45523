"""Ingest: every source layout, broken files recorded (not fatal), label errors fatal and precise."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import tasks.ingest as ingest_stage
from surgwm import paths
from surgwm.data.ingest import Found, IngestError, assign_ids, ingest
from surgwm.data.labels import LabelError
from surgwm.data.clips import build_clips
from surgwm.data.manifest import STEP_CLASSES, Interval, Manifest, VideoEntry, read_manifest
from surgwm.data.synthetic import MOTION_CLASSES
from surgwm.data.tools import clip_tool_presence
from surgwm.params import ParamsError

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


TOOL_HEADER = ["index", "install_case_part", "install_case_time", "uninstall_case_part", "uninstall_case_time", "arm",
               "commercial_toolname", "groundtruth_toolname"]


def surgvu_case(root: Path, tiny_video) -> Path:
    for part in (1, 2):
        tiny_video(root / "case_001" / f"case_001_video_part_00{part}.mp4", seconds=3)
    write_csv(root / "labels/case_001/tools.csv", TOOL_HEADER,
              [[0, "1.0", "00:00:00.000000", "2.0", "00:00:03.000000", "USM1", "Cadiere Forceps", "cadiere forceps"]])
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
    (TASK_HEADER, [[1, 0, 1, 1, "suturing"], [1.5, 1, 1, 2, "other"]],
     ["data row 2 (line 3)", "'start_part'", "part numbers are integers from 1, got '1.5'"]),
])   # labels past the end of a video are a warning since issue 10: test_overrun_is_a_warning_and_clipped
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


# ------------------------------------------------------------------ the real SurgVU layout (issue 10)

TASK_ROWS_HEADER = ["index"] + TASK_HEADER


def fake_surgvu(base: Path, tiny_video, parts: dict[str, tuple[int, ...]], labelled: tuple[str, ...],
                seconds: float = 3) -> tuple[Path, Path]:
    """Two archives unpacked apart, as SurgVU ships them: videos under download/surgvu24/<case>/, labels under
    label_archive/labels/<case>/{tasks,tools}.csv. Returns (video root, labels root)."""
    videos, labels = base / "download" / "surgvu24", base / "label_archive" / "labels"
    for case, nums in parts.items():
        for n in nums:
            tiny_video(videos / case / f"{case}_video_part_{n:03d}.mp4", seconds=seconds)
    for case in labelled:
        last = max(parts.get(case, (1,)))
        write_csv(labels / case / "tasks.csv", TASK_ROWS_HEADER, [[0, 1, 0, last, seconds, "Suturing"]])
        write_csv(labels / case / "tools.csv", TOOL_HEADER,
                  [[0, "1.0", "00:00:00.500000", f"{last}.0", "00:00:02.000000", "USM1", "Large Needle Driver",
                    "needle driver"]])
    labels.mkdir(parents=True, exist_ok=True)
    return videos, labels


def surgvu_params(make_params, videos: Path, labels: Path | None = None):
    return make_params(source="surgvu", root=str(videos), **({"labels_root": str(labels)} if labels else {}))


def test_labels_come_from_their_own_root(tmp_path, tiny_video, make_params):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1, 2)}, labelled=("case_001",))
    m = ingest(surgvu_params(make_params, videos, labels), out=tmp_path / "m.json")
    assert m.schema_version == 2 and m.labels_root == str(labels)
    assert [[(i.start, i.stop, i.label) for i in v.steps] for v in m.videos] == [[(0, 3.0, "suturing")],
                                                                                 [(0, 3.0, "suturing")]]
    assert [[(i.start, i.stop, i.label) for i in v.tools] for v in m.videos] == [[(0.5, 3.0, "needle_driver")],
                                                                                 [(0, 2.0, "needle_driver")]]
    assert m.tool_classes == ["needle_driver"] and m.videos[0].label_files == ["tasks.csv", "tools.csv"]


def test_cases_without_labels_warn_and_stay(tmp_path, tiny_video, make_params, caplog):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1,), "case_002": (1,), "case_003": (1,)},
                                 labelled=("case_002",))
    m = ingest(surgvu_params(make_params, videos, labels), out=tmp_path / "m.json")
    assert (f"2 of 3 cases have no tasks.csv under data.labels_root {labels}: case_001, case_003. Their videos "
            "still serve world-model training but carry no step labels") in caplog.text
    assert [(v.case, v.error, v.label_files, v.tools is None) for v in m.videos] == [
        ("case_001", None, [], True), ("case_002", None, ["tasks.csv", "tools.csv"], False), ("case_003", None, [], True)]


def test_label_folders_without_videos_warn(tmp_path, tiny_video, make_params, caplog):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1,)}, labelled=("case_001", "case_009"))
    ingest(surgvu_params(make_params, videos, labels), out=tmp_path / "m.json")
    assert (f"1 label folder(s) under data.labels_root {labels} have no videos under data.root {videos} (a partial "
            "download?): case_009") in caplog.text


def test_no_case_with_labels_is_an_error_naming_both_roots(tmp_path, tiny_video, make_params):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1,), "case_002": (1,)}, labelled=())
    with pytest.raises(IngestError) as err:
        ingest(surgvu_params(make_params, videos, labels), out=tmp_path / "m.json")
    assert str(err.value).startswith(
        f"data.source 'surgvu': no case has labels: none of the 2 case folders under data.root '{videos}' has a "
        f"tasks.csv under data.labels_root '{labels}' (expected <data.labels_root>/<case>/tasks.csv, e.g. "
        f"{labels}/case_001/tasks.csv).")
    assert "Set data.labels_root in params.yaml" in str(err.value) and not (tmp_path / "m.json").exists()


def test_labels_root_one_level_too_high_is_named(tmp_path, tiny_video, make_params):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1,)}, labelled=("case_001",))
    with pytest.raises(IngestError) as err:
        ingest(surgvu_params(make_params, videos, labels.parent), out=tmp_path / "m.json")
    assert (f"Its sub-folder 'labels' holds 1 case folders with tasks.csv: set data.labels_root to '{labels}'"
            in str(err.value))


def test_default_labels_root_must_exist(tmp_path, tiny_video, make_params):
    videos, _ = fake_surgvu(tmp_path, tiny_video, {"case_001": (1,)}, labelled=())
    with pytest.raises(ParamsError) as err:
        surgvu_params(make_params, videos)
    assert (f"data.labels_root '{videos}/labels' (the default: labels/ inside data.root) does not exist or is not "
            f"a directory ({videos}/labels); data.root is '{videos}'") in str(err.value)


def test_surgvu_refuses_the_synthetic_labels(tmp_path, make_params):
    with pytest.raises(ParamsError) as err:
        make_params(source="surgvu", root=str(tmp_path), labels_root="data/synthetic/labels")
    assert "data.labels_root 'data/synthetic/labels' holds the synthetic demo's labels" in str(err.value)


def test_root_one_level_too_high_names_the_case_folder(tmp_path, tiny_video, make_params):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1,), "case_002": (1,)}, labelled=("case_001",))
    with pytest.raises(IngestError) as err:
        ingest(surgvu_params(make_params, videos.parent, labels), out=tmp_path / "m.json")
    assert str(err.value).startswith(f"no video found under data.root '{videos.parent}' (data.source 'surgvu' "
                                     "expects <data.root>/<case>/<case>_video_part_NNN.mp4); it holds 1 folder(s)")
    assert f"The sub-folder 'surgvu24' holds 2 case folders with videos: set data.root to '{videos}'" in str(err.value)


def test_root_that_is_a_case_folder_is_named(tmp_path, tiny_video, make_params):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1, 2)}, labelled=("case_001",))
    with pytest.raises(IngestError) as err:
        ingest(surgvu_params(make_params, videos / "case_001", labels), out=tmp_path / "m.json")
    assert "data.root holds 2 video file(s) directly, like a single case folder" in str(err.value)


def test_folder_source_without_videos_is_an_error(tmp_path, make_params):
    (tmp_path / "notes.txt").write_text("no videos here")
    with pytest.raises(IngestError) as err:
        ingest(make_params(source="folder", root=str(tmp_path)), out=tmp_path / "m.json")
    assert str(err.value).startswith("no video file (.mp4, .mov, .mkv, .avi, .webm) anywhere under data.root")
    assert "notes.txt" in str(err.value)


def test_part_gaps_warn(tmp_path, tiny_video, make_params, caplog):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1, 3)}, labelled=("case_001",))
    m = ingest(surgvu_params(make_params, videos, labels), out=tmp_path / "m.json")
    assert ("case case_001: video part(s) 2 missing under data.root (found part(s) 1, 3); labels of the missing "
            "parts are skipped, the other parts keep their own times") in caplog.text
    assert [v.part for v in m.videos] == [1, 3] and all(v.error is None for v in m.videos)


def test_tools_csv_messy_names_and_float_parts(tmp_path, tiny_video, make_params, caplog):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1, 2)}, labelled=("case_001",))
    write_csv(labels / "case_001" / "tools.csv", TOOL_HEADER, [
        [0, "1.0", "00:00:00.000000", "2.0", "00:00:01.000000", "USM1", "Large Needle Driver", "Needle Driver "],
        [1, "1.0", "00:00:01.000000", "1.0", "00:00:02.000000", "USM2", "Mega Needle Driver", "needle  driver"],
        [2, "2.0", "00:00:00.500000", "2.0", "00:00:02.500000", "USM3", "Tip-Up Fenestrated Grasper",
         "Tip-Up Fenestrated Grasper"],
        [3, "2.0", "00:00:02.500000", "2.0", "00:00:03.000000", "USM3", "Tip-Up", "tipup fenestrated grasper"],
        [4, "1.0", "00:00:00.000000", "2.0", "00:00:03.000000", "USM4", "Endoscope", "nan(camera in)"],
        [5, "1.0", "00:00:00.000000", "1.0", "00:00:01.000000", "USM4", "", ""],
        [6, "2.0", "00:00:01.000000", "2.0", "00:00:02.000000", "USM4", "Single Site", ' Single Site"'],
    ])
    m = ingest(surgvu_params(make_params, videos, labels), out=tmp_path / "m.json")
    assert m.tool_classes == ["needle_driver", "single_site", "tip_up_fenestrated_grasper"]
    p1, p2 = ([(i.start, i.stop, i.label) for i in v.tools] for v in m.videos)
    assert p1 == [(0, 3.0, "needle_driver"), (1.0, 2.0, "needle_driver")]
    assert p2 == [(0, 1.0, "needle_driver"), (0.5, 2.5, "tip_up_fenestrated_grasper"), (1.0, 2.0, "single_site"),
                  (2.5, 3.0, "tip_up_fenestrated_grasper")]
    assert ("tools.csv: skipped 2 row(s) in 1 file(s) whose groundtruth_toolname names no tool (empty, or "
            "'nan(camera in)': the endoscope)") in caplog.text


@pytest.mark.parametrize("name, header, row, column", [
    ("tasks.csv", TASK_ROWS_HEADER, [1, 1, 1.0, 1, 9, "Suturing"], "stop_time"),
    ("tools.csv", TOOL_HEADER, [1, "1.0", "00:00:01", "1.0", "00:00:09", "USM1", "x", "needle driver"],
     "uninstall_case_time"),
])
def test_overrun_is_a_warning_and_clipped(tmp_path, tiny_video, make_params, caplog, name, header, row, column):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1,)}, labelled=("case_001",))
    path = labels / "case_001" / name
    first = [0, 1, 0, 1, 1.0, "Other"] if name == "tasks.csv" else [0, "1.0", "0", "1.0", "1", "USM2", "x", "stapler"]
    write_csv(path, header, [first, row])
    m = ingest(surgvu_params(make_params, videos, labels), out=tmp_path / "m.json")
    assert (f"{path}: data row 2 (line 3), column '{column}': 9 s is outside the video (part 1 lasts 3 s): overrun "
            "6.000 s > tolerance 0.5 s; the interval is clipped to the video") in caplog.text
    got = m.videos[0].steps if name == "tasks.csv" else m.videos[0].tools
    assert [(i.start, i.stop) for i in got] == [(0, 1.0), (1.0, 3.0)]


def test_manifest_without_schema_version_still_reads(tmp_path):
    old = {"source": "surgvu", "root": "/x", "videos": [{"video_id": "v", "case": "c", "path": "/x/v.mp4",
                                                          "steps": [{"start": 0, "stop": 1, "label": "other"}]}]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    m = read_manifest(tmp_path / "old.json")
    assert (m.schema_version, m.tool_classes, m.videos[0].tools, m.videos[0].label_files) == (1, [], None, None)


def test_newer_manifest_is_refused_with_its_version(tmp_path):
    (tmp_path / "new.json").write_text(json.dumps({"schema_version": 99, "source": "x", "root": "/x", "future": 1}))
    with pytest.raises(ValueError, match="manifest schema version 99 is newer than this code reads"):
        read_manifest(tmp_path / "new.json")


def test_clip_tool_presence_is_multi_hot_at_the_clip_centre():
    tools = [Interval(start=0, stop=1.5, label="needle_driver"), Interval(start=1.5, stop=4.0, label="stapler"),
             Interval(start=0.5, stop=1.2, label="needle_driver"), Interval(start=2.5, stop=3.5, label="x")]
    videos = [VideoEntry(video_id="a", case="a", path="/a.mp4", frames=16, tools=tools),
              VideoEntry(video_id="b", case="b", path="/b.mp4", frames=8)]   # no tools.csv: unknown, not "none"
    m = Manifest(schema_version=2, source="surgvu", root="/", tool_classes=["needle_driver", "stapler", "x"],
                 videos=videos)
    clips = build_clips(m, clip_frames=8, clip_stride=4, fps=4)                # centres 1 s, 2 s, 3 s; b: 1 s
    presence, known, vocab = clip_tool_presence(m, clips, clip_frames=8, fps=4)
    assert vocab == ["needle_driver", "stapler", "x"] and presence.dtype == np.uint8
    assert presence.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 0]]    # two arms with one tool: one 1
    assert known.tolist() == [True, True, True, False]
    only, _, _ = clip_tool_presence(m, clips, clip_frames=8, fps=4, vocabulary=["stapler"])
    assert only[:, 0].tolist() == [0, 1, 1, 0]


def test_labelled_cases_without_tools_csv_warn(tmp_path, tiny_video, make_params, caplog):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1,), "case_002": (1,)},
                                 labelled=("case_001", "case_002"))
    (labels / "case_002" / "tools.csv").unlink()
    m = ingest(surgvu_params(make_params, videos, labels), out=tmp_path / "m.json")
    assert (f"1 of the 2 cases with a tasks.csv have no tools.csv under data.labels_root {labels}: case_002 (their "
            "tool presence is unknown, not 'no tool')") in caplog.text
    assert [v.tools is None for v in m.videos] == [False, True]


def test_interval_starting_past_the_end_is_dropped_with_a_warning(tmp_path, tiny_video, make_params, caplog):
    videos, labels = fake_surgvu(tmp_path, tiny_video, {"case_001": (1,)}, labelled=("case_001",))
    path = write_csv(labels / "case_001" / "tasks.csv", TASK_ROWS_HEADER,
                     [[0, 1, 0, 1, 3, "Other"], [1, 1, 5, 1, 9, "Suturing"]])
    m = ingest(surgvu_params(make_params, videos, labels), out=tmp_path / "m.json")
    assert (f"{path}: data row 2 (line 3), column 'start_time': 5 s is outside the video (part 1 lasts 3 s): "
            "overrun 2.000 s > tolerance 0.5 s; the interval starts after the end and is dropped") in caplog.text
    assert [(i.start, i.stop, i.label) for i in m.videos[0].steps] == [(0, 3.0, "other")]
