"""The h264 clip store itself (surgwm/data/store.py): writer and reader with real x264/PyAV, no decode stage."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from surgwm.data.clips import Clip, ClipCache, open_clips
from surgwm.data.store import STORE_MARKER, StoreClips, StoreError, StoreWriter, load_index
from surgwm.params import ParamsError, parse_params

SIZE, GOP, CRF = 64, 8, 20


def scene(frames: int = 40, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """uint8 (N, S, S, 3): smooth colour gradients with a bright disc moving across, every frame different."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([120 + 80 * xx, 60 + 90 * yy, 140 - 60 * xx * yy], -1)                 # (S, S, 3)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        cx, cy = 0.15 + 0.7 * t / frames, 0.5 + 0.3 * np.sin(t / 5)
        disc = (np.hypot(xx - cx, yy - cy) < 0.12)[..., None]
        frame = np.where(disc, np.array([230, 210, 90], np.float32), base)
        out[t] = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255)
    return out


def store(folder: Path, frames: np.ndarray, video_id: str = "v", gop: int = GOP, crf: int = CRF,
          extra: str = "") -> bytes:
    """Write one video the way the decode stage does (data file + sidecar + marker); returns the stream's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    w = StoreWriter(buf, frames.shape[1], crf, gop, 4.0, x264_extra=extra)
    for lo in range(0, len(frames), 7):                       # chunks that do not line up with GOPs
        w.write(frames[lo:lo + 7])
    n = w.close()
    (folder / f"{video_id}.h264").write_bytes(buf.getvalue())
    (folder / f"{video_id}.json").write_text(json.dumps({"frames": n, "size": frames.shape[1], "store": "h264",
                                                         "gop": gop, "crf": crf, "packet_bytes": w.packet_bytes}))
    (folder / STORE_MARKER).write_text(json.dumps({"store": "h264"}))
    return buf.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))


def test_round_trip_shape_and_psnr(tmp_path: Path) -> None:
    frames = scene()
    store(tmp_path, frames)
    got = StoreClips(tmp_path, 8).read_frames("v", 0, len(frames))               # (N, S, S, 3)
    assert got.shape == frames.shape and got.dtype == np.uint8
    assert psnr(got, frames) > 38


def test_every_clip_start_reads_the_same_frames_as_a_full_decode(tmp_path: Path) -> None:
    frames = scene(29)                                                          # a last GOP of 5 frames
    store(tmp_path, frames)
    reader = StoreClips(tmp_path, 6)
    full = reader.read_frames("v", 0, 29)
    for start in range(0, 29 - 6 + 1):                                          # across every GOP boundary
        clip = reader.read(Clip("v", "c", start, -1, -1, 0))
        assert np.array_equal(clip, full[start:start + 6]), start
    for i, frame in enumerate(full):                                            # in order: frame i is nearest i
        assert int(np.argmax([psnr(frame, f) for f in frames])) == i
    with pytest.raises(IndexError):
        reader.read(Clip("v", "c", 24, -1, -1, 0))


def test_keyframe_every_gop_frames(tmp_path: Path) -> None:
    """Each GOP starts with an IDR + SPS/PPS, so reading can start at any multiple of `gop` with no earlier bytes."""
    data = store(tmp_path, scene(24), gop=8)
    idx = load_index(tmp_path, "v")
    for g in range(0, 24, 8):
        head = data[idx.offsets[g]:idx.offsets[g + 1]]                      # the whole access unit
        nal_types = {b & 0x1F for b in (head[i + 3] for i in range(len(head) - 3) if head[i:i + 3] == b"\0\0\1")}
        assert {7, 8, 5} <= nal_types, (g, nal_types)                          # SPS, PPS, IDR slice


def test_bytes_are_reproducible_and_cpu_independent(tmp_path: Path) -> None:
    """Same frames, same bytes; and cpu-independent=1 gives the bytes of x264 with every CPU-specific path off."""
    frames = scene(20)
    a = store(tmp_path / "a", frames)
    assert store(tmp_path / "b", frames) == a
    assert store(tmp_path / "c", frames, extra="no-asm=1") == a


def test_damaged_store_is_refused_naming_the_file(tmp_path: Path) -> None:
    store(tmp_path, scene(16))
    data = tmp_path / "v.h264"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(StoreError, match=r"v\.h264.*re-run the decode stage"):
        StoreClips(tmp_path, 8).read(Clip("v", "c", 0, -1, -1, 0))


def test_pickles_small_and_reads_in_dataloader_workers(tmp_path: Path) -> None:
    import torch
    from torch.utils.data import DataLoader

    frames = scene(32)
    store(tmp_path, frames)
    reader = StoreClips(tmp_path, 8)
    expect = reader.read_frames("v", 0, 32)                      # opens file and decoder in this process first
    assert len(pickle.dumps(reader)) < 1000
    starts = list(range(0, 25, 3))
    loader = DataLoader([Clip("v", "c", s, -1, -1, 0) for s in starts], batch_size=3, num_workers=2,
                        collate_fn=lambda cs: torch.from_numpy(np.stack([reader.read(c) for c in cs])))
    got = torch.cat(list(loader)).numpy()                                        # (len(starts), T, S, S, 3)
    assert np.array_equal(got, np.stack([expect[s:s + 8] for s in starts]))


def test_open_clips_picks_the_reader_the_folder_needs(tmp_path: Path) -> None:
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "v.npy", scene(10))
    assert isinstance(open_clips(tmp_path / "npy", 4), ClipCache)
    store(tmp_path / "h264", scene(10))
    assert isinstance(open_clips(tmp_path / "h264", 4), StoreClips)
    (tmp_path / "h264" / STORE_MARKER).write_text(json.dumps({"store": "zip"}))
    with pytest.raises(ValueError, match=r"store\.json.*unknown clip store 'zip'"):
        open_clips(tmp_path / "h264", 4)


@pytest.mark.parametrize("decode,words", [
    ({"store": "zip"}, ["decode.store", "npy", "h264"]),
    ({"crf": 52}, ["decode.crf"]),
    ({"gop": 0}, ["decode.gop"]),
])
def test_store_params_are_validated(decode: dict, words: list[str]) -> None:
    with pytest.raises(ParamsError) as err:
        parse_params({"decode": decode})
    for w in words:
        assert w in str(err.value)
