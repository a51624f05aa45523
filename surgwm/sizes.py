"""Size estimates of everything large the pipeline writes, and the `storage.budget_gb` check that uses them.

One module, so that a stage's refusal and the plan (`python -m tasks.plan`, surgwm/plan.py) quote the same
numbers. Sizes are in bytes; GB = 10^9 bytes (as disks are sold). Exact where the format fixes the size (raw
`.npy` frames, feature and token arrays, checkpoints from parameter counts); the h264 clip store's size depends
on the content, so it is estimated from a measurement (H264_MEASURED, bench/clip_store.py) and the decode
stage's check says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

GB = 10**9
NPY_HEADER = 128                 # surgwm/data/decode.py HEADER_BYTES
SIDECAR_BYTES = 400              # a video's decode sidecar without the store index
INDEX_BYTES_PER_FRAME = 7        # h264 store: one packet size per frame in the sidecar's JSON list
PATCH, TUBELET = 16, 2           # V-JEPA 2 tokens: 2 frames x 16 x 16 pixels

# bench/clip_store.py on the 2-core shared CPU box (the figures are in docs/clip_store.md): surgical-like 1280x720
# content (surgwm/data/synthetic.py's renderer, sensor noise sigma 5, H.264 at 15 Mbit/s) decoded at 4 fps to
# 256x256, stored at crf 20: mean bytes per pixel of a keyframe and of a predicted frame. Size scales with pixels
# and, by x264's rule of thumb, halves for every +6 crf (an approximation: the bench prints real sizes).
H264_MEASURED = {"crf": 20, "key_bytes_per_px": 0.2669, "delta_bytes_per_px": 0.0689,
                 "source": "bench/clip_store.py, synthetic surgical-like 720p + noise, 256 px, 4 fps"}


class BudgetError(RuntimeError):
    """A stage would write more than `storage.budget_gb`; raised before anything is written."""


def fmt_bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}" if n < 100 * scale else f"{n / scale:,.0f} {unit}"
    return f"{n:.0f} B"


def check_budget(what: str, estimate: float, budget_gb: float, knobs: Sequence[str]) -> None:
    """Raise BudgetError naming the key, the estimate and what shrinks it, if `estimate` bytes exceed the budget."""
    reason = over_budget(what, estimate, budget_gb, knobs)
    if reason:
        raise BudgetError(reason)


def over_budget(what: str, estimate: float, budget_gb: float, knobs: Sequence[str]) -> str | None:
    """The refusal text, or None when the estimate fits."""
    if estimate <= budget_gb * GB:
        return None
    return (f"{what} needs an estimated {fmt_bytes(estimate)}, more than storage.budget_gb ({budget_gb:g} GB). "
            f"Shrink it with: {'; '.join(knobs)}; or raise storage.budget_gb if the disk has room "
            f"(`python -m tasks.plan` shows every size)")


# ------------------------------------------------------------------------------------------ decode cache

def video_frames(duration_s: float | None, fps: float) -> int:
    """Frames ffmpeg's fps filter keeps from `duration_s` seconds (its default rounding: nearest)."""
    return int(round((duration_s or 0.0) * fps))


def raw_frame_bytes(size: int) -> int:
    return size * size * 3                                           # (S, S, 3) uint8


def h264_frame_bytes(size: int, crf: int, gop: int) -> float:
    """Mean bytes per stored frame: one keyframe per `gop` frames, the rest predicted (see H264_MEASURED)."""
    m = H264_MEASURED
    per_px = (m["key_bytes_per_px"] + (gop - 1) * m["delta_bytes_per_px"]) / gop
    return per_px * size * size * 2 ** ((m["crf"] - crf) / 6)


def decode_cache_bytes_for(store: str, size: int, fps: float, durations: Iterable[float | None],
                           crf: int = 20, gop: int = 8) -> int:
    """The decode cache (one file + sidecar per video) for videos of these durations."""
    total = 0
    for d in durations:
        n = video_frames(d, fps)
        if store == "h264":
            total += math.ceil(n * (h264_frame_bytes(size, crf, gop) + INDEX_BYTES_PER_FRAME)) + SIDECAR_BYTES
        else:
            total += NPY_HEADER + n * raw_frame_bytes(size) + SIDECAR_BYTES
    return total


def decode_cache_bytes(params: Any, durations: Iterable[float | None]) -> int:
    d, dp = params.data, params.decode
    return decode_cache_bytes_for(dp.store, d.size, d.fps, durations, dp.crf, dp.gop)


def decode_knobs(params: Any) -> list[str]:
    d, dp = params.data, params.decode
    knobs = ["decode.store: h264 (now npy; ~30x smaller)"] if dp.store == "npy" else \
        [f"decode.crf (now {dp.crf}; +6 roughly halves the store)"]
    return knobs + [f"data.size (now {d.size}; size is quadratic)", f"data.fps (now {d.fps:g})",
                    "fewer videos in data.root"]


# ------------------------------------------------------------------------------------------ clips and tokens

def clip_count(frames: int, clip_frames: int, clip_stride: int) -> int:
    """Clips of one video (surgwm/data/clips.py video_clips)."""
    return max(0, (frames - clip_frames) // clip_stride + 1) if frames >= clip_frames else 0


def clip_tokens(size: int, clip_frames: int, context_frames: int) -> tuple[int, int]:
    """(context tokens, future tokens) of one clip: (T/2)(S/16)^2 split at the context frames."""
    per_t = (size // PATCH) ** 2
    return context_frames // TUBELET * per_t, (clip_frames - context_frames) // TUBELET * per_t


def dtype_bytes(dtype: str) -> int:
    return {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]


def feature_cache_bytes(n_clips: int, n_ctx: int, n_fut: int, dim: int, dtype: str) -> int:
    """The frozen feature cache (surgwm/training/features.py): context (M, Nc, D) + target (M, Nf, D)."""
    return n_clips * (n_ctx + n_fut) * dim * dtype_bytes(dtype)


def token_bytes(n_clips: int, shapes: Sequence[tuple[int, int]], dtype: str) -> int:
    """Disk that memory-mapped tokens take: `n_clips` rows of each (tokens, dim) array in `dtype`."""
    return int(n_clips * sum(n * d for n, d in shapes) * dtype_bytes(dtype))


def evaluate_clips(probe_clips: int, max_train: int | None, max_val: int | None) -> int:
    """Clips whose tokens evaluate keeps on disk: the probe's training and validation clips, each side capped
    (evaluate.max_train_clips / max_val_clips); test videos are streamed and keep nothing."""
    cap = (max_train if max_train is not None else probe_clips) + (max_val if max_val is not None else probe_clips)
    return min(probe_clips, cap)


def evaluate_bytes(n_clips: int, n_tokens: int, n_fut: int, dim: int, dtype: str, rollouts: int,
                   predictor: bool) -> int:
    """An evaluation's working data (surgwm/evaluation/sources.py extract()): tokens (M, N, D) of the `n_clips`
    probe clips (see evaluate_clips) plus, for a method, their rolled-out futures (M, R * Nf, D)."""
    shapes = [(n_tokens, dim)] + ([(rollouts * n_fut, dim)] if predictor else [])
    return token_bytes(n_clips, shapes, dtype)


# ------------------------------------------------------------------------------------------ models

def vit_params(dim: int, depth: int, in_chans: int = 3) -> int:
    """A V-JEPA 2 ViT encoder: per block 12 D^2 (qkv, proj, 4x MLP) + 13 D (biases, norms), plus the tubelet
    embedding (2 x 16 x 16 x C -> D) and the final norm."""
    return depth * (12 * dim * dim + 13 * dim) + (TUBELET * PATCH * PATCH * in_chans + 1) * dim + 2 * dim


def predictor_params(enc_dim: int, dim: int, depth: int) -> int:
    """models/predictor.py: in/out projections, blocks like the encoder's, a query token and a norm."""
    return depth * (12 * dim * dim + 13 * dim) + 2 * enc_dim * dim + enc_dim + dim + 3 * dim


def checkpoint_bytes(encoder: int, predictor: int, train_encoder: bool) -> int:
    """fp32 files of one run: checkpoint.pt (what trains, its EMA target and two AdamW moments) + the final
    encoder/ and predictor.safetensors (surgwm/training/runs.py)."""
    trained = predictor + (encoder if train_encoder else 0)
    ema = encoder if train_encoder else 0
    return 4 * (3 * trained + ema + encoder + predictor)
