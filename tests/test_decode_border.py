"""data.border against real ffmpeg: a 1280x720@60 video with a SurgVU-like banner along the bottom (issue 10).

The banner is a magenta band with white "text" blocks over greyscale content, encoded losslessly, so a frame
either holds banner pixels or is exactly what the same video without the banner gives.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from surgwm.data.decode import decode, decode_key
from surgwm.data.ffmpeg import ffmpeg_exe
from surgwm.data.geometry import Border, border_box
from surgwm.data.ingest import ingest
from surgwm.params import Params, parse_params

SURGVU_BORDER = {"top": 0.0, "bottom": 0.08, "left": 0.0, "right": 0.0}   # the setting docs/data.md gives
BANNER_ROWS = 56                                                           # of 720: 7.8 %, like SurgVU's banner
TEXT = ",".join(f"drawbox=x={40 + 90 * i}:y=ih-44:w={30 + 7 * (i % 4)}:h=30:color=white:t=fill" for i in range(12))


def make_720p60(path: Path, banner: bool, seconds: float = 2) -> Path:
    vf = "format=gray,format=yuv420p"
    if banner:
        vf += f",drawbox=x=0:y=ih-{BANNER_ROWS}:w=iw:h={BANNER_ROWS}:color=magenta:t=fill,{TEXT}"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=s=1280x720:r=60:d={seconds}",
                    "-vf", vf, "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p",
                    "-threads", "1", str(path)], check=True)
    return path


def params(root: Path, border: dict | None = None) -> Params:
    data = {"source": "folder", "root": str(root), "fps": 4, "size": 64, "clip_frames": 8}
    return parse_params({"data": {**data, **({"border": border} if border else {})},
                         "decode": {"workers": 1, "threads": 1, "chunk_frames": 4}})


def cached(tmp: Path, root: Path, border: dict | None = None, statuses: dict | None = None) -> dict[str, np.ndarray]:
    """Ingest + decode `root` with real ffmpeg; video_id -> cached frames (N, 64, 64, 3)."""
    p = params(root, border)
    ingest(p, out=tmp / "ingest.json")
    m = decode(p, manifest_path=tmp / "ingest.json", cache_dir=tmp / "cache", statuses=statuses)
    assert all(v.error is None for v in m.videos), [v.error for v in m.videos]
    return {v.video_id: np.load(tmp / "cache" / f"{v.video_id}.npy") for v in m.videos}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("border") / "videos"
    make_720p60(root / "banner.mp4", banner=True)
    make_720p60(root / "clean.mp4", banner=False)
    return root


def magenta(frames: np.ndarray) -> np.ndarray:
    """Per pixel: red and blue far above green (the banner's colour; the content is grey)."""
    f = frames.astype(int)                                                  # (N, S, S, 3)
    return (np.minimum(f[..., 0], f[..., 2]) - f[..., 1]) > 100             # (N, S, S)


def test_surgvu_border_leaves_no_banner_pixel(videos, tmp_path):
    frames = cached(tmp_path, videos, SURGVU_BORDER)
    assert frames["banner"].shape == (8, 64, 64, 3)
    assert not magenta(frames["banner"]).any()
    assert np.array_equal(frames["banner"], frames["clean"])    # the banner had no influence on any pixel


def test_without_border_the_banner_reaches_the_cache(videos, tmp_path):
    frames = cached(tmp_path, videos)
    assert (magenta(frames["banner"])[:, -3:].mean(axis=(1, 2)) > 0.5).all()   # every frame: bottom rows mostly banner
    assert not magenta(frames["clean"]).any()


def test_default_border_keeps_todays_frames_byte_identical(videos, tmp_path):
    # today's chain, run by hand: fps, one scale to short side 64 (1280x720 -> 114x64), centre crop
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-noautorotate", "-threads", "1", "-i",
                          str(videos / "banner.mp4"), "-map", "0:v:0", "-vf", "fps=4,scale=114:64,crop=64:64",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    assert cached(tmp_path, videos)["banner"].tobytes() == raw
    spec = {"fps": 4.0, "size": 64, "aspect_policy": 1, "pix_fmt": "rgb24"}   # the key before data.border
    assert decode_key(4, 64, Border()) == hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def test_changing_the_border_re_decodes(videos, tmp_path):
    first, again, bordered = {}, {}, {}
    cached(tmp_path, videos, statuses=first)
    cached(tmp_path, videos, statuses=again)
    cached(tmp_path, videos, SURGVU_BORDER, statuses=bordered)
    assert (set(first.values()), set(again.values()), set(bordered.values())) == ({"decoded"}, {"cached"}, {"decoded"})
    assert decode_key(4, 64, Border(**SURGVU_BORDER)) != decode_key(4, 64, Border())


@pytest.mark.parametrize("size, border, box", [
    ((1280, 720), Border(bottom=0.08), (1280, 662, 0, 0)),                 # 57.6 rows -> 58
    ((97, 61), Border(top=0.05, bottom=0.05, left=0.03, right=0.03), (93, 53, 2, 4)),
    ((1280, 720), Border(top=0.0125, left=0.0125), (1264, 712, 16, 8)),    # 9 rows -> 8 (even), 16 columns
])
def test_border_box_keeps_even_offsets(size, border, box):
    assert border_box(*size, border) == box and box[2] % 2 == 0 and box[3] % 2 == 0
