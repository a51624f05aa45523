"""Shared fixtures: real (tiny) videos made with the project's ffmpeg, so tests exercise real decoders.

- `tiny_video(path, seconds=1.0, size=(64, 48), fps=10, audio=False) -> Path`: factory; writes a real video from
  ffmpeg's lavfi `testsrc` (H.264 yuv420p for .mp4/.mov/.mkv, VP8 for .webm, MPEG-4 for .avi; a sine
  track when `audio`). Parent folders are created. Default mp4s keep the moov atom at the end (like most
  recorders), so cutting a file short leaves it without one.
- `tiny_synthetic` (session): a tiny labelled synthetic dataset in the SurgVU layout (TINY_SYNTHETIC: 2 cases x
  2 parts x 5 s, 96x72 @ 10 fps, seed 7): root/case_00N/*.mp4 and root/labels/case_00N/{tasks,motion,events}.csv.
  Read-only: copy it before changing anything.
- `make_params(**data) -> Params`: validated params with `data` overrides (use absolute paths for root/labels_csv).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import pytest

from surgwm.data.ffmpeg import ffmpeg_exe
from surgwm.params import Params, parse_params

TINY_SYNTHETIC = {"seed": 7, "cases": 2, "parts_per_case": 2, "part_seconds": 5.0, "width": 96, "height": 72, "fps": 10}
_CODECS = {".webm": ["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "200k"], ".avi": ["-c:v", "mpeg4"]}


def make_tiny_video(path: Path, seconds: float = 1.0, size: tuple[int, int] = (64, 48), fps: float = 10,
                    audio: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
           "-i", f"testsrc=size={w}x{h}:rate={fps}:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-shortest"]
    codec = _CODECS.get(path.suffix.lower(), ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
    subprocess.run(cmd + codec + ["-threads", "1", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture
def tiny_video() -> Callable[..., Path]:
    return make_tiny_video


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from surgwm.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synthetic") / "data", **TINY_SYNTHETIC)


@pytest.fixture
def make_params() -> Callable[..., Params]:
    def make(**data) -> Params:
        return parse_params({"data": data})

    return make


@pytest.fixture(scope="session")
def prefect_harness():
    """A real, temporary Prefect server for flow tests (start-up takes 13-23 s here, hence the long timeout)."""
    import flows  # noqa: F401 - sets Prefect's per-checkout defaults before prefect is imported
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests share 2 cores with other jobs: one torch thread is faster there and keeps numerics fixed."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
