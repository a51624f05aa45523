"""The new-data sensor: content hashes decide (a touched file is not new data); new videos start a retraining run
in which DVC reruns only stale stages and decode decodes only the new video."""

from __future__ import annotations

import os

import pytest
import yaml
from workspace_data import make_workspace

pytestmark = pytest.mark.slow


def _data_dep(ws) -> str:
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    return next(d["md5"] for d in lock["stages"]["ingest"]["deps"] if d["path"] == "videos")   # data.root inside ws: stored relative


def test_sensor_retrains_only_on_new_content(tmp_path, tiny_video, prefect_harness):
    from flows.retrain import data_sensor

    videos = tmp_path / "ws" / "videos"
    for i in range(2):
        tiny_video(videos / f"case_{i}" / f"v{i}.mp4", seconds=3.0)
    ws = make_workspace(tmp_path / "ws", {"data": {"source": "folder", "root": str(videos), "size": 32},
                                          "decode": {"workers": 1}})
    only = ["ingest", "decode"]          # the data stages are enough to see what DVC reruns

    first = data_sensor(workdir=str(ws), stages=only)
    assert first["new_data"] and len(first["added"]) == 2
    assert [s["ran"] for s in first["retrain"]["stages"]] == [True, True]
    version1 = _data_dep(ws)
    cached = {p.name: p.stat().st_mtime_ns for p in (ws / "data" / "cache").glob("*.npy")}
    assert len(cached) == 2

    quiet = data_sensor(workdir=str(ws), stages=only)
    assert not quiet["new_data"] and quiet["message"].startswith("no new data") and quiet["hashed"] == 0
    assert "retrain" not in quiet

    st = (videos / "case_0" / "v0.mp4").stat()
    os.utime(videos / "case_0" / "v0.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # touched, same bytes
    touched = data_sensor(workdir=str(ws), stages=only)
    assert not touched["new_data"] and touched["hashed"] == 1

    tiny_video(videos / "case_2" / "v2.mp4", seconds=3.0)
    added = data_sensor(workdir=str(ws), stages=only)
    assert added["new_data"] and [p.rsplit("/", 2)[-2:] for p in added["added"]] == [["case_2", "v2.mp4"]]
    assert [s["ran"] for s in added["retrain"]["stages"]] == [True, True]
    assert _data_dep(ws) != version1                       # dvc.lock records the new data version
    after = {p.name: p.stat().st_mtime_ns for p in (ws / "data" / "cache").glob("*.npy")}
    assert set(after) - set(cached) == {"case_2__v2.npy"}
    assert {k: after[k] for k in cached} == cached        # the two known videos were not decoded again

    assert not data_sensor(workdir=str(ws), stages=only)["new_data"]
