"""The world model's own task on held-out clips: future-token losses and retrieval."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from models import contrastive_loss, preprocess, temporal_loss
from surgwm.data.clips import Clip, ClipReader
from surgwm.evaluation.sources import Source


@torch.no_grad()
def future(src: Source, cache: ClipReader, clips: Sequence[Clip], rows: np.ndarray, batch_size: int, seed: int,
           device: torch.device) -> dict[str, Any]:
    """The predictor on held-out clips: losses as in training, and top-1 retrieval of the true future."""
    assert src.encoder is not None and src.predictor is not None
    order = np.random.default_rng(seed).permutation(rows)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [b for b in batches if len(b) >= 2]
    if not batches:
        return {"unavailable": "fewer than 2 test clips"}
    sums, n = {"temporal": 0.0, "contrastive": 0.0, "retrieval_top1": 0.0}, 0
    for b in batches:
        frames = torch.from_numpy(np.stack([cache.read(clips[i]) for i in b])).to(device)
        pixels = preprocess(frames)  # (B, T, C, H, W)
        grid = src.encoder.grid(*pixels.shape[1:2], *pixels.shape[3:])
        ct = src.context_frames // src.encoder.tubelet
        context = src.encoder(pixels[:, :src.context_frames])  # (B, Nc, D): never sees the future
        target = src.encoder(pixels)[:, context.shape[1]:]  # (B, Nf, D)
        pred = src.predictor(context, grid, ct)
        con, acc = contrastive_loss(pred.float(), target.float(), src.temperature)
        for key, v in (("temporal", temporal_loss(pred.float(), target.float())), ("contrastive", con),
                       ("retrieval_top1", acc)):
            sums[key] += float(v) * len(b)
        n += len(b)
    return {**{k: v / n for k, v in sums.items()}, "batch_size": batch_size,
            "retrieval_chance": float(np.mean([1 / len(b) for b in batches])), "test_clips": int(n)}
