"""Frozen-encoder feature cache: a frozen encoder's outputs per clip never change, so compute them once.

For the `frozen` method every epoch would otherwise re-run the (large) encoder twice per clip (context frames,
and the full clip for the targets) only to get the same tokens again. With `train.feature_cache: true` (the
default) the tokens are computed once into `data/features/<key>/` and the predictor trains on them:
bench/frozen_cache.py measures the saving (an epoch is mostly predictor work).

Trade-off: the cache stores the tokens of the clips as decoded, so no pixel augmentation (random horizontal
flip) is possible; `train.feature_cache: false` runs the encoder every epoch and flips clips (`train.augment`).

Size: M x (Nc + Nf) x D values in `train.feature_dtype` (float16 by default: half of float32; the tokens are read
back as float32). At SurgVU scale with ViT-L that is terabytes, so the cache is built only when its estimate
(surgwm/sizes.py) fits `storage.budget_gb`; otherwise the encoder runs on the fly, the log says why, and the run's
metrics record `feature_cache` (cached | off: <why>).

<key> is a hash of everything the tokens depend on: the weights' sha256, decode and clip params, the context
length, the storage dtype and the clip list (videos with their content hash and frame counts), so a stale
cache is never read; nothing else invalidates it. Layout of one key dir (built in a temp dir, then renamed):
  context.npy  (M, Nc, D)  encoder(context frames)           M = clips in `clips.json` order
  target.npy   (M, Nf, D)  encoder(full clip)[:, Nc:]         the future token positions
  clips.json   [[video_id, start], ...]     meta.json  what the key was computed from
Old keys are not deleted; `rm -r data/features` is always safe.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import Tensor
from tqdm import tqdm

from models import VideoEncoder, preprocess
from surgwm.io import fingerprint
from surgwm.data.clips import Clip, ClipReader
from surgwm.data.manifest import Manifest
from surgwm.sizes import clip_tokens, dtype_bytes, feature_cache_bytes, over_budget

FEATURE_VERSION = 1


def clip_pixels(cache: ClipReader, clips: Sequence[Clip], flips: Tensor | None, device: torch.device) -> Tensor:
    """uint8 frames from the decode cache -> normalised float (B, T, C, H, W) on `device`; flips: (B,) bool."""
    frames = torch.from_numpy(np.stack([cache.read(c) for c in clips]))  # (B, T, H, W, 3) uint8
    if flips is not None and bool(flips.any()):
        frames[flips] = frames[flips].flip(-2)  # horizontal flip of the whole clip (context and future alike)
    return preprocess(frames.to(device, non_blocking=True))  # (B, T, C, H, W)


def encode_pair(encoder: VideoEncoder, pixels: Tensor, context_frames: int) -> tuple[Tensor, Tensor]:
    """(context tokens (B, Nc, D) from the context frames alone, future targets (B, Nf, D) from the full clip)."""
    context = encoder(pixels[:, :context_frames])  # (B, Nc, D): never sees the future
    full = encoder(pixels)  # (B, N, D), t-major
    return context, full[:, context.shape[1]:]  # (B, Nf, D)


def clips_signature(manifest: Manifest, clips: Sequence[Clip]) -> str:
    """Hash of the clip list, the content of the videos it reads and the decode settings their frames came from
    (a changed border, store or crf changes the pixels: the checkpoint and the feature cache must not be reused)."""
    used = {c.video_id for c in clips}
    videos = [(v.video_id, v.sha256, v.frames) for v in manifest.videos if v.video_id in used]
    return fingerprint(sorted(videos), [(c.video_id, c.start) for c in clips], manifest.decode_key)


def feature_key(weights_sha256: str, data: dict[str, Any], context_frames: int, dtype: str, clips_sig: str) -> str:
    return fingerprint(FEATURE_VERSION, weights_sha256, data, context_frames, dtype, clips_sig)[:20]


class FeatureStore:
    """Memory-mapped cached tokens; `batch(idx)` copies the rows out as float32 tensors."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.context = np.load(directory / "context.npy", mmap_mode="r")  # (M, Nc, D)
        self.target = np.load(directory / "target.npy", mmap_mode="r")  # (M, Nf, D)

    def __len__(self) -> int:
        return self.context.shape[0]

    def batch(self, idx: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
        rows = np.asarray(idx)
        ctx = torch.from_numpy(np.ascontiguousarray(self.context[rows])).to(device, torch.float32)  # (B, Nc, D)
        tgt = torch.from_numpy(np.ascontiguousarray(self.target[rows])).to(device, torch.float32)  # (B, Nf, D)
        return ctx, tgt


def build(
    directory: Path, encoder: VideoEncoder, clips: Sequence[Clip], cache: ClipReader, context_frames: int,
    batch_size: int, device: torch.device, dtype: str = "float16",
    autocast: Callable[[], AbstractContextManager] = nullcontext, meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> FeatureStore:
    """Encode every clip once (fixed order, no augmentation) into `directory`, atomically."""
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    encoder.eval()
    ctx_out = tgt_out = None
    with torch.no_grad():
        for lo in tqdm(range(0, len(clips), batch_size), desc=f"features {directory.name}", disable=not progress,
                       unit="batch", mininterval=2.0):
            chunk = clips[lo:lo + batch_size]
            with autocast():
                ctx, tgt = encode_pair(encoder, clip_pixels(cache, chunk, None, device), context_frames)
            if ctx_out is None:
                ctx_out = open_memmap(tmp / "context.npy", "w+", dtype, (len(clips), *ctx.shape[1:]))
                tgt_out = open_memmap(tmp / "target.npy", "w+", dtype, (len(clips), *tgt.shape[1:]))
            ctx_out[lo:lo + len(chunk)] = ctx.float().cpu().numpy()
            tgt_out[lo:lo + len(chunk)] = tgt.float().cpu().numpy()
    for arr in (ctx_out, tgt_out):
        arr.flush()
    del ctx_out, tgt_out
    (tmp / "clips.json").write_text(json.dumps([[c.video_id, c.start] for c in clips]))
    (tmp / "meta.json").write_text(json.dumps({"version": FEATURE_VERSION, "clips": len(clips), **(meta or {})},
                                              indent=1, default=str) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return FeatureStore(directory)


def over_feature_budget(run: str, n_clips: int, size: int, clip_frames: int, context_frames: int, dim: int,
                        dtype: str, clip_stride: int, budget_gb: float) -> str | None:
    """Why the cache of these clips would not fit `storage.budget_gb` (None: it fits). Decided from the params and
    the clip list alone, so every DDP process decides the same without touching the disk."""
    nc, nf = clip_tokens(size, clip_frames, context_frames)
    knobs = (["train.feature_dtype: float16 (halves it)"] if dtype_bytes(dtype) > 2 else []) + [
        f"data.clip_stride (now {clip_stride}: fewer clips)", "data.size or data.clip_frames (fewer tokens)"]
    return over_budget(f"the feature cache of run '{run}' ({n_clips:,} clips x {nc + nf:,} tokens x {dim} x {dtype})",
                       feature_cache_bytes(n_clips, nc, nf, dim, dtype), budget_gb, knobs)


def open_or_build(directory: Path, clips: Sequence[Clip], **build_kw: Any) -> tuple[FeatureStore, bool]:
    """(store, built_now): reuse a complete cache dir for these clips, else build it."""
    if (directory / "meta.json").is_file():
        try:
            store = FeatureStore(directory)
            if len(store) == len(clips):
                return store, False
        except (OSError, ValueError):
            pass
    return build(directory, clips=clips, **build_kw), True
