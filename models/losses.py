"""Losses for predicting future encoder tokens from context tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _normed(target: Tensor) -> Tensor:
    """Layer-normed, detached targets: the regression target scale is fixed, no gradient into the target encoder."""
    target = target.detach()
    return F.layer_norm(target, target.shape[-1:])  # (B, N, D)


def temporal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean L1 between predicted future tokens (B, N, D) and layer-normed true future tokens (B, N, D)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    return (pred - _normed(target)).abs().mean()


def contrastive_loss(pred: Tensor, target: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """InfoNCE across the batch: each clip's pooled prediction must pick its own pooled (layer-normed) future.

    Returns (loss, top-1 retrieval accuracy); the accuracy carries no gradient."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    p = F.normalize(pred.mean(dim=1), dim=-1)  # (B, D)
    t = F.normalize(_normed(target).mean(dim=1), dim=-1)  # (B, D)
    logits = p @ t.T / temperature  # (B, B)
    labels = torch.arange(p.shape[0], device=p.device)
    loss = F.cross_entropy(logits, labels)
    acc = (logits.detach().argmax(dim=1) == labels).float().mean()
    return loss, acc
