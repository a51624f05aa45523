"""decode.engine 'dask': videos fan out as Prefect tasks over a real two-worker Dask cluster, same cache as local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from surgwm.data.decode import decode, thread_map
from surgwm.data.ingest import ingest
from surgwm.params import ParamsError, parse_params


def _params(root: Path, **decode_keys):
    return parse_params({"data": {"source": "folder", "root": str(root), "fps": 4, "size": 32, "clip_frames": 8},
                         "decode": {"chunk_frames": 8, **decode_keys}})


@pytest.mark.slow
def test_dask_fanout_matches_local(tmp_path, tiny_video, prefect_harness):
    from distributed import LocalCluster

    from surgwm.data.fanout import dask_map

    root = tmp_path / "videos"
    for i in range(4):
        tiny_video(root / f"case_{i}" / f"v{i}.mp4", seconds=3.0)
    (root / "case_9").mkdir()
    (root / "case_9" / "broken.mp4").write_text("not a video")
    local = _params(root)
    manifest = ingest(local, root, tmp_path / "manifest.json")

    decode(local, tmp_path / "manifest.json", tmp_path / "local", mapper=thread_map)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask = _params(root, engine="dask", scheduler_address=cluster.scheduler_address)
        where: dict[str, str] = {}
        statuses: dict[str, str] = {}
        decode(dask, tmp_path / "manifest.json", tmp_path / "dask", statuses=statuses,
               mapper=lambda *a: where.update(dask_map(*a)))
        workers = set(cluster.scheduler_info["workers"])

    assert set(where.values()) <= workers and len(set(where.values())) == 2   # both workers decoded videos
    assert sorted(where) == sorted(v.video_id for v in manifest.videos if v.error is None)
    assert statuses["case_9__broken"] == "error"
    for npy in sorted((tmp_path / "local").glob("*.npy")):
        assert (tmp_path / "dask" / npy.name).read_bytes() == npy.read_bytes()
    a = json.loads((tmp_path / "local" / "manifest.json").read_text())
    b = json.loads((tmp_path / "dask" / "manifest.json").read_text())
    assert a == b and sum(v["error"] is None for v in a["videos"]) == 4


def test_scheduler_address_needs_dask_engine(tmp_path):
    with pytest.raises(ParamsError, match="decode.scheduler_address"):
        _params(tmp_path, scheduler_address="tcp://127.0.0.1:8786")
