"""Learning-rate and EMA-momentum schedules as pure functions of the step, so a resumed run gets the same values."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def warmup_cosine(step: int, total: int, warmup: int, final_fraction: float) -> float:
    """LR multiplier: linear 0 -> 1 over `warmup` steps, then cosine 1 -> final_fraction at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(LRScheduler):
    """Warmup + cosine decay per optimizer step; `state_dict()` holds only numbers, so checkpoints stay portable."""

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int, final_fraction: float = 0.01):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = total_steps
        self.warmup_steps = min(warmup_steps, total_steps)
        self.final_fraction = final_fraction
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        f = warmup_cosine(self.last_epoch, self.total_steps, self.warmup_steps, self.final_fraction)
        return [base * f for base in self.base_lrs]


def ema_momentum(step: int, total: int, start: float, end: float) -> float:
    """Target-encoder momentum ramped linearly from `start` to `end` over the run (V-JEPA style)."""
    if total <= 1:
        return end
    return start + (end - start) * min(1.0, step / (total - 1))
