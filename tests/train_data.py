"""A tiny decode cache, manifest, pretrained-weights dir and params for the training tests (no ffmpeg needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from surgwm.data.manifest import Manifest, VideoEntry, write_manifest
from surgwm.params import Params, parse_params

SIZE, CLIP, CONTEXT = 32, 4, 2  # 32x32 frames (2x2 patches), 4-frame clips: 1 context + 1 future token-time


def moving_square(seed: int, frames: int, size: int = SIZE) -> np.ndarray:
    """uint8 (N, S, S, 3): a coloured square drifting over a noisy background, different per video."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 60, (frames, size, size, 3), dtype=np.uint8)
    color, side = rng.integers(120, 256, 3), size // 4
    pos, vel = rng.uniform(0, size - side, 2), rng.uniform(-2, 2, 2)
    for t in range(frames):
        y, x = (pos + vel * t) % (size - side)
        video[t, int(y):int(y) + side, int(x):int(x) + side] = color
    return video


def make_cache(root: Path, cases: int = 6, frames: int = 20, parts: int = 1) -> tuple[Path, Path]:
    """(cache_dir, manifest_path) with `cases` cases x `parts` videos of `frames` frames each."""
    cache = root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    videos = []
    for c in range(cases):
        for p in range(parts):
            vid = f"case{c:02d}_p{p + 1}"
            arr = moving_square(c * 10 + p, frames)
            np.save(cache / f"{vid}.npy", arr)
            videos.append(VideoEntry(video_id=vid, case=f"case{c:02d}", part=p + 1, path=f"/videos/{vid}.mp4",
                                     sha256=hashlib.sha256(arr.tobytes()).hexdigest(), frames=frames))
    manifest_path = cache / "manifest.json"
    write_manifest(Manifest(source="synthetic", root=str(root), videos=videos), manifest_path)
    return cache, manifest_path


def make_weights(root: Path, dim: int = 32, depth: int = 1, heads: int = 2, seed: int = 0) -> Path:
    """A random 'pretrained' encoder in the weights stage's layout (config.json + model.safetensors + weights.json)."""
    import torch

    from models import VideoEncoder, encoder_config

    torch.manual_seed(seed)
    out = root / "weights"
    VideoEncoder.from_config(encoder_config(dim, depth, heads, SIZE, CLIP)).save_pretrained(out)
    sha = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    (out / "weights.json").write_text(json.dumps({"source": "test", "sha256": sha}))
    return out


def tiny_raw(**train: Any) -> dict[str, Any]:
    """Raw params for a model small enough that a step takes milliseconds."""
    return {
        "data": {"size": SIZE, "clip_frames": CLIP, "clip_stride": 2, "fps": 4},
        "model": {"encoder_dim": 32, "encoder_depth": 1, "encoder_heads": 2, "predictor_dim": 24,
                  "predictor_depth": 1, "predictor_heads": 2, "context_frames": CONTEXT},
        "train": {"epochs": 2, "batch_size": 8, "val_fraction": 0.34, "checkpoint_every": 3, "warmup_fraction": 0.2,
                  "device": "cpu", **train},  # CPU even on a GPU machine: the tests check bit-exact results
    }


def tiny_params(**train: Any) -> Params:
    return parse_params(tiny_raw(**train))


def write_params(path: Path, **train: Any) -> Path:
    path.write_text(yaml.safe_dump(tiny_raw(**train)))
    return path


def train_inputs(root: Path) -> dict[str, Path]:
    """A tiny decoded cache, its manifest and a tiny pretrained encoder: the train stage's three inputs."""
    cache, manifest = make_cache(root)
    return {"cache_dir": cache, "manifest_path": manifest, "weights_dir": make_weights(root)}
